"""Stage 2 of the reader ASIC: adaptive F2F clock recovery (:mod:`hardware.magstripe.decoder`).

The clocking zeros ahead of the start sentinel lock the clock; each interval is then a full cell
(a 0) or, with the next one, two half cells (a 1), and the period follows the card's speed through
an α–β filter; an interval that fits neither loses the clock. :func:`recover_bits_reference` is
the rule one interval at a time; :func:`recover_bits` decides exactly as it, fast (see the
decoder's module notes).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from hardware.magstripe._common import _MAX_RESTARTS, _TIE, F64, I64, _Frozen, _ready, _tuple_of
from hardware.magstripe.swipe import ReaderModel


class RecoveredClock(_Frozen):
    """The clock recovery's output. Sample indices refer to the ADC's sample clock.

    ``bits`` (track data: kept out of ``repr``), ``boundaries`` (sample index of each recovered
    bit cell's start, plus the last end) and ``periods`` (the period estimate T in samples after
    each bit) are tuples; ``lock_peak`` is the index in :class:`Peaks` of the first peak of the
    locking run, ``lost_peak`` where the clock was lost (``None`` = clean end). ``bit_array``,
    ``boundary_array`` and ``period_array`` are the same as numpy arrays (boundaries and periods
    are diagnostics: worked out when first asked for).
    """

    __slots__ = ("_bounds", "_cache", "_periods", "bit_array", "lock_peak", "lost_peak", "lost_reason")
    bit_array: npt.NDArray[np.uint8]
    _bounds: Any
    _periods: Any
    lock_peak: int | None
    lost_peak: int | None
    lost_reason: str
    _cache: dict[str, Any]

    def __init__(self, bits: Any, boundaries: Any, periods: Any, lock_peak: int | None, lost_peak: int | None,
                 lost_reason: str = "") -> None:
        setattr_ = object.__setattr__
        setattr_(self, "bit_array", np.asarray(bits, dtype=np.uint8))
        setattr_(self, "_bounds", boundaries if callable(boundaries) else np.asarray(boundaries, dtype=np.int64))
        setattr_(self, "_periods", periods if callable(periods) else np.asarray(periods, dtype=np.float64))
        setattr_(self, "lock_peak", lock_peak)
        setattr_(self, "lost_peak", lost_peak)
        setattr_(self, "lost_reason", lost_reason)
        setattr_(self, "_cache", {})

    @property
    def boundary_array(self) -> I64:
        b = self._cache.get("bounds")
        if b is None:
            b = self._cache["bounds"] = np.asarray(_ready(self._bounds), dtype=np.int64)
        return b

    @property
    def period_array(self) -> F64:
        p = self._cache.get("periods_a")
        if p is None:
            p = self._cache["periods_a"] = np.asarray(_ready(self._periods), dtype=np.float64)
        return p

    @property
    def arrays(self) -> tuple[npt.NDArray[np.uint8], I64, F64]:
        return self.bit_array, self.boundary_array, self.period_array

    @property
    def bits(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "bits", self.bit_array)

    @property
    def boundaries(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "boundaries", self.boundary_array)

    @property
    def periods(self) -> tuple[float, ...]:
        return _tuple_of(self._cache, "periods", self.period_array)

    def _key(self) -> tuple[object, ...]:
        return (self.lock_peak, self.lost_peak, self.lost_reason)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecoveredClock):
            return NotImplemented
        mine: tuple[npt.NDArray[Any], ...] = self.arrays
        theirs: tuple[npt.NDArray[Any], ...] = other.arrays
        return self._key() == other._key() and all(
            np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # the bits are track data
        return (f"RecoveredClock(boundaries={self.boundaries!r}, periods={self.periods!r}, "
                f"lock_peak={self.lock_peak!r}, lost_peak={self.lost_peak!r}, lost_reason={self.lost_reason!r})")


def _acquire(iv: list[int], need: int) -> tuple[int, float]:
    """A run of ``need`` intervals, each within ±25 % of the run's mean so far: (start, period), or (-1, 0)."""
    i = 0
    while i + need <= len(iv):
        total = float(iv[i])
        j = i + 1
        while j < i + need and total > 0:
            mean = total / (j - i)
            if abs(iv[j] - mean) > 0.25 * mean:
                break
            total += iv[j]
            j += 1
        if j == i + need and total > 0:
            return i, total / need
        i = j if j > i + 1 else i + 1
    return -1, 0.0


def _no_lock(samples: int, need: int) -> RecoveredClock:
    why = (f"no run of {need} regular intervals in {samples} peaks" if samples >= 2
           else "no flux transitions")
    return RecoveredClock((), (), (), None, None, f"clock never locked: {why}")


def recover_bits_reference(samples: Any, reader: ReaderModel) -> RecoveredClock:
    """The clock recovery's rule, one interval at a time (what :func:`recover_bits` computes)."""
    samples = [int(s) for s in samples]
    iv = [samples[i + 1] - samples[i] for i in range(len(samples) - 1)]
    need = reader.lock_cells
    start, period = _acquire(iv, need)
    if start < 0:
        return _no_lock(len(samples), need)
    bits = [0] * need
    periods = [period] * need
    _, _, _, lost, reason, _ = _track_steps(iv, start + need, period, 0.0, reader, bits, periods, len(iv),
                                            exact=True)
    return RecoveredClock(bits, _bounds_from(samples, start, need, bits), periods, start, lost, reason)


def _bounds_from(samples: list[int], start: int, need: int, bits: list[int]) -> list[int]:
    """Cell boundaries: the locking run's peaks, then one per bit (two intervals for a 1)."""
    out = samples[start:start + need + 1]
    p = start + need
    for b in bits[need:]:
        p += 2 if b else 1
        out.append(samples[p])
    return out


def _track_steps(iv: list[int], p: int, period: float, trend: float, reader: ReaderModel, bits: list[int],
                 periods: list[float], stop: int, *, exact: bool) -> tuple[int, float, float, int | None, str, bool]:
    """The tracking rule from interval ``p`` until ``stop`` bits have been added or the clock is
    lost or the intervals end: returns (p, period, trend, lost, reason, tie) — ``tie`` when a
    decision fell within the closed form's rounding of its threshold (``exact=False`` only)."""
    alpha = reader.clock_gain
    beta = reader.clock_trend_gain
    dec = reader.decision
    n = len(iv)
    added = 0
    while p < n and added < stop:
        expect = period + trend            # the next cell, predicted from the speed's trend
        d = iv[p]
        if not exact and _near(d, dec * expect, expect):
            return p, period, trend, None, "", True
        if d < dec * expect:
            if p + 1 >= n:
                break                      # the signal ended in mid-cell: nothing more to read
            d2 = iv[p + 1]
            cellw = d + d2
            if not exact and (_near(d2, dec * expect, expect) or _near(cellw, 1.5 * expect, expect)
                              or _near(cellw, 0.5 * expect, expect)):
                return p, period, trend, None, "", True
            if d2 >= dec * expect or cellw > 1.5 * expect or cellw < 0.5 * expect:
                return p, period, trend, p, (f"half cell of {d} samples not followed by a second half "
                                             f"(next interval {d2}, T={expect:.1f})"), False
            bits.append(1)
            p += 2
        elif d <= 1.5 * expect:
            if not exact and _near(d, 1.5 * expect, expect):
                return p, period, trend, None, "", True
            cellw = d
            bits.append(0)
            p += 1
        else:
            if not exact and _near(d, 1.5 * expect, expect):
                return p, period, trend, None, "", True
            return p, period, trend, p, (f"interval of {d} samples is {d / expect:.2f} bit cells "
                                         f"(T={expect:.1f}): transitions missing"), False
        err = cellw - expect
        period = expect + alpha * err
        trend += beta * err
        periods.append(period)
        added += 1
    return p, period, trend, None, "", False


def _near(x: float, threshold: float, scale: float) -> bool:
    return abs(x - threshold) <= _TIE * scale


class _ABFilter:
    """The α–β filter x_m = M·x_{m-1} + b·c_m (x = period, trend; c = measured cell) in closed form.

    With M = V·Λ·V⁻¹ and y = V⁻¹·x, each component follows y_m = λ·y_{m-1} + g·c_m, so
    y_m = λ^m·(y_0 + Σ_{i≤m} g·λ^-i·c_i): a cumulative sum. The tables hold, for m < ``block``,
    ``g·λ^-(m+1)`` and the rows of V times ``λ^(m+1)``, so a run of cells costs a handful of
    array operations (``e_before``: the prediction T + D for cell m, from the state before it).
    A complex-conjugate pair of eigenvalues (the default gains) needs one
    component (x is twice its real part); two real ones need both.
    """

    def __init__(self, alpha: float, beta: float) -> None:
        m = np.array([[1.0 - alpha, 1.0 - alpha], [-beta, 1.0 - beta]])
        lam, v = np.linalg.eig(m)
        lam = lam.astype(np.complex128)
        v = v.astype(np.complex128)
        w = np.linalg.inv(v)
        g = w @ np.array([alpha, beta], dtype=np.complex128)
        mags = np.abs(lam)
        self.usable = bool(abs(lam[0] - lam[1]) > 1e-6 and mags.min() > 0.05 and mags.max() < 1.0
                           and np.linalg.cond(v) < 1e6)
        pair = bool(abs(lam[0].imag) > 1e-12)
        comps = [0] if pair else [0, 1]
        factor = 2.0 if pair else 1.0
        self.block = min(4096, max(16, int(200.0 / -math.log(float(mags.min()))))) if self.usable else 16
        k = np.arange(1, self.block + 1, dtype=np.float64)
        pw = lam[comps][:, None] ** k                       # λ^(m+1)
        self.w = [complex(x) for x in w[comps].ravel()]     # rows of V⁻¹: y0 = w·x
        self.g_inv = g[comps][:, None] / pw                 # g·λ^-(m+1)
        self.p_after = factor * v[0, comps][:, None] * pw   # period after cell m
        self.d_after = factor * v[1, comps][:, None] * pw   # trend after cell m
        self.e_before = factor * (v[0, comps] + v[1, comps])[:, None] * (pw / lam[comps][:, None])  # prediction
        self.gain_start, self.gain_cells = self._gains(alpha, beta) if self.usable else (math.inf, math.inf)
        if pair:                                            # one component: plain vectors
            self.g_inv, self.p_after, self.d_after, self.e_before = (
                self.g_inv[0], self.p_after[0], self.d_after[0], self.e_before[0])

    @staticmethod
    def _gains(alpha: float, beta: float, steps: int = 4096) -> tuple[float, float]:
        """G = max |t_m| and H = Σ |h_k| of the prediction's response to the starting period
        (``t``) and to the cells (``h``): the prediction never leaves c̄ ± (G·|T₀ − c̄| + H·max|c − c̄|)
        for a run started at (T₀, 0). Stepped out as the rule steps (the tail past ``steps`` is
        below 1e-100 for a stable filter), with a little slack for rounding."""
        def predictions(period: float, cells: list[float]) -> list[float]:
            trend = 0.0
            out = []
            for c in cells:
                expect = period + trend
                out.append(expect)
                err = c - expect
                period = expect + alpha * err
                trend += beta * err
            return out

        t = predictions(1.0, [0.0] * steps)
        h = predictions(0.0, [1.0] + [0.0] * (steps - 1))[1:]
        return max(abs(x) for x in t) * 1.001 + 1e-9, sum(abs(x) for x in h) * 1.001 + 1e-9

    def run(self, cells: npt.NDArray[Any], period: float, trend: float) -> tuple[F64, npt.NDArray[Any]]:
        """The prediction before each of ``cells`` and the filter's state after each (for
        :meth:`periods` and :meth:`state`). Runs longer than ``block`` cells are cut: the caller
        continues from the state after the last cell returned."""
        n = min(cells.size, self.block)
        if cells.size > n:
            cells = cells[:n]
        w = self.w
        if self.g_inv.ndim == 1:
            z = self.g_inv[:n] * cells
            after = np.add.accumulate(z)
            after += w[0] * period + w[1] * trend
            z -= after
            return (self.e_before[:n] * z).real * -1.0, after
        y0 = np.array([[w[0] * period + w[1] * trend], [w[2] * period + w[3] * trend]])
        z = self.g_inv[:, :n] * cells
        after = np.add.accumulate(z, axis=1) + y0
        return (self.e_before[:, :n] * (after - z)).real.sum(axis=0), after

    def periods(self, after: npt.NDArray[Any]) -> F64:
        """The period after each cell of a :meth:`run`."""
        n = after.shape[-1]
        if after.ndim == 1:
            one: F64 = (self.p_after[:n] * after).real
            return one
        two: F64 = (self.p_after[:, :n] * after).real.sum(axis=0)
        return two

    def state(self, after: npt.NDArray[Any], m: int) -> tuple[float, float]:
        """(period, trend) after cell ``m`` of a :meth:`run`."""
        if after.ndim == 1:
            y = after[m]
            return float((self.p_after[m] * y).real), float((self.d_after[m] * y).real)
        y2 = after[:, m]
        return float((self.p_after[:, m] * y2).real.sum()), float((self.d_after[:, m] * y2).real.sum())


@functools.lru_cache(maxsize=8)
def _ab_filter(alpha: float, beta: float) -> _ABFilter:
    return _ABFilter(alpha, beta)


def recover_bits(samples: Any, reader: ReaderModel) -> RecoveredClock:
    """Adaptive F2F clock recovery over the accepted peaks' sample indices.

    Decides exactly as :func:`recover_bits_reference`; see the module notes for how.
    """
    s_arr = np.asarray(samples, dtype=np.int64)
    need = reader.lock_cells
    iv_arr = s_arr[1:] - s_arr[:-1]
    n = iv_arr.size
    head = iv_arr[:4 * need + 64].tolist()
    start, period = _acquire(head, need)
    if start < 0 and len(head) < n:
        start, period = _acquire(iv_arr.tolist(), need)
    if start < 0:
        return _no_lock(s_arr.size, need)
    filt = _ab_filter(reader.clock_gain, reader.clock_trend_gain)
    if not filt.usable:
        return recover_bits_reference(s_arr, reader)
    dec = reader.decision
    # Margins: a decision within _TIE·T of its threshold fails the check and goes to the rule.
    half_sel = _half_cell_limits(dec)   # a full cell's interval reaches the first, a half cell's stays under the second
    cell_hi, cell_lo = 1.5 - _TIE, 0.5 + _TIE
    bit_parts: list[npt.NDArray[Any]] = [np.zeros(need, dtype=np.uint8)]
    per_parts: list[Any] = [functools.partial(np.full, need, period)]
    bound_parts: list[I64] = [s_arr[start:start + need + 1]]
    p = start + need
    lock_period = period
    trend = 0.0
    lost: int | None = None
    reason = ""
    restarts = 0
    while p < n:
        # Speculate: classify every remaining interval against the current prediction (with the
        # trend extrapolated over the intervals' time), cut the intervals into bits, run the
        # filter over the cells in closed form, then check each bit's decisions against the rule.
        seg = iv_arr[p:]
        size = seg.size
        expect0 = period + trend
        if trend == 0.0:
            short = seg < dec * expect0
        else:
            short = seg < dec * (expect0 + trend * ((np.cumsum(seg) - seg) * (1.0 / expect0)))
        # A 0 is one interval, a 1 two: an interval opens a bit when the half cells before it
        # (since p) are even in number — when the running count of halves, itself included,
        # has the parity of its own shortness.
        # (``edges``: the openings and the end, found at once with a True past the last interval.)
        mark = np.empty(size + 1, dtype=np.bool_)
        mark[size] = True
        short_u8 = short.view(np.uint8)
        np.equal(np.bitwise_xor.accumulate(short_u8), short_u8, out=mark[:size])
        edges = mark.nonzero()[0]
        opens = edges[:-1]
        if short[opens[-1]] and opens[-1] + 1 >= size:
            edges = opens                              # the last half cell has no partner
            opens = opens[:-1]
        ones = short[opens]
        bounds = s_arr[p:][edges]
        cells = bounds[1:] - bounds[:-1]
        # Whole bits: every 0 one interval and every 1 two, to the end (a 0 always is one interval
        # and a 1 at least two, so when the intervals add up to bits + ones, each 1 is exactly two).
        n_ones = int(np.count_nonzero(ones))
        whole = bool(edges[-1] == size) and size == ones.size + n_ones
        if (trend == 0.0 and whole and 0 < cells.size <= filt.block
                and int(np.count_nonzero(short)) == 2 * n_ones
                and _settled(filt, cells, seg, period, dec)):
            # Every prediction the filter can make here decides each bit the same way: done.
            bit_parts.append(ones)
            per_parts.append(functools.partial(_run_periods, filt, cells, period))
            bound_parts.append(bounds[1:])
            p = n
            break
        d = seg[opens]
        expect, after = filt.run(cells, period, trend)
        if expect.size < cells.size:
            cells, d, ones = cells[:expect.size], d[:expect.size], ones[:expect.size]
        # A 0: its interval reaches ¾ T; a 1: both halves stay under ¾ T; every cell ½ T … 1½ T.
        good = (np.maximum(d, cells - d) < expect * half_sel[ones.view(np.uint8)]) == ones
        good &= cells <= cell_hi * expect
        good &= cells >= cell_lo * expect
        if not whole:
            # a 0 is one interval, a 1 two (over the cells the filter predicted: it may stop short)
            good &= (edges[1:cells.size + 1] - edges[:cells.size]) == ones + 1
        f = cells.size if np.count_nonzero(good) == good.size else int(np.argmin(good))
        if f:
            bit_parts.append(ones[:f])
            per_parts.append(functools.partial(filt.periods, after[..., :f]))
            bound_parts.append(bounds[1:f + 1])
            period, trend = filt.state(after, f - 1)
            p += int(edges[f] - edges[0])
        # One interval left (or none): the rule decides it. Else the speculation failed at bit f: a
        # few steps of the rule itself, then speculate again (after too many restarts, the rule to
        # the end).
        steps = 1 if f == cells.size and p >= n - 1 else 4 if restarts < _MAX_RESTARTS else n
        if p >= n:
            break
        # (Each step takes at most two intervals: a window of 2·steps + 1 decides like the whole.)
        window = iv_arr[p:p + 2 * steps + 1].tolist() if steps < n else iv_arr[p:].tolist()
        bits_l: list[int] = []
        pers_l: list[float] = []
        p0 = p
        q_end, period, trend, lost_at, reason, tie = _track_steps(window, 0, period, trend, reader, bits_l, pers_l,
                                                                  steps, exact=False)
        p = p0 + q_end
        lost = None if lost_at is None else p0 + lost_at
        if tie:
            return recover_bits_reference(s_arr, reader)
        if lost is not None:
            # The decision is the rule's; its message quotes T, so say it with the step-by-step value.
            cells_so_far = np.diff(np.concatenate([bound_parts[0][-1:], *bound_parts[1:],
                                                   s_arr[p0 + np.cumsum(np.array(bits_l, dtype=np.int64) + 1)]]))
            exact_p, exact_t = _stepped_state(cells_so_far.tolist(), lock_period, reader)
            _, _, _, _, reason, _ = _track_steps(iv_arr[lost:lost + 2].tolist(), 0, exact_p, exact_t, reader, [], [],
                                                 1, exact=True)
        if bits_l:
            bit_parts.append(np.array(bits_l, dtype=np.uint8))
            per_parts.append(np.array(pers_l))
            bound_parts.append(s_arr[p0 + np.cumsum(np.array(bits_l, dtype=np.int64) + 1)])
        if lost is not None or len(bits_l) < steps:
            break
        restarts += 1
    return RecoveredClock(np.concatenate(bit_parts).view(np.uint8), functools.partial(np.concatenate, bound_parts),
                          functools.partial(_join_lazy, per_parts), start, lost, reason)


def _stepped_state(cells: list[int], period: float, reader: ReaderModel) -> tuple[float, float]:
    """(period, trend) after ``cells`` from (``period``, 0), summed step by step as the rule does."""
    alpha = reader.clock_gain
    beta = reader.clock_trend_gain
    trend = 0.0
    for c in cells:
        expect = period + trend
        err = c - expect
        period = expect + alpha * err
        trend += beta * err
    return period, trend


def _settled(filt: _ABFilter, cells: I64, seg: I64, period: float, dec: float) -> bool:
    """Whether the rule decides every bit as speculated for *any* prediction the filter can make
    over these cells: the prediction stays within ``c̄ ± (G·|T₀ − c̄| + H·r)`` (``c̄`` the middle
    and ``r`` the half-range of the cells, G and H the filter's gains, :meth:`_ABFilter._gains`),
    and every decision holds, with margin, at both ends of that band. (The speculation classified
    each interval against T₀, inside the band; with no interval between ¾ of the band's bottom and
    ¾ of its top, every half cell is short and every full cell long for any prediction in it.)"""
    cmin = int(np.minimum.reduce(cells))
    cmax = int(np.maximum.reduce(cells))
    mid = 0.5 * (cmin + cmax)
    band = filt.gain_start * abs(period - mid) + filt.gain_cells * 0.5 * (cmax - cmin)
    lo, hi = mid - band, mid + band
    if not (lo > 0.0 and cmax <= (1.5 - _TIE) * lo and cmin >= (0.5 + _TIE) * hi):
        return False
    lo_edge, hi_edge = (dec - _TIE) * lo, (dec + _TIE) * hi
    off = seg - 0.5 * (lo_edge + hi_edge)
    np.abs(off, out=off)
    return int(np.count_nonzero(off <= 0.5 * (hi_edge - lo_edge))) == 0


def _run_periods(filt: _ABFilter, cells: I64, period: float) -> F64:
    parts = []
    trend = 0.0
    for s in range(0, cells.size, filt.block):
        _, after = filt.run(cells[s:s + filt.block], period, trend)
        parts.append(filt.periods(after))
        period, trend = filt.state(after, after.shape[-1] - 1)
    return np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _half_cell_limits(dec: float) -> npt.NDArray[np.float64]:
    a = np.array([dec + _TIE, dec - _TIE])
    a.flags.writeable = False
    return a


def _join_lazy(parts: list[Any]) -> F64:
    return np.concatenate([_ready(x) for x in parts])
