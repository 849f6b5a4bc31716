"""Magstripe swipe synthesis + decode of tracks 1 and 2, as a multiple of real time.

One "swipe" is the whole chain for the demo card: encode both tracks, F2F, the physical
head/front-end/ADC model, peak detection, clock recovery and character decode (0.31 s of card
travel at 10 in/s). The figure is (swipe duration) / (CPU time per swipe): the median over
rounds (process CPU time, so a busy neighbour's time slices do not count), the best round in the
note. The hostile mix (``measure.impaired_params``: damage, EMI, dirt, skew, 3–150 in/s) is shown
for information: those swipes exercise the decoders' sequential fallbacks.

``python -m tests.bench.bench_swipe`` runs this benchmark alone and prints PASS/MISS against the
1,000× target per swipe kind (the hostile mix has no target: INFO).
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from hardware.magstripe import SwipeParams, simulate_swipe
from hardware.magstripe.measure import DEMO_STRIPE, impaired_params
from tests.bench import BenchResult

TARGET = 1000.0
ROUNDS = 9


def _rounds(params: list[SwipeParams], per_round: int) -> list[float]:
    """CPU seconds per swipe, one figure per round (each round swipes ``params`` cyclically)."""
    out = []
    for _ in range(ROUNDS):
        t0 = time.process_time()
        for i in range(per_round):
            simulate_swipe(DEMO_STRIPE, params[i % len(params)])
        out.append((time.process_time() - t0) / per_round)
    return out


def run() -> list[BenchResult]:
    out: list[BenchResult] = []
    cases = [
        ("swipe tracks 1+2, 10 in/s", SwipeParams(speed_ips=10.0, seed=1)),
        ("swipe tracks 1+2, 10 in/s, 1.5° skew, noise 0.01", SwipeParams(speed_ips=10.0, skew_deg=1.5,
                                                                          noise=0.01, seed=2)),
    ]
    for name, params in cases:
        report = simulate_swipe(DEMO_STRIPE, params)
        reads = "both tracks read" if all(t.ok for t in report.result.tracks[:2]) else "A TRACK FAILED"
        transitions = sum(d.transitions for d in report.tracks if d is not None)
        per = _rounds([params], 100)
        cpu = statistics.median(per)
        factor = report.duration_s / cpu
        out.append(BenchResult(
            name=name,
            value=factor,
            unit="× real time",
            target=f">= {TARGET:,.0f}× real time",
            met=factor >= TARGET,
            note=f"median of {ROUNDS} rounds: {cpu * 1e6:.0f} µs per {report.duration_s * 1e3:.0f} ms swipe "
                 f"({transitions} flux transitions, {reads}); best round {report.duration_s / min(per):,.0f}×",
        ))
    rng = random.Random("bench-impaired")
    mix = [impaired_params(rng, i) for i in range(60)]
    duration = statistics.mean(simulate_swipe(DEMO_STRIPE, p).duration_s for p in mix)
    per = _rounds(mix, len(mix))
    out.append(BenchResult(
        name="hostile mix (damage, EMI, dirt, skew, 3–150 in/s), for information",
        value=duration / statistics.median(per),
        unit="× real time",
        note=f"{len(mix)} swipes, mean {duration * 1e3:.0f} ms each, {statistics.median(per) * 1e6:.0f} µs CPU",
    ))
    return out


def main() -> int:
    for r in run():
        verdict = "INFO" if r.met is None else ("PASS" if r.met else "MISS")
        print(f"{verdict:4}  {r.value:9,.0f}{r.unit}  {r.name}\n      {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
