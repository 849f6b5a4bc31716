"""Magstripe swipe synthesis + decode of tracks 1 and 2, as a multiple of real time.

One "swipe" is the whole chain for the demo card at 10 in/s: encode both tracks, F2F, the physical
head/front-end/ADC model, peak detection, clock recovery and character decode (0.33 s of card
travel). The figure is (swipe duration) / (CPU time per swipe).
"""

from __future__ import annotations

import time

from hardware.magstripe import SwipeParams, simulate_swipe
from hardware.magstripe.measure import DEMO_STRIPE
from tests.bench import BenchResult

TARGET = 1000.0


def _per_swipe(params: SwipeParams, rounds: int) -> tuple[float, float, int]:
    """(seconds of CPU per swipe, swipe duration, flux transitions) — best of three batches."""
    report = simulate_swipe(DEMO_STRIPE, params)
    transitions = sum(d.transitions for d in report.tracks if d is not None)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            simulate_swipe(DEMO_STRIPE, params)
        best = min(best, (time.perf_counter() - t0) / rounds)
    return best, report.duration_s, transitions


def run() -> list[BenchResult]:
    out: list[BenchResult] = []
    cases = [
        ("swipe tracks 1+2, 10 in/s", SwipeParams(speed_ips=10.0, seed=1)),
        ("swipe tracks 1+2, 10 in/s, 1.5° skew, noise 0.01", SwipeParams(speed_ips=10.0, skew_deg=1.5,
                                                                          noise=0.01, seed=1)),
    ]
    for name, params in cases:
        cpu, duration, transitions = _per_swipe(params, 100)
        factor = duration / cpu
        out.append(BenchResult(
            name=name,
            value=factor,
            unit="× real time",
            target=f">= {TARGET:,.0f}× real time",
            met=factor >= TARGET,
            note=f"{cpu * 1e3:.2f} ms per {duration * 1e3:.0f} ms swipe: {transitions} flux transitions "
                 f"at {cpu / transitions * 1e6:.1f} µs each (pure-Python event model)",
        ))
    return out
