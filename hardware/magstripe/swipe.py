"""The physical swipe: flux transitions on a moving card → what the reader's peak detector sees.

The model works at the level of flux-transition *events*, not ADC samples: for each transition it
computes when it passes the head, the readback pulse it makes there and the peak a sampling peak
detector finds, which is what a magstripe reader ASIC hands to its clock-recovery logic. That
keeps a 0.33 s swipe at ~1,000 events per track instead of ~50,000 samples.

The physics, per transition ``i`` at stripe position ``x_i`` (inches):

* **Motion.** The card moves by ``s(t) = v0 t + a t²/2 + j t³/6`` along the head (speed ``v0``,
  acceleration ``a``, jerk ``j``, times ``cos(skew)`` along the track). ``t_i`` solves
  ``s(t_i) = x_i``; if the speed reaches zero the card has stopped and later transitions never
  arrive.
* **Readback pulse.** An isolated transition gives a Lorentzian pulse (Karlqvist head field, thin
  transition) of spatial width ``PW50 = sqrt(g² + 4(d+a)(d+a+δ))`` (Williams–Comstock: gap
  length ``g``, head–medium spacing ``d``, transition parameter ``a``, coating thickness
  ``δ``). The pulse's area is set by the remanent flux, so its height ∝ 1/PW50; spacing
  therefore costs ``exp(-2πd/λ)`` at each wavelength λ — the Wallace spacing loss, as the
  Lorentzian's spectrum is ``exp(-π·PW50/λ)``. The induced voltage is ``dΦ/dt = v·dΦ/dx``, so
  the height ∝ speed.
* **Front end.** The preamplifier/anti-alias filter is modelled with a Lorentzian impulse
  response of width ``τ = ln√2 / (π f₃dB)``; Lorentzians convolve by adding widths, so in
  stripe coordinates the pulse width becomes ``PW50 + v·τ`` at unchanged area — fast swipes
  widen and flatten the pulses.
* **Skew (azimuth).** A head tilted by θ sees each transition at a spread of positions across its
  read width ``w``: the pulse is smeared by a rectangle of length ``Δ = w·tan θ`` (closed form:
  a difference of arctangents). Its spectrum is the classical azimuth loss
  ``sinc(π w tanθ / λ)``, so the 210 bpi tracks 1 and 3 lose their pulses at a smaller angle
  than 75 bpi track 2. Skew also shifts each track in time by ``y_track·tan θ``.
* **Intersymbol interference.** Pulses of neighbouring transitions (alternating polarity)
  superpose linearly: the four nearest neighbours lower the peak and shift it (first-order
  Newton step on the summed signal), which is what closes the eye at high density, with dirt
  or with skew.
* **Damage.** Demagnetised or scratched regions ``[start, end]`` scale the remanence (and so the
  pulses of the transitions inside) by ``1 - severity``.
* **Noise.** Band-limited Gaussian noise (amplifier floor plus EMI) adds to every peak's height
  and moves its time by ``n'/(A·κ)`` (noise slope over pulse curvature). Where the signal is
  quiet the noise alone crosses the detector threshold ``T`` at the Rice rate
  ``f_rms·exp(-T²/2σ²)`` per polarity, which produces spurious peaks.
* **Sampling.** The ADC samples at a fixed rate; the detector knows a peak only to the nearest
  sample and sees the pulse's value there, so a fast swipe leaves too few samples per bit cell.

Nothing here checks the speed or skew against limits: whether a swipe reads is decided by the
detector and the clock recovery in :mod:`hardware.magstripe.decoder`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from hardware.magstripe.f2f import CARD_LENGTH_IN, f2f_positions, track_origin
from hardware.magstripe.tracks import track_spec
from protocol.errors import ConfigError

UM_PER_IN = 25_400.0
NOMINAL_SPEED_IPS = 10.0
"""Speed at which an undamaged, clean, untilted isolated pulse has height 1.0 (the amplitude unit)."""

TRACK_Y_IN: dict[int, float] = {1: 0.0, 2: 0.110, 3: 0.220}
"""Track centre lines relative to track 1 (ISO/IEC 7811-2: 0.110 in track pitch)."""

MAX_NOISE_PEAKS = 200_000
"""Cap on spurious noise peaks generated per track (a swipe that noisy cannot read anyway)."""


@dataclass(frozen=True, slots=True)
class StripeMedium:
    """The card's magnetic coating (ISO/IEC 7811-2 LoCo/HiCo oxide, typical values)."""

    coating_um: float = 10.0        # δ, magnetic layer thickness
    transition_um: float = 10.0     # a, arctangent transition length of the recorded flux reversal
    jitter: float = 0.01            # σ of recorded transition positions, fraction of a bit cell


@dataclass(frozen=True, slots=True)
class ReaderModel:
    """The reader: head geometry, analogue front end, ADC and the ASIC's detector settings."""

    head_gap_um: float = 15.0       # g, gap length along the track
    head_width_um: float = 1000.0   # w, read width across the track (azimuth smear w·tanθ)
    contact_um: float = 2.0         # spacing of a clean head pressed on the card
    adc_rate_hz: float = 100_000.0
    bandwidth_hz: float = 20_000.0  # front-end −3 dB frequency
    noise_floor: float = 0.005      # amplifier noise σ (units of the nominal pulse height)
    threshold_floor: float = 0.2    # the peak detector's minimum threshold
    threshold_ratio: float = 0.4    # adaptive threshold: fraction of the running peak average
    lock_cells: int = 8             # regular intervals needed to lock the clock
    clock_gain: float = 0.125       # clock filter α: period correction per cell
    clock_trend_gain: float = 0.01  # clock filter β: trend (speed change) correction per cell
    decision: float = 0.75          # interval < decision·T → half cell (a 1)


@dataclass(frozen=True, slots=True)
class Damage:
    """A demagnetised or scratched stretch of the stripe, card coordinates in inches.

    ``severity`` is the fraction of remanence lost: 1.0 erases the region.
    """

    start_in: float
    end_in: float
    severity: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_in) and math.isfinite(self.end_in)) or self.end_in < self.start_in:
            raise ConfigError(f"damage region must be start ≤ end (inches), got {self.start_in}:{self.end_in}")
        if not 0.0 <= self.severity <= 1.0:
            raise ConfigError(f"damage severity must be within 0..1, got {self.severity}")

    @classmethod
    def parse(cls, text: str) -> Damage:
        """``START:END[:SEVERITY]`` in inches, e.g. ``1.2:1.4:0.8``."""
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"damage {text!r}: expected START:END[:SEVERITY] in inches")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(f"damage {text!r}: START, END and SEVERITY must be numbers") from None
        return cls(nums[0], nums[1], nums[2] if len(nums) == 3 else 1.0)


@dataclass(frozen=True, slots=True)
class SwipeParams:
    """One swipe: how the card moves and what stands between stripe and head.

    ``noise`` is the EMI σ in units of the nominal pulse height (a clean 10 in/s pulse is 1.0);
    it adds to the reader's own :attr:`ReaderModel.noise_floor`. ``dirt_um`` lifts the head off
    the stripe. ``seed`` makes the swipe reproducible.
    """

    speed_ips: float = 10.0
    accel_ips2: float = 0.0
    jerk_ips3: float = 0.0
    skew_deg: float = 0.0
    dirt_um: float = 0.0
    noise: float = 0.0
    damage: tuple[Damage, ...] = ()
    reverse: bool = False
    seed: int = 0
    reader: ReaderModel = field(default_factory=ReaderModel)
    medium: StripeMedium = field(default_factory=StripeMedium)

    def __post_init__(self) -> None:
        for name in ("speed_ips", "accel_ips2", "jerk_ips3", "skew_deg", "dirt_um", "noise"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"{name} must be a number, not {type(v).__name__}")
            if not math.isfinite(v):
                raise ConfigError(f"{name} must be finite, got {v}")
        if self.speed_ips <= 0:
            raise ConfigError(f"speed must be positive (in/s), got {self.speed_ips}")
        if not -60.0 <= self.skew_deg <= 60.0:
            raise ConfigError(f"skew must be within ±60°, got {self.skew_deg}")
        if self.dirt_um < 0 or self.noise < 0:
            raise ConfigError("dirt and noise must not be negative")
        if not isinstance(self.damage, tuple) or not all(isinstance(d, Damage) for d in self.damage):
            raise TypeError("damage must be a tuple of Damage")


@dataclass(frozen=True, slots=True)
class HeadSignal:
    """What the head and front end present to one track's peak detector.

    ``arrivals_s``/``speeds_ips`` are the true passage times and speeds of the transitions that
    reached the head. The candidate peaks (sorted by sample) are every local extremum the
    detector could see: transition pulses (``sources[i]`` = transition index) and noise
    (``sources[i] == -1``), with their sampled height and polarity.
    """

    track: int
    transitions: int
    arrivals_s: tuple[float, ...]
    speeds_ips: tuple[float, ...]
    samples: tuple[int, ...]
    heights: tuple[float, ...]
    polarities: tuple[int, ...]
    sources: tuple[int, ...]
    adc_rate_hz: float


# --- motion -----------------------------------------------------------------------------------

def _stop_time(v0: float, a: float, j: float) -> float:
    """First t > 0 where v(t) = v0 + a t + j t²/2 reaches zero (inf if never)."""
    if j == 0.0:
        return -v0 / a if a < 0 else math.inf
    disc = a * a - 2.0 * j * v0
    if disc < 0:
        return math.inf
    r = math.sqrt(disc)
    roots = [t for t in ((-a - r) / j, (-a + r) / j) if t > 0]
    return min(roots) if roots else math.inf


def arrival_times(xs: list[float], v0: float, a: float, j: float) -> tuple[list[float], list[float]]:
    """When each position of the ascending list ``xs`` passes the head, and the speed then.

    Positions beyond where the card stops are left out (the lists may be shorter than ``xs``).
    """
    if a == 0.0 and j == 0.0:
        inv = 1.0 / v0
        return [x * inv for x in xs], [v0] * len(xs)
    t_stop = _stop_time(v0, a, j)
    if t_stop > 1e6:                 # stops after a million seconds: it does not stop on the stripe
        t_stop = math.inf
    s_stop = v0 * t_stop + a * t_stop * t_stop / 2 + j * t_stop ** 3 / 6 if math.isfinite(t_stop) else math.inf
    times: list[float] = []
    speeds: list[float] = []
    t = 0.0
    for x in xs:
        if x >= s_stop:
            break
        lo, hi = t, t_stop
        for _ in range(60):
            s = v0 * t + a * t * t / 2 + j * t * t * t / 6 - x
            v = v0 + a * t + j * t * t / 2
            if s > 0:
                hi = t
            else:
                lo = t
            nt = t - s / v if v > 0 else math.inf
            if not lo <= nt <= hi:
                nt = (lo + hi) / 2 if math.isfinite(hi) else lo * 2 + 1e-3
            if abs(nt - t) < 1e-13:
                t = nt
                break
            t = nt
        times.append(t)
        speeds.append(v0 + a * t + j * t * t / 2)
    return times, speeds


# --- pulse shape ------------------------------------------------------------------------------

def pulse(u: float, w: float, delta: float) -> float:
    """Readback pulse (peak ≈ 1 when ``delta`` = 0) at offset ``u``: a Lorentzian of width ``w``
    smeared over ``delta`` by head skew (closed-form convolution with a rectangle)."""
    if delta < 1e-3 * w:
        z = 2.0 * u / w
        return 1.0 / (1.0 + z * z)
    return (w / (2.0 * delta)) * (math.atan((2.0 * u + delta) / w) - math.atan((2.0 * u - delta) / w))


def pulse_slope(u: float, w: float, delta: float) -> float:
    """d/du of :func:`pulse`."""
    if delta < 1e-3 * w:
        z = 2.0 * u / w
        q = 1.0 + z * z
        return -(4.0 * z / w) / (q * q)
    zp = (2.0 * u + delta) / w
    zm = (2.0 * u - delta) / w
    return (1.0 / (1.0 + zp * zp) - 1.0 / (1.0 + zm * zm)) / delta


def pulse_peak_and_curvature(w: float, delta: float) -> tuple[float, float]:
    """``p(0)`` and ``-p''(0)`` of :func:`pulse`."""
    r = delta / w
    p0 = 1.0 if r < 1e-3 else math.atan(r) / r
    q = 1.0 + r * r
    return p0, 8.0 / (w * w * q * q)


def pw50_in(reader: ReaderModel, medium: StripeMedium, dirt_um: float) -> float:
    """Isolated-pulse width at the head, inches (Williams–Comstock)."""
    d = reader.contact_um + dirt_um
    a = medium.transition_um
    g = reader.head_gap_um
    return math.sqrt(g * g + 4.0 * (d + a) * (d + a + medium.coating_um)) / UM_PER_IN


# --- synthesis --------------------------------------------------------------------------------

def _standard_normals(rng: random.Random, count: int) -> list[float]:
    """``count`` independent N(0, 1) draws from ``rng`` (Box–Muller, two per pair of uniforms)."""
    pairs = (count + 1) // 2
    rand = rng.random
    log = math.log
    sqrt = math.sqrt
    cos = math.cos
    sin = math.sin
    tau = 2.0 * math.pi
    rs = [(sqrt(-2.0 * log(1.0 - rand())), tau * rand()) for _ in range(pairs)]
    out = [r * cos(a) for r, a in rs]
    out += [r * sin(a) for r, a in rs]
    return out[:count] if len(out) > count else out


def synthesize(track: int, bits: list[int], params: SwipeParams, rng: random.Random) -> HeadSignal:
    """The peak-detector input for one track's recorded ``bits`` under ``params``."""
    spec = track_spec(track)
    reader = params.reader
    medium = params.medium
    cell = spec.cell_in

    # Recorded transitions in card coordinates (write jitter included), and damage.
    xs = f2f_positions(bits, spec.bpi, track_origin(spec.clock_zeros, spec.bpi))
    n = len(xs)
    if medium.jitter > 0:
        sj = medium.jitter * cell
        xs = [x + sj * z for x, z in zip(xs, _standard_normals(rng, n), strict=True)]
    gain = [1.0] * n
    for dmg in params.damage:
        keep = 1.0 - dmg.severity
        for i, x in enumerate(xs):
            if dmg.start_in <= x <= dmg.end_in:
                gain[i] *= keep

    # Order of passage and position along the motion.
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

    # Pulse geometry and heights.
    wx = pw50_in(reader, medium, params.dirt_um)
    w_nom = pw50_in(reader, medium, 0.0)
    tau = math.log(math.sqrt(2.0)) / (math.pi * reader.bandwidth_hz)
    delta = reader.head_width_um / UM_PER_IN * abs(tan_skew)
    sigma = math.hypot(reader.noise_floor, params.noise)
    fs = reader.adc_rate_hz
    ts = 1.0 / fs
    slope_noise = math.sqrt(2.0) * sigma / tau        # σ of the noise's time derivative
    phase = rng.random() * ts
    scale = w_nom / NOMINAL_SPEED_IPS

    widths = [wx + v * tau for v in speeds]
    # Signed pulse heights (polarity alternates), padded with two silent neighbours each side.
    sbase = [0.0, 0.0]
    sbase += [(scale if i % 2 == 0 else -scale) * speeds[i] / widths[i] * gain[i] for i in range(m)]
    sbase += [0.0, 0.0]
    far = 1e9
    mpos = [-far, -far, *motion[:m], far, far]
    normals = _standard_normals(rng, 2 * m)

    cands: list[tuple[int, float, int, int]] = []
    emit = cands.append
    ordered = True
    last_k = -(1 << 62)
    geo_w = -1.0
    p0 = kappa = 0.0
    lorentz = True
    for i in range(m):
        b0 = sbase[i + 2]
        ai = b0 if b0 >= 0.0 else -b0
        if ai == 0.0:
            continue
        sign = 1.0 if b0 > 0.0 else -1.0
        w = widths[i]
        if w != geo_w:
            p0, kappa = pulse_peak_and_curvature(w, delta)
            geo_w = w
            lorentz = delta < 1e-3 * w
            w2 = 2.0 / w
        xi = mpos[i + 2]
        g_lo = xi - mpos[i + 1]
        g_hi = mpos[i + 3] - xi
        # Linear superposition of the two neighbours on each side.
        if lorentz:
            z1 = (xi - mpos[i]) * w2
            z2 = g_lo * w2
            z3 = -g_hi * w2
            z4 = (xi - mpos[i + 4]) * w2
            q1 = 1.0 + z1 * z1
            q2 = 1.0 + z2 * z2
            q3 = 1.0 + z3 * z3
            q4 = 1.0 + z4 * z4
            b1 = sbase[i]
            b2 = sbase[i + 1]
            b3 = sbase[i + 3]
            b4 = sbase[i + 4]
            level = ai + sign * (b1 / q1 + b2 / q2 + b3 / q3 + b4 / q4)
            slope = -sign * w2 * 2.0 * (b1 * z1 / (q1 * q1) + b2 * z2 / (q2 * q2)
                                        + b3 * z3 / (q3 * q3) + b4 * z4 / (q4 * q4))
        else:
            level = ai * p0
            slope = 0.0
            for j in (i, i + 1, i + 3, i + 4):
                bj = sbase[j]
                if bj != 0.0:
                    u = xi - mpos[j]
                    level += sign * bj * pulse(u, w, delta)
                    slope += sign * bj * pulse_slope(u, w, delta)
        # The summed signal's peak moves by -y'(x_i)/y''(x_i) (one Newton step), at most ~½ gap.
        dx = slope / (ai * kappa)
        lim = 0.45 * (g_lo if g_lo < g_hi else g_hi)
        if dx > lim:
            dx = lim
        elif dx < -lim:
            dx = -lim
        height = level + sigma * normals[2 * i]
        if height <= 0.0:
            continue
        v = speeds[i]
        # Noise slope over the pulse's curvature in time moves the detected peak.
        half_w = 0.5 * w / v
        dt = slope_noise * p0 / (height * kappa * v * v) * normals[2 * i + 1]
        if dt > half_w:
            dt = half_w
        elif dt < -half_w:
            dt = -half_w
        t_peak = times[i] + dx / v + dt
        k = round((t_peak + phase) * fs)
        off = v * (k * ts - phase - t_peak)
        if lorentz:
            z = off * w2
            seen = height / (1.0 + z * z)
        else:
            seen = height * pulse(off, w, delta) / p0
        emit((k, seen, 1 if sign > 0.0 else -1, i))
        if k < last_k:
            ordered = False
        last_k = k

    # Spurious peaks: band-limited noise crossing the detector's lowest threshold (Rice rate).
    if m:
        thr = reader.threshold_floor
        f_rms = math.sqrt(2.0) / (2.0 * math.pi * tau)
        rate = 2.0 * f_rms * math.exp(-(thr * thr) / (2.0 * sigma * sigma))
        t0 = times[0] - 0.002
        t1 = times[-1] + 0.002
        if rate * (t1 - t0) > 1e-9:
            t = t0 + rng.expovariate(rate)
            extra = 0
            while t < t1 and extra < MAX_NOISE_PEAKS:
                amp = math.sqrt(thr * thr - 2.0 * sigma * sigma * math.log(1.0 - rng.random()))
                emit((round((t + phase) * fs), amp, 1 if rng.random() < 0.5 else -1, -1))
                extra += 1
                ordered = False
                t += rng.expovariate(rate)
    if not ordered:
        cands.sort()
    samples, heights, pols, srcs = zip(*cands, strict=True) if cands else ((), (), (), ())
    return HeadSignal(
        track=track,
        transitions=n,
        arrivals_s=tuple(times),
        speeds_ips=tuple(speeds),
        samples=samples,
        heights=heights,
        polarities=pols,
        sources=srcs,
        adc_rate_hz=fs,
    )
