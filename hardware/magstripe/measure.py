"""Measurements over many simulated swipes: read rates, tolerated ranges, undetected errors.

These are the procedures behind the figures in ``docs/magstripe.md`` and the tests that check
them. Everything is seeded: the same call gives the same numbers.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hardware.magstripe import SwipeParams, simulate_swipe
from hardware.magstripe.swipe import Damage

DEMO_STRIPE: tuple[str, str, None] = (
    "B9900010000000019^TEST/DEMO^30121010000000000",
    "9900010000000019=30121010000000000",
    None,
)
"""The bundled ``demo`` profile's stripe (test BIN 99, Luhn-valid)."""


@dataclass(frozen=True, slots=True)
class ReadRate:
    """How often each track read back exactly, over ``swipes`` swipes at one setting."""

    value: float
    swipes: int
    ok: tuple[int, ...]          # per track (1, 2, 3): swipes that read OK with the card's data

    def rate(self, track: int) -> float:
        return self.ok[track - 1] / self.swipes if self.swipes else 0.0


def read_rate(stripe: Sequence[str | None], make: Callable[[int], SwipeParams], swipes: int,
              value: float = 0.0) -> ReadRate:
    """Swipe ``swipes`` times with ``make(i)`` parameters; count exact reads per track."""
    ok = [0, 0, 0]
    for i in range(swipes):
        res = simulate_swipe(stripe, make(i)).result
        for n in (1, 2, 3):
            t = res.track(n)
            if stripe[n - 1] is not None and t is not None and t.ok and t.data == stripe[n - 1]:
                ok[n - 1] += 1
    return ReadRate(value, swipes, tuple(ok))


def sweep(stripe: Sequence[str | None], values: Iterable[float],
          setting: Callable[[float, int], SwipeParams], swipes: int) -> list[ReadRate]:
    """Read rates over ``values`` of one setting (``setting(value, seed) -> SwipeParams``)."""
    return [read_rate(stripe, functools.partial(setting, v), swipes, v) for v in values]


def tolerated(rates: Sequence[ReadRate], track: int, around: float) -> tuple[float, float]:
    """The contiguous range of swept values around ``around`` where ``track`` read every time
    (NaNs when ``around`` was not swept or did not read every time)."""
    values = [r.value for r in rates]
    if around not in values:
        return (math.nan, math.nan)
    i = values.index(around)
    if rates[i].rate(track) < 1.0:
        return (math.nan, math.nan)
    lo = hi = i
    while lo > 0 and rates[lo - 1].rate(track) == 1.0:
        lo -= 1
    while hi < len(rates) - 1 and rates[hi + 1].rate(track) == 1.0:
        hi += 1
    return values[lo], values[hi]


def geometric(lo: float, hi: float, steps: int) -> list[float]:
    """``steps`` values from ``lo`` to ``hi``, evenly spaced on a log scale, rounded to 3 digits."""
    r = (hi / lo) ** (1.0 / (steps - 1))
    return [float(f"{lo * r ** k:.3g}") for k in range(steps)]


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Outcome counts of a batch of impaired swipes, per track read."""

    reads: int            # track reads attempted
    correct: int          # OK and equal to the card
    detected: int         # reported as an error (any non-OK status)
    undetected: int       # OK status but data differs from the card: the dangerous case

    @property
    def undetected_rate(self) -> float:
        return self.undetected / self.reads if self.reads else 0.0

    def upper_bound(self, confidence: float = 0.95) -> float:
        """One-sided upper confidence bound of the undetected rate (exact binomial, Clopper–Pearson)."""
        n, k = self.reads, self.undetected
        if n == 0:
            return 1.0
        if k == n:
            return 1.0
        alpha = 1.0 - confidence
        lo, hi = k / n, 1.0
        for _ in range(60):      # bisection on P(X ≤ k; p) = alpha
            mid = (lo + hi) / 2
            if _binom_cdf(k, n, mid) > alpha:
                lo = mid
            else:
                hi = mid
        return hi


def _binom_cdf(k: int, n: int, p: float) -> float:
    total = 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    for i in range(k + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                          + i * log_p + (n - i) * log_q)
    return total


def impaired_params(rng: random.Random, seed: int) -> SwipeParams:
    """A random impaired swipe: damage over the data area, EMI and a handling error (ISO-reasonable
    ranges), drawn from ``rng``."""
    damage = tuple(
        Damage(start, start + rng.uniform(0.005, 0.2), rng.uniform(0.3, 1.0))
        for start in (rng.uniform(0.25, 2.6) for _ in range(rng.randint(0, 3)))
    )
    return SwipeParams(
        speed_ips=rng.uniform(3.0, 150.0),
        accel_ips2=rng.uniform(-20.0, 20.0),
        skew_deg=rng.uniform(-4.0, 4.0),
        dirt_um=rng.uniform(0.0, 25.0),
        noise=rng.uniform(0.0, 0.08),
        damage=damage,
        reverse=rng.random() < 0.25,
        seed=seed,
    )


def count_errors(stripe: Sequence[str | None], swipes: int, seed: int = 0) -> ErrorCount:
    """Swipe ``swipes`` impaired swipes (:func:`impaired_params`) and classify every track read."""
    rng = random.Random(f"posemu.undetected:{seed}")
    reads = correct = detected = undetected = 0
    for i in range(swipes):
        res = simulate_swipe(stripe, impaired_params(rng, seed * 1_000_003 + i)).result
        for n, want in enumerate(stripe, start=1):
            if want is None:
                continue
            t = res.track(n)
            reads += 1
            if t is None or not t.ok:
                detected += 1
            elif t.data == want:
                correct += 1
            else:
                undetected += 1
    return ErrorCount(reads, correct, detected, undetected)
