"""Command and response APDUs (ISO/IEC 7816-4 §5.1–§5.6) and card status words.

Sans-IO: pure values and codecs.

* :class:`CommandApdu` — ``CLA INS P1 P2 [Lc data] [Le]`` in the four cases of ISO/IEC 7816-3
  §12.1.2 / 7816-4 §5.1, short and extended length. ``ne`` is the *number* of bytes expected
  (1..256 short, 1..65536 extended), ``None`` when no Le field is present. A short Le byte
  ``00`` means 256, an extended ``0000`` means 65536.
* :class:`ResponseApdu` — ``[data] SW1 SW2``.
* :data:`SW_MEANINGS` / :func:`sw_meaning` — what a status word says (ISO/IEC 7816-4 §5.6,
  EMV Book 3 §6.3.5 and Annex A); these and the exceptions below live in :mod:`protocol.status`
  and are re-exported here.
* :class:`CardStatusError` and its subclasses — a card's non-success status as an exception,
  for the card side (a handler raises, the dispatcher turns it into SW1 SW2, vsmartcard-style)
  and the terminal side (:meth:`ResponseApdu.check`).
* :class:`ApduExchange` / :func:`exchange` — the one command–response helper of posemu: GET
  RESPONSE on ``61xx``, the command again with Le on ``6Cxx`` (ISO/IEC 7816-3 §12.2, 7816-4
  §5.1.3), and in T=0 mode the TPDU mapping of cases 1–4 (used by the PC/SC backend, the EMV
  kernel and the T=0 terminal).

>>> c = CommandApdu(0x00, 0xB2, 0x01, 0x0C, ne=256)
>>> c.encode().hex().upper(), c.case.name
('00B2010C00', 'CASE_2S')
>>> CommandApdu.decode(bytes.fromhex("00A404000E315041592E5359532E444446303100")).case.name
'CASE_4S'
>>> ResponseApdu.decode(bytes.fromhex("63C2")).sw_text
'verification failed, 2 tries left'
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol.binary import require_bytes as _as_bytes
from protocol.errors import DecodeError, EncodeError, ProtocolError
from protocol.sansio import NEED_DATA, NeedData
from protocol.status import (
    SW,
    SW_MEANINGS,
    AuthMethodBlockedError,
    CardStatusError,
    ClaNotSupportedError,
    ConditionsNotSatisfiedError,
    FileNotFoundStatusError,
    FunctionNotSupportedError,
    InsNotSupportedError,
    MoreDataStatus,
    RecordNotFoundError,
    ReferencedDataNotFoundError,
    SecurityStatusError,
    WarningStatusError,
    WrongDataError,
    WrongLeError,
    WrongLengthError,
    WrongP1P2Error,
    WrongPinError,
    status_error,
    sw_meaning,
)

__all__ = [
    "GET_RESPONSE_INS",
    "SW",
    "SW_MEANINGS",
    "ApduExchange",
    "AuthMethodBlockedError",
    "CardStatusError",
    "ClaNotSupportedError",
    "CommandApdu",
    "CommandCase",
    "ConditionsNotSatisfiedError",
    "ExchangeComplete",
    "ExchangeError",
    "FileNotFoundStatusError",
    "FunctionNotSupportedError",
    "InsNotSupportedError",
    "MoreDataStatus",
    "RecordNotFoundError",
    "ReferencedDataNotFoundError",
    "ResponseApdu",
    "SecurityStatusError",
    "SendCommand",
    "WarningStatusError",
    "WrongDataError",
    "WrongLeError",
    "WrongLengthError",
    "WrongP1P2Error",
    "WrongPinError",
    "exchange",
    "status_error",
    "sw_meaning",
]


class CommandCase(enum.Enum):
    """ISO/IEC 7816-3 §12.1.2: what a command carries (S = short, E = extended length)."""

    CASE_1 = "no data, no response data"
    CASE_2S = "response data, short Le"
    CASE_3S = "command data, short Lc"
    CASE_4S = "command and response data, short"
    CASE_2E = "response data, extended Le"
    CASE_3E = "command data, extended Lc"
    CASE_4E = "command and response data, extended"

    @property
    def extended(self) -> bool:
        return self.name.endswith("E")

    @property
    def has_data(self) -> bool:
        return self in (CommandCase.CASE_3S, CommandCase.CASE_4S, CommandCase.CASE_3E, CommandCase.CASE_4E)

    @property
    def has_le(self) -> bool:
        return self in (CommandCase.CASE_2S, CommandCase.CASE_4S, CommandCase.CASE_2E, CommandCase.CASE_4E)




def _byte(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"{name} {value} is not a byte", field=name)
    return value


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU (ISO/IEC 7816-4 §5.1).

    ``extended`` asks for extended length fields; it is forced on when ``data`` is longer
    than 255 bytes or ``ne`` above 256, so ``decode(encode(c)) == c`` always holds.
    ``repr`` shows the data length, not the data (a VERIFY carries a PIN).
    """

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = field(default=b"", repr=False)
    ne: int | None = None
    extended: bool = False

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _byte(getattr(self, name), name)
        object.__setattr__(self, "data", _as_bytes(self.data, "data"))
        if self.ne is not None and (not isinstance(self.ne, int) or isinstance(self.ne, bool)):
            raise TypeError(f"ne must be int or None, not {type(self.ne).__name__}")
        if not isinstance(self.extended, bool):
            raise TypeError("extended must be bool")
        if len(self.data) > 65535:
            raise EncodeError(f"command data of {len(self.data)} bytes exceeds 65535", field="data")
        if self.ne is not None and not 1 <= self.ne <= 65536:
            raise EncodeError(f"Ne {self.ne} out of range 1..65536", field="le")
        need_ext = len(self.data) > 255 or (self.ne is not None and self.ne > 256)
        if need_ext and not self.extended:
            object.__setattr__(self, "extended", True)
        if self.extended and not self.data and self.ne is None:
            object.__setattr__(self, "extended", False)  # case 1 has no length fields at all

    @property
    def case(self) -> CommandCase:
        if not self.data:
            if self.ne is None:
                return CommandCase.CASE_1
            return CommandCase.CASE_2E if self.extended else CommandCase.CASE_2S
        if self.ne is None:
            return CommandCase.CASE_3E if self.extended else CommandCase.CASE_3S
        return CommandCase.CASE_4E if self.extended else CommandCase.CASE_4S

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def encode(self) -> bytes:
        """The APDU bytes (ISO/IEC 7816-4 §5.1, Table 1)."""
        out = bytearray(self.header)
        if self.extended:
            if self.data:
                out += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
                if self.ne is not None:
                    out += (self.ne & 0xFFFF).to_bytes(2, "big")
            elif self.ne is not None:
                out += b"\x00" + (self.ne & 0xFFFF).to_bytes(2, "big")
        else:
            if self.data:
                out += bytes([len(self.data)]) + self.data
            if self.ne is not None:
                out.append(self.ne & 0xFF)
        return bytes(out)

    @classmethod
    def decode(cls, raw: bytes) -> CommandApdu:
        """Parse a command APDU, telling the cases apart by length (ISO/IEC 7816-3 §12.1.3)."""
        raw = _as_bytes(raw, "raw")
        n = len(raw)
        if n < 4:
            raise DecodeError(f"command APDU of {n} bytes is shorter than its 4-byte header",
                              field="header", pos=n, raw=raw)
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        b = raw[4]
        if n == 5:
            return cls(cla, ins, p1, p2, ne=b or 256)
        if b != 0:
            if n == 5 + b:
                return cls(cla, ins, p1, p2, raw[5:])
            if n == 6 + b:
                return cls(cla, ins, p1, p2, raw[5 : 5 + b], ne=raw[-1] or 256)
            raise DecodeError(f"Lc {b} does not match the {n - 5} bytes that follow",
                              field="lc", pos=4, raw=raw)
        # b == 0 and more bytes: extended length
        if n == 7:
            le = int.from_bytes(raw[5:7], "big")
            return cls(cla, ins, p1, p2, ne=le or 65536, extended=True)
        if n < 7:
            raise DecodeError("truncated extended length field", field="lc", pos=4, raw=raw)
        lc = int.from_bytes(raw[5:7], "big")
        if lc == 0:
            raise DecodeError("extended Lc of zero", field="lc", pos=5, raw=raw)
        if n == 7 + lc:
            return cls(cla, ins, p1, p2, raw[7:], extended=True)
        if n == 9 + lc:
            le = int.from_bytes(raw[-2:], "big")
            return cls(cla, ins, p1, p2, raw[7 : 7 + lc], ne=le or 65536, extended=True)
        raise DecodeError(f"extended Lc {lc} does not match the {n - 7} bytes that follow",
                          field="lc", pos=5, raw=raw)


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: response data and the status word SW1 SW2 (ISO/IEC 7816-4 §5.1)."""

    data: bytes = field(default=b"", repr=False)
    sw1: int = 0x90
    sw2: int = 0x00

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _as_bytes(self.data, "data"))
        _byte(self.sw1, "sw1")
        _byte(self.sw2, "sw2")

    @classmethod
    def from_sw(cls, sw: int, data: bytes = b"") -> ResponseApdu:
        if not isinstance(sw, int) or not 0 <= sw <= 0xFFFF:
            raise TypeError("sw must be an int 0..0xFFFF")
        return cls(data, sw >> 8, sw & 0xFF)

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        """Normal processing: ``9000`` (``61xx`` too, at the transport level)."""
        return self.sw == SW.OK

    @property
    def sw_text(self) -> str:
        return sw_meaning(self.sw)

    def encode(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    @classmethod
    def decode(cls, raw: bytes) -> ResponseApdu:
        raw = _as_bytes(raw, "raw")
        if len(raw) < 2:
            raise DecodeError(f"response APDU of {len(raw)} bytes has no status word",
                              field="sw", pos=len(raw), raw=raw)
        return cls(raw[:-2], raw[-2], raw[-1])

    def check(self) -> ResponseApdu:
        """Return ``self`` on ``9000``; raise the matching :class:`CardStatusError` otherwise."""
        if self.sw != SW.OK:
            raise status_error(self.sw)
        return self


# --- the command–response exchange (ISO/IEC 7816-3 §12.2; 7816-4 §5.1.3) -----------------------
GET_RESPONSE_INS = 0xC0


class ExchangeError(ProtocolError):
    """The card kept the exchange going: more GET RESPONSEs or Le corrections than allowed."""


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Send this C-APDU (in T=0 mode: this TPDU, header + P3 [+ data]) and feed back its answer."""

    apdu: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ExchangeComplete:
    """The exchange is over: ``response`` is the whole R-APDU (all data + the final SW1 SW2)."""

    response: bytes = field(repr=False)


def _warning(sw1: int, sw2: int) -> bool:
    """``62xx``, ``63xx`` or ``9xxx`` other than ``9000`` (EMV Book 1 §9.3.1.3)."""
    return sw1 in (0x62, 0x63) or (sw1 & 0xF0 == 0x90 and (sw1, sw2) != (0x90, 0x00))


def _with_le(apdu: bytes, le: int) -> bytes | None:
    """The same short C-APDU with Le (P3) = ``le`` (cases 1–4, ISO/IEC 7816-4 §5.1); ``None``
    for an extended one."""
    if len(apdu) == 4:                                   # case 1 → case 2
        return apdu + bytes([le])
    if len(apdu) == 5:                                   # case 2 (or a T=0 case 1/2 TPDU)
        return apdu[:4] + bytes([le])
    lc = apdu[4]
    if lc == 0:
        return None
    if len(apdu) == 5 + lc:                              # case 3 → case 4
        return apdu + bytes([le])
    if len(apdu) == 6 + lc:                              # case 4
        return apdu[:-1] + bytes([le])
    return None


class ApduExchange:
    """One command–response exchange, sans-IO: what to send next, until the R-APDU is whole.

    ``next_event()`` gives :class:`SendCommand` (send it, then ``receive_data(answer)`` with the
    card's whole answer), :class:`ExchangeComplete`, or :data:`~protocol.sansio.NEED_DATA`
    while an answer is awaited. The rules (ISO/IEC 7816-3 §12.2, ISO/IEC 7816-4 §5.1.3,
    EMV Book 1 §9.3.1):

    * ``61xx`` — ``xx`` (``00`` = 256) more bytes: GET RESPONSE ``00 C0 00 00 xx``; the data of
      every answer is concatenated.
    * ``6Cxx`` without data — wrong Le: the same command again with Le = ``xx``, once per
      command (a second ``6Cxx`` to the corrected command is the answer). Extended-length
      commands are never rewritten.
    * ``t0=True`` — the T=0 mapping of §12.2: the command goes out as a TPDU (case 1 with
      P3 = 00, case 2 with P3 = Le, cases 3 and 4 with P3 = Lc and no Le); ``6Cxx`` only
      corrects a TPDU without data; a case 4 command answered with a warning (``62xx``,
      ``63xx``, ``9xxx``) is followed by GET RESPONSE with P3 = 00 and its data returned with
      the warning (EMV Book 1 §9.3.1.3, Annex A7). Extended commands are refused.

    At most ``max_commands`` commands are sent (:class:`ExchangeError` beyond) and at most
    ``max_data`` response data bytes gathered (:class:`DecodeError` beyond).

    >>> ex = ApduExchange(bytes.fromhex("00B2010C00"))
    >>> ex.next_event()
    SendCommand()
    >>> ex.receive_data(bytes.fromhex("6C03")); ex.next_event().apdu.hex()
    '00b2010c03'
    >>> ex.receive_data(bytes.fromhex("AABB6101")); ex.next_event().apdu.hex()
    '00c0000001'
    >>> ex.receive_data(bytes.fromhex("CC9000")); ex.next_event().response.hex()
    'aabbcc9000'
    """

    def __init__(self, command: bytes | CommandApdu, *, t0: bool = False, max_commands: int = 64,
                 max_data: int = 65536) -> None:
        cmd = command if isinstance(command, CommandApdu) else CommandApdu.decode(_as_bytes(command, "command"))
        self.command = cmd
        self.t0 = t0
        self.max_commands = max_commands
        self.max_data = max_data
        self.sent: list[bytes] = []
        self._data = bytearray()
        self._warning: bytes | None = None
        self._le_fixed = False
        self._get_response = False
        self._response: bytes | None = None
        if t0:
            if cmd.extended:
                raise EncodeError("extended-length APDUs need ENVELOPE over T=0; not supported", field="lc")
            if cmd.case is CommandCase.CASE_1:
                first = cmd.header + b"\x00"
            elif cmd.case is CommandCase.CASE_2S:
                first = cmd.header + bytes([(cmd.ne or 256) & 0xFF])
            else:
                first = cmd.header + bytes([len(cmd.data)]) + cmd.data
        else:
            first = cmd.encode()
        self._next: bytes | None = first

    @property
    def done(self) -> bool:
        return self._response is not None

    def next_event(self) -> SendCommand | ExchangeComplete | NeedData:
        if self._response is not None:
            return ExchangeComplete(self._response)
        nxt = self._next
        if nxt is None:
            return NEED_DATA
        if len(self.sent) >= self.max_commands:
            raise ExchangeError(f"the card kept asking for GET RESPONSE or a new Le "
                                f"({self.max_commands} commands sent)")
        self._next = None
        self.sent.append(nxt)
        return SendCommand(nxt)

    def receive_data(self, data: bytes) -> None:
        """The card's whole answer to the last :class:`SendCommand` (data + SW1 SW2)."""
        raw = _as_bytes(data, "data")
        if self._response is not None or self._next is not None or not self.sent:
            raise ProtocolError("an answer arrived when no command was outstanding")
        if len(raw) < 2:
            raise DecodeError(f"response APDU of {len(raw)} bytes has no status word", field="sw",
                              pos=len(raw), raw=raw)
        body, sw1, sw2 = raw[:-2], raw[-2], raw[-1]
        if len(self._data) + len(body) > self.max_data:
            raise DecodeError(f"the card answered more than {self.max_data} bytes", field="data",
                              pos=len(self._data), raw=raw[:64])
        last = self.sent[-1]
        if sw1 == 0x6C and not body and not self._le_fixed and (not self.t0 or len(last) == 5):
            again = _with_le(last, sw2)
            if again is not None:
                self._le_fixed = True
                self._next = again
                return
        if sw1 == 0x61:
            self._data += body
            self._get_response = True
            self._le_fixed = False
            self._next = bytes((0x00, GET_RESPONSE_INS, 0x00, 0x00, sw2))
            return
        if (self.t0 and self.command.case is CommandCase.CASE_4S and not self._get_response
                and _warning(sw1, sw2)):
            self._warning = bytes((sw1, sw2))
            self._get_response = True
            self._le_fixed = False
            self._next = bytes((0x00, GET_RESPONSE_INS, 0x00, 0x00, 0x00))
            return
        self._data += body
        final = bytes((sw1, sw2))
        if self._warning is not None:
            if final != b"\x90\x00":        # no data after all: the warning alone
                self._data.clear()
            final = self._warning
        self._response = bytes(self._data) + final

    @property
    def response(self) -> bytes:
        if self._response is None:
            raise ProtocolError("the exchange is not complete")
        return self._response


def exchange(send: Callable[[bytes], bytes], command: bytes | CommandApdu, *, t0: bool = False,
             max_commands: int = 64, max_data: int = 65536) -> bytes:
    """Run an :class:`ApduExchange` over a blocking ``send(apdu) -> answer``; the whole R-APDU.

    >>> replies = {bytes.fromhex("00B2010C00"): bytes.fromhex("6C03"),
    ...            bytes.fromhex("00B2010C03"): bytes.fromhex("AABB6101"),
    ...            bytes.fromhex("00C0000001"): bytes.fromhex("CC9000")}
    >>> exchange(replies.__getitem__, bytes.fromhex("00B2010C00")).hex()
    'aabbcc9000'
    """
    ex = ApduExchange(command, t0=t0, max_commands=max_commands, max_data=max_data)
    while True:
        ev = ex.next_event()
        if isinstance(ev, ExchangeComplete):
            return ev.response
        if isinstance(ev, SendCommand):
            ex.receive_data(send(ev.apdu))
