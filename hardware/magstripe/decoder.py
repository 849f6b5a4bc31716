"""The reader ASIC: peak detection, adaptive F2F clock recovery, then characters.

Three stages, as in magstripe decoder chips:

1. **Peak detector** (:func:`detect_peaks`). A peak counts when its height reaches the threshold
   ``max(floor, ratio × running average of accepted peaks)`` (the running average is the ASIC's
   automatic gain control) and its polarity is the opposite of the last accepted peak — flux
   transitions alternate (ISO/IEC 7811-2, encoding technique), so a second peak of the same polarity belongs
   to the same lobe and only the higher one is kept.
2. **Clock recovery** (:func:`recover_bits`). The clocking zeros ahead of the start sentinel
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

:func:`decode_signal` runs all three and returns the track's :class:`~hardware.ports.TrackRead`
with the :class:`TrackDiagnostics` a UI plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hardware.magstripe.swipe import HeadSignal, ReaderModel
from hardware.magstripe.tracks import read_track, track_spec
from hardware.ports import TrackRead, TrackStatus


@dataclass(frozen=True, slots=True)
class Peaks:
    """The peak detector's output: sample index, height and polarity of each accepted peak."""

    samples: tuple[int, ...]
    heights: tuple[float, ...]
    polarities: tuple[int, ...]
    thresholds: tuple[float, ...]      # the threshold in force when each peak was accepted
    sources: tuple[int, ...]           # the transition each peak came from, -1 = noise


@dataclass(frozen=True, slots=True)
class RecoveredClock:
    """The clock recovery's output. Sample indices refer to the ADC's sample clock."""

    bits: tuple[int, ...] = field(repr=False)  # the recovered bits are track data: kept out of repr
    boundaries: tuple[int, ...]        # sample index of each recovered bit cell's start (+ the last end)
    periods: tuple[float, ...]         # the period estimate T (samples) after each bit
    lock_peak: int | None              # index (in Peaks) of the first peak of the locking run
    lost_peak: int | None              # index (in Peaks) where the clock was lost, None = clean end
    lost_reason: str = ""


@dataclass(frozen=True, slots=True)
class TrackDiagnostics:
    """Everything about one track's read that a UI plots, in one place.

    ``signal_*`` are all the candidate peaks the head presented (transition pulses and noise, the
    ones under threshold included; ``signal_sources`` = transition index or -1 for noise);
    ``peaks`` what the detector accepted; ``clock`` the recovered cells. ``break_sample`` and
    ``break_bit`` locate where decoding broke (``None`` when it did not) and ``break_reason`` says
    why. Sample indices count at ``adc_rate_hz``.
    """

    track: int
    adc_rate_hz: float
    transitions: int
    arrivals_s: tuple[float, ...]
    signal_samples: tuple[int, ...]
    signal_heights: tuple[float, ...]
    signal_polarities: tuple[int, ...]
    signal_sources: tuple[int, ...]
    peaks: Peaks
    clock: RecoveredClock
    break_sample: int | None
    break_bit: int | None
    break_reason: str

    @property
    def noise_peaks(self) -> int:
        """Spurious peaks the noise presented to the detector."""
        return sum(1 for s in self.signal_sources if s < 0)

    @property
    def missed_transitions(self) -> int:
        """Transitions that reached the head but are not among the detector's peaks."""
        return len(self.arrivals_s) - sum(1 for s in self.peaks.sources if s >= 0)


def detect_peaks(signal: HeadSignal, reader: ReaderModel) -> Peaks:
    """Threshold + alternating-polarity peak detection with an adaptive threshold."""
    floor = reader.threshold_floor
    ratio = reader.threshold_ratio
    avg = 0.0
    last = 0
    top = 0.0
    out: list[tuple[int, float, int, float, int]] = []
    for k, h, p, src in zip(signal.samples, signal.heights, signal.polarities, signal.sources, strict=True):
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
        avg = h if avg == 0.0 else avg + (h - avg) * 0.125
    if not out:
        return Peaks((), (), (), (), ())
    ks, hs, ps, ths, srcs = zip(*out, strict=True)
    return Peaks(ks, hs, ps, ths, srcs)


def recover_bits(samples: tuple[int, ...], reader: ReaderModel) -> RecoveredClock:
    """Adaptive F2F clock recovery over the accepted peaks' sample indices."""
    iv = [samples[i + 1] - samples[i] for i in range(len(samples) - 1)]
    need = reader.lock_cells
    # Acquisition: a run of ``need`` intervals, each within ±25 % of the run's mean so far.
    start = -1
    period = 0.0
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
            start = i
            period = total / need
            break
        i = j if j > i + 1 else i + 1
    if start < 0:
        why = (f"no run of {need} regular intervals in {len(samples)} peaks" if len(samples) >= 2
               else "no flux transitions")
        return RecoveredClock((), (), (), None, None, f"clock never locked: {why}")
    bits = [0] * need
    bounds = list(samples[start:start + need + 1])
    periods = [period] * need
    alpha = reader.clock_gain
    beta = reader.clock_trend_gain
    trend = 0.0
    dec = reader.decision
    p = start + need
    lost: int | None = None
    reason = ""
    n = len(iv)
    while p < n:
        expect = period + trend            # the next cell, predicted from the speed's trend
        d = iv[p]
        if d < dec * expect:
            if p + 1 >= n:
                break                      # the signal ended in mid-cell: nothing more to read
            d2 = iv[p + 1]
            cellw = d + d2
            if d2 >= dec * expect or cellw > 1.5 * expect or cellw < 0.5 * expect:
                lost = p
                reason = (f"half cell of {d} samples not followed by a second half "
                          f"(next interval {d2}, T={expect:.1f})")
                break
            bits.append(1)
            p += 2
        elif d <= 1.5 * expect:
            cellw = d
            bits.append(0)
            p += 1
        else:
            lost = p
            reason = f"interval of {d} samples is {d / expect:.2f} bit cells (T={expect:.1f}): transitions missing"
            break
        err = cellw - expect
        period = expect + alpha * err
        trend += beta * err
        bounds.append(samples[p])
        periods.append(period)
    return RecoveredClock(tuple(bits), tuple(bounds), tuple(periods), start, lost, reason)


def decode_signal(signal: HeadSignal, reader: ReaderModel) -> tuple[TrackRead, TrackDiagnostics]:
    """Peaks → bits → characters for one track, with diagnostics."""
    n = signal.track
    spec = track_spec(n)
    peaks = detect_peaks(signal, reader)
    clock = recover_bits(peaks.samples, reader)
    break_sample: int | None = None
    break_bit: int | None = None
    break_reason = ""
    if clock.lock_peak is None:
        status = TrackStatus.NO_DATA if len(peaks.samples) < reader.lock_cells else TrackStatus.CLOCK_LOST
        read = TrackRead(n, status, "", clock.lost_reason)
        break_reason = clock.lost_reason
        if peaks.samples:
            break_sample = peaks.samples[0]
    else:
        read, err = read_track(n, clock.bits)
        if clock.lost_peak is not None:
            lost_bit = len(clock.bits)
            lost_sample = peaks.samples[clock.lost_peak]
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
            if err.pos is not None and err.pos < len(clock.boundaries):
                break_sample = clock.boundaries[err.pos]
            break_reason = read.detail
    diag = TrackDiagnostics(
        track=n,
        adc_rate_hz=signal.adc_rate_hz,
        transitions=signal.transitions,
        arrivals_s=signal.arrivals_s,
        signal_samples=signal.samples,
        signal_heights=signal.heights,
        signal_polarities=signal.polarities,
        signal_sources=signal.sources,
        peaks=peaks,
        clock=clock,
        break_sample=break_sample,
        break_bit=break_bit,
        break_reason=break_reason,
    )
    return read, diag
