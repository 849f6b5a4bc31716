"""A fleet of 1,000 terminals for 60 s against the bundled host (issue 13 item 3), on the real clock.

Each terminal is a whole posemu terminal (own id, derived keys, sign-on, card, journal on disk,
reversal queue, scripted cardholder typing its PIN) in one process with the bundled host; the mix is
70% balance inquiries and 30% PIN'd purchases, with a mean think time of 10 s between a terminal's
transactions. Targets: 0 errors, 0 lost or duplicated journal rows on either side (the terminals'
journals reconciled with the host's log), money reconciled, nothing left pending. Memory per
terminal is the growth of the process's resident set over the run divided by the terminals.

``python -m tests.bench --quick fleet`` (or ``POSEMU_BENCH_QUICK=1``): 200 terminals for 15 s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from faults.fleet import Fleet, FleetOptions, FleetReport
from hardware.clock import RealClock
from tests.bench import BenchResult


def quick() -> bool:
    return os.environ.get("POSEMU_BENCH_QUICK", "") not in ("", "0")


def measure(terminals: int, duration: float, think: float = 10.0) -> FleetReport:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8 * terminals + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    clock = RealClock()
    with tempfile.TemporaryDirectory() as tmp:
        opts = FleetOptions(terminals=terminals, duration=duration, think=think, ramp=min(10.0, duration / 4),
                            mix={"balance": 70, "purchase": 30}, journals=Path(tmp) / "journals")
        fleet = Fleet(opts, clock=clock)
        with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            return runner.run(fleet.run())


def run() -> list[BenchResult]:
    n, d = (200, 15.0) if quick() else (1000, 60.0)
    rep = measure(n, d)
    st, rec = rep.stats, rep.reconciliation
    pct = rep.percentiles()
    label = f"fleet {n} terminals × {d:g} s"
    lost_dup = rec.lost + rec.duplicated_host + rec.duplicated_terminal + rec.pending
    note = (f"{st.done} txns ({st.approved} approved), {st.sign_ons} sign-ons, {rec.terminal_rows} journal rows / "
            f"{rec.host_rows} host rows; charged {rec.charged_terminal} = log {rec.charged_host_log} = balances "
            f"{rec.balance_moved}; wall {rep.elapsed_wall:.0f} s; load {os.getloadavg()[0]:.2f}")
    if st.error_samples:
        note += f"; first error: {st.error_samples[0]}"
    return [
        BenchResult(f"{label}: errors", st.errors, "", "0", st.errors == 0, note),
        BenchResult(f"{label}: lost/duplicated/pending journal rows", lost_dup, "rows", "0", lost_dup == 0,
                    "; ".join(rec.problems[:3])),
        BenchResult(f"{label}: money reconciled", float(rec.ok), "bool", "1", rec.ok),
        BenchResult(f"{label}: throughput", st.done / rep.elapsed_clock if rep.elapsed_clock else 0.0, "txn/s"),
        BenchResult(f"{label}: host round trip p50", pct["p50"], "ms"),
        BenchResult(f"{label}: host round trip p99", pct["p99"], "ms"),
        BenchResult(f"{label}: memory per terminal", rep.memory_per_terminal_kib or float("nan"), "KiB"),
    ]


if __name__ == "__main__":
    if "--quick" in sys.argv[1:]:
        os.environ["POSEMU_BENCH_QUICK"] = "1"
    for r in run():
        print(f"{r.name}: {r.value:,.3f} {r.unit} (target {r.target or '-'}) {r.note}")
