"""Command/response APDUs (ISO/IEC 7816-4 §5) and status words."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import apdu
from protocol.apdu import (
    ApduExchange,
    CommandApdu,
    CommandCase,
    ExchangeError,
    ResponseApdu,
    SendCommand,
    exchange,
    status_error,
    sw_meaning,
)
from protocol.errors import DecodeError, EncodeError, ProtocolError
from protocol.sansio import NEED_DATA

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


# --- the exchange helper (61xx GET RESPONSE, 6Cxx): PC/SC backend, EMV kernel, T=0 ----------------
class Transport:
    """A scripted link: the responses a card sends, recording what the terminal sent."""

    def __init__(self, script: dict[bytes, bytes]) -> None:
        self.script = script
        self.sent: list[bytes] = []

    def __call__(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.script[apdu]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def test_get_response_chains_and_concatenates() -> None:
    t = Transport({h("00A404000E315041592E5359532E444446303100"): h("6104"),
                   h("00C0000004"): h("11223344 6102"),
                   h("00C0000002"): h("5566 9000")})
    assert exchange(t, h("00A404000E315041592E5359532E444446303100")) == h("112233445566 9000")
    assert t.sent[1:] == [h("00C0000004"), h("00C0000002")]


@pytest.mark.parametrize(
    ("cmd", "again"),
    [("00B2010C00", "00B2010C1D"),             # case 2: Le replaced
     ("00B2010C", "00B2010C1D"),               # case 1: Le appended
     ("80A8000002830000", "80A80000028300 1D"),  # case 4: Le replaced
     ("80CA9F3602AABB", "80CA9F3602AABB1D")],  # case 3: Le appended
)
def test_wrong_le_is_resent_with_the_exact_le(cmd: str, again: str) -> None:
    t = Transport({h(cmd): h("6C1D"), h(again): bytes(29) + h("9000")})
    assert exchange(t, h(cmd)) == bytes(29) + h("9000")
    assert t.sent == [h(cmd), h(again)]


def test_transport_is_bounded_and_passes_other_status_words() -> None:
    endless = Transport({h("00B2010C00"): h("6101"), h("00C0000001"): h("AA 6101")})
    with pytest.raises(ExchangeError, match="kept asking"):
        exchange(endless, h("00B2010C00"), max_commands=6)
    assert len(endless.sent) == 6
    twice = Transport({h("00B2010C00"): h("6C10"), h("00B2010C10"): h("6C10")})
    assert exchange(twice, h("00B2010C00")) == h("6C10")           # 6C only honoured once
    for sw in ("9000", "6A82", "63C2", "6983"):
        assert exchange(Transport({h("00B2010C00"): h(sw)}), h("00B2010C00")) == h(sw)


def test_exchange_data_is_bounded_and_answers_need_a_status_word() -> None:
    big = Transport({h("00B2010C00"): bytes(200) + h("6100"), h("00C0000000"): bytes(100) + h("9000")})
    with pytest.raises(DecodeError, match="more than 256 bytes"):
        exchange(big, h("00B2010C00"), max_data=256)
    with pytest.raises(DecodeError, match="no status word"):
        exchange(Transport({h("00B2010C00"): h("90")}), h("00B2010C00"))
    ex = ApduExchange(h("00B2010C00"))
    with pytest.raises(ProtocolError):
        ex.receive_data(h("9000"))                # nothing sent yet
    assert isinstance(ex.next_event(), SendCommand) and ex.next_event() is NEED_DATA
    with pytest.raises(ProtocolError):
        _ = ex.response


def test_exchange_t0_mode_maps_cases_to_tpdus() -> None:
    # case 4 goes out without Le; 61xx fetched with GET RESPONSE
    t = Transport({h("00A4040002A000"): h("6102"), h("00C0000002"): h("6F00 9000")})
    assert exchange(t, h("00A4040002A00000"), t0=True) == h("6F00 9000")
    # case 4 warning: GET RESPONSE with P3 = 00, data returned with the warning (EMV Book 1 Annex A7)
    t = Transport({h("00A4040002A000"): h("6283"), h("00C0000000"): h("6C02"), h("00C0000002"): h("6F00 9000")})
    assert exchange(t, h("00A4040002A00000"), t0=True) == h("6F00 6283")
    # case 3 answered 6Cxx: not an outgoing TPDU, so it is the answer
    t = Transport({h("80CA9F3602AABB"): h("6C1D")})
    assert exchange(t, h("80CA9F3602AABB"), t0=True) == h("6C1D")
    # case 1 goes out with P3 = 00
    t = Transport({h("80E8000000"): h("9000")})
    assert exchange(t, h("80E80000"), t0=True) == h("9000")
    with pytest.raises(EncodeError):
        ApduExchange(CommandApdu(0, 0xB0, ne=1000), t0=True)
