"""The swipe physics one transition at a time: the scalar model the vectorised
:func:`hardware.magstripe.swipe.synthesize` must agree with.

This is the per-transition loop posemu ran before the model was vectorised, changed only to take
its random draws from the same numpy stream in the same order (sampling phase, then recording
jitter, height and time noise, then spurious peaks), so both see identical randomness and any difference is
arithmetic: rounding, ~1e-12 relative.
"""

from __future__ import annotations

import math

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
from hardware.magstripe.tracks import track_spec

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
