"""Host throughput: posemu's load client against ``posemu host`` in its own process.

100 requests in flight over 10 loopback connections, 20,000 balance inquiries on the
``iso87ascii`` profile (the bundled load-test card, no PIN, no MAC). Targets: ≥ 23,000 msg/s
and p99 ≤ 10 ms on a 2-core machine with the client on the same machine.

Beside it, in the same run, the mix with 20% PIN'd purchases (signed-on terminals, everything
MACed, the host verifying each PIN with a salted scrypt off its event loop), so the cost of
the PIN path stays visible.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

from emulator.demo import DEMO_MID, DEMO_TMK, LOAD_TIDS
from emulator.host.loadgen import LoadResult, PinCard, run_load
from hardware.cards.profiles import load_profile
from protocol.specs import ISO87ASCII
from tests.bench import BenchResult

ROOT = Path(__file__).resolve().parents[2]


async def _bench(total: int, connections: int, concurrency: int, purchase_share: float = 0.0) -> LoadResult:
    card = load_profile("load")
    demo = load_profile("demo")
    mix = dict(purchase_share=purchase_share, pin_card=PinCard(demo.pan, demo.expiry, demo.pin), tmk=DEMO_TMK) \
        if purchase_share else {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--profile", "iso87ascii",
            "--db", str(Path(tmp) / "host.sqlite3"), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                line = (await proc.stdout.readline()).decode()
            m = re.search(r"listening on ([\d.]+):(\d+)", line)
            if not m:
                raise RuntimeError(f"host did not start: {line!r}")
            host, port = m.group(1), int(m.group(2))
            # warm-up (connection setup, caches), then the measured run
            await run_load(host, port, ISO87ASCII, tids=LOAD_TIDS[:connections], mid=DEMO_MID, pan=card.pan,
                           expiry=card.expiry, total=1000, concurrency=concurrency, **mix)  # type: ignore[arg-type]
            return await run_load(host, port, ISO87ASCII, tids=LOAD_TIDS[connections:2 * connections],
                                  mid=DEMO_MID, pan=card.pan, expiry=card.expiry, total=total,
                                  concurrency=concurrency, **mix)  # type: ignore[arg-type]
        finally:
            proc.terminate()
            await proc.wait()


def run() -> list[BenchResult]:
    res = asyncio.run(_bench(20_000, 10, 100))
    p50, p99 = res.percentile(50) * 1e3, res.percentile(99) * 1e3
    ok = res.codes.get("00", 0)
    note = f"{res.received} answered, {ok} approved, {res.errors} errors"
    mixed = asyncio.run(_bench(5_000, 10, 100, purchase_share=0.2))
    mnote = (f"{mixed.received} answered, {mixed.codes.get('00', 0)} approved, {mixed.errors} errors; "
             f"{mixed.rate / res.rate:.2f}x the inquiry-only rate")
    return [
        BenchResult("iso87ascii: throughput (10 conns, 100 in flight)", res.rate, "msg/s", ">= 23000",
                    res.rate >= 23_000, note),
        BenchResult("iso87ascii: latency p50", p50, "ms"),
        BenchResult("iso87ascii: latency p99", p99, "ms", "<= 10 ms", p99 <= 10.0),
        BenchResult("iso87ascii: throughput, 20% PIN'd purchases (MACed)", mixed.rate, "msg/s", "", None, mnote),
        BenchResult("iso87ascii: latency p50, 20% PIN'd purchases", mixed.percentile(50) * 1e3, "ms"),
        BenchResult("iso87ascii: latency p99, 20% PIN'd purchases", mixed.percentile(99) * 1e3, "ms"),
    ]
