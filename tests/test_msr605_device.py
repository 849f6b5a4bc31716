"""The emulated MSR605 (pure device core) and the virtual stripe it reads and writes: every
command of the manual byte for byte, what is written is read back, the card file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.cards.profiles import load_profile
from hardware.magstripe.tracks import track_spec
from hardware.msr605 import swipe_result
from hardware.msr605_codec import Command, IsoReadReply, RawReadReply, Status
from hardware.msr605_codec_host import Msr605Client
from hardware.msr605_device import CardPass, Mode, Msr605Device, erase_select
from hardware.msr605_stripe import (
    FORMAT,
    Coercivity,
    MagStripe,
    RecordedTrack,
    is_card_file,
    iso_track,
    load_card_file,
    pack_raw,
    save_card_file,
    unpack_raw,
)
from hardware.ports import TrackStatus
from hardware.sim import card_for_profile, ideal_swipe
from protocol.errors import ConfigError, EncodeError

CARD = card_for_profile(load_profile("demo"))
H = bytes.fromhex

# The manual's examples (§8, §9): tracks "%ABC123?", ";12345?", ";12345?".
ISO_WRITE = "1b77 1b73 1b01 414243313233 1b02 3132333435 1b03 3132333435 3f1c"
ISO_BLOCK = "1b73 1b01 25414243313233 3f 1b02 3b3132333435 3f 1b03 3b3132333435 3f 3f1c 1b30"
RAW_8BPC = "1b6e 1b73 1b01 08 c5b07814954e3e2a 1b02 05 2b8849eaaf 1b03 05 2b8849eaaf 3f1c"
RAW_755 = "1b6e 1b73 1b01 09 456162235152131f2a 1b02 08 0b01021304151f15 1b03 08 0b01021304151f15 3f1c"
ABC = ("ABC123", "12345", "12345")


def mode(d: Msr605Device) -> Mode:
    return d.mode


# --- every command, byte for byte (manual §6) --------------------------------------------------------
@pytest.mark.parametrize(("send", "answer"), [
    ("1b61", ""),                               # 1 reset: no answer
    ("1b65", "1b79"),                           # 4 communication test
    ("1b81", ""), ("1b82", ""), ("1b83", ""), ("1b84", ""), ("1b85", ""),   # 5–9 LEDs: no answer
    ("1b87", "1b30"),                           # 11 RAM test
    ("1b7a 3d16", "1b30"),                      # 12 set leading zeros
    ("1b6c", "1b 3d 16"),                       # 13 check leading zeros (defaults 61, 22)
    ("1b63 08", "1b41"),                        # 14 erase: select byte over 07 fails at once
    ("1b62 d2", "1b30"), ("1b62 4b", "1b30"), ("1b62 a1", "1b30"), ("1b62 a0", "1b30"),
    ("1b62 c1", "1b30"), ("1b62 c0", "1b30"), ("1b62 00", "1b41"),   # 15 select BPI
    ("1b74", "1b 33 53"),                       # 18 model "3", then S
    ("1b76", "1b 5245563033 2e3032"),           # 19 firmware REV03.02
    ("1b6f 080808", "1b30 080808"), ("1b6f 070505", "1b30 070505"),
    ("1b6f 040505", "1b41"), ("1b6f 070509", "1b41"),                # 20 set BPC
    ("1b78", "1b30"), ("1b79", "1b30"),         # 21, 22 Hi-Co, Lo-Co
    ("1b64", "1b68"),                           # 23 coercivity (Hi-Co by default)
    ("1b99", "1b34"), ("1b00", "1b34"),         # not a command
    ("1b77 1b61", "1b32"),                      # a write without its data block; the reset runs
    ("1b77 1b73 1b02 31 1b01 32 3f1c", "1b32"),  # a broken block: consumed, one status
    ("1b99 1b73 1b01 41 3f1c", "1b34"),         # an unknown command's block: one status, not five
])
def test_immediate_answers(send: str, answer: str) -> None:
    d = Msr605Device()
    assert d.receive_data(H(send)) == H(answer)
    assert not d.armed


@pytest.mark.parametrize(("send", "armed"), [
    ("1b72", Mode.ISO_READ), ("1b6d", Mode.RAW_READ), ("1b86", Mode.SENSOR_TEST),
    (ISO_WRITE, Mode.ISO_WRITE), (RAW_8BPC, Mode.RAW_WRITE), ("1b63 07", Mode.ERASE),
])
def test_commands_that_wait_for_a_card_answer_nothing_until_it_passes(send: str, armed: Mode) -> None:
    d = Msr605Device()
    assert d.receive_data(H(send)) == b""
    assert mode(d) is armed
    d.receive_data(H("1b61"))                          # a reset cancels: a card then does nothing
    assert mode(d) is Mode.IDLE
    p = d.swipe(MagStripe.from_iso(CARD.stripe))
    assert p.sent == b"" and p.written == () and p.card == MagStripe.from_iso(CARD.stripe)


def test_settings_and_queries() -> None:
    d = Msr605Device()
    assert d.receive_data(H("1b79 1b64")) == H("1b30 1b6c")               # Lo-Co, then ask
    assert d.receive_data(H("1b7a 3d")) == b""                           # short read: waits for arg 2
    assert d.receive_data(H("10 1b6c")) == H("1b30 1b3d10")
    assert d.receive_data(H("1b6f 08")) == b""
    assert d.receive_data(H("0607")) == H("1b30 080607") and d.bpc == (8, 6, 7)
    assert d.receive_data(H("1b62 a0 1b62 4b")) == H("1b30 1b30") and d.bpi == {1: 75, 2: 75, 3: 210}
    assert d.receive_data(H("1b83")) == b"" and d.leds == {"green"}
    assert d.receive_data(b"zz\r\n") == b""                             # noise between commands
    assert d.receive_data(H("1b61 1b64")) == H("1b6c")                   # a reset keeps the settings
    assert d.commands[:3] == [Command.SET_LOCO, Command.GET_COERCIVITY, Command.SET_LEADING_ZEROS]


# --- reading -------------------------------------------------------------------------------------
def test_iso_read_and_sensor_test_of_a_profile_card() -> None:
    card = MagStripe.from_iso(CARD.stripe)
    d = Msr605Device()
    d.receive_data(H("1b72"))
    p = d.swipe(card, bad=frozenset({1}), status=Status.RW_ERROR)
    c = Msr605Client()
    c.send(Command.ISO_READ)
    c.receive_data(p.sent)
    reply = c.next_event()
    assert isinstance(reply, IsoReadReply) and reply.status is Status.RW_ERROR
    res = swipe_result(reply)
    assert [t.status for t in res.tracks] == [TrackStatus.PARITY_ERROR, TrackStatus.OK, TrackStatus.NO_DATA]
    assert res.tracks[1].data == CARD.stripe[1]
    d.receive_data(H("1b72"))
    c.send(Command.ISO_READ)
    c.receive_data(d.swipe(card).sent)
    reply = c.next_event()
    assert isinstance(reply, IsoReadReply) and swipe_result(reply) == ideal_swipe(CARD)
    d.receive_data(H("1b86"))
    assert d.swipe(card).sent == H("1b30")
    assert d.swipe(card).sent == b""                                     # nothing armed any more


def test_the_manuals_read_example_and_its_raw_form() -> None:
    """§8: tracks 01, 23, 45; the raw read at the default 7/5/5 BPC is each character's bits most
    significant first (§7 "Read"): '%' = 1010001 → 51, ';' = 11010 → 1A."""
    card = MagStripe.from_iso(("01", "23", "45"))
    d = Msr605Device()
    d.receive_data(H("1b72"))
    assert d.swipe(card).sent == H("1b73 1b01 25 3031 3f 1b02 3b 3233 3f 1b03 3b 3435 3f 3f1c 1b30")
    d.receive_data(H("1b6d"))
    assert d.swipe(card).sent == H("1b73 1b01 05 51 04 45 7c 6d"       # %, 0, 1, ?, LRC
                                   "1b02 05 1a 08 19 1f 15 1b03 05 1a 04 15 1f 15 3f1c 1b30")


def test_an_unreadable_track_reads_as_bad_with_status_31() -> None:
    garbage = RecordedTrack(unpack_raw(H("0f0f0f0f"), 8), 210, 61)      # no start sentinel in there
    card = MagStripe.from_iso((None, "12345", None)).with_track(1, garbage)
    d = Msr605Device()
    d.receive_data(H("1b72"))
    assert d.swipe(card).sent == H("1b73 1b01 1b2a 1b02 3b3132333435 3f 1b03 1b2b 3f1c 1b31")


# --- writing, and reading back what was written ------------------------------------------------------
def _write_then_read(d: Msr605Device, card: MagStripe, write: str) -> tuple[CardPass, bytes, bytes]:
    assert d.receive_data(H(write)) == b""
    p = d.swipe(card)
    d.receive_data(H("1b72"))
    iso = d.swipe(p.card).sent
    d.receive_data(H("1b6d"))
    raw = d.swipe(p.card).sent
    return p, iso, raw


def test_iso_write_then_iso_and_raw_read() -> None:
    d = Msr605Device()
    p, iso, raw = _write_then_read(d, MagStripe.from_iso(CARD.stripe), ISO_WRITE)
    assert p.sent == H("1b30") and p.written == (1, 2, 3)
    assert iso == H(ISO_BLOCK)
    assert raw == H("1b73 1b01 09 514323624525647c2a 1b02 08 1a10081904151f15 1b03 08 1a10081904151f15 3f1c 1b30")
    assert p.card.iso() == ABC
    assert p.card.track(2) == iso_track(2, "12345", bpi=75, lead_zeros=22)


@pytest.mark.parametrize(("bpc", "write"), [("080808", RAW_8BPC), ("070505", RAW_755)])
def test_the_manuals_raw_writes_read_back_as_iso(bpc: str, write: str) -> None:
    """§9 "Write Raw Data": the 8-BPC and the 7/5/5-BPC encodings of the same three tracks."""
    d = Msr605Device()
    assert d.receive_data(H("1b6f" + bpc)) == H("1b30" + bpc)
    p, iso, raw = _write_then_read(d, MagStripe(), write)
    assert p.sent == H("1b30") and iso == H(ISO_BLOCK) and p.card.iso() == ABC
    if bpc == "080808":      # read back: each written byte with its 8 bits reversed (§7 Read vs Write)
        assert raw == H("1b73 1b01 08 a30d1e28a9727c54 1b02 05 d4119257f5 1b03 05 d4119257f5 3f1c 1b30")


def test_raw_write_at_6_bpc_leaves_no_parity_and_reads_as_bad() -> None:
    """§9's 6/5/6 example records track 1 without parity bits: not an ISO track any more."""
    d = Msr605Device()
    d.receive_data(H("1b6f 060506"))
    p, iso, _ = _write_then_read(d, MagStripe(), "1b6e 1b73 1b01 09 052122231112131f2a 1b02 08 0b01021304151f15 "
                                                 "1b03 00 3f1c")
    assert p.sent == H("1b30")
    assert iso == H("1b73 1b01 1b2a 1b02 3b3132333435 3f 1b03 1b2b 3f1c 1b31")


def test_write_details() -> None:
    d = Msr605Device()
    card = MagStripe.from_iso(CARD.stripe)
    # an empty track is left as it is; sentinels may come along
    d.receive_data(H("1b77 1b73 1b01 1b02 3b 3132 3f 1b03 3f1c"))
    p = d.swipe(card)
    assert p.written == (2,) and p.card.iso() == (CARD.stripe[0], "12", None)
    # characters outside the track's set, or more than a card holds: command format error, no arming
    assert d.receive_data(H("1b77 1b73 1b02 41 3f1c")) == H("1b32") and not d.armed
    assert d.receive_data(H("1b77 1b73 1b01 61 3f1c")) == H("1b32")           # lower case on track 1
    assert d.receive_data(H("1b77 1b73 1b01 c1 3f1c")) == H("1b32")
    assert d.receive_data(b"\x1bw\x1bs\x1b\x02" + b"1" * 38 + b"?\x1c") == H("1b32")   # track 2 holds 37
    assert d.receive_data(b"\x1bn\x1bs\x1b\x01\xff" + bytes(255) + b"?\x1c") == H("1b32")  # 2040 bits
    assert all("1111" not in r for r in d.rejected)                             # no card data
    # an injected write error writes nothing
    d.receive_data(H(ISO_WRITE))
    p = d.swipe(card, status=Status.INVALID_SWIPE)
    assert p.sent == H("1b39") and p.written == () and p.card == card


def test_density_and_leading_zeros_go_with_the_write() -> None:
    d = Msr605Device()
    d.receive_data(H("1b62 a0 1b7a 0a05"))                # track 1 at 75 bpi; 10 / 5 leading zeros
    assert d.receive_data(H(ISO_WRITE)) == b""
    p = d.swipe(MagStripe())
    t1, t2 = p.card.track(1), p.card.track(2)
    assert t1 is not None and (t1.bpi, t1.lead_zeros) == (75, 10)
    assert t2 is not None and (t2.bpi, t2.lead_zeros) == (75, 5)
    assert p.card.iso() == ABC
    # at 75 bpi track 1 holds ~250 bits: 76 characters do not fit
    assert d.receive_data(b"\x1bw\x1bs\x1b\x01" + b"A" * 76 + b"?\x1c") == H("1b32")


def test_coercivity_decides_whether_a_write_takes() -> None:
    hi = MagStripe.from_iso(CARD.stripe)
    lo = MagStripe.from_iso(CARD.stripe, Coercivity.LOW)
    d = Msr605Device()
    d.receive_data(H("1b79"))                              # Lo-Co: too weak for a Hi-Co card
    d.receive_data(H(ISO_WRITE))
    p = d.swipe(hi)
    assert p.sent == H("1b31") and p.card == hi and p.written == ()
    d.receive_data(H("1b63 07"))
    assert d.swipe(hi).sent == H("1b41")
    d.receive_data(H(ISO_WRITE))
    assert d.swipe(lo).card.iso() == ABC                   # a Lo-Co card takes it
    d.receive_data(H("1b78 1b63 07"))                      # Hi-Co writes both
    p = d.swipe(hi)
    assert p.sent == H("1b30") and p.card.tracks == (None, None, None) and p.written == (1, 2, 3)


@pytest.mark.parametrize(("sel", "tracks"), [
    (0x00, {1}), (0x01, {1}), (0x02, {2}), (0x04, {3}), (0x03, {1, 2}), (0x05, {1, 3}), (0x06, {2, 3}),
    (0x07, {1, 2, 3}),
])
def test_erase_select_byte(sel: int, tracks: set[int]) -> None:
    assert erase_select(sel) == frozenset(tracks)
    d = Msr605Device()
    d.receive_data(bytes([0x1B, 0x63, sel]))
    p = d.swipe(MagStripe.from_iso(("A", "1", "2")))
    assert p.sent == H("1b30") and p.written == tuple(sorted(tracks))
    assert [n for n in (1, 2, 3) if p.card.track(n) is None] == sorted(tracks)


iso_data = st.integers(1, 3).flatmap(
    lambda n: st.tuples(st.just(n), st.text(alphabet=track_spec(n).data_charset, max_size=track_spec(n).max_data)))


@given(iso_data)
def test_any_iso_write_reads_back(item: tuple[int, str]) -> None:
    n, data = item
    tracks = [b"", b"", b""]
    tracks[n - 1] = data.encode("ascii") if data else track_spec(n).ss.encode() + track_spec(n).es.encode()
    d = Msr605Device()
    assert d.receive_data(Msr605Client().send_iso_write(tracks)) == b""
    p = d.swipe(MagStripe())
    assert p.card.read(n).data == data and p.card.read(n).ok
    d.receive_data(H("1b72"))
    c = Msr605Client()
    c.send(Command.ISO_READ)
    c.receive_data(d.swipe(p.card).sent)
    reply = c.next_event()
    assert isinstance(reply, IsoReadReply) and reply.status is Status.OK
    assert swipe_result(reply).tracks[n - 1].data == data


def _reversed_low_bits(byte: int, bpc: int) -> int:
    return sum(((byte >> k) & 1) << (bpc - 1 - k) for k in range(bpc))


@given(st.integers(5, 8), st.binary(min_size=1, max_size=30))
def test_raw_write_reads_back_with_the_bits_of_each_byte_reversed(bpc: int, data: bytes) -> None:
    """§7: the write orientation is least significant bit first, the read orientation most
    significant first — so, when the first bit written is a 1, each byte comes back reversed."""
    data = bytes([data[0] | 1]) + data[1:]
    d = Msr605Device()
    d.receive_data(bytes([0x1B, 0x6F, bpc, bpc, bpc]))
    d.receive_data(Msr605Client().send_raw_write((None, None, data)))
    p = d.swipe(MagStripe())
    assert p.sent == H("1b30")
    d.receive_data(H("1b6d"))
    c = Msr605Client()
    c.send(Command.RAW_READ)
    c.receive_data(d.swipe(p.card).sent)
    reply = c.next_event()
    assert isinstance(reply, RawReadReply)
    assert reply.tracks == (b"", b"", bytes(_reversed_low_bits(b, bpc) for b in data))


# --- the stripe and the card file ------------------------------------------------------------------------
def test_bit_packing_is_the_manuals() -> None:
    assert unpack_raw(H("45"), 7) == (1, 0, 1, 0, 0, 0, 1)                    # '%' with parity, §9
    assert pack_raw(unpack_raw(H("c5b07814954e3e2a"), 8), 8) == H("a30d1e28a9727c54")
    assert pack_raw((1, 1, 0, 1, 0, 0), 5) == H("1a 00")                      # the last byte padded
    for bad in (4, 9):
        with pytest.raises(EncodeError):
            pack_raw((1,), bad)
    with pytest.raises(EncodeError):
        RecordedTrack((0, 2), 210, 0)
    with pytest.raises(EncodeError):
        RecordedTrack((1,), 100, 0)
    assert "1, 0" not in repr(RecordedTrack((1, 0, 1), 210, 3))


def test_card_file_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "card.toml"
    garbage = RecordedTrack(unpack_raw(H("0f0f"), 8), 210, 0)
    card = MagStripe.from_iso(CARD.stripe, Coercivity.LOW).with_track(3, garbage)
    save_card_file(f, card)
    assert is_card_file(f) and load_card_file(f) == card
    text = f.read_text()
    assert text.startswith("# posemu magnetic-stripe card") and f'format = "{FORMAT}"' in text
    assert "[track3]" in text and "data" not in text.split("[track3]")[1]      # not ISO: bits only
    assert not list(tmp_path.glob(".card.toml.*"))                                # no temporary left


def test_a_hand_written_card_file(tmp_path: Path) -> None:
    f = tmp_path / "hand.toml"
    f.write_text(f'format = "{FORMAT}"\n[track2]\ndata = "9900010000000019=3012101"\n')
    card = load_card_file(f)
    assert card.iso() == (None, "9900010000000019=3012101", None) and card.coercivity is Coercivity.HIGH
    t2 = card.track(2)
    assert t2 is not None and (t2.bpi, t2.lead_zeros) == (75, 22)


@pytest.mark.parametrize(("text", "match"), [
    ('format = "other"', "not a posemu magstripe card"),
    (f'format = "{FORMAT}"\ncoercivity = "mid"', "coercivity"),
    (f'format = "{FORMAT}"\ncolour = 1', "unknown key"),
    (f'format = "{FORMAT}"\ntrack1 = 3', "must be a table"),
    (f'format = "{FORMAT}"\n[track1]\nbpi = 210', "needs bits or data"),
    (f'format = "{FORMAT}"\n[track1]\nbits = "0120"', "0 and 1"),
    (f'format = "{FORMAT}"\n[track2]\ndata = "ABC"', "character set"),
    (f'format = "{FORMAT}"\n[track2]\ndata = "1"\nbpi = 99', "bpi"),
    (f'format = "{FORMAT}"\n[track2]\nbits = "{"1" * 300}"', "do not fit"),
    ("format = [", "card file"),
])
def test_bad_card_files_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_card_file(f)


def test_a_profile_is_not_a_card_file(tmp_path: Path) -> None:
    assert not is_card_file("demo") and not is_card_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_card_file(tmp_path / "missing.toml")
