"""The T=0 state machines (ISO/IEC 7816-3 §10.3, §12.2; EMV Book 1 §9.2–9.3), sans-IO.

:class:`T0Terminal` is the terminal transport layer for one C-APDU, :class:`T0Card` a
real-behaving T=0 card around any ``VirtualCard``. Both speak the :mod:`protocol.sansio`
vocabulary over characters and know nothing of the line: :mod:`hardware.t0` has the wire
(the character line seam with parity-error repetition) and the drivers that join them.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from hardware.errors import TransmissionError
from hardware.ports import VirtualCard
from protocol.apdu import (
    GET_RESPONSE_INS,
    ApduExchange,
    CommandApdu,
    ExchangeComplete,
    ExchangeError,
    SendCommand,
)
from protocol.sansio import NEED_DATA, NeedData

__all__ = [
    "DEFAULT_CASE4_INS",
    "DEFAULT_INCOMING_INS",
    "NULL",
    "Complete",
    "Executed",
    "Send",
    "T0Card",
    "T0Event",
    "T0Terminal",
]

NULL = 0x60

DEFAULT_INCOMING_INS = frozenset({0xA4, 0xA8, 0xAE, 0x20, 0x24, 0x88, 0x82, 0x1E, 0x18, 0x16, 0xDA, 0xDC,
                                  0xD6, 0xE2, 0xC2})
"""INS codes whose P3 is Lc (data to the card): SELECT, GPO, GENERATE AC, VERIFY, CHANGE PIN,
INTERNAL/EXTERNAL AUTHENTICATE, APPLICATION BLOCK/UNBLOCK, CARD BLOCK, PUT DATA, UPDATE
RECORD/BINARY, APPEND RECORD, ENVELOPE. Every other INS is outgoing (P3 is Le)."""

DEFAULT_CASE4_INS = frozenset({0xA4, 0xA8, 0xAE, 0x88})
"""Incoming INS codes that are case 4 (response data expected): the card adapter hands them
to ``execute`` with Le = 00, as a terminal speaking T=1 would have sent them."""


# --- terminal side (sans-IO) --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Put these bytes on the line, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Complete:
    """The exchange is over; ``response`` is the R-APDU (data + SW1 SW2)."""

    response: bytes = field(repr=False)


class _Phase(enum.Enum):
    PROCEDURE = "await procedure byte"
    RX_ALL = "receive remaining data"
    RX_ONE = "receive one data byte"
    SW2 = "await SW2"
    DONE = "done"


T0Event = Send | Complete | NeedData


class T0Terminal:
    """Terminal transport layer for one command APDU over T=0 (ISO/IEC 7816-3 §10.3, §12.2).

    The character level (procedure bytes, §10.3.3) is here; which TPDU comes next — the APDU
    mapping of §12.2 (``61xx`` → GET RESPONSE, ``6Cxx`` → P3 corrected, case 4 warnings) — is
    :class:`protocol.apdu.ApduExchange` in T=0 mode, the one exchange helper of posemu.
    Sans-IO (:mod:`protocol.sansio`): ``receive_data`` takes characters from the card,
    ``next_event`` answers :class:`Send`, :class:`Complete` or ``NEED_DATA``.

    >>> tt = T0Terminal(bytes.fromhex("00B2010C00"))   # READ RECORD, case 2, Le 256
    >>> tt.next_event()
    Send(data=b'\\x00\\xb2\\x01\\x0c\\x00')
    >>> tt.receive_data(bytes.fromhex("6C03")); tt.next_event()     # resend with P3 = 03
    Send(data=b'\\x00\\xb2\\x01\\x0c\\x03')
    >>> tt.receive_data(bytes.fromhex("B2" "700100" "9000")); tt.next_event()
    Complete()
    >>> tt.response.hex()
    '7001009000'
    """

    def __init__(self, apdu: bytes | CommandApdu, *, max_tpdus: int = 64) -> None:
        cmd = apdu if isinstance(apdu, CommandApdu) else CommandApdu.decode(bytes(apdu))
        self.command = cmd
        self.case = cmd.case
        self.max_tpdus = max_tpdus
        self._apdu = ApduExchange(cmd, t0=True, max_commands=max_tpdus)
        self.tpdu_headers: list[bytes] = []
        self._rx_chars: collections.deque[int] = collections.deque()
        self._outgoing = bytearray()
        self._response: bytes | None = None
        self._next_tpdu()

    # --- TPDU level -------------------------------------------------------------------------
    def _next_tpdu(self) -> None:
        try:
            ev = self._apdu.next_event()
        except ExchangeError:
            raise TransmissionError(f"T=0 exchange did not end after {self.max_tpdus} TPDUs") from None
        if isinstance(ev, ExchangeComplete):
            self._response = ev.response
            self._phase = _Phase.DONE
            return
        assert isinstance(ev, SendCommand)
        tpdu = ev.apdu
        header, out_data = tpdu[:5], tpdu[5:]
        self.tpdu_headers.append(header)
        self._ins = header[1]
        self._to_send = out_data
        self._rx_len = (header[4] or 256) if not out_data else 0
        self._rx = bytearray()
        self._sw1 = 0
        self._outgoing += header
        self._phase = _Phase.PROCEDURE

    def receive_data(self, data: bytes) -> None:
        """Characters from the card (any number; processed by :meth:`next_event`)."""
        self._rx_chars.extend(data)

    def next_event(self) -> T0Event:
        while True:
            if self._outgoing:
                out = bytes(self._outgoing)
                self._outgoing.clear()
                return Send(out)
            if self._phase is _Phase.DONE:
                return Complete(self.response)
            if not self._rx_chars:
                return NEED_DATA
            self._char(self._rx_chars.popleft())

    @property
    def response(self) -> bytes:
        if self._response is None:
            raise TransmissionError("the T=0 exchange is not complete")
        return self._response

    @property
    def done(self) -> bool:
        return self._phase is _Phase.DONE

    def _char(self, b: int) -> None:
        phase = self._phase
        if phase is _Phase.PROCEDURE:
            self._procedure(b)
        elif phase in (_Phase.RX_ALL, _Phase.RX_ONE):
            self._rx.append(b)
            if phase is _Phase.RX_ONE or len(self._rx) >= self._rx_len:
                self._phase = _Phase.PROCEDURE
        elif phase is _Phase.SW2:
            self._apdu.receive_data(bytes(self._rx) + bytes((self._sw1, b)))
            self._next_tpdu()
        else:  # pragma: no cover - next_event never feeds a finished exchange
            raise TransmissionError(f"unexpected character {b:02X} after the exchange ended")

    def _procedure(self, b: int) -> None:
        ins = self._ins
        if b == NULL:
            return
        if b == ins or b == ins ^ 0xFF:
            one = b != ins
            if self._to_send:
                n = 1 if one else len(self._to_send)
                self._outgoing += self._to_send[:n]
                self._to_send = self._to_send[n:]
            elif len(self._rx) < self._rx_len:
                self._phase = _Phase.RX_ONE if one else _Phase.RX_ALL
            # an ACK with nothing left to transfer is harmless (case 1): keep waiting
            return
        if b & 0xF0 in (0x60, 0x90):
            self._sw1 = b
            self._phase = _Phase.SW2
            return
        raise TransmissionError(f"invalid procedure byte {b:02X} after header "
                                f"{self.tpdu_headers[-1].hex().upper()} (ISO/IEC 7816-3 §10.3.3)")


# --- card side (sans-IO) ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Executed:
    """The card executed ``command`` and answered ``response`` (before T=0 packaging)."""

    command: bytes = field(repr=False)
    response: bytes = field(repr=False)


class _CardPhase(enum.Enum):
    HEADER = "await header"
    DATA_IN = "receive command data"


class T0Card:
    """A real-behaving T=0 card around a ``VirtualCard`` (ISO/IEC 7816-3 §10.3).

    Sans-IO (:mod:`protocol.sansio`): feed it the terminal's characters with
    :meth:`receive_data`; collect what it sends with :meth:`data_to_send`; :meth:`next_event`
    reports the commands the card executed (:class:`Executed`, the last 64 kept) until
    ``NEED_DATA``. ``nulls`` NULL bytes precede each procedure byte (a slow card);
    ``byte_by_byte`` makes it use ``INS ⊕ FF`` for every data byte instead of one ACK.
    Case 4 answers ``61xx`` and waits for GET RESPONSE; a wrong Le gets ``6Cxx`` and the
    response is kept for the resend, so a command is never executed twice. With
    ``warning_first`` a case 4 response carrying a warning (``62xx``/``63xx``/``9xxx``) is
    announced by the warning itself and its data fetched with GET RESPONSE (EMV Book 1 Annex A7).
    """

    def __init__(
        self,
        card: VirtualCard,
        *,
        incoming_ins: Iterable[int] = DEFAULT_INCOMING_INS,
        case4_ins: Iterable[int] = DEFAULT_CASE4_INS,
        nulls: int = 0,
        byte_by_byte: bool = False,
        warning_first: bool = False,
    ) -> None:
        self.card = card
        self.warning_first = warning_first
        self.incoming_ins = frozenset(incoming_ins)
        self.case4_ins = frozenset(case4_ins)
        self.nulls = nulls
        self.byte_by_byte = byte_by_byte
        self.reset()

    def reset(self) -> None:
        self._phase = _CardPhase.HEADER
        self._hdr = bytearray()
        self._data = bytearray()
        self._out = bytearray()
        self._pending: bytes | None = None       # data waiting for GET RESPONSE
        self._pending_sw = b"\x90\x00"
        self._le_cache: tuple[bytes, bytes, bytes] | None = None   # (header4, data, sw) after 6Cxx
        self._events: collections.deque[Executed] = collections.deque(maxlen=64)

    def data_to_send(self) -> bytes:
        """Characters the card puts on the line (procedure bytes, data, status words)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Executed | NeedData:
        """The next command the card executed, or ``NEED_DATA``."""
        return self._events.popleft() if self._events else NEED_DATA

    def receive_data(self, data: bytes) -> None:
        """Characters from the terminal, in order (answers become :meth:`data_to_send`)."""
        for b in data:
            self._receive_char(b)

    def _execute(self, apdu: bytes) -> bytes:
        resp = self.card.execute(apdu)
        self._events.append(Executed(apdu, resp))
        return resp

    def _receive_char(self, b: int) -> None:
        if self._phase is _CardPhase.HEADER:
            self._hdr.append(b)
            if len(self._hdr) == 5:
                self._on_header()
        else:
            self._data.append(b)
            if len(self._data) >= self._hdr[4]:
                self._on_command_data()
            elif self.byte_by_byte:
                self._proc(self._hdr[1] ^ 0xFF)

    # --- helpers ------------------------------------------------------------------------------
    def _proc(self, b: int) -> None:
        self._out += bytes([NULL]) * self.nulls + bytes([b])

    def _sw(self, sw: bytes) -> None:
        self._out += bytes([NULL]) * self.nulls + sw
        self._end()

    def _end(self) -> None:
        self._phase = _CardPhase.HEADER
        self._hdr = bytearray()
        self._data = bytearray()

    def _send_data(self, ins: int, data: bytes) -> None:
        if self.byte_by_byte:
            for x in data:
                self._proc(ins ^ 0xFF)
                self._out.append(x)
        else:
            self._proc(ins)
            self._out += data

    def _on_header(self) -> None:
        hdr = bytes(self._hdr)
        ins, p3 = hdr[1], hdr[4]
        if ins & 0xF0 in (0x60, 0x90):
            self._sw(b"\x6D\x00")  # INS 6X/9X is invalid (§10.3.2)
            return
        if ins == GET_RESPONSE_INS and self._pending is not None:
            self._get_response(p3)
            return
        self._pending = None
        if ins in self.incoming_ins:
            if p3 == 0:
                self._execute_incoming(hdr[:4])
                return
            self._phase = _CardPhase.DATA_IN
            self._proc(ins ^ 0xFF if self.byte_by_byte else ins)
            return
        self._outgoing_command(hdr)

    def _on_command_data(self) -> None:
        hdr = bytes(self._hdr)
        self._execute_incoming(hdr[:4] + bytes([hdr[4]]) + bytes(self._data))

    def _execute_incoming(self, apdu: bytes) -> None:
        self._le_cache = None
        if apdu[1] in self.case4_ins:
            apdu += b"\x00"
        resp = self._execute(apdu)
        if len(resp) < 2:
            self._end()  # the card stays mute; the terminal's waiting time expires
            return
        data, sw = resp[:-2], resp[-2:]
        warning = sw[0] in (0x62, 0x63) or (sw[0] & 0xF0 == 0x90 and sw != b"\x90\x00")
        if data and warning and self.warning_first:
            # EMV Book 1 Annex A7 style: the warning now, the data through GET RESPONSE
            self._pending, self._pending_sw = data, b"\x90\x00"
            self._sw(sw)
        elif data:
            self._pending, self._pending_sw = data, sw
            self._sw(bytes((0x61, len(data) & 0xFF)))   # len 256+ → 61 00
        else:
            self._sw(sw)

    def _outgoing_command(self, hdr: bytes) -> None:
        ins, p3 = hdr[1], hdr[4]
        le = p3 or 256
        cache = self._le_cache
        self._le_cache = None
        if cache is not None and cache[0] == hdr[:4] and len(cache[1]) == le:
            data, sw = cache[1], cache[2]
        else:
            resp = self._execute(hdr)   # case 2: header + Le
            if len(resp) < 2:
                self._end()
                return
            data, sw = resp[:-2], resp[-2:]
        if not data:
            self._sw(sw)
            return
        if len(data) == le:
            self._send_data(ins, data)
            self._sw(sw)
            return
        if len(data) <= 256:
            self._le_cache = (hdr[:4], data, sw)
            self._sw(bytes((0x6C, len(data) & 0xFF)))   # wrong Le, exact length (§10.3.4)
            return
        # more than 256 bytes: Le bytes now, the rest through GET RESPONSE
        self._send_data(ins, data[:le])
        self._pending, self._pending_sw = data[le:], sw
        self._sw(bytes((0x61, len(self._pending) & 0xFF)))

    def _get_response(self, p3: int) -> None:
        pending = self._pending or b""
        le = p3 or 256
        avail = len(pending)
        if le > avail:
            self._sw(bytes((0x6C, avail & 0xFF)))
            return
        self._send_data(GET_RESPONSE_INS, pending[:le])
        rest = pending[le:]
        if rest:
            self._pending = rest
            self._sw(bytes((0x61, len(rest) & 0xFF)))
        else:
            self._pending = None
            self._sw(self._pending_sw)
