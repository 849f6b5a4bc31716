"""The fault-regression suite: wall time for the whole catalogue and its virtual-time speed-up.

Targets: the whole catalogue in ≤ 3 s on a 2-core machine, ≥ 1000× faster than the simulated
time it covers.
"""

from __future__ import annotations

import time

from faults.regress import bundled_scenario_files, catalogue_cases, load, run_cases
from tests.bench import BenchResult


def run() -> list[BenchResult]:
    cat = load()
    cases = catalogue_cases(cat) + bundled_scenario_files(cat)
    t0 = time.perf_counter()
    results = run_cases(cases)
    wall = time.perf_counter() - t0
    virtual = sum(r.virtual_s for r in results)
    ok = sum(r.ok for r in results)
    skipped = sum(r.skipped is not None for r in results)
    pcsc = sum(c.preset.reader == "vpcd" for c in cases)
    note = f"{pcsc} PC/SC presets " + (f"SKIPPED ({skipped}): no pcscd" if skipped else "included")
    return [
        BenchResult(f"whole catalogue: {len(results)} scenarios ({ok} passed)", wall, "s wall", "<= 3 s", wall <= 3.0,
                    note),
        BenchResult("simulated time covered", virtual, "s virtual"),
        BenchResult("virtual-time speed-up", virtual / wall, "x", ">= 1000x", virtual / wall >= 1000),
    ]
