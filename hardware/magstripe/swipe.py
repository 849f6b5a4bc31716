"""The physical swipe: flux transitions on a moving card → what the reader's peak detector sees.

The model works at the level of flux-transition *events*, not ADC samples: for each transition it
computes when it passes the head, the readback pulse it makes there and the peak a sampling peak
detector finds, which is what a magstripe reader ASIC hands to its clock-recovery logic. That
keeps a 0.33 s swipe at ~1,000 events per track instead of ~50,000 samples. Every event is
independent of the others given the recorded positions, so the formulas below are evaluated for
all transitions of a track at once (numpy arrays, one expression per formula).

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

import dataclasses
import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from hardware.magstripe.f2f import CARD_LENGTH_IN, f2f_array, track_origin
from hardware.magstripe.tracks import track_spec
from protocol.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

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


SWIPE_HABITS = ("speed_ips", "accel_ips2", "skew_deg", "dirt_um", "noise")
"""The parameters of a swipe a cardholder's habits set (fault plans give them by these names)."""


def swipe_params(habits: Mapping[str, float | int], base: SwipeParams | None = None, *,
                 seed: int | None = None) -> SwipeParams:
    """``base`` (default :class:`SwipeParams`) with the cardholder's habits over it: the one place a
    swipe is set up from habits (the regression runner's scripted cardholder, the UI's card slot).

    >>> p = swipe_params({"speed_ips": 40, "noise": 0.5, "pulls_card_at": 1}, seed=3)
    >>> (p.speed_ips, p.noise, p.skew_deg, p.seed)
    (40.0, 0.5, 0.0, 3)
    """
    changes: dict[str, Any] = {k: float(v) for k, v in habits.items() if k in SWIPE_HABITS}
    if seed is not None:
        changes["seed"] = seed
    return dataclasses.replace(base or SwipeParams(), **changes)


class HeadSignal(NamedTuple):
    """What the head and front end present to one track's peak detector.

    ``arrivals_s``/``speeds_ips`` are the true passage times and speeds of the transitions that
    reached the head. The candidate peaks (sorted by sample) are every local extremum the
    detector could see: transition pulses (``sources[i]`` = transition index) and noise
    (``sources[i] == -1``), with their sampled height and polarity. Arrays, one entry per
    transition or candidate.
    """

    track: int
    transitions: int
    arrivals_s: F64
    speeds_ips: F64 | float   # one float when the speed is constant
    samples: I64
    heights: F64
    polarities: npt.NDArray[np.int8]
    sources: I64
    adc_rate_hz: float


# --- motion -----------------------------------------------------------------------------------

def _stop_time(v0: float, a: float, j: float) -> float:
    """First t > 0 where v(t) = v0 + a t + j t²/2 reaches zero (inf if never)."""
    if j == 0.0:
        return -v0 / a if a < 0 else math.inf
    disc = a * a - 2.0 * j * v0
    if disc < 0:
        return math.inf
    # The roots of (j/2) t² + a t + v0, in the form without cancellation (a tiny jerk beside a
    # braking card must still give the braking stop near -v0/a, not 0 and 2|a|/j).
    q = -0.5 * (a + math.copysign(math.sqrt(disc), a))
    roots = [t for t in ((2.0 * q / j) if q != 0.0 else math.inf, (v0 / q) if q != 0.0 else math.inf)
             if 0 < t < math.inf]
    return min(roots) if roots else math.inf


def arrival_times(xs: list[float], v0: float, a: float, j: float) -> tuple[list[float], list[float]]:
    """When each position of the ascending list ``xs`` passes the head, and the speed then.

    Positions beyond where the card stops are left out (the lists may be shorter than ``xs``).
    """
    times, speeds = _arrivals(np.asarray(xs, dtype=np.float64), v0, a, j)
    return times.tolist(), np.broadcast_to(speeds, times.shape).tolist()


def _arrivals(xs: F64, v0: float, a: float, j: float) -> tuple[F64, F64 | float]:
    """:func:`arrival_times` on an array; the speed is a plain float when it is constant."""
    if a == 0.0 and j == 0.0:
        return xs * (1.0 / v0), v0
    t_stop = _stop_time(v0, a, j)
    if t_stop > 1e6:                 # stops after a million seconds: it does not stop on the stripe
        t_stop = math.inf
    if math.isfinite(t_stop):
        s_stop = v0 * t_stop + a * t_stop * t_stop / 2 + j * t_stop ** 3 / 6
        beyond = xs >= s_stop
        if _any(beyond):
            xs = xs[:int(np.argmax(beyond))]
    if j == 0.0:
        # s(t) = x: the root where the card first gets there, in the form without cancellation.
        t = 2.0 * xs / (v0 + np.sqrt(np.maximum(v0 * v0 + 2.0 * a * xs, 0.0)))
    else:
        t = _newton_arrivals(xs, v0, a, j, t_stop)
    v = v0 + a * t + j * t * t / 2
    # A card creeping to a stop may leave the last positions unreachable in floating point:
    # they are not passed (never a NaN time or a non-positive speed downstream).
    ok = np.isfinite(t) & (v > 0.0)
    if not bool(_all(ok)):
        m = int(np.argmin(ok))
        t, v = t[:m], v[:m]
    return t, v


def _newton_arrivals(xs: F64, v0: float, a: float, j: float, t_stop: float) -> F64:
    """Safeguarded Newton on s(t) - x for every x at once (bisection when a step leaves the bracket)."""
    disc = np.maximum(v0 * v0 + 2.0 * a * xs, 0.0)
    t = 2.0 * xs / (v0 + np.sqrt(disc))          # the constant-acceleration solution as the start
    lo = np.zeros_like(xs)
    hi = np.full_like(xs, t_stop)
    t = np.minimum(t, hi)
    for _ in range(60):
        s = v0 * t + a * t * t / 2 + j * t * t * t / 6 - xs
        v = v0 + a * t + j * t * t / 2
        over = s > 0
        hi = np.where(over, t, hi)
        lo = np.where(over, lo, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            nt = np.where(v > 0, t - s / v, np.inf)
        out = ~((lo <= nt) & (nt <= hi))
        if _any(out):
            nt = np.where(out, np.where(np.isfinite(hi), (lo + hi) / 2, lo * 2 + 1e-3), nt)
        done = bool(np.all(np.abs(nt - t) < 1e-13))
        t = nt
        if done:
            break
    return t


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


def _smeared_pulse(u: F64, w: F64 | float, delta: float) -> F64:
    """:func:`pulse` for ``delta ≥ 1e-3 w`` (the arctangent form), on arrays."""
    # (both arctangent arguments in one 2-row array: one call each for the division and arctan)
    two_u = 2.0 * u
    args = np.empty((2, u.size))
    np.add(two_u, delta, out=args[0])
    np.subtract(two_u, delta, out=args[1])
    args /= w
    np.arctan(args, out=args)
    np.subtract(args[0], args[1], out=two_u)
    return (w / (2.0 * delta)) * two_u


def pw50_in(reader: ReaderModel, medium: StripeMedium, dirt_um: float) -> float:
    """Isolated-pulse width at the head, inches (Williams–Comstock)."""
    d = reader.contact_um + dirt_um
    a = medium.transition_um
    g = reader.head_gap_um
    return math.sqrt(g * g + 4.0 * (d + a) * (d + a + medium.coating_um)) / UM_PER_IN


# --- synthesis --------------------------------------------------------------------------------

def noise_peak_times(rng: np.random.Generator, rate: float, t0: float, t1: float) -> F64:
    """Arrival times of a Poisson process of ``rate`` on ``[t0, t1)`` (at most :data:`MAX_NOISE_PEAKS`):
    exponential gaps drawn in batches, cut at ``t1``."""
    expected = rate * (t1 - t0)
    parts: list[F64] = []
    t = t0
    count = 0
    while count < MAX_NOISE_PEAKS:
        batch = int(min(MAX_NOISE_PEAKS, expected + 6.0 * math.sqrt(expected) + 16))
        ts = t + np.cumsum(rng.exponential(1.0 / rate, batch))
        inside = int(np.searchsorted(ts, t1))
        parts.append(ts[:inside])
        count += inside
        if inside < batch:
            break
        t = float(ts[-1])
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return out[:MAX_NOISE_PEAKS]


@functools.lru_cache(maxsize=256)
def recorded_positions(track: int, data: str) -> F64:
    """Where the flux transitions of ``data`` sit on ``track`` (inches from the leading edge),
    before write jitter: a card's recording is fixed, so this is computed once per content.
    The array is read-only. Raises :class:`~protocol.errors.EncodeError` for data the track cannot hold."""
    from hardware.magstripe.tracks import encode_array

    spec = track_spec(track)
    xs = f2f_array(encode_array(track, data), spec.bpi, track_origin(spec.clock_zeros, spec.bpi))
    xs.flags.writeable = False
    return xs


class _Layout(NamedTuple):
    """Tracks of ``counts`` transitions one after another, each between two silent neighbours on
    either side (``padded`` slots in all). The model works on every slot but the outer two on
    each end (``span`` = padded − 4): a track's transitions are ``starts[t] … starts[t] + counts[t]``
    there, the slots in between are padding."""

    starts: tuple[int, ...]
    padded: int
    sign: F64            # polarity of each transition (alternating from + per track), 0 on padding
    padding: F64         # 1.0 on padding slots, 0.0 on transitions
    boundary: npt.NDArray[np.bool_]   # True where slot i or i + 1 is padding (order checks skip those)
    polarities: npt.NDArray[np.int8]  # ``sign`` as the detector's polarities
    far: F64             # positions of all ``padded`` slots: −far before each track, +far after (to fill in)


@functools.lru_cache(maxsize=64)
def _layout(counts: tuple[int, ...]) -> _Layout:
    padded = sum(counts) + 4 * len(counts)
    span = padded - 4
    sign = np.zeros(span)
    padding = np.ones(span)
    starts = []
    at = 0
    for m in counts:
        starts.append(at)
        sign[at:at + m:2] = 1.0
        sign[at + 1:at + m:2] = -1.0
        padding[at:at + m] = 0.0
        at += m + 4
    pad = padding != 0.0
    boundary = pad[1:] | pad[:-1]
    far = np.full(padded, _FAR)
    for e in starts:
        far[e:e + 2] = -_FAR
    polarities = sign.astype(np.int8)
    for arr in (sign, padding, boundary, polarities, far):
        arr.flags.writeable = False
    return _Layout(tuple(starts), padded, sign, padding, boundary, polarities, far)


_FAR = 1e9       # (inches) where the silent neighbours of a track sit


def _all(a: npt.NDArray[np.bool_]) -> bool:
    """``a.all()`` for a boolean array (counting is about twice as fast as ndarray.all here)."""
    return int(np.count_nonzero(a)) == a.size


def _any(a: npt.NDArray[np.bool_]) -> bool:
    """``a.any()`` for a boolean array, likewise."""
    return int(np.count_nonzero(a)) != 0


_NEIGHBOURS = np.array([0, 1, 3, 4])   # in a window of five slots centred on index 2


def _windows(a: F64) -> F64:
    """Rows: ``a`` shifted by −2, −1, +1, +2 against ``a[2:-2]`` (the four neighbours of each slot)."""
    view: F64 = np.ndarray((5, a.size - 4), dtype=np.float64, buffer=a, strides=(8, 8))
    rows: F64 = view[_NEIGHBOURS]
    return rows


class _RngPool(threading.local):
    def __init__(self) -> None:
        self.gens = [np.random.Generator(np.random.PCG64(0)) for _ in range(4)]


_POOL = _RngPool()


@functools.lru_cache(maxsize=4096)
def _pcg64_state(key: bytes) -> dict[str, Any]:
    return {"bit_generator": "PCG64",
            "state": {"state": int.from_bytes(key[:16], "big"), "inc": int.from_bytes(key[16:32], "big") | 1},
            "has_uint32": 0, "uinteger": 0}


def seeded_rng(key: bytes, slot: int = 0) -> np.random.Generator:
    """A generator whose PCG64 state and increment come from the 32-byte ``key`` (a hash).

    The same key gives the same stream. Building a PCG64 costs ~9 µs, so each thread keeps one
    per ``slot`` (0–3) and sets its state: the generator is valid until the next call for the
    same slot in the same thread.
    """
    gen = _POOL.gens[slot]
    gen.bit_generator.state = _pcg64_state(key)
    return gen


class _Constants(NamedTuple):
    """What a swipe's reader, medium, skew, dirt and noise fix (the same for many swipes)."""

    tan_skew: float
    cos_skew: float
    wx: float                 # isolated-pulse width with the dirt
    scale: float              # pulse height per speed/width (amplitude unit at the nominal speed)
    tau: float                # front-end impulse-response width, seconds
    delta: float              # azimuth smear, inches
    sigma: float              # noise σ
    slope_noise: float        # σ of the noise's time derivative
    noise_rate: float         # spurious peaks per second (Rice rate, both polarities)
    shifts: Mapping[int, float]   # per track: time shift by skew, as a position (inches)


@functools.lru_cache(maxsize=256)
def _constants(reader: ReaderModel, medium: StripeMedium, skew_deg: float, dirt_um: float,
               noise: float) -> _Constants:
    tan_skew = math.tan(math.radians(skew_deg))
    cos_skew = math.cos(math.radians(skew_deg))
    w_nom = pw50_in(reader, medium, 0.0)
    tau = math.log(math.sqrt(2.0)) / (math.pi * reader.bandwidth_hz)
    sigma = math.hypot(reader.noise_floor, noise)
    thr = reader.threshold_floor
    return _Constants(
        tan_skew=tan_skew,
        cos_skew=cos_skew,
        wx=pw50_in(reader, medium, dirt_um),
        scale=w_nom / NOMINAL_SPEED_IPS,
        tau=tau,
        delta=reader.head_width_um / UM_PER_IN * abs(tan_skew),
        sigma=sigma,
        slope_noise=math.sqrt(2.0) * sigma / tau,
        noise_rate=2.0 * (math.sqrt(2.0) / (2.0 * math.pi * tau)) * math.exp(-(thr * thr) / (2.0 * sigma * sigma)),
        shifts={t: (y - TRACK_Y_IN[2]) * tan_skew + TRACK_Y_IN[2] * abs(tan_skew) for t, y in TRACK_Y_IN.items()},
    )


_CELL_IN = {n: track_spec(n).cell_in for n in TRACK_Y_IN}


def synthesize_tracks(jobs: Sequence[tuple[int, F64, np.random.Generator]], params: SwipeParams) -> list[HeadSignal]:
    """The peak-detector input of each ``(track, recorded positions, random stream)`` under ``params``.

    The tracks share the motion and the head, so their transitions are evaluated together.
    Each track draws from its own stream, in this order: the sampling phase (one uniform), three
    normals per transition (recording jitter, height noise, time noise), then its spurious noise
    peaks (:func:`noise_peak_times`, then one uniform each for amplitude and polarity).
    """
    reader = params.reader
    medium = params.medium
    c = _constants(reader, medium, params.skew_deg, params.dirt_um, params.noise)
    cos_skew = c.cos_skew
    v0 = params.speed_ips * cos_skew
    acc = params.accel_ips2 * cos_skew
    jerk = params.jerk_ips3 * cos_skew
    wx = c.wx
    tau = c.tau
    delta = c.delta
    sigma = c.sigma
    fs = reader.adc_rate_hz
    ts = 1.0 / fs
    slope_noise = c.slope_noise
    scale = c.scale

    # Per track: recorded transitions (write jitter, damage), order of passage, arrival, draws.
    motions: list[F64] = []
    times_l: list[F64] = []
    speeds_l: list[F64 | float] = []
    gains: list[F64 | None] = []
    noises: list[F64] = []
    phases: list[float] = []
    counts: list[int] = []
    for track, recorded, rng in jobs:
        n = recorded.size
        phase = rng.random() * ts                     # the ADC clock's phase against the swipe
        draws = rng.standard_normal((3, n))
        xs = recorded + (medium.jitter * _CELL_IN[track]) * draws[0] if medium.jitter > 0 else recorded
        gain: F64 | None = None
        for dmg in params.damage:
            hit = (xs >= dmg.start_in) & (xs <= dmg.end_in)
            if _any(hit):
                if gain is None:
                    gain = np.ones(n)
                gain[hit] *= 1.0 - dmg.severity
        shift = c.shifts[track]
        if params.reverse:
            motion = CARD_LENGTH_IN - xs[::-1] + shift
            if gain is not None:
                gain = gain[::-1]
        else:
            motion = xs + shift
        times, track_speeds = _arrivals(motion, v0, acc, jerk)
        m = times.size
        phases.append(phase)
        noises.append(draws[1:, :m])
        motions.append(motion[:m])
        times_l.append(times)
        speeds_l.append(track_speeds)
        gains.append(None if gain is None else gain[:m])
        counts.append(m)

    total = sum(counts)
    lay = _layout(tuple(counts))
    span = lay.padded - 4
    sign = lay.sign
    const_speed = acc == 0.0 and jerk == 0.0
    # Everything per slot: arrival on the ADC's clock, noise, speed (1 on padding).
    phased = np.zeros(span)
    noise = np.zeros((2, span))
    speeds: F64 | float = v0
    if not const_speed:
        speeds = np.ones(span)
    mpos = lay.far.copy()                             # ±far on the padding (silent neighbours)
    sb = np.zeros(lay.padded)
    for e, m, motion, t, ph, nz, v in zip(lay.starts, counts, motions, times_l, phases, noises, speeds_l,
                                          strict=True):
        mpos[e + 2:e + 2 + m] = motion
        np.add(t, ph, out=phased[e:e + m])
        noise[:, e:e + m] = nz
        if not const_speed:
            speeds[e:e + m] = v          # type: ignore[index]
    widths = wx + speeds * tau                        # front end: Lorentzian widths add

    # Signed pulse heights: polarity alternates, height ∝ speed / width, times the remanence left.
    body = sb[2:-2]
    np.multiply(sign, scale * speeds / widths, out=body)
    for e, m, g in zip(lay.starts, counts, gains, strict=True):
        if g is not None:
            body[e:e + m] *= g
    ai = np.abs(body)
    live_count = int(np.count_nonzero(ai))
    all_live = live_count == total
    ai_safe = ai + lay.padding if all_live else np.where(ai != 0.0, ai, 1.0)
    # p(0) and -p''(0) of each pulse (pulse_peak_and_curvature, per width); then the linear
    # superposition of the two neighbours on each side.
    p0: F64 | float
    kappa: F64 | float
    if isinstance(widths, float):
        p0, kappa = pulse_peak_and_curvature(widths, delta)
        one_lorentz = delta < 1e-3 * widths
        lorentz: npt.NDArray[np.bool_] | bool = one_lorentz
        level, slope, g_lo, g_hi = _superpose_shared(mpos, sb, ai, sign, widths, delta, p0, one_lorentz)
    else:
        level, slope, g_lo, g_hi, p0, kappa, lorentz = _superpose(mpos, sb, ai, sign, widths, delta)
    if isinstance(lorentz, bool):
        any_lorentz = all_lorentz = lorentz
    else:
        any_lorentz = bool(_any(lorentz))
        all_lorentz = bool(_all(lorentz))
    # The summed signal's peak moves by -y'(x_i)/y''(x_i) (one Newton step), at most ~½ gap.
    lim = 0.45 * np.minimum(g_lo, g_hi)
    dx = slope / (ai_safe * kappa)
    np.maximum(dx, -lim, out=dx)
    np.minimum(dx, lim, out=dx)
    height = level + sigma * noise[0]
    height += lay.padding                             # (padding: a harmless 1)
    keep = height > 0.0
    if not all_live:
        keep &= (ai != 0.0) | (lay.padding != 0.0)
    all_kept = bool(_all(keep))
    if not all_kept:
        height = np.where(keep, height, 1.0)
    # Noise slope over the pulse's curvature in time moves the detected peak.
    half_w = 0.5 * widths / speeds
    dt = slope_noise * p0 / (height * (kappa * speeds * speeds))
    dt *= noise[1]
    np.maximum(dt, -half_w, out=dt)
    np.minimum(dt, half_w, out=dt)
    dx /= speeds
    dx += phased
    dx += dt
    t_peak = dx                                       # on the ADC's clock: phased + dx / speeds + dt
    k = np.rint(t_peak * fs)
    off = speeds * (k * ts - t_peak)
    if all_lorentz:
        zo = off * (2.0 / widths)
        seen = height / (1.0 + zo * zo)
    else:
        seen_s = height * _smeared_pulse(off, widths, delta) / p0
        if any_lorentz:
            zo = off * (2.0 / widths)
            seen = np.where(lorentz, height / (1.0 + zo * zo), seen_s)
        else:
            seen = seen_s
    samples = k.astype(np.int64)
    pols = lay.polarities
    rising = samples[1:] >= samples[:-1]
    rising |= lay.boundary
    all_ordered = bool(_all(rising))

    # Per track: the candidates in detector order, plus spurious peaks (band-limited noise crossing
    # the detector's lowest threshold at the Rice rate).
    out: list[HeadSignal] = []
    thr = reader.threshold_floor
    rate = c.noise_rate
    for (track, recorded, rng), o, m, t_arr, v_arr, ph in zip(jobs, lay.starts, counts, times_l, speeds_l, phases,
                                                             strict=True):
        ks, hs, ps = samples[o:o + m], seen[o:o + m], pols[o:o + m]
        srcs = _sources(m)
        if not all_kept:
            kept = keep[o:o + m]
            if not _all(kept):
                ks, hs, ps, srcs = ks[kept], hs[kept], ps[kept], srcs[kept]
        ordered = all_ordered or ks.size < 2 or bool(_all(ks[1:] >= ks[:-1]))
        if m:
            t0 = float(t_arr[0]) - 0.002
            t1 = float(t_arr[-1]) + 0.002
            if rate * (t1 - t0) > 1e-9:
                nt = noise_peak_times(rng, rate, t0, t1)
                if nt.size:
                    u01 = rng.random((2, nt.size))
                    namp = np.sqrt(thr * thr - 2.0 * sigma * sigma * np.log(1.0 - u01[0]))
                    ks = np.concatenate([ks, np.rint((nt + ph) * fs).astype(np.int64)])
                    hs = np.concatenate([hs, namp])
                    ps = np.concatenate([ps, np.where(u01[1] < 0.5, 1, -1).astype(np.int8)])
                    srcs = np.concatenate([srcs, np.full(nt.size, -1, dtype=np.int64)])
                    ordered = False
        if not ordered:
            order = np.lexsort((srcs, ps, hs, ks))   # as sorting (sample, height, polarity, source)
            ks, hs, ps, srcs = ks[order], hs[order], ps[order], srcs[order]
        out.append(HeadSignal(track, recorded.size, t_arr, v_arr, ks, hs, ps, srcs, fs))
    return out


def _superpose(mpos: F64, sb: F64, ai: F64, sign: F64, widths: F64, delta: float
               ) -> tuple[F64, F64, F64, F64, F64, F64, npt.NDArray[np.bool_]]:
    """Level and slope of the summed signal at each slot from its four neighbours, pulse widths
    varying per slot (the card accelerates): (level, slope, gap before, gap after, p0, kappa,
    Lorentzian-or-not per slot)."""
    u = mpos[2:-2] - _windows(mpos)                   # offsets to the neighbours (one row each)
    b = _windows(sb)                                  # and their signed heights
    g_lo = u[1]
    g_hi = -u[2]
    r = delta / widths
    q = 1.0 + r * r
    kappa = 8.0 / (widths * widths * q * q)
    lorentz = delta < 1e-3 * widths
    with np.errstate(divide="ignore", invalid="ignore"):
        p0 = np.where(r < 1e-3, 1.0, np.arctan(r) / r)
    any_lorentz = bool(_any(lorentz)) or lorentz.size == 0    # (no transition at all: nothing to smear)
    all_lorentz = bool(_all(lorentz))
    if any_lorentz:
        # (in place on the 4-row temporaries: their size is what costs here)
        w2 = 2.0 / widths
        z = u * w2
        inv = z * z
        inv += 1.0
        np.reciprocal(inv, out=inv)                   # 1 / (1 + z²) per neighbour
        bi = b * inv                                  # its contribution to the level
        level_l = ai + sign * bi.sum(axis=0)
        z *= inv
        z *= bi                                       # b·z / (1 + z²)²: its slope
        slope_l = z.sum(axis=0) * (-2.0 * w2) * sign
        if all_lorentz:
            return level_l, slope_l, g_lo, g_hi, p0, kappa, lorentz
    # The smeared pulse and its slope at the neighbours (pulse/pulse_slope's arctangent form;
    # the difference of the two arctangents taken as one angle: atan(zp) − atan(zm) is
    # atan(2a / (1 + zp·zm)), plus π where that denominator is negative).
    a = delta / widths
    zp = u * (2.0 / widths)
    zm = zp - a
    zp += a
    den = zp * zm
    den += 1.0
    smeared = np.arctan((2.0 * a) / den)
    behind = den < 0.0
    if _any(behind):
        smeared[behind] += math.pi
    smeared *= b
    level_s = ai * p0 + sign * (smeared.sum(axis=0) * (widths / (2.0 * delta)))
    zp *= zp
    zp += 1.0
    zm *= zm
    zm += 1.0
    np.subtract(1.0 / zp, 1.0 / zm, out=zp)
    zp *= b
    slope_s = sign * (zp.sum(axis=0) * (1.0 / delta))
    if not any_lorentz:
        return level_s, slope_s, g_lo, g_hi, p0, kappa, lorentz
    return (np.where(lorentz, level_l, level_s), np.where(lorentz, slope_l, slope_s), g_lo, g_hi, p0, kappa,
            lorentz)


def _superpose_shared(mpos: F64, sb: F64, ai: F64, sign: F64, w: float, delta: float, p0: float, lorentz: bool
                      ) -> tuple[F64, F64, F64, F64]:
    """:func:`_superpose` for one pulse width (constant speed): (level, slope, gap before, gap after).

    The neighbour at distance 1 or 2 ahead of a slot sees that slot at the same distance behind,
    and every term is even or odd in the offset, so each term is computed once per pair of slots
    (``e1``/``e2``: the gaps to the slot one and two ahead) and used from both sides, negated
    where odd. Negation is exact in floating point, and the four neighbours are added in the
    order a sum over the 4-row form adds them, so the values are those of that form to rounding.
    """
    span = mpos.size - 4
    # Both distances in one 2-row array, so every formula below is one numpy call for both.
    gaps = np.empty((2, mpos.size - 1))
    e1 = gaps[0]
    np.subtract(mpos[1:], mpos[:-1], out=e1)          # x[k+1] − x[k]
    np.subtract(mpos[2:], mpos[:-2], out=gaps[1, :-1])  # x[k+2] − x[k]
    gaps[1, -1] = 1.0                                 # (unused slot: any harmless finite gap)
    # Rows (neighbour −2, −1, +1, +2) of slot i (padded index i + 2): offsets x_i − x_neighbour are
    # e2[i], e1[i+1], −e1[i+2], −e2[i+2]; signed heights are sb[i], sb[i+1], sb[i+3], sb[i+4].
    g_lo = e1[1:1 + span]
    g_hi = e1[2:2 + span]
    b0, b1, b2, b3 = sb[0:span], sb[1:1 + span], sb[3:3 + span], sb[4:4 + span]
    if lorentz:
        w2 = 2.0 / w
        z = gaps * w2
        inv = z * z
        inv += 1.0
        np.reciprocal(inv, out=inv)                   # 1 / (1 + z²): even in the offset
        z *= inv                                      # z / (1 + z²): odd
        z1, z2 = z
        inv1, inv2 = inv
        bi0 = b0 * inv2[0:span]
        bi1 = b1 * inv1[1:1 + span]
        bi2 = b2 * inv1[2:2 + span]
        bi3 = b3 * inv2[2:2 + span]
        acc = bi0 + bi1
        acc += bi2
        acc += bi3
        acc *= sign
        acc += ai
        level = acc                                   # ai + sign · Σ b / (1 + z²)
        bi0 *= z2[0:span]
        bi1 *= z1[1:1 + span]
        bi2 *= z1[2:2 + span]
        bi3 *= z2[2:2 + span]
        bi0 += bi1
        bi0 -= bi2
        bi0 -= bi3
        bi0 *= -2.0 * w2
        bi0 *= sign
        return level, bi0, g_lo, g_hi
    a = delta / w
    c = 2.0 / w
    zm = gaps * c
    zp = zm + a
    zm -= a
    den = zp * zm
    den += 1.0
    at = np.arctan((2.0 * a) / den)                   # even in the offset
    behind = den < 0.0
    if _any(behind):
        at[behind] += math.pi
    zp *= zp
    zp += 1.0
    zm *= zm
    zm += 1.0
    np.subtract(1.0 / zp, 1.0 / zm, out=zp)           # odd in the offset
    at1, at2 = at
    sl1, sl2 = zp
    acc = b0 * at2[0:span]
    acc += b1 * at1[1:1 + span]
    acc += b2 * at1[2:2 + span]
    acc += b3 * at2[2:2 + span]
    acc *= w / (2.0 * delta)
    acc *= sign
    level = ai * p0 + acc
    sl = b0 * sl2[0:span]
    sl += b1 * sl1[1:1 + span]
    sl -= b2 * sl1[2:2 + span]
    sl -= b3 * sl2[2:2 + span]
    sl *= 1.0 / delta
    sl *= sign
    return level, sl, g_lo, g_hi


@functools.lru_cache(maxsize=64)
def _sources(m: int) -> I64:
    a = np.arange(m, dtype=np.int64)
    a.flags.writeable = False
    return a
