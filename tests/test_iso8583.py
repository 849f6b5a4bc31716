"""The ISO 8583 codec: golden messages, strict value checks, round-trip and fuzz properties."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, EncodeError
from protocol.iso import Message, _decode_checked, _encode_checked, _plan, decode, encode
from protocol.specs import CUP, ISO87ASCII, PROFILES, Profile
from tests.strategies import messages

PAN = "9900010000000019"
T2 = PAN + "=30121010000000000"


def balance_inquiry(header: bytes) -> Message:
    return Message("0200", {
        2: PAN, 3: "310000", 11: "000123", 14: "3012", 22: "021", 25: "00", 26: "12", 35: T2,
        41: "POSEMU01", 42: "898310012345678", 49: "156", 52: bytes.fromhex("0123456789ABCDEF"),
        53: "2600000000000000", 60: "01000001000", 64: bytes(8),
    }, header)


def test_cup_golden_bytes() -> None:
    """The CUP layout byte by byte: TPDU, header, BCD MTI, bitmap, BCD/LL fields, left-aligned 22."""
    data = encode(balance_inquiry(CUP.default_header), CUP)
    assert data[:11] == bytes.fromhex("6000030000603100311312")
    assert data[11:13] == bytes.fromhex("0200")                   # MTI as 2 BCD bytes
    bitmap = data[13:21]
    present = [i + 1 for i in range(64) if bitmap[i // 8] & (0x80 >> (i % 8))]
    assert present == [2, 3, 11, 14, 22, 25, 26, 35, 41, 42, 49, 52, 53, 60, 64]
    assert data[21:30] == bytes.fromhex("16" + PAN)               # LLVAR: 1 BCD length byte (16 digits)
    assert data[30:33] == bytes.fromhex("310000")
    i = data.index(bytes.fromhex("3012"), 33)                      # field 14 after STAN
    assert data[i + 2:i + 4] == bytes.fromhex("0210")              # field 22 "021" left-aligned
    assert bytes.fromhex("34" + PAN + "D30121010000000000") in data  # track 2: '=' as nibble D
    assert data.endswith(bytes(8))


def test_golden_files_decode() -> None:
    from pathlib import Path

    for profile in PROFILES.values():
        path = Path(__file__).parent / "data" / f"balance_inquiry_{profile.name}.hex"
        raw = bytes.fromhex(path.read_text().strip())
        msg = decode(raw, profile)
        assert msg.mti == "0200"
        assert msg.text(3) == "310000"
        assert msg.text(2) == PAN
        assert encode(msg, profile) == raw


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_balance_inquiry_round_trip(profile: Profile) -> None:
    m = balance_inquiry(profile.default_header)
    assert decode(encode(m, profile), profile) == m


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_property(profile: Profile, data: st.DataObject) -> None:
    msg = data.draw(messages(profile))
    assert decode(encode(msg, profile), profile) == msg


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@settings(max_examples=300)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(profile: Profile, raw: bytes) -> None:
    try:
        msg = decode(raw, profile)
    except DecodeError as e:
        assert e.raw == raw
        return
    assert encode(msg, profile) == raw   # if it decodes it is a faithful message


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@settings(max_examples=200)
@given(data=st.data())
def test_mutated_messages_raise_only_decode_error(profile: Profile, data: st.DataObject) -> None:
    raw = bytearray(encode(data.draw(messages(profile)), profile))
    for _ in range(data.draw(st.integers(1, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(DecodeError):
        decode(bytes(raw[:cut]), profile)


def test_bcd_field_with_hex_digit_is_an_error_not_a_value() -> None:
    raw = bytearray(encode(Message("0800", {11: "000001", 41: "POSEMU01"}, CUP.default_header), CUP))
    i = raw.index(bytes.fromhex("000001"))
    raw[i + 2] = 0x0A                                              # STAN nibble 'A'
    with pytest.raises(DecodeError) as ei:
        decode(bytes(raw), CUP)
    assert ei.value.field == "11"


def test_decode_error_says_field_position_and_hex_without_pan() -> None:
    raw = encode(balance_inquiry(CUP.default_header), CUP)[:-3]
    with pytest.raises(DecodeError) as ei:
        decode(raw, CUP)
    e = ei.value
    assert e.field == "64"
    assert e.pos is not None and e.pos > 0
    text = str(e)
    assert "field 64" in text and f"position {e.pos}" in text and "raw 600003" in text
    assert PAN not in text and PAN not in repr(e.partial)
    clone = pickle.loads(pickle.dumps(e))
    assert (clone.field, clone.pos, clone.raw) == (e.field, e.pos, e.raw)


def test_encode_rejects_bad_values() -> None:
    with pytest.raises(EncodeError):
        encode(Message("0200", {3: "31000X"}), ISO87ASCII)
    with pytest.raises(EncodeError):
        encode(Message("020", {}), ISO87ASCII)
    with pytest.raises(EncodeError):
        encode(Message("0200", {99: "1"}, CUP.default_header), CUP)    # not in the CUP profile
    with pytest.raises(TypeError):
        encode(Message("0200", {52: "not bytes"}), ISO87ASCII)
    with pytest.raises(TypeError):
        encode(Message("0200", {3: b"310000"}), ISO87ASCII)
    with pytest.raises(EncodeError):
        encode(Message("0200", {}), CUP)                                 # CUP needs its 11-byte header


def test_repr_and_redaction_never_show_card_data() -> None:
    m = balance_inquiry(CUP.default_header)
    text = repr(m)
    assert PAN not in text and "30121010000000000" not in text and "0123456789ABCDEF" not in text
    assert m.redacted()[2] == "990001******0019"


# --- the compiled fast path against the reference path (pyiso8583 + checks) --------------------

@st.composite
def _messages_maybe_bad(draw: st.DrawFn, profile: Profile) -> Message:
    """Valid messages, and ones with a value that breaks a check: wrong characters, lengths or
    types, unknown fields, bad MTIs or headers."""
    msg = draw(messages(profile))
    fields = dict(msg.fields)
    for _ in range(draw(st.integers(0, 2))):
        n = draw(st.sampled_from([*sorted(int(k) for k in profile.kinds), 1, 65, 99, 130]))
        fields[n] = draw(st.one_of(st.text(max_size=30), st.binary(max_size=30),
                                   st.text("0123456789=D", max_size=120)))
    mti = draw(st.one_of(st.just(msg.mti), st.sampled_from(["020", "02A0", "\u0660200", "02000"])))
    header = draw(st.one_of(st.just(msg.header), st.binary(max_size=12)))
    return Message(mti, fields, header)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_encode_agrees_with_the_reference(profile: Profile, data: st.DataObject) -> None:
    msg = data.draw(_messages_maybe_bad(profile))
    fast = _plan(profile).encode(msg)
    try:
        ref: bytes | None = _encode_checked(msg, profile)
    except (EncodeError, TypeError):
        ref = None
    if fast is not None:                 # the fast path never accepts what the reference rejects
        assert fast == ref
    if ref is not None:
        assert encode(msg, profile) == ref


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_decode_agrees_with_the_reference(profile: Profile, data: st.DataObject) -> None:
    raw = bytearray(encode(data.draw(messages(profile)), profile))
    for _ in range(data.draw(st.integers(0, 3))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[:data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
    raw += data.draw(st.binary(max_size=2))
    fast = _plan(profile).decode(bytes(raw))
    try:
        ref: Message | None = _decode_checked(bytes(raw), profile)
    except DecodeError:
        ref = None
    if fast is not None:
        assert ref is not None and fast == ref and fast.header == ref.header
        assert list(fast.fields) == list(ref.fields)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_fast_path_takes_well_formed_messages(profile: Profile) -> None:
    m = balance_inquiry(profile.default_header)
    data = _plan(profile).encode(m)
    assert data is not None and data == _encode_checked(m, profile)
    assert _plan(profile).decode(data) == m
