"""protocol.wiremask: card numbers masked inside wire bytes, lengths kept, messages still decodable."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.framing import Framer, LengthHeader, frame
from protocol.iso import Message, decode, encode
from protocol.sansio import NEED_DATA
from protocol.specs import CUP, ISO87ASCII, Profile, build_profile
from protocol.wiremask import (
    StreamMasker,
    mask_digit_runs,
    mask_digits,
    mask_icc,
    mask_payload,
    mask_track,
    zero_digits,
)
from tests.strategies import messages

PAN = "9912345678901234"
MASKED = "9912340000001234"
PROFILES = [CUP, ISO87ASCII]
CARD_FIELDS = {2, 35, 36, 45, 55}


def _icc(pan: str = PAN) -> bytes:
    track2 = bytes.fromhex(pan + "D2912101" + "123456789F")
    inner = bytes.fromhex("5A08" + pan) + bytes([0x57, len(track2)]) + track2
    return bytes.fromhex("9F2608A1B2C3D4E5F60718") + bytes([0x70, len(inner)]) + inner + bytes.fromhex("9F360200FF")


def sample(profile: Profile) -> Message:
    return Message("0200", {2: PAN, 3: "310000", 4: "000000001234", 11: "000042", 22: "051", 25: "00",
                            35: PAN + "=29121011234567890", 41: "TERM0001", 42: "MERCHANT0000001", 49: "156",
                            55: _icc(), 60: "01000001000", 64: bytes(range(8))}, profile.default_header)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_card_data_is_masked_and_everything_else_is_unchanged(profile: Profile) -> None:
    m = sample(profile)
    raw = encode(m, profile)
    out = mask_payload(raw, profile)
    assert len(out) == len(raw)
    got = decode(out, profile)
    assert got[2] == MASKED
    assert got[35] == MASKED + "=29121010000000000"
    assert got[55] == _icc(MASKED).replace(bytes.fromhex("123456789F"), bytes.fromhex("000000000F"))
    for n in m:
        if n not in CARD_FIELDS:
            assert got[n] == m[n], n
    assert got.header == m.header
    assert PAN.encode() not in out and bytes.fromhex(PAN) not in out
    assert mask_payload(out, profile) == out                       # masking twice changes nothing


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_odd_length_pan_and_short_pan(profile: Profile) -> None:
    m = Message("0200", {2: "991234567890123", 3: "000000"}, profile.default_header)
    assert decode(mask_payload(encode(m, profile), profile), profile)[2] == "991234000000123"
    short = Message("0200", {2: "123456789012", 3: "000000"}, profile.default_header)
    assert decode(mask_payload(encode(short, profile), profile), profile)[2] == "000000000000"


def test_track_and_icc_helpers() -> None:
    assert mask_track("%B" + PAN + "^DOE/J^2912101000123?", "^") == "%B" + MASKED + "^DOE/J^2912101000000?"
    assert mask_track(PAN) == MASKED                    # no separator: PAN only
    assert mask_digits("") == ""
    # a constructed template that runs past its end is not TLV: masked as digit runs instead (the
    # run of digit nibbles starts at the 5A length byte "08", so 6 + 4 of that run stay)
    bad = bytes.fromhex("7040" + "5A08" + PAN)
    assert mask_icc(bad) == bytes.fromhex("7040" + "5A" + "089912" + "00000000" + "1234")


def test_a_frame_that_does_not_decode_is_masked_field_by_field_then_by_digit_runs() -> None:
    good = encode(sample(ISO87ASCII), ISO87ASCII)
    # extra bytes after the last field: every field decodes, the tail is masked as digit runs
    extra = mask_payload(good + PAN.encode(), ISO87ASCII)
    assert extra[:len(good)] == mask_payload(good, ISO87ASCII)
    assert extra[len(good):] == MASKED.encode()
    # a frame cut inside field 55: fields 2 and 35 masked by their rules, the rest as digit runs
    cut = good[:good.index(bytes.fromhex("9F2608")) + 20]
    out = mask_payload(cut, ISO87ASCII)
    assert len(out) == len(cut) and PAN.encode() not in out and bytes.fromhex(PAN) not in out
    assert b"310000" + b"000000001234" + b"000042" in out       # fields before 55 as they were
    tail = out[cut.index(bytes.fromhex("9F2608")):]
    assert tail == bytes.fromhex(zero_digits(cut[-len(tail):], binary=True).hex())   # every digit nibble 0
    assert bytes.fromhex("9912345678")[3:] not in tail          # the cut PAN's middle digits are gone
    # cut inside field 2 (ASCII): its digits all become 0
    cut2 = good[:good.index(PAN.encode()) + 9]
    assert mask_payload(cut2, ISO87ASCII)[-11:] == b"16000000000"


def test_digit_run_fallback() -> None:
    assert mask_digit_runs(b"ABC-DEF-GHI") == b"ABC-DEF-GHI"
    # ASCII text is mostly digit nibbles ("n", "o", "D", "I"…): in bytes that do not decode it is not
    # told apart from a BCD card number, and is masked like one (same length)
    assert mask_digit_runs(b"no digits here") != b"no digits here"
    assert len(mask_digit_runs(b"no digits here")) == len(b"no digits here")
    assert mask_digit_runs(b"123456789012") == b"000000000000"  # 12 digits: maybe a cut PAN
    assert mask_digit_runs(b"\xff123456\xff") == b"\xff123456\xff"  # 6 ASCII digits: a BIN at most
    assert mask_digit_runs(b"A" + PAN.encode() + b"=") == b"A" + MASKED.encode() + b"="
    assert mask_digit_runs(bytes.fromhex("FF" + PAN + "FF")) == bytes.fromhex("FF" + MASKED + "FF")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_message_stays_decodable_with_only_card_fields_changed(profile: Profile, data: st.DataObject) -> None:
    m = data.draw(messages(profile))
    try:
        raw = encode(m, profile)
    except Exception:         # the strategy can draw values the codec refuses (e.g. 55 too long)
        return
    out = mask_payload(raw, profile)
    assert len(out) == len(raw)
    got = decode(out, profile)
    assert set(got) == set(m)
    for n in m:
        v, w = m[n], got[n]
        if n == 2 and isinstance(v, str):
            assert w == (mask_digits(v) if v.isdigit() else w)
            assert len(w) == len(v)
        elif n in (35, 36, 45) and isinstance(v, str):
            assert w == mask_track(v, "=")
        elif n == 55 and isinstance(v, bytes):
            assert w == mask_icc(v)
        else:
            assert w == v, n
    assert mask_payload(out, profile) == out


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_keep_their_length_and_lose_long_digit_runs(profile: Profile, data: bytes) -> None:
    out = mask_payload(data, profile)
    assert len(out) == len(data)
    # no run of 7+ ASCII digits survives with its middle intact, wherever the frame stopped decoding
    for m in re.finditer(rb"[0-9]{7,}", out):
        run = m.group(0)
        if run[6:].strip(b"0") and run == data[m.start():m.end()]:
            assert _in_decoded_plain_field(data, profile, m.start()), run


def _in_decoded_plain_field(data: bytes, profile: Profile, pos: int) -> bool:
    """A digit run inside a field that decoded and holds no card data (an amount next to a STAN…)."""
    from protocol.wiremask import _spans

    spans, tail, _ = _spans(data, profile.spec)
    return pos < tail and not any(start <= pos < end and k in ("2", "35", "36", "45", "55")
                                  for k, start, end, _ in spans)


def _stream(profile: Profile) -> bytes:
    m = sample(profile)
    rsp = Message("0210", {3: "310000", 11: "000042", 39: "00", 54: "1002156C000001234567"}, profile.default_header)
    return frame(encode(m, profile)) + frame(encode(rsp, profile)) + frame(encode(m, profile))


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_stream_masker_output_does_not_depend_on_how_the_stream_is_split(profile: Profile, cuts: list[int]) -> None:
    stream = _stream(profile)
    whole = StreamMasker(profile)
    whole.receive_data(stream)
    expected = []
    while (ev := whole.next_event()) is not NEED_DATA:
        assert isinstance(ev, bytes)
        expected.append(ev)
    assert len(expected) == 3 and whole.buffered == 0
    sm = StreamMasker(profile)
    got = []
    prev = 0
    for c in [*sorted(x % (len(stream) + 1) for x in cuts), len(stream)]:
        sm.receive_data(stream[prev:c])
        prev = c
        while (ev := sm.next_event()) is not NEED_DATA:
            assert isinstance(ev, bytes)
            got.append(ev)
    assert got == expected
    assert b"".join(got) == b"".join(frame(mask_payload(f[2:], profile)) for f in expected)


def test_stream_masker_after_a_broken_length_and_on_flush() -> None:
    sm = StreamMasker(ISO87ASCII)
    sm.receive_data(b"\x00\x00garbage\xab" + PAN[:8].encode())
    first = sm.next_event()
    assert first == mask_digit_runs(b"\x00\x00garbage\xab")   # the digits are held back: the run may go on
    assert sm.next_event() is NEED_DATA
    sm.receive_data(PAN[8:].encode() + b" end\xab")
    assert sm.next_event() == MASKED.encode() + b" end\xab"     # "d" (0x64) could start a BCD run: held until \xab
    # a frame cut short by a closed connection
    sm2 = StreamMasker(CUP)
    sm2.receive_data(frame(encode(sample(CUP), CUP))[:40])
    assert sm2.next_event() is NEED_DATA
    rest = sm2.flush()
    assert len(rest) == 40 and bytes.fromhex(PAN) not in rest and sm2.buffered == 0


@pytest.mark.parametrize("header", [LengthHeader(4, "ascii"), LengthHeader(2, "bcd"), LengthHeader(2, "binary", True)],
                         ids=lambda h: f"{h.size}-{h.encoding}{'-inclusive' if h.inclusive else ''}")
def test_a_stream_in_a_host_dialects_length_header_is_masked_frame_by_frame(header: LengthHeader) -> None:
    """A dialect's envelope (emulator.dialect): the frames are found by its length header, so each is
    masked as a message — it still decodes, with only the card data changed."""
    profile = build_profile("iso87ascii", length_header=header)
    m = sample(profile)
    raw = b"".join(frame(encode(m, profile), header=header) for _ in range(3))
    sm = StreamMasker(profile)
    out = b""
    for i in range(0, len(raw), 7):                                   # split anywhere
        sm.receive_data(raw[i:i + 7])
        while (ev := sm.next_event()) is not NEED_DATA:
            assert isinstance(ev, bytes)
            out += ev
    out += sm.flush()
    assert len(out) == len(raw) and PAN.encode() not in out
    framer = Framer(header=header)
    framer.receive_data(out)
    got = [decode(p, profile) for p in framer.frames()]
    assert len(got) == 3
    for g in got:
        assert g[2] == MASKED and g[35] == MASKED + "=29121010000000000"
        assert all(g[n] == m[n] for n in m if n not in CARD_FIELDS)
