"""Keyboard-wedge readers: parsing typed swipes, and telling swipes from typing on the clock."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hardware.clock import VirtualClock
from hardware.magstripe import track_spec
from hardware.ports import TrackStatus
from hardware.wedge import WedgeEvent, WedgeEventKind, WedgeFeeder, parse_wedge
from protocol.errors import ConfigError, DecodeError

T1 = "B9900010000000019^TEST/DEMO^30121010000000000"
T2 = "9900010000000019=30121010000000000"
FULL = f"%{T1}?;{T2}?\r"


def statuses(text: str) -> list[TrackStatus]:
    return [t.status for t in parse_wedge(text).tracks]


def test_parse_full_swipe() -> None:
    r = parse_wedge(FULL)
    t1, t2, t3 = r.tracks
    assert (t1.track, t1.status, t1.data) == (1, TrackStatus.OK, T1)
    assert (t2.track, t2.status, t2.data) == (2, TrackStatus.OK, T2)
    assert t3.status is TrackStatus.NO_DATA


def test_parse_track2_only_and_track3() -> None:
    assert statuses(f";{T2}?\n") == [TrackStatus.NO_DATA, TrackStatus.OK, TrackStatus.NO_DATA]
    r = parse_wedge(f";{T2}?;0123=456?")
    assert r.tracks[2].status is TrackStatus.OK and r.tracks[2].data == "0123=456"
    r = parse_wedge(f"%{T1}?+0123?")
    assert r.tracks[2].data == "0123" and r.tracks[1].status is TrackStatus.NO_DATA


def test_parse_error_markers() -> None:
    assert statuses("%E?;E?\r") == [TrackStatus.PARITY_ERROR, TrackStatus.PARITY_ERROR, TrackStatus.NO_DATA]
    r = parse_wedge(f"%E?;{T2}?\r")
    assert r.tracks[0].status is TrackStatus.PARITY_ERROR and "E" in r.tracks[0].detail
    assert r.tracks[1].ok
    assert statuses(f";{T2}?+E?")[2] is TrackStatus.PARITY_ERROR


def test_parse_cut_off_track() -> None:
    assert statuses(f"%{T1}?;{T2[:10]}") == [TrackStatus.OK, TrackStatus.NO_END_SENTINEL, TrackStatus.NO_DATA]


def test_parse_rejects_what_is_not_a_swipe() -> None:
    with pytest.raises(DecodeError) as e:
        parse_wedge("hello")
    assert e.value.field == "wedge" and e.value.pos == 0
    with pytest.raises(DecodeError) as e:
        parse_wedge(f"%{T1}?x;{T2}?")
    assert e.value.field == "wedge" and e.value.pos == len(T1) + 2
    with pytest.raises(DecodeError) as e:
        parse_wedge(";99a1=22?")            # a keyboard layout that typed a letter on track 2
    assert e.value.field == "wedge.track2.data[2]" and e.value.pos == 3
    with pytest.raises(DecodeError) as e:
        parse_wedge("%b?")                  # track 1 has no lower case
    assert e.value.field == "wedge.track1.data[0]"
    with pytest.raises(DecodeError):
        parse_wedge("")
    with pytest.raises(DecodeError) as e:
        parse_wedge(";" + "1" * 38 + "?")
    assert e.value.field == "wedge.track2.length"
    with pytest.raises(DecodeError):
        parse_wedge("%A?%B?")
    with pytest.raises(TypeError):
        parse_wedge(b"%A?")  # type: ignore[arg-type]


def test_decode_error_does_not_show_track_data() -> None:
    with pytest.raises(DecodeError) as e:
        parse_wedge(f"%{T1}?;9900010000000019=30x?")
    assert "9900010000000019" not in str(e.value)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_decode_error(text: str) -> None:
    try:
        r = parse_wedge(text)
    except DecodeError:
        return
    assert len(r.tracks) == 3


@settings(max_examples=100, deadline=None)
@given(st.text(track_spec(1).data_charset.replace("?", ""), max_size=76),
       st.text(track_spec(2).data_charset.replace("?", ""), max_size=37))
def test_round_trip_typed_tracks(t1: str, t2: str) -> None:
    assume(t1 != "E")            # the data "E" is the reader's error marker: ambiguous by design
    r = parse_wedge(f"%{t1}?;{t2}?\r")
    assert (r.tracks[0].data, r.tracks[1].data) == (t1, t2)


# --- the feeder ---------------------------------------------------------------------------------

def type_keys(feeder: WedgeFeeder, clock: VirtualClock, keys: list[str], gap: float) -> list[WedgeEvent]:
    events: list[WedgeEvent] = []
    for k in keys:
        clock.advance(gap)
        events.extend(feeder.feed(k))
    return events


def test_feeder_detects_a_swipe_typed_at_reader_speed() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock, inter_key_timeout=0.05)
    events = type_keys(f, clock, [*f"%{T1}?;{T2}?", "enter"], gap=0.008)
    assert len(events) == 1
    ev = events[0]
    assert ev.kind is WedgeEventKind.SWIPE
    assert ev.swipe is not None and ev.swipe.tracks[1].data == T2
    assert not f.pending and f.deadline is None
    assert T2 not in repr(ev)


def test_feeder_passes_ordinary_typing_through() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock, inter_key_timeout=0.05)
    events = type_keys(f, clock, list("ab1"), gap=0.2)
    assert [(e.kind, e.keys) for e in events] == [
        (WedgeEventKind.KEYS, "a"), (WedgeEventKind.KEYS, "b"), (WedgeEventKind.KEYS, "1")]


def test_feeder_person_typing_a_sentinel_is_not_a_swipe() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock, inter_key_timeout=0.05)
    assert f.feed("%") == ()
    assert f.pending and f.deadline == pytest.approx(0.05)
    clock.advance(0.3)                                   # the person is slow
    events = f.feed("5")
    assert [e.kind for e in events] == [WedgeEventKind.KEYS, WedgeEventKind.KEYS]
    assert [e.keys for e in events] == ["%", "5"]


def test_feeder_poll_finishes_a_swipe_without_enter() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock, inter_key_timeout=0.05)
    type_keys(f, clock, list(f";{T2}?"), gap=0.004)
    assert f.poll() == ()
    clock.advance(0.06)
    (ev,) = f.poll()
    assert ev.kind is WedgeEventKind.SWIPE and ev.swipe is not None and ev.swipe.tracks[1].data == T2


def test_feeder_poll_returns_an_unfinished_track_as_typing() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock, inter_key_timeout=0.05)
    type_keys(f, clock, list(";123"), gap=0.004)
    clock.advance(1.0)
    (ev,) = f.poll()
    assert ev.kind is WedgeEventKind.KEYS and ev.keys == ";123"


def test_feeder_unreadable_and_error_swipes() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock, inter_key_timeout=0.05)
    (ev,) = type_keys(f, clock, [*"%E?;E?", "\r"], gap=0.004)
    assert ev.kind is WedgeEventKind.SWIPE and ev.swipe is not None
    assert [t.status for t in ev.swipe.tracks[:2]] == [TrackStatus.PARITY_ERROR] * 2
    (ev,) = type_keys(f, clock, [*";12x4?", "\n"], gap=0.004)
    assert ev.kind is WedgeEventKind.UNREADABLE and ev.error is not None
    assert ev.error.field == "wedge.track2.data[2]"


def test_feeder_special_key_and_overflow() -> None:
    clock = VirtualClock()
    f = WedgeFeeder(clock)
    f.feed(";")
    (ev,) = f.feed("escape")
    assert ev.kind is WedgeEventKind.KEYS and ev.keys == ";escape"
    f.feed("%")
    events: list[WedgeEvent] = []
    for _ in range(400):
        clock.advance(0.001)
        events.extend(f.feed("A"))
    assert [e.kind for e in events][:1] == [WedgeEventKind.KEYS]
    with pytest.raises(TypeError):
        f.feed("")
    with pytest.raises(ConfigError):
        WedgeFeeder(clock, inter_key_timeout=0.0)
