"""Host throughput: posemu's load client against ``posemu host``, a third-party Python host simulator
and a canned-answer server, side by side in one run (issue 13 item 4).

Each server runs in its own process; the load client (this process) sends 20,000 balance inquiries on
the ``iso87ascii`` profile over 10 loopback connections with 100 in flight, after a warm-up:

* ``posemu host`` — the bundled host (SQLite log, card and terminal checks);
* the peer — ``iso8583sim serve`` (PyPI ``iso8583sim``, a third-party mock issuer host in Python, on its
  ``ascii-binary`` wire format with a 2-byte length: the same bytes as ``iso87ascii``), when installed;
* the ceiling — :mod:`tests.bench.canned_host`, an asyncio server that copies the STAN into a canned
  answer and decodes nothing: what the client and the socket cost.

posemu is measured twice: as one process, and as ``posemu host --workers N`` (N processes on one port,
``SO_REUSEPORT``, one shared database; default one per core). Targets, judged for each and printed as
PASS/MISS: posemu ≥ 3× the peer, ≥ 60% of the canned ceiling, and p99 ≤ 10 ms at half of its own peak
(an open-loop run at that rate). The machine's load average is printed with the figures: on a shared
2-core machine the runs compete with whatever else runs — and the client shares the cores with the
host it measures. ``python -m tests.bench.bench_host [--total N] [--workers N]``.

Beside it, the mix with 20% PIN'd purchases (signed-on terminals, everything MACed, the host verifying
each PIN with a salted scrypt off its event loop), so the cost of the PIN path stays visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from emulator.demo import DEMO_MID, DEMO_TMK, LOAD_TIDS
from emulator.host.loadgen import LoadResult, PinCard, run_load
from hardware.cards.profiles import load_profile
from protocol.specs import ISO87ASCII
from tests.bench import BenchResult

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _server(argv: Sequence[str]) -> AsyncIterator[tuple[str, int]]:
    """Start a server process; yield the address from its 'listening on HOST:PORT' line."""
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL,
                                                env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{argv[0]} did not start")
                m = re.search(r"listening on ([\d.]+):(\d+)", line)
                if m:
                    break
        yield m.group(1), int(m.group(2))
    finally:
        proc.terminate()
        await proc.wait()


async def _load(addr: tuple[str, int], total: int, *, rate: float | None = None, purchase_share: float = 0.0,
                connections: int = 10, concurrency: int = 100) -> LoadResult:
    card, demo = load_profile("load"), load_profile("demo")
    mix = dict(purchase_share=purchase_share, pin_card=PinCard(demo.pan, demo.expiry, demo.pin), tmk=DEMO_TMK) \
        if purchase_share else {}
    host, port = addr
    await run_load(host, port, ISO87ASCII, tids=LOAD_TIDS[:connections], mid=DEMO_MID, pan=card.pan,  # warm-up
                   expiry=card.expiry, total=1000, concurrency=concurrency, **mix)  # type: ignore[arg-type]
    return await run_load(host, port, ISO87ASCII, tids=LOAD_TIDS[connections:2 * connections], mid=DEMO_MID,
                          pan=card.pan, expiry=card.expiry, total=total, concurrency=concurrency, rate=rate,
                          **mix)  # type: ignore[arg-type]


def _posemu(db: Path, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--profile", "iso87ascii",
            "--db", str(db), *(["--workers", str(workers)] if workers > 1 else [])]


def peer_command() -> list[str] | None:
    """``iso8583sim serve`` from this interpreter's environment, if installed."""
    exe = shutil.which("iso8583sim", path=str(Path(sys.executable).parent)) or shutil.which("iso8583sim")
    return None if exe is None else [exe, "serve", "--host", "127.0.0.1", "--port", str(_free_port()),
                                     "--format", "ascii-binary", "--header", "2b"]


def default_workers() -> int:
    """Host workers for the multi-process run: one per core (at least 2)."""
    return max(2, os.cpu_count() or 1)


async def _side_by_side(total: int, workers: int) -> dict[str, LoadResult]:
    out: dict[str, LoadResult] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, n in (("posemu", 1), ("workers", workers)):
            async with _server(_posemu(Path(tmp) / f"{label}.sqlite3", n)) as addr:
                out[label] = await _load(addr, total)
                half = out[label].rate / 2
                out[f"{label}@half"] = await _load(addr, max(1000, int(half * 5)), rate=half)
            async with _server(_posemu(Path(tmp) / f"{label}-mixed.sqlite3", n)) as addr:
                out[f"{label}-mixed"] = await _load(addr, total // 4, purchase_share=0.2)
    peer = peer_command()
    if peer is not None:
        async with _server(peer) as addr:
            out["peer"] = await _load(addr, total)
    async with _server([sys.executable, "-m", "tests.bench.canned_host", "0"]) as addr:
        out["canned"] = await _load(addr, total)
    return out


def run(total: int | None = None, workers: int | None = None) -> list[BenchResult]:
    """One run: ``posemu host`` as one process and with ``--workers`` (default: one per core), the peer
    and the canned ceiling, each measured with the same client and ``total`` inquiries (20,000;
    5,000 with ``POSEMU_BENCH_QUICK=1``). Each target is judged for both posemu configurations."""
    if total is None:
        total = 5_000 if os.environ.get("POSEMU_BENCH_QUICK") else 20_000
    workers = workers or default_workers()
    res = _side_by_side_sync(total, workers)
    load = f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    canned, peer = res["canned"], res.get("peer")

    def note(r: LoadResult) -> str:
        return f"{r.received} answered, {r.codes.get('00', 0)} approved, {r.errors} errors; {load}"

    out: list[BenchResult] = [
        BenchResult("canned-answer asyncio server (the client's ceiling)", canned.rate, "msg/s", "", None,
                    note(canned)),
    ]
    if peer is not None:
        out.append(BenchResult("peer: iso8583sim serve (third-party Python host)", peer.rate, "msg/s", "", None,
                               note(peer) + f"; p99 {peer.percentile(99) * 1e3:.1f} ms"))
    else:
        out.append(BenchResult("peer: iso8583sim serve (third-party Python host)", float("nan"), "msg/s", "", None,
                               "not installed (pip install iso8583sim): no peer in this run"))
    for label, what in (("posemu", "posemu host (1 process)"), ("workers", f"posemu host --workers {workers}")):
        ours, half, mixed = res[label], res[f"{label}@half"], res[f"{label}-mixed"]
        half_p99 = half.percentile(99) * 1e3
        out += [
            BenchResult(f"{what}: throughput (iso87ascii inquiries, 10 conns, 100 in flight)", ours.rate, "msg/s",
                        "", None, note(ours) + f"; p50 {ours.percentile(50) * 1e3:.1f} ms, "
                        f"p99 {ours.percentile(99) * 1e3:.1f} ms"),
            BenchResult(f"{what} / canned ceiling", ours.rate / canned.rate, "x", ">= 0.60",
                        ours.rate / canned.rate >= 0.6),
        ]
        if peer is not None:
            out.append(BenchResult(f"{what} / peer", ours.rate / peer.rate, "x", ">= 3", ours.rate / peer.rate >= 3))
        out += [
            BenchResult(f"{what}: latency p99 at half of its peak ({half.rate:,.0f} msg/s, open loop)", half_p99,
                        "ms", "<= 10 ms", half_p99 <= 10.0, note(half)),
            BenchResult(f"{what}: throughput, 20% PIN'd purchases (MACed)", mixed.rate, "msg/s", "", None,
                        f"{note(mixed)}; {mixed.rate / ours.rate:.2f}x the inquiry-only rate; "
                        f"p99 {mixed.percentile(99) * 1e3:.1f} ms"),
        ]
    return out


def _side_by_side_sync(total: int, workers: int) -> dict[str, LoadResult]:
    return asyncio.run(_side_by_side(total, workers))


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_host", description=__doc__.split("\n")[0])
    ap.add_argument("--total", type=int, default=None, help="inquiries per throughput run (default 20000; "
                    "5000 with POSEMU_BENCH_QUICK=1)")
    ap.add_argument("--workers", type=int, default=None, help="host workers of the multi-process run "
                    f"(default: one per core, at least 2; here {default_workers()})")
    args = ap.parse_args(argv)
    for r in run(args.total, args.workers):
        verdict = "" if r.met is None else ("PASS" if r.met else "MISS")
        target = f"  [target {r.target}: {verdict}]" if r.target else ""
        print(f"{r.name}: {r.value:,.3f} {r.unit}{target}  {r.note}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
