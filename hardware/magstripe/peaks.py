"""Stage 1 of the reader ASIC: the peak detector (:mod:`hardware.magstripe.decoder`).

A peak counts when its height reaches ``max(floor, ratio × running average of accepted peaks)``
(the running average is the ASIC's automatic gain control) and its polarity is the opposite of the
last accepted peak — flux transitions alternate (ISO/IEC 7811-2), so a second peak of the same
polarity belongs to the same lobe and only the higher one is kept. :func:`detect_peaks_reference`
is the rule one candidate at a time; :func:`detect_peaks` decides exactly as it, fast (see the
decoder's module notes).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from hardware.magstripe._common import _MAX_RESTARTS, _TIE, F64, I64, _Frozen, _ready, _tuple_of
from hardware.magstripe.swipe import HeadSignal, ReaderModel

_AGC_WEIGHT = 0.125          # the detector's running average: avg ← avg + (h − avg)/8


class Peaks(_Frozen):
    """The peak detector's output: sample index, height and polarity of each accepted peak.

    The fields are tuples of Python numbers made on first access; ``arrays`` holds the same as
    numpy arrays (samples, heights, polarities, thresholds, sources). The thresholds are only for
    display, so when every candidate was accepted they are computed when first asked for.
    """

    __slots__ = ("_cache", "_heights", "_pols", "_thr", "sample_array", "source_array")
    sample_array: I64
    _heights: F64
    _pols: npt.NDArray[np.int8]
    _thr: Any
    source_array: I64
    _cache: dict[str, Any]

    def __init__(self, samples: Any, heights: Any, polarities: Any, thresholds: Any, sources: Any) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "sample_array", np.asarray(samples, dtype=np.int64))
        setattr_(self, "_heights", np.asarray(heights, dtype=np.float64))
        setattr_(self, "_pols", np.asarray(polarities, dtype=np.int8))
        setattr_(self, "_thr", thresholds if callable(thresholds) else np.asarray(thresholds, dtype=np.float64))
        setattr_(self, "source_array", np.asarray(sources, dtype=np.int64))
        setattr_(self, "_cache", {})

    @property
    def arrays(self) -> tuple[I64, F64, npt.NDArray[np.int8], F64, I64]:
        thr = self._cache.get("thr")
        if thr is None:
            thr = self._cache["thr"] = np.asarray(_ready(self._thr), dtype=np.float64)
        return self.sample_array, self._heights, self._pols, thr, self.source_array

    @property
    def samples(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "samples", self.sample_array)

    @property
    def heights(self) -> tuple[float, ...]:
        return _tuple_of(self._cache, "heights", self._heights)

    @property
    def polarities(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "polarities", self._pols)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The threshold in force when each peak was accepted."""
        return _tuple_of(self._cache, "thresholds", self.arrays[3])

    @property
    def sources(self) -> tuple[int, ...]:
        """The transition each peak came from, -1 = noise."""
        return _tuple_of(self._cache, "sources", self.source_array)

    def __len__(self) -> int:
        return int(self.sample_array.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Peaks):
            return NotImplemented
        mine: tuple[npt.NDArray[Any], ...] = self.arrays
        theirs: tuple[npt.NDArray[Any], ...] = other.arrays
        return all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Peaks(samples={self.samples!r}, heights={self.heights!r}, polarities={self.polarities!r}, "
                f"thresholds={self.thresholds!r}, sources={self.sources!r})")


def detect_peaks_reference(signal: HeadSignal, reader: ReaderModel) -> Peaks:
    """The peak detector's rule, one candidate at a time (what :func:`detect_peaks` computes)."""
    floor = reader.threshold_floor
    ratio = reader.threshold_ratio
    avg = 0.0
    last = 0
    top = 0.0
    out: list[tuple[int, float, int, float, int]] = []
    for k, h, p, src in zip(signal.samples.tolist(), signal.heights.tolist(), signal.polarities.tolist(),
                            signal.sources.tolist(), strict=True):
        thr = ratio * avg
        if thr < floor:
            thr = floor
        if h < thr:
            continue
        if p == last:
            if h > top:                    # same lobe: the higher peak is the lobe's peak
                out[-1] = (k, h, p, out[-1][3], src)
                top = h
            continue
        out.append((k, h, p, thr, src))
        last = p
        top = h
        avg = h if avg == 0.0 else avg + (h - avg) * _AGC_WEIGHT
    if not out:
        return Peaks((), (), (), (), ())
    ks, hs, ps, ths, srcs = zip(*out, strict=True)
    return Peaks(ks, hs, ps, ths, srcs)


@functools.lru_cache(maxsize=8)
def _ema_powers(n: int) -> tuple[F64, F64]:
    """``r^(j+1)`` and ``r^-(j+1)`` for j < n, r = 1 − weight (the running average's closed form)."""
    j = np.arange(1, n + 1, dtype=np.float64)
    r = 1.0 - _AGC_WEIGHT
    return r ** j, r ** -j


_EMA_BLOCK = 4096     # r^-4096 ≈ 4e237: the closed form stays inside float64 for a block this long


def _accepted_thresholds(h: F64, floor: float, ratio: float) -> F64:
    """The threshold in force at each candidate when every one of ``h`` is accepted in turn."""
    rpow, rinv = _ema_powers(_EMA_BLOCK)
    out = np.empty(h.size)
    avg = 0.0
    for s in range(0, h.size, _EMA_BLOCK):
        hs = h[s:s + _EMA_BLOCK]
        size = hs.size
        avgs = rpow[:size] * ((avg if avg != 0.0 else float(hs[0])) + _AGC_WEIGHT * np.cumsum(hs * rinv[:size]))
        out[s] = ratio * avg
        out[s + 1:s + size] = ratio * avgs[:-1]
        avg = float(avgs[-1])
    return np.maximum(out, floor)


def detect_peaks(signal: HeadSignal, reader: ReaderModel) -> Peaks:
    """Threshold + alternating-polarity peak detection with an adaptive threshold.

    Decides exactly as :func:`detect_peaks_reference`; see the module notes for how.
    """
    h = signal.heights
    p = signal.polarities
    n = h.size
    floor = reader.threshold_floor
    ratio = reader.threshold_ratio
    if n and (n == 1 or np.count_nonzero(p[1:] != p[:-1]) == n - 1):
        # The running average of accepted heights never exceeds the highest one: when the lowest
        # candidate clears both the floor and ratio × the highest, and the polarities alternate,
        # the rule accepts every candidate.
        hmin = float(np.minimum.reduce(h))
        if hmin > floor * (1.0 + _TIE) and hmin > ratio * float(np.maximum.reduce(h)) * (1.0 + _TIE):
            return Peaks(signal.samples, h, p, functools.partial(_accepted_thresholds, h, floor, ratio),
                         signal.sources)
    rpow, rinv = _ema_powers(_EMA_BLOCK)
    avg = 0.0
    last = 0
    top = 0.0
    idx_parts: list[I64] = []
    thr_parts: list[F64] = []
    s = 0
    restarts = 0
    while s < n:
        if restarts > _MAX_RESTARTS:
            return detect_peaks_reference(signal, reader)
        size = min(n - s, _EMA_BLOCK)
        hs = h[s:s + size]
        ps = p[s:s + size]
        # Speculate: every candidate accepted. Then avg_j = r^(j+1)·(A + w·Σ_{i≤j} r^-(i+1)·h_i).
        start_avg = avg if avg != 0.0 else float(hs[0])
        avgs = rpow[:size] * (start_avg + _AGC_WEIGHT * np.cumsum(hs * rinv[:size]))
        thr = np.empty(size)
        thr[0] = ratio * avg
        np.multiply(avgs[:-1], ratio, out=thr[1:])
        np.maximum(thr, floor, out=thr)
        ok = hs >= thr
        ok[1:] &= ps[1:] != ps[:-1]
        ok[0] &= ps[0] != last
        f = size if np.count_nonzero(ok) == size else int(np.argmin(ok))
        if f:
            if np.any(np.abs(hs[:f] - thr[:f]) <= _TIE * thr[:f]):
                return detect_peaks_reference(signal, reader)
            idx_parts.append(np.arange(s, s + f, dtype=np.int64))
            thr_parts.append(thr[:f])
            avg = float(avgs[f - 1])
            last = int(ps[f - 1])
            top = float(hs[f - 1])
        s += f
        if f < size:
            # The speculation failed at candidate s: one step of the rule itself.
            hi = float(h[s])
            t = max(floor, ratio * avg)
            if abs(hi - t) <= _TIE * t:
                return detect_peaks_reference(signal, reader)
            if hi >= t:
                if int(p[s]) == last:
                    if hi > top:               # same lobe: the higher peak replaces the lobe's peak
                        idx_parts[-1][-1] = s
                        top = hi
                else:
                    idx_parts.append(np.array([s], dtype=np.int64))
                    thr_parts.append(np.array([t]))
                    last = int(p[s])
                    top = hi
                    avg = hi if avg == 0.0 else avg + (hi - avg) * _AGC_WEIGHT
            s += 1
            restarts += 1
    if not idx_parts:
        return Peaks((), (), (), (), ())
    if len(idx_parts) == 1 and idx_parts[0].size == n:
        return Peaks(signal.samples, h, p, thr_parts[0], signal.sources)
    idx = np.concatenate(idx_parts)
    return Peaks(signal.samples[idx], h[idx], p[idx], np.concatenate(thr_parts), signal.sources[idx])
