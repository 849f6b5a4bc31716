"""Command/response APDUs (ISO/IEC 7816-4 §5) and status words."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import apdu
from protocol.apdu import CommandApdu, CommandCase, ResponseApdu, status_error, sw_meaning
from protocol.errors import DecodeError, EncodeError, ProtocolError

byte = st.integers(0, 255)


@st.composite
def commands(draw: st.DrawFn) -> CommandApdu:
    extended = draw(st.booleans())
    max_data = 300 if extended else 255
    data = draw(st.binary(max_size=max_data))
    ne = draw(st.none() | st.integers(1, 65536 if extended else 256))
    return CommandApdu(draw(byte), draw(byte), draw(byte), draw(byte), data, ne, extended)


@given(commands())
def test_command_round_trip(c: CommandApdu) -> None:
    raw = c.encode()
    assert CommandApdu.decode(raw) == c
    assert CommandApdu.decode(raw).case is c.case


@given(st.binary(max_size=300))
def test_arbitrary_command_bytes(data: bytes) -> None:
    try:
        c = CommandApdu.decode(data)
    except DecodeError as e:
        assert e.raw == data and e.pos is not None
        return
    assert c.encode() == data


@given(st.binary(max_size=300), byte, byte)
def test_response_round_trip(data: bytes, sw1: int, sw2: int) -> None:
    r = ResponseApdu(data, sw1, sw2)
    assert ResponseApdu.decode(r.encode()) == r


@given(st.binary(max_size=3))
def test_arbitrary_response_bytes(data: bytes) -> None:
    try:
        r = ResponseApdu.decode(data)
    except DecodeError:
        assert len(data) < 2
        return
    assert r.encode() == data


@pytest.mark.parametrize(
    ("hexdata", "case", "ne", "lc"),
    [
        ("00A40400", CommandCase.CASE_1, None, 0),
        ("00B2010C00", CommandCase.CASE_2S, 256, 0),
        ("80CA9F1705", CommandCase.CASE_2S, 5, 0),
        ("0020008008241234FFFFFFFFFF", CommandCase.CASE_3S, None, 8),
        ("00A404000E315041592E5359532E444446303100", CommandCase.CASE_4S, 256, 14),
        ("00B2010C000000", CommandCase.CASE_2E, 65536, 0),
        ("00B2010C000100", CommandCase.CASE_2E, 256, 0),
        ("00DA0000000003AABBCC", CommandCase.CASE_3E, None, 3),
        ("00DA0000000003AABBCC0200", CommandCase.CASE_4E, 512, 3),
    ],
)
def test_cases(hexdata: str, case: CommandCase, ne: int | None, lc: int) -> None:
    c = CommandApdu.decode(bytes.fromhex(hexdata))
    assert c.case is case
    assert c.ne == ne
    assert len(c.data) == lc
    assert c.encode().hex().upper() == hexdata


def test_extended_forced_when_needed() -> None:
    assert CommandApdu(0, 0xB0, ne=300).extended
    assert CommandApdu(0, 0xD6, data=bytes(256)).case is CommandCase.CASE_3E
    assert not CommandApdu(0, 0xA4, extended=True).extended   # case 1 has no length fields


@pytest.mark.parametrize("hexdata", ["00", "00A404", "00A4040002AA", "00A4040001AABBCC",
                                     "00A404000000", "00A4040000000000"])
def test_malformed_commands(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        CommandApdu.decode(bytes.fromhex(hexdata))


def test_wrong_types_and_values() -> None:
    with pytest.raises(TypeError):
        CommandApdu(0, 0xA4, data="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CommandApdu.decode("00A40400")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        CommandApdu(0x100, 0xA4)
    with pytest.raises(EncodeError):
        CommandApdu(0, 0xA4, ne=0)
    with pytest.raises(TypeError):
        ResponseApdu(b"", sw1=True)
    assert "data" not in repr(CommandApdu(0, 0x20, 0, 0x80, b"\x24\x12\x34\xff\xff\xff\xff\xff")).split("(")[1]


@pytest.mark.parametrize(
    ("sw", "cls", "text"),
    [
        (0x6A82, apdu.FileNotFoundStatusError, "file or application not found"),
        (0x6985, apdu.ConditionsNotSatisfiedError, "conditions of use not satisfied"),
        (0x6983, apdu.AuthMethodBlockedError, "authentication method blocked (PIN blocked)"),
        (0x63C2, apdu.WrongPinError, "verification failed, 2 tries left"),
        (0x6C10, apdu.WrongLeError, "wrong Le; exact length is 16"),
        (0x6110, apdu.MoreDataStatus, "16 more response bytes available (GET RESPONSE)"),
        (0x6A83, apdu.RecordNotFoundError, "record not found"),
        (0x6A81, apdu.FunctionNotSupportedError, "function not supported (card blocked)"),
        (0x6283, apdu.WarningStatusError, "selected file invalidated (application blocked)"),
        (0x6D00, apdu.InsNotSupportedError, "instruction code not supported or invalid"),
        (0x6E00, apdu.ClaNotSupportedError, "class not supported"),
        (0x6700, apdu.WrongLengthError, "wrong length"),
        (0x6F00, apdu.CardStatusError, "no precise diagnosis"),
    ],
)
def test_status_words(sw: int, cls: type[apdu.CardStatusError], text: str) -> None:
    assert sw_meaning(sw) == text
    e = status_error(sw)
    assert type(e) is cls
    assert isinstance(e, ProtocolError)
    assert e.sw == sw and e.response() == sw.to_bytes(2, "big")
    again = pickle.loads(pickle.dumps(e))
    assert type(again) is cls and again.sw == sw and str(again) == str(e)
    with pytest.raises(cls):
        ResponseApdu.from_sw(sw).check()


def test_status_helpers() -> None:
    assert ResponseApdu.from_sw(0x9000, b"\x01").check().data == b"\x01"
    assert ResponseApdu.decode(b"\x90\x00").ok
    assert apdu.WrongPinError.with_tries(1).sw == 0x63C1
    assert apdu.WrongPinError.with_tries(1).tries_left == 1
    assert apdu.WrongLeError(0x6C00).exact_length == 256
    assert apdu.MoreDataStatus(0x6100).available == 256
    assert "unknown" in sw_meaning(0x1234)
    assert sw_meaning(0x9F10).startswith("application-specific")


@given(st.integers(0, 0xFFFF))
def test_every_status_word_has_a_meaning_and_an_error(sw: int) -> None:
    assert sw_meaning(sw)
    assert status_error(sw).sw == sw
