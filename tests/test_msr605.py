"""MSR605 protocol: the sans-IO codec of both ends (round trips, short reads, arbitrary input,
the manual's framing byte for byte) and the reply → SwipeResult mapping."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.cards.profiles import load_profile
from hardware.msr605 import stripe_block, swipe_result, track_read
from hardware.msr605_codec import (
    ARG_LENGTH,
    MAX_BLOCK,
    WRITE_COMMANDS,
    BpcReply,
    CoercivityReply,
    Command,
    CommandEvent,
    CommTestOk,
    FirmwareReply,
    HostEvent,
    IsoReadReply,
    IsoWrite,
    LeadingZerosReply,
    MalformedBlock,
    ModelReply,
    RawReadReply,
    RawWrite,
    Reply,
    Status,
    StatusReply,
    StrayBlock,
    TrackData,
    TrackMarker,
    UnknownCommand,
    encode_command,
    encode_iso_block,
    encode_raw_block,
    encode_reply,
)
from hardware.msr605_codec_device import Msr605DeviceCodec
from hardware.msr605_codec_host import Msr605Client, parse_reply
from hardware.ports import TrackStatus
from hardware.sim import card_for_profile, ideal_swipe
from protocol.errors import DecodeError, EncodeError
from protocol.sansio import NEED_DATA, EventSource, NeedData

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
raw_tracks = st.tuples(*(st.binary(max_size=255) for _ in range(3)))
raw_replies = st.builds(RawReadReply, raw_tracks, st.sampled_from(list(Status)))
not_ok = st.sampled_from([s for s in Status if s is not Status.OK])

# (the command whose reply it is, the reply)
replies: st.SearchStrategy[tuple[Command, Reply]] = st.one_of(
    iso_replies.map(lambda r: (Command.ISO_READ, r)),
    raw_replies.map(lambda r: (Command.RAW_READ, r)),
    st.sampled_from(list(Status)).map(lambda s: (Command.ISO_READ, StatusReply(s))),
    st.sampled_from(list(Status)).map(lambda s: (Command.RAW_READ, StatusReply(s))),
    st.just((Command.COMM_TEST, CommTestOk())),
    st.tuples(st.sampled_from([Command.SENSOR_TEST, Command.RAM_TEST, Command.SET_BPI, Command.SET_HICO,
                               Command.SET_LOCO, Command.SET_LEADING_ZEROS, Command.ERASE, Command.ISO_WRITE,
                               Command.RAW_WRITE]),
              st.sampled_from(list(Status)).map(StatusReply)),
    st.tuples(st.integers(5, 8), st.integers(5, 8), st.integers(5, 8)).map(
        lambda b: (Command.SET_BPC, BpcReply(b))),
    not_ok.map(lambda s: (Command.SET_BPC, StatusReply(s))),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E).map(lambda c: (Command.MODEL, ModelReply(c))),
    st.text(alphabet="0123456789.HLU", min_size=5, max_size=5).map(
        lambda v: (Command.FIRMWARE, FirmwareReply("REV" + v))),
    st.booleans().map(lambda b: (Command.GET_COERCIVITY, CoercivityReply(b))),
    st.tuples(st.integers(0, 255), st.integers(0, 255)).map(
        lambda t: (Command.CHECK_LEADING_ZEROS, LeadingZerosReply(*t))),
)


def _send(c: Msr605Client, cmd: Command) -> bytes:
    if cmd is Command.ISO_WRITE:
        return c.send_iso_write((b"", b"", b""))
    if cmd is Command.RAW_WRITE:
        return c.send_raw_write((b"", b"", b""))
    return c.send(cmd, bytes(ARG_LENGTH.get(cmd, 0)))


# --- the host side: commands out, replies in -------------------------------------------------------
# Manual §6, item by item: what the host sends.
COMMAND_BYTES = [
    (Command.RESET, "", "1b61"),
    (Command.ISO_READ, "", "1b72"),
    (Command.COMM_TEST, "", "1b65"),
    (Command.LED_ALL_OFF, "", "1b81"),
    (Command.LED_ALL_ON, "", "1b82"),
    (Command.LED_GREEN, "", "1b83"),
    (Command.LED_YELLOW, "", "1b84"),
    (Command.LED_RED, "", "1b85"),
    (Command.SENSOR_TEST, "", "1b86"),
    (Command.RAM_TEST, "", "1b87"),
    (Command.SET_LEADING_ZEROS, "3d16", "1b7a3d16"),
    (Command.CHECK_LEADING_ZEROS, "", "1b6c"),
    (Command.ERASE, "07", "1b6307"),
    (Command.SET_BPI, "d2", "1b62d2"),
    (Command.RAW_READ, "", "1b6d"),
    (Command.MODEL, "", "1b74"),
    (Command.FIRMWARE, "", "1b76"),
    (Command.SET_BPC, "080808", "1b6f080808"),
    (Command.SET_HICO, "", "1b78"),
    (Command.SET_LOCO, "", "1b79"),
    (Command.GET_COERCIVITY, "", "1b64"),
]


@pytest.mark.parametrize(("cmd", "args", "wire"), COMMAND_BYTES)
def test_every_command_byte_for_byte(cmd: Command, args: str, wire: str) -> None:
    assert encode_command(cmd, bytes.fromhex(args)) == bytes.fromhex(wire)
    # and the device side reads it back as that command
    d = Msr605DeviceCodec()
    d.receive_data(bytes.fromhex(wire))
    assert d.next_event() == CommandEvent(cmd, bytes.fromhex(args))
    assert d.next_event() is NEED_DATA


def test_command_encoding_is_checked() -> None:
    with pytest.raises(EncodeError):
        encode_command(Command.SET_BPI)
    with pytest.raises(EncodeError, match="data block"):
        encode_command(Command.ISO_WRITE)
    with pytest.raises(TypeError):
        encode_command(0x72)  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="ESC"):
        encode_iso_block((b"A\x1bB", b"", b""))
    with pytest.raises(EncodeError, match="at most 255"):
        encode_raw_block((bytes(256), b"", b""))
    with pytest.raises(EncodeError, match="3 tracks"):
        encode_iso_block((b"",))


def test_both_ends_speak_the_sansio_vocabulary() -> None:
    host: EventSource[Reply] = Msr605Client()
    device: EventSource[HostEvent] = Msr605DeviceCodec()
    for end in (host, device):
        end.receive_data(b"")
        assert end.next_event() is NEED_DATA


def expecting(c: Msr605Client) -> Command | None:
    return c.expecting


def test_write_blocks_are_the_manuals() -> None:
    """§9 "Write Data to Magnetic Card" and "Write Raw Data" (8 BPC), byte for byte."""
    c = Msr605Client()
    assert c.send_iso_write((b"ABC123", b"12345", b"12345")) == bytes.fromhex(
        "1b77 1b73 1b01 414243313233 1b02 3132333435 1b03 3132333435 3f1c")
    assert expecting(c) is Command.ISO_WRITE
    assert c.send_raw_write((bytes.fromhex("c5b07814954e3e2a"), bytes.fromhex("2b8849eaaf"),
                             bytes.fromhex("2b8849eaaf"))) == bytes.fromhex(
        "1b6e 1b73 1b01 08 c5b07814954e3e2a 1b02 05 2b8849eaaf 1b03 05 2b8849eaaf 3f1c")
    assert expecting(c) is Command.RAW_WRITE
    # §8: a track left out is an empty string / a zero length
    assert c.send_iso_write((None, b"23", None)) == bytes.fromhex("1b77 1b73 1b01 1b02 3233 1b03 3f1c")
    assert c.send_raw_write((None, b"\x01", b"")) == bytes.fromhex("1b6e 1b73 1b01 00 1b02 01 01 1b03 00 3f1c")


def test_golden_iso_read_block() -> None:
    """§8 "Read Data": tracks 01, 23, 45 → ``%01?``, ``;23?``, ``;45?`` and ``3F 3F 1C``."""
    raw = bytes.fromhex("1b73 1b01 25 3031 3f 1b02 3b 3233 3f 1b03 3b 3435 3f 3f1c 1b30")
    res = parse_reply(Command.ISO_READ, raw)
    assert not isinstance(res, NeedData)
    reply, used = res
    assert used == len(raw)
    assert reply == IsoReadReply((TrackData(1, raw=b"%01?"), TrackData(2, raw=b";23?"), TrackData(3, raw=b";45?")))
    assert encode_reply(reply) == raw
    # §7 note 2: a track without data may come as its bare marker
    bare = parse_reply(Command.ISO_READ, bytes.fromhex("1b73 1b01 1b02 3b 3233 3f 1b03 3f1c 1b30"))
    assert not isinstance(bare, NeedData)
    assert isinstance(bare[0], IsoReadReply)
    assert [track_read(t).status for t in bare[0].tracks] == [TrackStatus.NO_DATA, TrackStatus.OK,
                                                              TrackStatus.NO_DATA]


def test_golden_raw_read_block() -> None:
    """§7 [Raw Data Block]: a length byte before each track; §7 note 2: an empty track is ``00``."""
    raw = bytes.fromhex("1b73 1b01 00 1b02 03 1b1c3f 1b03 00 3f1c 1b30")
    res = parse_reply(Command.RAW_READ, raw)
    assert res == (RawReadReply((b"", b"\x1b\x1c\x3f", b"")), len(raw))   # ESC, FS, ? are data here
    assert encode_reply(RawReadReply((b"", b"\x1b\x1c\x3f", b""))) == raw
    assert "1b1c" not in repr(RawReadReply((b"", b"\x1b\x1c\x3f", b""))).lower()


@pytest.mark.parametrize(("cmd", "wire", "reply"), [
    (Command.COMM_TEST, "1b79", CommTestOk()),
    (Command.SET_BPC, "1b30 07 05 05", BpcReply((7, 5, 5))),
    (Command.SET_BPC, "1b41", StatusReply(Status.FAIL)),
    (Command.GET_COERCIVITY, "1b68", CoercivityReply(True)),
    (Command.GET_COERCIVITY, "1b4c", CoercivityReply(False)),          # the manual's capital L
    (Command.MODEL, "1b 33 53", ModelReply("3")),
    (Command.FIRMWARE, "1b 5245563f312e3030", FirmwareReply("REV?1.00")),
    (Command.CHECK_LEADING_ZEROS, "1b 3d 16", LeadingZerosReply(61, 22)),
    (Command.ISO_WRITE, "1b39", StatusReply(Status.INVALID_SWIPE)),
    (Command.ERASE, "1b41", StatusReply(Status.FAIL)),
    (Command.RAW_READ, "1b31", StatusReply(Status.RW_ERROR)),
])
def test_replies_byte_for_byte(cmd: Command, wire: str, reply: Reply) -> None:
    c = Msr605Client()
    _send(c, cmd)
    c.receive_data(bytes.fromhex(wire))
    assert c.next_event() == reply
    assert c.next_event() is NEED_DATA and c.expecting is None


@given(replies, st.integers(min_value=1, max_value=9))
def test_reply_round_trip_over_short_reads(item: tuple[Command, Reply], step: int) -> None:
    cmd, reply = item
    wire = encode_reply(reply)
    c = Msr605Client()
    _send(c, cmd)
    got: Reply | NeedData = NEED_DATA
    for i in range(0, len(wire), step):
        assert got is NEED_DATA
        c.receive_data(wire[i:i + step])
        got = c.next_event()
    assert got == reply
    assert c.buffered == 0 and c.expecting is None


@given(st.sampled_from([c for c in Command if c.value not in (0x61, 0x81, 0x82, 0x83, 0x84, 0x85)]),
       st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(cmd: Command, data: bytes) -> None:
    c = Msr605Client()
    _send(c, cmd)
    c.receive_data(data)
    with contextlib.suppress(DecodeError):
        c.next_event()


@pytest.mark.parametrize(
    ("cmd", "raw", "field", "pos"),
    [
        (Command.ISO_READ, "1b73 1b02", "track1.marker", 3),          # track 2 where track 1 belongs
        (Command.ISO_READ, "1b73 1b01 2541 1c", "track1.data", 6),    # FS inside track 1
        (Command.ISO_READ, "1b73 1b01 1b2b 1b02 1b2b 1b03 3b31 1c", "iso.end", 14),   # no 3F before FS
        (Command.ISO_READ, "1b73 1b01 1b2b 1b02 1b2b 1b03 1b2b 3f1c 1b77", "iso.status", 17),  # unknown status
        (Command.ISO_READ, "1b55", "iso.start", 1),
        (Command.ISO_READ, "55", "iso.esc", 0),
        (Command.RAW_READ, "1b73 1b01 00 1b03", "track2.marker", 6),
        (Command.RAW_READ, "1b73 1b01 00 1b02 00 1b03 01 ff 3f1d", "raw.end", 13),
        (Command.SET_BPC, "1b30 090505", "reply.bpc", 2),
        (Command.GET_COERCIVITY, "1b 30", "reply.coercivity", 1),
    ],
)
def test_decode_errors_carry_field_position_and_raw(cmd: Command, raw: str, field: str, pos: int) -> None:
    c = Msr605Client()
    _send(c, cmd)
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
    assert c.next_event() is NEED_DATA
    c.receive_data(b"\x1b\x30")
    with pytest.raises(DecodeError, match="no command outstanding"):
        c.next_event()
    c.send(Command.RESET)                     # a reset discards what was buffered
    assert c.buffered == 0 and c.next_event() is NEED_DATA
    c.send(Command.ISO_READ)
    c.receive_data(b"\x1b\x73\x1b\x01%" + b"A" * 2000)
    with pytest.raises(DecodeError):
        c.next_event()
    with pytest.raises(EncodeError):
        parse_reply(Command.RESET, b"\x1b\x30")


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


# --- the device side: the host's bytes in, events out ------------------------------------------------
def events(data: bytes, step: int = 0) -> list[HostEvent]:
    d = Msr605DeviceCodec()
    out: list[HostEvent] = []
    for i in range(0, len(data), step or max(1, len(data))):
        d.receive_data(data[i:i + (step or len(data))])
        while not isinstance(ev := d.next_event(), NeedData):
            out.append(ev)
    return out


def test_write_commands_come_with_their_whole_block() -> None:
    iso = bytes.fromhex("1b77 1b73 1b01 414243313233 1b02 3132333435 1b03 3132333435 3f1c")
    assert events(iso) == [IsoWrite((b"ABC123", b"12345", b"12345"))]
    assert events(iso, step=1) == events(iso)
    # track 3 sent with its sentinels: the block ends ? ? FS, the data keeps its own ?
    assert events(bytes.fromhex("1b77 1b73 1b03 3b3132 3f 3f1c")) == [IsoWrite((None, None, b";12?"))]
    assert events(bytes.fromhex("1b77 1b73 3f1c")) == [IsoWrite((None, None, None))]
    raw = bytes.fromhex("1b6e 1b73 1b01 08 c5b07814954e3e2a 1b02 05 2b8849eaaf 1b03 03 1b3f1c 3f1c")
    assert events(raw, step=2) == [RawWrite((bytes.fromhex("c5b07814954e3e2a"), bytes.fromhex("2b8849eaaf"),
                                             b"\x1b\x3f\x1c"))]
    assert "c5b0" not in repr(events(raw)[0]).lower()


@pytest.mark.parametrize(("wire", "want"), [
    # unknown command: one event, then whatever follows
    ("1b99 1b65", [UnknownCommand(0x99), CommandEvent(Command.COMM_TEST)]),
    # a data block with no write command before it is consumed whole: no status of its own
    ("1b99 1b73 1b01 41 3f1c 1b65", [UnknownCommand(0x99), StrayBlock(2, 7), CommandEvent(Command.COMM_TEST)]),
    # ESC s that starts no data block is just an unknown command (the device does not wait for an end)
    ("1b73 1b65", [UnknownCommand(0x73), CommandEvent(Command.COMM_TEST)]),
    ("1b73 3f1c", [StrayBlock(0, 4)]),
    # line noise between commands is skipped
    ("7a7a 1b65 0d0a", [CommandEvent(Command.COMM_TEST)]),
    # a write without its block: refused, and the next command still runs
    ("1b77 1b61", [MalformedBlock(Command.ISO_WRITE, "1B 61 where the data block (1B 73) belongs", 2),
                   CommandEvent(Command.RESET)]),
    ("1b6e 41", [MalformedBlock(Command.RAW_WRITE, "41 where the data block (1B 73) belongs", 2)]),
    # broken framing inside a block: the block is consumed up to its 3F 1C
    ("1b77 1b73 1b02 31 1b01 32 3f1c 1b65",
     [MalformedBlock(Command.ISO_WRITE, "ESC 01 where a rising track marker (01…03) or the data belongs", 7),
      CommandEvent(Command.COMM_TEST)]),
    ("1b77 1b73 41 1b01 3f1c", [MalformedBlock(Command.ISO_WRITE, "41 before the first track marker", 4)]),
    ("1b77 1b73 1b01 41 1c 1b65", [MalformedBlock(Command.ISO_WRITE, "1C without the 3F before it", 7),
                                   CommandEvent(Command.COMM_TEST)]),
    ("1b6e 1b73 1b01 01 41 1b01 00 3f1c",
     [MalformedBlock(Command.RAW_WRITE, "1B 01 where a rising track marker (1B 01…03) or 3F 1C belongs", 8)]),
])
def test_what_the_device_side_makes_of_odd_input(wire: str, want: list[HostEvent]) -> None:
    data = bytes.fromhex(wire)
    assert events(data) == want
    assert events(data, step=1) == want


def test_a_block_that_never_ends_is_dropped_after_max_block() -> None:
    d = Msr605DeviceCodec()
    d.receive_data(bytes.fromhex("1b77 1b73 1b01") + b"A" * 100)
    assert d.next_event() is NEED_DATA                   # still waiting for the end
    d.receive_data(b"A" * MAX_BLOCK)
    ev = d.next_event()
    assert isinstance(ev, MalformedBlock) and ev.command is Command.ISO_WRITE
    assert d.buffered == 0
    d.receive_data(b"\x1b\x65")
    assert d.next_event() == CommandEvent(Command.COMM_TEST)


iso_chars = st.binary(max_size=255).map(lambda b: bytes(c for c in b if c not in (0x1B, 0x1C)))
host_events: st.SearchStrategy[HostEvent] = st.one_of(
    st.sampled_from([c for c in Command if c not in WRITE_COMMANDS]).flatmap(
        lambda c: st.binary(min_size=ARG_LENGTH.get(c, 0), max_size=ARG_LENGTH.get(c, 0)).map(
            lambda a: CommandEvent(c, a))),
    st.tuples(iso_chars, iso_chars, iso_chars).map(IsoWrite),
    raw_tracks.map(lambda t: RawWrite((t[0], t[1], t[2]))),
)


def _host_bytes(ev: HostEvent) -> bytes:
    c = Msr605Client()
    if isinstance(ev, CommandEvent):
        return c.send(ev.command, ev.args)
    if isinstance(ev, IsoWrite):
        return c.send_iso_write(ev.tracks)
    assert isinstance(ev, RawWrite)
    return c.send_raw_write(ev.tracks)


@given(st.lists(host_events, max_size=4), st.integers(1, 64))
def test_host_events_round_trip_over_any_split(evs: list[HostEvent], step: int) -> None:
    wire = b"".join(_host_bytes(e) for e in evs)
    assert events(wire, step=step) == evs


@given(st.binary(max_size=2 * MAX_BLOCK), st.integers(1, 300))
def test_the_device_side_never_raises_and_consumes_everything(data: bytes, step: int) -> None:
    d = Msr605DeviceCodec()
    for i in range(0, len(data), step):
        d.receive_data(data[i:i + step])
        while not isinstance(d.next_event(), NeedData):
            pass
    assert d.pos + d.buffered == len(data)
    assert d.buffered <= MAX_BLOCK + 1


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
    assert "9900" not in repr(IsoWrite((None, b"9900010000000019=3012", None)))


def test_stripe_block_round_trips_to_the_cards_tracks() -> None:
    card = card_for_profile(load_profile("demo"))
    assert swipe_result(stripe_block(card.stripe)) == ideal_swipe(card)
