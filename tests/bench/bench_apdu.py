"""APDU round trips per second through ``sim://`` (the PC/SC figure is in ``bench_pcsc``).

Measured on the ordinary asyncio loop with the real clock (a benchmark times real work):

* ``sim://cup_debit`` — ``SimReader.transmit`` → the virtual EMV card's ``execute``;
* the same card behind the T=0 character adapter (every byte through both state machines);
* whole EMV kernel reads (SELECT PSE … GENERATE AC, about ten APDUs) per second;
* BER-TLV decode + encode of a typical READ RECORD response.
"""

from __future__ import annotations

import asyncio
import time

from emulator.emv import EmvKernel, Transaction
from hardware.cards.profiles import load_profile
from hardware.clock import RealClock
from hardware.sim import SimReader, card_for_profile
from hardware.t0 import wire_t0
from protocol.tlv import decode, encode
from tests.bench import BenchResult

SECONDS = 1.0
GET_DATA_ATC = bytes.fromhex("80CA9F3600")
SELECT_APP = bytes.fromhex("00A4040008A00000033301010100")


async def _rate(reader: SimReader, apdu: bytes) -> tuple[float, int]:
    await reader.power_on()
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + SECONDS
    while True:
        for _ in range(200):
            resp = await reader.transmit(apdu)
            if resp[-2:] != b"\x90\x00":
                raise RuntimeError(f"unexpected status {resp[-2:].hex()}")
        n += 200
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - t0), n


async def _kernel_rate() -> float:
    clock = RealClock()
    reader = SimReader(clock, timing=False)     # software cost only; timing=True models 9600 bps
    reader.insert(card_for_profile(load_profile("cup_debit")))

    async def pin(_: int | None) -> str:
        return "123456"

    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        await EmvKernel(reader, clock, unpredictable=lambda: b"\x00\x00\x00\x01").read(Transaction(100), pin)
        n += 1
    return n / (time.perf_counter() - t0)


def _tlv_rate() -> float:
    card = card_for_profile(load_profile("cup_debit"))
    card.execute(SELECT_APP)
    card.execute(bytes.fromhex("80A8000023832100000000000000000000000000000000000000000000000000000000000000000000"))
    record = card.execute(bytes.fromhex("00B2021400"))[:-2]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        for _ in range(500):
            encode(decode(record))
        n += 500
    return n / (time.perf_counter() - t0)


def run() -> list[BenchResult]:
    clock = RealClock()
    out: list[BenchResult] = []
    direct = SimReader(clock, timing=False)
    direct.insert(card_for_profile(load_profile("cup_debit")))
    rate, n = asyncio.run(_rate(direct, GET_DATA_ATC))
    out.append(BenchResult("APDU round trips through sim:// (GET DATA)", rate, "APDU/s", ">= 10000 APDU/s",
                           rate >= 10_000, f"{n} APDUs"))
    wired = SimReader(clock, timing=False)
    wired.insert(wire_t0(card_for_profile(load_profile("cup_debit"))))
    rate, n = asyncio.run(_rate(wired, SELECT_APP))
    out.append(BenchResult("APDU round trips through sim:// over T=0 characters (SELECT, 61xx + GET RESPONSE)",
                           rate, "APDU/s", ">= 1000 APDU/s", rate >= 1_000, f"{n} APDUs"))
    k = asyncio.run(_kernel_rate())
    out.append(BenchResult("EMV kernel reads through sim:// (PSE … ARQC)", k, "reads/s", ">= 100 reads/s",
                           k >= 100, "≈10 APDUs each; a real contact card takes seconds"))
    t = _tlv_rate()
    out.append(BenchResult("BER-TLV decode+encode of a READ RECORD template", t, "records/s",
                           ">= 20000 records/s", t >= 20_000))
    return out
