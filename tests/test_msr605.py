"""MSR605 protocol: the sans-IO codec (round trips, short reads, arbitrary input), the reply →
SwipeResult mapping, and the pure device emulator."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.cards.profiles import load_profile
from hardware.msr605 import (
    ARG_LENGTH,
    CoercivityReply,
    Command,
    CommTestOk,
    FirmwareReply,
    IsoReadReply,
    LeadingZerosReply,
    ModelReply,
    Msr605Client,
    Reply,
    Status,
    StatusReply,
    TrackData,
    TrackMarker,
    encode_command,
    encode_reply,
    parse_reply,
    stripe_block,
    swipe_result,
    track_read,
)
from hardware.msr605_device import Mode, Msr605Device
from hardware.ports import TrackStatus
from hardware.sim import card_for_profile, ideal_swipe
from protocol.errors import DecodeError, EncodeError

# --- strategies ------------------------------------------------------------------------------------
_TRACK_CHARS = {1: [c for c in range(0x20, 0x60)], 2: list(range(0x30, 0x40)), 3: list(range(0x30, 0x40))}


def track_data(n: int) -> st.SearchStrategy[TrackData]:
    data = st.lists(st.sampled_from(_TRACK_CHARS[n]), max_size=120).map(bytes)
    return st.one_of(
        data.map(lambda raw: TrackData(n, TrackMarker.DATA, raw)),
        st.sampled_from([TrackData(n, TrackMarker.EMPTY), TrackData(n, TrackMarker.BAD)]),
    )


iso_replies = st.builds(
    lambda t1, t2, t3, s: IsoReadReply((t1, t2, t3), s),
    track_data(1), track_data(2), track_data(3), st.sampled_from(list(Status)),
)

# (the command whose reply it is, the reply)
replies: st.SearchStrategy[tuple[Command, Reply]] = st.one_of(
    iso_replies.map(lambda r: (Command.ISO_READ, r)),
    st.sampled_from(list(Status)).map(lambda s: (Command.ISO_READ, StatusReply(s))),
    st.just((Command.COMM_TEST, CommTestOk())),
    st.tuples(st.sampled_from([Command.SENSOR_TEST, Command.RAM_TEST, Command.SET_BPI, Command.SET_HICO]),
              st.sampled_from(list(Status)).map(StatusReply)),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E).map(lambda c: (Command.MODEL, ModelReply(c))),
    st.text(alphabet="0123456789.HLU", min_size=5, max_size=5).map(
        lambda v: (Command.FIRMWARE, FirmwareReply("REV" + v))),
    st.booleans().map(lambda b: (Command.GET_COERCIVITY, CoercivityReply(b))),
    st.tuples(st.integers(0, 255), st.integers(0, 255)).map(
        lambda t: (Command.CHECK_LEADING_ZEROS, LeadingZerosReply(*t))),
)


# --- codec -----------------------------------------------------------------------------------------
def test_command_bytes() -> None:
    assert encode_command(Command.RESET) == b"\x1b\x61"
    assert encode_command(Command.ISO_READ) == b"\x1b\x72"
    assert encode_command(Command.FIRMWARE) == b"\x1b\x76"
    assert encode_command(Command.SET_BPI, b"\xd2") == b"\x1b\x62\xd2"
    with pytest.raises(EncodeError):
        encode_command(Command.SET_BPI)
    with pytest.raises(TypeError):
        encode_command(0x72)  # type: ignore[arg-type]


def test_golden_iso_read_block() -> None:
    raw = bytes.fromhex("1b73 1b01 25 42 3f 1b02 3b 31 3d 32 3f 1b03 1b2b 3f1c 1b30")
    reply, used = parse_reply(Command.ISO_READ, raw) or (None, 0)
    assert used == len(raw)
    assert reply == IsoReadReply((TrackData(1, raw=b"%B?"), TrackData(2, raw=b";1=2?"),
                                  TrackData(3, TrackMarker.EMPTY)), Status.OK)
    assert encode_reply(reply) == raw


@given(replies, st.integers(min_value=1, max_value=9))
def test_reply_round_trip_over_short_reads(item: tuple[Command, Reply], step: int) -> None:
    cmd, reply = item
    wire = encode_reply(reply)
    c = Msr605Client()
    c.send(cmd, bytes(ARG_LENGTH.get(cmd, 0)))
    got = None
    for i in range(0, len(wire), step):
        assert got is None
        c.receive_data(wire[i:i + step])
        got = c.next_event()
    assert got == reply
    assert c.buffered == 0 and c.expecting is None


@given(st.sampled_from([Command.ISO_READ, Command.COMM_TEST, Command.MODEL, Command.FIRMWARE,
                        Command.RAM_TEST, Command.GET_COERCIVITY, Command.CHECK_LEADING_ZEROS]),
       st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(cmd: Command, data: bytes) -> None:
    c = Msr605Client()
    c.send(cmd)
    c.receive_data(data)
    with contextlib.suppress(DecodeError):
        c.next_event()


@pytest.mark.parametrize(
    ("raw", "field", "pos"),
    [
        ("1b73 1b02", "track1.marker", 3),          # track 2 where track 1 belongs
        ("1b73 1b01 2541 1c", "track1.data", 6),    # FS inside track 1
        ("1b73 1b01 1b2b 1b02 1b2b 1b03 3b31 1c", "iso.end", 14),   # no 3F before FS
        ("1b73 1b01 1b2b 1b02 1b2b 1b03 1b2b 3f1c 1b77", "iso.status", 17),  # unknown status
        ("1b55", "iso.start", 1),
        ("55", "iso.esc", 0),
    ],
)
def test_decode_errors_carry_field_position_and_raw(raw: str, field: str, pos: int) -> None:
    c = Msr605Client()
    c.send(Command.ISO_READ)
    c.receive_data(bytes.fromhex(raw))
    with pytest.raises(DecodeError) as ei:
        c.next_event()
    e = ei.value
    assert (e.field, e.pos) == (field, pos)
    assert e.raw == bytes.fromhex(raw)
    assert bytes.fromhex(raw).hex().upper() in str(e)
    assert pickle.loads(pickle.dumps(e)).field == field


def test_positions_count_from_the_start_of_the_stream() -> None:
    c = Msr605Client()
    c.send(Command.COMM_TEST)
    c.receive_data(b"\x1by")
    assert c.next_event() == CommTestOk()
    c.send(Command.MODEL)
    c.receive_data(b"\x1b3X")
    with pytest.raises(DecodeError) as ei:
        c.next_event()
    assert ei.value.pos == 4 and ei.value.field == "reply.model"


def test_unsolicited_bytes_and_overlong_blocks() -> None:
    c = Msr605Client()
    c.receive_data(b"\x1b\x30")
    with pytest.raises(DecodeError, match="no command outstanding"):
        c.next_event()
    c.send(Command.RESET)                     # a reset discards what was buffered
    assert c.buffered == 0 and c.next_event() is None
    c.send(Command.ISO_READ)
    c.receive_data(b"\x1b\x73\x1b\x01%" + b"A" * 2000)
    with pytest.raises(DecodeError):
        c.next_event()


def test_status_only_reply_to_a_read() -> None:
    c = Msr605Client()
    c.send(Command.ISO_READ)
    c.receive_data(b"\x1b\x31")
    reply = c.next_event()
    assert reply == StatusReply(Status.RW_ERROR)
    assert isinstance(reply, StatusReply)
    res = swipe_result(reply)
    assert [t.status for t in res.tracks] == [TrackStatus.NO_DATA] * 3
    assert "31 (read/write error)" in res.tracks[0].detail


# --- reply → TrackRead -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("track", "raw", "status", "data"),
    [
        (1, b"%B9900^A/B^3012?", TrackStatus.OK, "B9900^A/B^3012"),
        (2, b";9900=3012?", TrackStatus.OK, "9900=3012"),
        (3, b";0123?", TrackStatus.OK, "0123"),
        (2, b"9900=3012?", TrackStatus.NO_START_SENTINEL, ""),
        (1, b";B99?", TrackStatus.NO_START_SENTINEL, ""),
        (2, b";9900=3012", TrackStatus.NO_END_SENTINEL, ""),
        (2, b";99A0?", TrackStatus.PARITY_ERROR, ""),
        (2, b"", TrackStatus.NO_DATA, ""),
    ],
)
def test_track_sentinels_become_statuses(track: int, raw: bytes, status: TrackStatus, data: str) -> None:
    t = track_read(TrackData(track, TrackMarker.DATA, raw))
    assert (t.track, t.status, t.data) == (track, status, data)


def test_markers_and_repr_hide_card_data() -> None:
    assert track_read(TrackData(2, TrackMarker.EMPTY)).status is TrackStatus.NO_DATA
    bad = track_read(TrackData(2, TrackMarker.BAD))
    assert bad.status is TrackStatus.PARITY_ERROR and "unreadable" in bad.detail
    assert "9900" not in repr(TrackData(2, raw=b";9900010000000019=3012?"))


def test_stripe_block_round_trips_to_the_cards_tracks() -> None:
    card = card_for_profile(load_profile("demo"))
    assert swipe_result(stripe_block(card.stripe)) == ideal_swipe(card)


# --- the device emulator ---------------------------------------------------------------------------
def test_device_init_sequence_and_queries() -> None:
    d = Msr605Device()
    out = d.receive_data(bytes.fromhex("1b61 1b65 1b61"))
    assert out == b"\x1by"
    assert d.receive_data(b"\x1b\x76") == b"\x1bREV03.02"
    assert d.receive_data(b"\x1b\x74") == b"\x1b3S"
    assert d.receive_data(b"\x1b\x87") == b"\x1b0"
    assert d.receive_data(b"\x1b\x79\x1b\x64") == b"\x1b0\x1bl"      # Lo-Co, then ask
    assert d.receive_data(b"\x1b\x7a\x3d") == b""                    # short read: waits for arg 2
    assert d.receive_data(b"\x16\x1b\x6c") == b"\x1b0\x1b\x3d\x16"
    assert d.receive_data(b"\x1b\x62\xd2\x1b\x62\x00") == b"\x1b0\x1bA"
    assert d.receive_data(b"\x1b\x83") == b"" and d.leds == {"green"}
    assert d.receive_data(b"\x1b\x77") == b"\x1b4"                    # writing is not emulated
    assert d.receive_data(b"\x1b\x99") == b"\x1b4"                    # unknown command
    assert d.receive_data(b"zz") == b""                               # noise between commands


def mode(d: Msr605Device) -> Mode:
    return d.mode


def test_device_read_swipe_and_reset() -> None:
    card = card_for_profile(load_profile("demo"))
    d = Msr605Device()
    assert d.swipe(card.stripe) == b""                                # not armed: ignored
    d.receive_data(b"\x1b\x72")
    assert mode(d) is Mode.ISO_READ
    d.receive_data(b"\x1b\x61")                                       # reset cancels the read
    assert mode(d) is Mode.IDLE and d.swipe(card.stripe) == b""
    d.receive_data(b"\x1b\x72")
    out = d.swipe(card.stripe, bad=frozenset({1}), status=Status.RW_ERROR)
    c = Msr605Client()
    c.send(Command.ISO_READ)
    c.receive_data(out)
    reply = c.next_event()
    assert isinstance(reply, IsoReadReply) and reply.status is Status.RW_ERROR
    res = swipe_result(reply)
    assert [t.status for t in res.tracks] == [TrackStatus.PARITY_ERROR, TrackStatus.OK, TrackStatus.NO_DATA]
    assert res.tracks[1].data == card.stripe[1]
    d.receive_data(b"\x1b\x86")                                       # sensor test waits for a card
    assert mode(d) is Mode.SENSOR_TEST and d.swipe(card.stripe) == b"\x1b0"
