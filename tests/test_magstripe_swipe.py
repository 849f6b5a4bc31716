"""The physical swipe model and the reader-ASIC decoder.

The tolerated ranges asserted here are the ones measured and documented in docs/magstripe.md
(default :class:`ReaderModel`); the properties check them with margin, over card-like data.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.magstripe import Damage, ReaderModel, SwipeParams, simulate_swipe
from hardware.magstripe.measure import DEMO_STRIPE, read_rate
from hardware.magstripe.swipe import arrival_times, pulse, pulse_peak_and_curvature, pw50_in
from hardware.ports import ReaderEvent, ReaderEventKind, TrackStatus
from hardware.sim import SimReader, card_for_profile
from protocol.errors import ConfigError

# The guaranteed envelope (docs/magstripe.md): the measured ranges with margin, for any card-like
# data, tracks 1 and 2 together, speed and skew combined.
SPEED_OK = (10.0, 80.0)        # in/s
SKEW_OK = 1.5                  # degrees


def stripe_of(pan: str, name: str, exp: str, sc: str, disc: str) -> tuple[str, str, None]:
    return (f"B{pan}^{name}^{exp}{sc}{disc}", f"{pan}={exp}{sc}{disc}", None)


@st.composite
def cards(draw: st.DrawFn) -> tuple[str, str, None]:
    """ISO/IEC 7813-shaped tracks 1 and 2 with a test BIN (99…)."""
    pan = "99" + draw(st.text("0123456789", min_size=10, max_size=17))
    name = draw(st.from_regex(r"[A-Z]{1,12}/[A-Z]{1,12}", fullmatch=True))
    exp = draw(st.from_regex(r"[0-9]{2}(0[1-9]|1[0-2])", fullmatch=True))
    sc = draw(st.sampled_from(["101", "201", "121", "501", "601", "901"]))
    room = 37 - len(pan) - 1 - 7
    disc = draw(st.text("0123456789", max_size=max(0, min(room, 13))))
    return stripe_of(pan, name, exp, sc, disc)


def reads(stripe: tuple[str | None, ...], params: SwipeParams) -> tuple[bool, bool]:
    res = simulate_swipe(stripe, params).result
    out = []
    for n in (1, 2):
        t = res.track(n)
        assert t is not None
        out.append(t.ok and t.data == stripe[n - 1])
    return out[0], out[1]


# --- the nominal swipe ----------------------------------------------------------------------

def test_nominal_swipe_reads_the_card_and_reports_absent_track() -> None:
    report = simulate_swipe(DEMO_STRIPE, SwipeParams())
    t1, t2, t3 = report.result.tracks
    assert (t1.status, t2.status, t3.status) == (TrackStatus.OK, TrackStatus.OK, TrackStatus.NO_DATA)
    assert (t1.data, t2.data) == DEMO_STRIPE[:2]
    assert report.tracks[2] is None
    assert 0.30 < report.duration_s < 0.35           # 3.37 in card at 10 in/s


def test_swipe_is_reproducible_and_seeded() -> None:
    a = simulate_swipe(DEMO_STRIPE, SwipeParams(noise=0.01, seed=5))
    b = simulate_swipe(DEMO_STRIPE, SwipeParams(noise=0.01, seed=5))
    c = simulate_swipe(DEMO_STRIPE, SwipeParams(noise=0.01, seed=6))
    assert a == b
    assert a.tracks[0] is not None and c.tracks[0] is not None
    assert a.tracks[0].signal_heights != c.tracks[0].signal_heights


def test_diagnostics_describe_the_read() -> None:
    d = simulate_swipe(DEMO_STRIPE, SwipeParams(speed_ips=20.0)).tracks[1]
    assert d is not None
    assert d.missed_transitions == 0 and d.noise_peaks == 0
    assert len(d.peaks.samples) == d.transitions
    assert d.break_sample is None and d.break_reason == ""
    # The recovered bit cell is 1/(75 bpi × 20 in/s) = 667 µs = 66.7 samples at 100 kHz.
    assert d.clock.periods[-1] == pytest.approx(66.7, rel=0.03)
    assert len(d.clock.boundaries) == len(d.clock.bits) + 1
    assert "bits=" not in repr(d.clock)          # recovered bits are track data


def test_reverse_swipe_reads() -> None:
    res = simulate_swipe(DEMO_STRIPE, SwipeParams(speed_ips=25.0, reverse=True)).result
    for n in (1, 2):
        t = res.track(n)
        assert t is not None and t.ok and t.data == DEMO_STRIPE[n - 1] and "reverse" in t.detail


def test_acceleration_is_tracked_by_the_clock() -> None:
    # 5 in/s at the leading edge, speeding up hard: the bit cell shrinks ~4× during the swipe.
    report = simulate_swipe(DEMO_STRIPE, SwipeParams(speed_ips=6.0, accel_ips2=300.0, seed=2))
    assert all(t.ok for t in report.result.tracks[:2])
    d = report.tracks[1]
    assert d is not None and d.clock.periods[0] > 2.5 * d.clock.periods[-1]


def test_card_that_stops_midway_loses_the_tail() -> None:
    # 10 in/s, decelerating at 30 in/s²: it stops after 1.67 in, half way along the stripe.
    report = simulate_swipe(DEMO_STRIPE, SwipeParams(speed_ips=10.0, accel_ips2=-30.0))
    for t in report.result.tracks[:2]:
        assert t.status in (TrackStatus.NO_END_SENTINEL, TrackStatus.CLOCK_LOST)
    d = report.tracks[0]
    assert d is not None and len(d.arrivals_s) < d.transitions


# --- tolerated range: inside reads, outside fails — from the physics --------------------------

@settings(max_examples=40, deadline=None)
@given(cards(), st.floats(*SPEED_OK), st.floats(-SKEW_OK, SKEW_OK), st.integers(0, 2**31),
       st.booleans())
def test_inside_the_tolerated_range_tracks_read_exactly(
    stripe: tuple[str, str, None], speed: float, skew: float, seed: int, reverse: bool
) -> None:
    p = SwipeParams(speed_ips=speed, skew_deg=skew, seed=seed, reverse=reverse)
    assert reads(stripe, p) == (True, True)


@settings(max_examples=25, deadline=None)
@given(cards(), st.floats(*SPEED_OK), st.floats(-40.0, 40.0), st.integers(0, 2**31))
def test_inside_the_range_with_moderate_acceleration(
    stripe: tuple[str, str, None], speed: float, accel: float, seed: int
) -> None:
    end2 = speed * speed + 2.0 * accel * 3.4       # v² at the trailing edge
    assume(SPEED_OK[0] ** 2 <= end2 <= SPEED_OK[1] ** 2)
    assert reads(stripe, SwipeParams(speed_ips=speed, accel_ips2=accel, seed=seed)) == (True, True)


@settings(max_examples=20, deadline=None)
@given(cards(), st.one_of(st.floats(0.2, 1.8), st.floats(700.0, 3000.0)), st.integers(0, 2**31))
def test_far_outside_the_speed_range_both_tracks_fail(
    stripe: tuple[str, str, None], speed: float, seed: int
) -> None:
    res = simulate_swipe(stripe, SwipeParams(speed_ips=speed, seed=seed)).result
    for n in (1, 2):
        t = res.track(n)
        assert t is not None and not t.ok and t.status is not TrackStatus.OK


@settings(max_examples=20, deadline=None)
@given(cards(), st.one_of(st.floats(5.0, 8.0), st.floats(-8.0, -5.0)), st.floats(10.0, 60.0),
       st.integers(0, 2**31))
def test_tilted_head_fails_track1_first(
    stripe: tuple[str, str, None], skew: float, speed: float, seed: int
) -> None:
    ok1, ok2 = reads(stripe, SwipeParams(speed_ips=speed, skew_deg=skew, seed=seed))
    assert not ok1          # 210 bpi: the azimuth smear exceeds half a bit cell
    assert ok2              # 75 bpi still reads at this tilt


@settings(max_examples=30, deadline=None)
@given(cards(), st.floats(0.45, 2.2), st.floats(0.03, 0.3), st.floats(0.85, 1.0), st.integers(0, 2**31),
       st.floats(*SPEED_OK))
def test_damage_over_the_data_is_reported_as_an_error(
    stripe: tuple[str, str, None], start: float, length: float, severity: float, seed: int, speed: float
) -> None:
    # Only where both tracks hold characters: they start at 0.293 in and end at
    # 0.293 + 7·(len + 3)/210 in (track 1) and 0.293 + 5·(len + 3)/75 in (track 2).
    t1, t2, _ = stripe
    assume(start + length < 0.293 + min(7 * (len(t1) + 3) / 210.0, 5 * (len(t2) + 3) / 75.0))
    p = SwipeParams(speed_ips=speed, damage=(Damage(start, start + length, severity),), seed=seed)
    res = simulate_swipe(stripe, p).result
    for n in (1, 2):
        t = res.track(n)
        assert t is not None and not t.ok


def test_documented_single_factor_edges() -> None:
    """The edges of docs/magstripe.md's table, re-measured with 20 swipes each."""
    def rate(**kw: float) -> tuple[float, float]:
        r = read_rate(DEMO_STRIPE, lambda i: SwipeParams(seed=1000 + i, **kw), 20)  # type: ignore[arg-type]
        return r.rate(1), r.rate(2)

    assert rate(speed_ips=5.0) == (1.0, 1.0)
    assert rate(speed_ips=105.0) == (1.0, 1.0)
    assert rate(speed_ips=2.6)[1] == 1.0
    assert rate(speed_ips=400.0)[1] == 1.0
    assert rate(speed_ips=3.0)[0] < 0.5
    assert rate(speed_ips=160.0)[0] == 0.0
    assert rate(speed_ips=2.0) == (0.0, 0.0)
    assert rate(speed_ips=500.0)[1] == 0.0
    assert rate(skew_deg=2.0) == (1.0, 1.0)
    assert rate(skew_deg=9.0)[1] == 1.0
    assert rate(skew_deg=3.0)[0] == 0.0
    assert rate(skew_deg=11.0)[1] == 0.0


# --- the limits move with the hardware: they come from the physics, not from a speed check ----

def test_faster_adc_reads_faster_swipes() -> None:
    p = SwipeParams(speed_ips=200.0, seed=3)
    assert reads(DEMO_STRIPE, p)[0] is False
    fast_adc = dataclasses.replace(p, reader=ReaderModel(adc_rate_hz=250_000.0, bandwidth_hz=50_000.0))
    assert reads(DEMO_STRIPE, fast_adc)[0] is True


def test_more_sensitive_detector_reads_slower_swipes() -> None:
    p = SwipeParams(speed_ips=2.0, seed=3)
    assert reads(DEMO_STRIPE, p) == (False, False)
    sensitive = dataclasses.replace(p, reader=ReaderModel(threshold_floor=0.05, noise_floor=0.001))
    assert reads(DEMO_STRIPE, sensitive) == (True, True)


def test_narrower_head_tolerates_more_skew() -> None:
    p = SwipeParams(skew_deg=4.0, seed=3)
    assert reads(DEMO_STRIPE, p)[0] is False
    narrow = dataclasses.replace(p, reader=ReaderModel(head_width_um=400.0))
    assert reads(DEMO_STRIPE, narrow)[0] is True


def test_dirt_costs_amplitude_and_fails_dense_track_first() -> None:
    clean = simulate_swipe(DEMO_STRIPE, SwipeParams()).tracks[1]
    dirty = simulate_swipe(DEMO_STRIPE, SwipeParams(dirt_um=20.0)).tracks[1]
    assert clean is not None and dirty is not None
    assert max(dirty.signal_heights) < 0.75 * max(clean.signal_heights)
    assert reads(DEMO_STRIPE, SwipeParams(dirt_um=20.0)) == (False, True)


def test_noise_adds_spurious_peaks() -> None:
    d = simulate_swipe(DEMO_STRIPE, SwipeParams(noise=0.1, seed=4)).tracks[0]
    assert d is not None and d.noise_peaks > 100
    res = simulate_swipe(DEMO_STRIPE, SwipeParams(noise=0.1, seed=4)).result
    assert not any(t.ok for t in res.tracks)


def test_damage_diagnostics_locate_the_break() -> None:
    report = simulate_swipe(DEMO_STRIPE, SwipeParams(damage=(Damage(1.0, 1.1, 1.0),)))
    for n in (1, 2):
        t = report.result.track(n)
        d = report.tracks[n - 1]
        assert t is not None and d is not None
        assert t.status is TrackStatus.CLOCK_LOST
        assert d.missed_transitions > 0 and d.break_sample is not None
        assert d.break_sample / d.adc_rate_hz == pytest.approx(1.0 / 10.0, abs=0.004)   # 1.0 in at 10 in/s


# --- model pieces -----------------------------------------------------------------------------

def test_pulse_shapes() -> None:
    w = 0.0014
    assert pulse(0.0, w, 0.0) == 1.0
    assert pulse(w / 2, w, 0.0) == pytest.approx(0.5)          # PW50: half height at ±w/2
    p0, _ = pulse_peak_and_curvature(w, w)
    assert pulse(0.0, w, w) == pytest.approx(p0)
    assert p0 < 1.0                                            # azimuth smear lowers the peak
    medium = SwipeParams().medium
    assert pw50_in(ReaderModel(), medium, 10.0) > pw50_in(ReaderModel(), medium, 0.0)


def test_arrival_times_under_acceleration() -> None:
    times, speeds = arrival_times([0.0, 1.0, 2.0], 10.0, 20.0, 0.0)
    # s = 10 t + 10 t² → t(1) = (−10 + √140)/20
    assert times[1] == pytest.approx((-10 + 140 ** 0.5) / 20)
    assert speeds[2] == pytest.approx(10.0 + 20.0 * times[2])
    stopped, _ = arrival_times([0.0, 1.0, 2.0, 3.0], 10.0, -20.0, 0.0)   # stops at 2.5 in
    assert len(stopped) == 3


def test_params_validation() -> None:
    with pytest.raises(ConfigError):
        SwipeParams(speed_ips=0.0)
    with pytest.raises(ConfigError):
        SwipeParams(skew_deg=80.0)
    with pytest.raises(ConfigError):
        SwipeParams(noise=-1.0)
    with pytest.raises(ConfigError):
        Damage(1.0, 0.5)
    with pytest.raises(ConfigError):
        Damage(0.0, 0.5, 1.5)
    with pytest.raises(ConfigError):
        Damage.parse("1.0")
    with pytest.raises(ConfigError):
        Damage.parse("a:b")
    assert Damage.parse("1:1.5") == Damage(1.0, 1.5, 1.0)
    assert Damage.parse("1:1.5:0.3") == Damage(1.0, 1.5, 0.3)
    with pytest.raises(TypeError):
        SwipeParams(speed_ips="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        simulate_swipe(("A",))


# --- the sim reader's physics path ------------------------------------------------------------

def test_sim_reader_swipe_with_physics(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    reader = SimReader(vclock)
    card = card_for_profile(load_profile("demo"))
    ideal = reader.swipe(card)
    assert all(t.ok for t in ideal.tracks[:2])
    bad = reader.swipe(card, params=SwipeParams(speed_ips=1000.0))
    assert not any(t.ok for t in bad.tracks)
    seeded = reader.swipe(card, seed=7)
    assert seeded == simulate_swipe(card.stripe, SwipeParams(seed=7)).result

    async def drain() -> list[ReaderEvent | None]:
        return [await reader.next_event(timeout=1.0) for _ in range(3)]

    events = vrun.run(drain())
    assert [e.kind if e else None for e in events] == [ReaderEventKind.CARD_SWIPED] * 3
    assert events[1] is not None and events[1].swipe == bad
