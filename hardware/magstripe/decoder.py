"""The reader ASIC: peak detection, adaptive F2F clock recovery, then characters.

Three stages, as in magstripe decoder chips:

1. **Peak detector** (:mod:`~hardware.magstripe.peaks`). A peak counts when its height reaches the threshold
   ``max(floor, ratio × running average of accepted peaks)`` (the running average is the ASIC's
   automatic gain control) and its polarity is the opposite of the last accepted peak — flux
   transitions alternate (ISO/IEC 7811-2, encoding technique), so a second peak of the same polarity belongs
   to the same lobe and only the higher one is kept.
2. **Clock recovery** (:mod:`~hardware.magstripe.clock_recovery`). The clocking zeros ahead of the start sentinel
   (ISO/IEC 7811-2, location of the data) give a run of equal intervals; after ``lock_cells`` of them within
   ±25 % the clock is locked with their mean as the bit period ``T``. Each interval is then
   classified: shorter than ``decision × T`` (¾ T) → the first half of a 1, and the next interval
   must be a half cell too, the two adding up to a cell (within ½ T … 1½ T); otherwise a full
   cell, a 0. Insisting that *both* halves are short stops a single late or early peak from
   turning ``10`` into ``01`` — a parity-preserving error that the LRC misses when it strikes two
   equal characters in the same columns (the demo card's run of ``0`` characters on track 1).
   The period follows the card's speed through an α–β (second-order) filter — predicted cell
   ``T + D``, then ``T ← T + D + α·e`` and ``D ← D + β·e`` with ``e`` the measured cell minus
   the prediction — so a card that speeds up or slows down steadily is tracked without lag.
   An interval longer than 1.5 T, or a 1 whose two halves are not two half cells making up one
   cell, loses the clock: the decoder stops there.
3. **Characters** (:func:`hardware.magstripe.tracks.read_track`): start sentinel, parity, end
   sentinel, LRC, both swipe directions.

:func:`decode_signal` (this module) runs all three and returns the track's
:class:`~hardware.ports.TrackRead` with the :class:`TrackDiagnostics` a UI plots. The shared
speculation limits and frozen result objects are :mod:`hardware.magstripe._common`.

**How it runs fast, deciding the same.** Stages 1 and 2 are sequential rules, written out as such
in :func:`~hardware.magstripe.peaks.detect_peaks_reference` and
:func:`~hardware.magstripe.clock_recovery.recover_bits_reference`. Both are linear filters
(the running average, the α–β filter) plus decisions, so the fast paths *speculate* that every
candidate is accepted (every interval classified as the filter's running estimate says),
compute the filter for the whole run in closed form with numpy, and then check every decision
of the speculation against the rule. Up to the first decision that fails they have done exactly
what the sequential rule does; there they take one sequential step and speculate again. Closed
forms round differently from the step-by-step sums (~1e-15 relative), so a decision closer than
1e-9 to its threshold hands the whole track to the reference rule — the decisions are therefore
the reference's, and only the reported thresholds and periods differ, in the last digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardware.magstripe._common import _Frozen, _tuple_of
from hardware.magstripe.clock_recovery import RecoveredClock, recover_bits
from hardware.magstripe.peaks import Peaks, detect_peaks
from hardware.magstripe.swipe import HeadSignal, ReaderModel
from hardware.magstripe.tracks import read_track, track_spec
from hardware.ports import TrackRead, TrackStatus

__all__ = ["TrackDiagnostics", "decode_signal"]


class TrackDiagnostics(_Frozen):
    """Everything about one track's read that a UI plots, in one place.

    ``signal_*`` are all the candidate peaks the head presented (transition pulses and noise, the
    ones under threshold included; ``signal_sources`` = transition index or -1 for noise);
    ``peaks`` what the detector accepted; ``clock`` the recovered cells. ``break_sample`` and
    ``break_bit`` locate where decoding broke (``None`` when it did not) and ``break_reason`` says
    why. Sample indices count at ``adc_rate_hz``. ``arrivals_s`` and ``signal_*`` are tuples made
    on first access from the model's arrays (``signal``).
    """

    __slots__ = (
        "_cache",
        "adc_rate_hz",
        "break_bit",
        "break_reason",
        "break_sample",
        "clock",
        "peaks",
        "signal",
        "track",
        "transitions",
    )
    track: int
    adc_rate_hz: float
    transitions: int
    signal: HeadSignal
    peaks: Peaks
    clock: RecoveredClock
    break_sample: int | None
    break_bit: int | None
    break_reason: str
    _cache: dict[str, Any]

    def __init__(self, *, signal: HeadSignal, peaks: Peaks, clock: RecoveredClock, break_sample: int | None,
                 break_bit: int | None, break_reason: str) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "track", signal.track)
        setattr_(self, "adc_rate_hz", signal.adc_rate_hz)
        setattr_(self, "transitions", signal.transitions)
        setattr_(self, "signal", signal)
        setattr_(self, "peaks", peaks)
        setattr_(self, "clock", clock)
        setattr_(self, "break_sample", break_sample)
        setattr_(self, "break_bit", break_bit)
        setattr_(self, "break_reason", break_reason)
        setattr_(self, "_cache", {})

    @property
    def arrivals_s(self) -> tuple[float, ...]:
        return _tuple_of(self._cache, "arrivals_s", self.signal.arrivals_s)

    @property
    def signal_samples(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "signal_samples", self.signal.samples)

    @property
    def signal_heights(self) -> tuple[float, ...]:
        return _tuple_of(self._cache, "signal_heights", self.signal.heights)

    @property
    def signal_polarities(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "signal_polarities", self.signal.polarities)

    @property
    def signal_sources(self) -> tuple[int, ...]:
        return _tuple_of(self._cache, "signal_sources", self.signal.sources)

    @property
    def noise_peaks(self) -> int:
        """Spurious peaks the noise presented to the detector."""
        return int(np.count_nonzero(self.signal.sources < 0))

    @property
    def missed_transitions(self) -> int:
        """Transitions that reached the head but are not among the detector's peaks."""
        return int(self.signal.arrivals_s.size - np.count_nonzero(self.peaks.source_array >= 0))

    def _key(self) -> tuple[object, ...]:
        return (self.track, self.adc_rate_hz, self.transitions, self.peaks, self.clock, self.break_sample,
                self.break_bit, self.break_reason)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackDiagnostics):
            return NotImplemented
        a, b = self.signal, other.signal
        return self._key() == other._key() and all(
            np.array_equal(x, y) for x, y in ((a.arrivals_s, b.arrivals_s), (a.samples, b.samples),
                                              (a.heights, b.heights), (a.polarities, b.polarities),
                                              (a.sources, b.sources)))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"TrackDiagnostics(track={self.track}, transitions={self.transitions}, "
                f"candidates={self.signal.samples.size}, peaks={len(self.peaks)}, bits={self.clock.bit_array.size}, "
                f"break_sample={self.break_sample!r}, break_bit={self.break_bit!r}, "
                f"break_reason={self.break_reason!r})")


def decode_signal(signal: HeadSignal, reader: ReaderModel) -> tuple[TrackRead, TrackDiagnostics]:
    """Peaks → bits → characters for one track, with diagnostics."""
    n = signal.track
    spec = track_spec(n)
    peaks = detect_peaks(signal, reader)
    peak_samples = peaks.sample_array
    clock = recover_bits(peak_samples, reader)
    break_sample: int | None = None
    break_bit: int | None = None
    break_reason = ""
    if clock.lock_peak is None:
        status = TrackStatus.NO_DATA if peak_samples.size < reader.lock_cells else TrackStatus.CLOCK_LOST
        read = TrackRead(n, status, "", clock.lost_reason)
        break_reason = clock.lost_reason
        if peak_samples.size:
            break_sample = int(peak_samples[0])
    else:
        bits = clock.bit_array
        read, err = read_track(n, bits.tobytes())
        if clock.lost_peak is not None:
            lost_bit = int(bits.size)
            lost_sample = int(peak_samples[clock.lost_peak])
            if not read.ok and (
                read.status in (TrackStatus.NO_START_SENTINEL, TrackStatus.NO_END_SENTINEL)
                or err is None or err.pos is None or err.pos >= lost_bit - 2 * spec.char_bits
            ):
                t_ms = lost_sample / signal.adc_rate_hz * 1e3
                read = TrackRead(n, TrackStatus.CLOCK_LOST, "",
                                 f"clock lost after bit {lost_bit} (t={t_ms:.2f} ms): {clock.lost_reason}")
            if not read.ok:
                break_sample, break_bit, break_reason = lost_sample, lost_bit, clock.lost_reason
        if not read.ok and break_reason == "" and err is not None:
            break_bit = err.pos
            bounds = clock.boundary_array
            if err.pos is not None and err.pos < bounds.size:
                break_sample = int(bounds[err.pos])
            break_reason = read.detail
    diag = TrackDiagnostics(signal=signal, peaks=peaks, clock=clock, break_sample=break_sample,
                            break_bit=break_bit, break_reason=break_reason)
    return read, diag
