"""Scalar references for the vectorised magstripe code.

:func:`synthesize_scalar` is the swipe physics one transition at a time: the scalar model the
vectorised :func:`hardware.magstripe.swipe.synthesize_tracks` must agree with.

This is the per-transition loop posemu ran before the model was vectorised, changed only to take
its random draws from the same numpy stream in the same order (sampling phase, then recording
jitter, height and time noise, then spurious peaks), so both see identical randomness and any difference is
arithmetic: rounding, ~1e-12 relative.

:func:`read_track_reference` is the character decoder as a loop over one character at a time on a
list of bits (the way :func:`hardware.magstripe.tracks.read_track` decoded before it looked the
characters up in bulk); both must give the same read, error, position and partial data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hardware.magstripe.f2f import CARD_LENGTH_IN, f2f_positions, track_origin
from hardware.magstripe.swipe import (
    NOMINAL_SPEED_IPS,
    TRACK_Y_IN,
    UM_PER_IN,
    SwipeParams,
    arrival_times,
    noise_peak_times,
    pulse,
    pulse_peak_and_curvature,
    pulse_slope,
    pw50_in,
)
from hardware.magstripe.tracks import TrackSpec, _Attempt, _char_bits, _Direction, _pick, status_for, track_spec
from hardware.ports import TrackRead, TrackStatus
from protocol.errors import DecodeError

Candidate = tuple[int, float, int, int]


def synthesize_scalar(track: int, bits: list[int], params: SwipeParams,
                      rng: np.random.Generator) -> tuple[list[float], list[Candidate]]:
    """(arrival times, candidate peaks sorted as the detector sees them) for one track."""
    spec = track_spec(track)
    reader = params.reader
    medium = params.medium
    cell = spec.cell_in
    xs = f2f_positions(bits, spec.bpi, track_origin(spec.clock_zeros, spec.bpi))
    n = len(xs)
    fs = reader.adc_rate_hz
    ts = 1.0 / fs
    phase = rng.random() * ts
    jitter, noise_h, noise_t = rng.standard_normal((3, n)).tolist()
    if medium.jitter > 0:
        sj = medium.jitter * cell
        xs = [x + sj * z for x, z in zip(xs, jitter, strict=True)]
    gain = [1.0] * n
    for dmg in params.damage:
        keep = 1.0 - dmg.severity
        for i, x in enumerate(xs):
            if dmg.start_in <= x <= dmg.end_in:
                gain[i] *= keep
    tan_skew = math.tan(math.radians(params.skew_deg))
    cos_skew = math.cos(math.radians(params.skew_deg))
    shift = (TRACK_Y_IN[track] - TRACK_Y_IN[2]) * tan_skew + TRACK_Y_IN[2] * abs(tan_skew)
    if params.reverse:
        motion = [CARD_LENGTH_IN - x + shift for x in reversed(xs)]
        gain.reverse()
    else:
        motion = [x + shift for x in xs]
    times, speeds = arrival_times(
        motion, params.speed_ips * cos_skew, params.accel_ips2 * cos_skew, params.jerk_ips3 * cos_skew
    )
    m = len(times)
    if m == 0:
        return [], []
    wx = pw50_in(reader, medium, params.dirt_um)
    w_nom = pw50_in(reader, medium, 0.0)
    tau = math.log(math.sqrt(2.0)) / (math.pi * reader.bandwidth_hz)
    delta = reader.head_width_um / UM_PER_IN * abs(tan_skew)
    sigma = math.hypot(reader.noise_floor, params.noise)
    slope_noise = math.sqrt(2.0) * sigma / tau
    scale = w_nom / NOMINAL_SPEED_IPS
    widths = [wx + v * tau for v in speeds]
    sbase = [0.0, 0.0]
    sbase += [(scale if i % 2 == 0 else -scale) * speeds[i] / widths[i] * gain[i] for i in range(m)]
    sbase += [0.0, 0.0]
    far = 1e9
    mpos = [-far, -far, *motion[:m], far, far]
    cands: list[Candidate] = []
    ordered = True
    last_k = -(1 << 62)
    for i in range(m):
        b0 = sbase[i + 2]
        ai = abs(b0)
        if ai == 0.0:
            continue
        sign = 1.0 if b0 > 0.0 else -1.0
        w = widths[i]
        p0, kappa = pulse_peak_and_curvature(w, delta)
        xi = mpos[i + 2]
        g_lo = xi - mpos[i + 1]
        g_hi = mpos[i + 3] - xi
        level = ai * p0
        slope = 0.0
        for j in (i, i + 1, i + 3, i + 4):
            bj = sbase[j]
            if bj != 0.0:
                u = xi - mpos[j]
                level += sign * bj * pulse(u, w, delta)
                slope += sign * bj * pulse_slope(u, w, delta)
        dx = slope / (ai * kappa)
        lim = 0.45 * min(g_lo, g_hi)
        dx = max(-lim, min(lim, dx))
        height = level + sigma * noise_h[i]
        if height <= 0.0:
            continue
        v = speeds[i]
        half_w = 0.5 * w / v
        dt = slope_noise * p0 / (height * kappa * v * v) * noise_t[i]
        dt = max(-half_w, min(half_w, dt))
        t_peak = (times[i] + phase) + dx / v + dt        # on the ADC's clock
        k = round(t_peak * fs)
        off = v * (k * ts - t_peak)
        seen = height * pulse(off, w, delta) / p0
        cands.append((k, seen, 1 if sign > 0.0 else -1, i))
        if k < last_k:
            ordered = False
        last_k = k
    thr = reader.threshold_floor
    f_rms = math.sqrt(2.0) / (2.0 * math.pi * tau)
    rate = 2.0 * f_rms * math.exp(-(thr * thr) / (2.0 * sigma * sigma))
    t0 = times[0] - 0.002
    t1 = times[-1] + 0.002
    if rate * (t1 - t0) > 1e-9:
        nt = noise_peak_times(rng, rate, t0, t1).tolist()
        if nt:
            u01 = rng.random((2, len(nt))).tolist()
            for t, ua, up in zip(nt, u01[0], u01[1], strict=True):
                amp = math.sqrt(thr * thr - 2.0 * sigma * sigma * math.log(1.0 - ua))
                cands.append((round((t + phase) * fs), amp, 1 if up < 0.5 else -1, -1))
                ordered = False
    if not ordered:
        cands.sort()
    return times, cands


# --- the character decoder, one character at a time ----------------------------------------------

def _find_ss(bits: list[int], pattern: list[int]) -> int:
    """First offset where the start-sentinel pattern (parity included) follows ≥4 zeros or the start.

    Readers frame on the start sentinel after the clocking zeros (ISO/IEC 7811-2, location of the data); demanding
    preceding zeros keeps a missed sentinel from being "found" inside the data.
    """
    w = len(pattern)
    zeros = 0
    i = 0
    last = len(bits) - w
    while i <= last:
        if bits[i] == 1:
            if (zeros >= 4 or zeros == i) and bits[i:i + w] == pattern:
                return i
            zeros = 0
        else:
            zeros += 1
        i += 1
    return -1


def _decode_direction(spec: TrackSpec, bits: list[int], direction: _Direction, total: int) -> _Attempt:
    n = spec.number
    name = f"track{n}"

    def pos_of(i: int) -> int:
        return i if direction is _Direction.FORWARD else total - 1 - i

    cb = spec.char_bits
    db = spec.data_bits
    if 1 not in bits:
        err = DecodeError("no data: no 1 bits on the track", field=f"{name}.bits")
        return _Attempt(direction, err, -1)
    ss_val = ord(spec.ss) - spec.offset
    es_val = ord(spec.es) - spec.offset
    start = _find_ss(bits, _char_bits(ss_val, db))
    if start < 0:
        first_one = bits.index(1)
        err = DecodeError("no start sentinel after the clocking zeros", field=f"{name}.ss",
                          pos=pos_of(first_one), partial={"direction": direction.value})
        return _Attempt(direction, err, 0)
    clean = start == bits.index(1)
    acc = ss_val
    chars: list[str] = []
    i = start + cb
    index = 1
    while True:
        if index >= spec.max_chars - 1 or i + cb > len(bits):
            why = "bits ran out" if i + cb > len(bits) else f"{spec.max_chars - 2} characters read"
            err = DecodeError(f"no end sentinel ({why})", field=f"{name}.es", pos=pos_of(min(i, total - 1)),
                              partial={"data": "".join(chars), "direction": direction.value})
            return _Attempt(direction, err, index, clean)
        word = bits[i:i + cb]
        if sum(word) & 1 == 0:
            err = DecodeError(f"parity error at character {index}", field=f"{name}.char[{index}].parity",
                              pos=pos_of(i), partial={"data": "".join(chars), "direction": direction.value})
            return _Attempt(direction, err, index, clean)
        v = 0
        for k in range(db):
            v |= word[k] << k
        acc ^= v
        i += cb
        index += 1
        if v == es_val:
            break
        chars.append(chr(spec.offset + v))
    data = "".join(chars)
    if i + cb > len(bits):
        err = DecodeError("no LRC character after the end sentinel (bits ran out)", field=f"{name}.lrc",
                          pos=pos_of(min(i, total - 1)), partial={"data": data, "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    word = bits[i:i + cb]
    if sum(word) & 1 == 0:
        err = DecodeError("parity error in the LRC character", field=f"{name}.lrc.parity", pos=pos_of(i),
                          partial={"data": data, "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    v = 0
    for k in range(db):
        v |= word[k] << k
    if v != acc:
        err = DecodeError(f"LRC mismatch (read {v:#x}, computed {acc:#x})", field=f"{name}.lrc", pos=pos_of(i),
                          partial={"data": data, "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    return _Attempt(direction, data, index + 1, clean, i + cb)



def read_track_reference(n: int, bits: Sequence[int]) -> tuple[TrackRead, DecodeError | None]:
    """What :func:`hardware.magstripe.tracks.read_track` returns, decoded character by character."""
    spec = track_spec(n)
    seq = [int(b) for b in bits]
    fwd = _decode_direction(spec, seq, _Direction.FORWARD, len(seq))
    rev = None
    if not (fwd.ok and 1 not in seq[fwd.end:]):
        rev = _decode_direction(spec, seq[::-1], _Direction.REVERSE, len(seq))
    best = _pick(fwd, rev)
    outcome = best.outcome
    if isinstance(outcome, str):
        detail = "read in reverse (card swiped the other way round)" if best.direction is _Direction.REVERSE else ""
        return TrackRead(n, TrackStatus.OK, outcome, detail), None
    where = f" at bit {outcome.pos}" if outcome.pos is not None else ""
    rev_note = " (reversed)" if best.direction is _Direction.REVERSE else ""
    return TrackRead(n, status_for(outcome), "", f"{outcome.msg}{where}{rev_note} [{outcome.field}]"), outcome
