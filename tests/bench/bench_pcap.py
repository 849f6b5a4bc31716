"""``--pcap``: what recording costs.

* the recorder alone: frames per second turned into pcap records (Ethernet/IP/TCP synthesised,
  checksums computed), card numbers masked (each frame decoded to find fields 2, 35 and 55) or
  kept clear;
* ``posemu host --pcap`` against the load client: throughput with and without the capture (same
  setup as bench_host, 10 connections, 100 in flight, iso87ascii inquiries).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from emulator.capture import PcapRecorder, WireConn, WireEvent, WireKind
from emulator.demo import DEMO_MID, LOAD_TIDS
from emulator.host.loadgen import LoadResult, run_load
from hardware.cards.profiles import load_profile
from protocol.framing import frame
from protocol.iso import Message, encode
from protocol.specs import CUP, ISO87ASCII
from protocol.txn import CardData, EntryMode, TerminalIds, TxnType, financial_request
from tests.bench import BenchResult

ROOT = Path(__file__).resolve().parents[2]
PAN = "9912345678901239"


def _frames() -> tuple[bytes, bytes]:
    card = CardData(PAN, EntryMode.CHIP, "3012", PAN + "=30122201000000000", icc=bytes.fromhex(
        "5A08" + PAN + "5711" + PAN + "D3012220100000000F" + "9F2608A1B2C3D4E5F60718"))
    ids = TerminalIds("POSEMU01", "898310012345678", CUP.default_header)
    req = financial_request(CUP, ids, TxnType.BALANCE, card, stan="000001",
                            now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), pin_block=bytes(8))
    rsp = Message("0210", {3: "310000", 11: "000001", 39: "00", 41: "POSEMU01",
                           54: "1001156C0000012345671002156C000001234567"}, CUP.default_header)
    return frame(encode(req, CUP)), frame(encode(rsp, CUP))


def _recorder_rate(clear: bool, pairs: int = 5000) -> float:
    req, rsp = _frames()
    sink = bytearray()
    rec = PcapRecorder(sink.extend, clear=clear)
    conn = WireConn("client", ("127.0.0.1", 40000), ("127.0.0.1", 5000), CUP)
    rec(WireEvent(WireKind.OPEN, conn, 1767258000.0))
    t0 = time.perf_counter()
    for i in range(pairs):
        rec(WireEvent(WireKind.SENT, conn, 1767258000.0 + i, req))
        rec(WireEvent(WireKind.RECEIVED, conn, 1767258000.0 + i, rsp))
    return 2 * pairs / (time.perf_counter() - t0)


async def _host_rate(pcap: bool, total: int = 10_000) -> tuple[LoadResult, int]:
    card = load_profile("load")
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "host.pcap"
        args = ["--pcap", str(cap)] if pcap else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--profile", "iso87ascii",
            "--db", str(Path(tmp) / "host.sqlite3"), *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                line = (await proc.stdout.readline()).decode()
            m = re.search(r"listening on ([\d.]+):(\d+)", line)
            if not m:
                raise RuntimeError(f"host did not start: {line!r}")
            host, port = m.group(1), int(m.group(2))
            await run_load(host, port, ISO87ASCII, tids=LOAD_TIDS[:10], mid=DEMO_MID, pan=card.pan,
                           expiry=card.expiry, total=1000, concurrency=100)
            res = await run_load(host, port, ISO87ASCII, tids=LOAD_TIDS[10:20], mid=DEMO_MID, pan=card.pan,
                                 expiry=card.expiry, total=total, concurrency=100)
            size = cap.stat().st_size if pcap else 0
            return res, size
        finally:
            proc.terminate()
            await proc.wait()


def run() -> list[BenchResult]:
    masked = _recorder_rate(clear=False)
    clear = _recorder_rate(clear=True)
    plain, _ = asyncio.run(_host_rate(False))
    captured, size = asyncio.run(_host_rate(True))
    return [
        BenchResult("recorder: cup frames, masked", masked, "frames/s", "", None,
                    "synthesised TCP + masking of fields 2, 35, 55 (5A/57)"),
        BenchResult("recorder: cup frames, --pcap-clear", clear, "frames/s", "", None,
                    f"masking costs {clear / masked:.1f}x"),
        BenchResult("host: iso87ascii inquiries, no capture", plain.rate, "msg/s"),
        BenchResult("host: iso87ascii inquiries, --pcap", captured.rate, "msg/s", "", None,
                    f"{captured.rate / plain.rate:.2f}x without; {captured.received} answered, "
                    f"{captured.errors} errors; {size / 1e6:.1f} MB written"),
    ]
