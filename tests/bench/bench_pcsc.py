"""APDU round trips per second through the real PC/SC stack: pyscard → pcscd → vpcd → our card.

Starts a private pcscd (as the test run does) when it can; otherwise the figure is reported as
skipped with the reason. The card server runs on the same event loop as the reader, and every
pyscard call goes through a worker thread (``run_external``), exactly as in the product.
"""

from __future__ import annotations

import asyncio
import os
import time

from hardware.cards.profiles import list_profiles, load_profile
from hardware.clock import RealClock
from hardware.ports import ReaderEventKind
from hardware.registry import open_reader
from hardware.sim import card_for_profile
from hardware.vpcd import VpcdClient
from tests.bench import BenchResult
from tests.testrun import ENV_CLIENT_SOCKET, ENV_PORT, PcscdStartError, private_socket_path, start_pcscd

SECONDS = 2.0
APDU = bytes.fromhex("80CA9F3600")          # GET DATA ATC: a short case-2 round trip
TARGET = 500.0


def _chip_profile() -> str | None:
    for name in ("cup_debit", *list_profiles()):
        if name in list_profiles() and card_for_profile(load_profile(name)).atr:
            return name
    return None


async def _measure(port: int, profile: str) -> tuple[float, float, int]:
    clock = RealClock()
    card = card_for_profile(load_profile(profile))
    client = VpcdClient(card, clock=clock, port=port)
    reader = open_reader("pcsc://0?poll=0.05", clock=clock)
    try:
        await reader.next_event(0.1)
        t0 = time.perf_counter()
        await client.insert()
        ev = await reader.next_event(10)
        if ev is None or ev.kind is not ReaderEventKind.CARD_INSERTED:
            raise PcscdStartError("pcscd did not report the virtual card")
        insert_ms = (time.perf_counter() - t0) * 1000
        await reader.power_on()
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + SECONDS
        for _ in range(1_000_000):
            resp = await reader.transmit(APDU)
            n += 1
            if resp[-2:] != b"\x90\x00" or time.perf_counter() >= deadline:
                break
        rate = n / (time.perf_counter() - t0)
        return rate, insert_ms, n
    finally:
        await reader.close()
        await client.remove()


def run() -> list[BenchResult]:
    name = "APDU round trips through pcscd+vpcd"
    profile = _chip_profile()
    if profile is None:
        return [BenchResult(name, 0.0, "APDU/s", note="skipped: no chip card profile")]
    if os.environ.get(ENV_PORT):             # `python -m tests.bench` started one for the whole run
        try:
            rate, insert_ms, n = asyncio.run(_measure(int(os.environ[ENV_PORT]), profile))
        except Exception as e:  # a benchmark reports, it does not crash the table
            return [BenchResult(name, 0.0, "APDU/s", note=f"failed: {type(e).__name__}: {e}")]
        return _results(name, rate, insert_ms, n, profile)
    # libpcsclite reads its socket path once per process: point it at our private pcscd first.
    sock = private_socket_path()
    os.environ[ENV_CLIENT_SOCKET] = str(sock)
    try:
        inst = start_pcscd(socket_path=sock)
    except (PcscdStartError, OSError) as e:
        return [BenchResult(name, 0.0, "APDU/s", note=f"skipped: {e}")]
    try:
        rate, insert_ms, n = asyncio.run(_measure(inst.vpcd_port, profile))
    except Exception as e:  # a benchmark reports, it does not crash the table
        return [BenchResult(name, 0.0, "APDU/s", note=f"failed: {type(e).__name__}: {e}")]
    finally:
        inst.stop()
    return _results(name, rate, insert_ms, n, profile)


def _results(name: str, rate: float, insert_ms: float, n: int, profile: str) -> list[BenchResult]:
    return [
        BenchResult(name, rate, "APDU/s", target=f">= {TARGET:.0f} APDU/s", met=rate >= TARGET,
                    note=f"{n} x GET DATA, card {profile}, {SECONDS:g} s; card server on the same loop"),
        BenchResult("card insertion seen through pcscd", insert_ms, "ms",
                    note="vpcd connect → CARD_INSERTED (pcscd polls presence every ~0.4 s)"),
    ]
