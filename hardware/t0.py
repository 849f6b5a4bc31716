"""The T=0 character protocol (ISO/IEC 7816-3 §10, APDU mapping §12.2; EMV Book 1 §9.2–9.3).

Layers, each usable on its own:

* **Sans-IO state machines over bytes** (the :mod:`protocol.sansio` vocabulary).
  :class:`T0Terminal` is the terminal transport layer (TTL) for one C-APDU: feed it the card's
  characters with ``receive_data``; ``next_event`` yields :class:`Send` (bytes to put on the
  line), :class:`Complete` (the R-APDU) or ``NEED_DATA``. :class:`T0Card` is the card side: it wraps any
  :class:`hardware.ports.VirtualCard` (``execute(apdu) -> response``) and behaves like a real
  T=0 card, character by character.
* **The line seam.** Characters cross a line where a receiver that sees a parity error pulls
  I/O low during the guard time (the error signal) and the sender repeats the character
  (ISO/IEC 7816-3 §7.3; EMV Book 1 §9.2.2: at most three repetitions). :class:`CharLine` is
  one end of an asynchronous line (:func:`char_line_pair` gives an in-memory pair);
  :class:`CharChannel` is the synchronous wire used when both ends live in one process.
  Fault injectors wrap either to corrupt characters; nothing here knows about faults.
* **Drivers.** :func:`t0_transmit` and :func:`serve_t0` run the machines over a
  :class:`CharLine`; :class:`T0WiredCard` (:func:`wire_t0`) couples both machines through a
  :class:`CharChannel` and is itself a ``VirtualCard``, so the sim reader can talk to any
  virtual card through real T=0 character traffic.

TPDU rules implemented (§10.3.3, procedure bytes after the 5-byte header
``CLA INS P1 P2 P3``): ``60`` NULL — keep waiting; ``INS`` (ACK) — transfer all remaining
data bytes; ``INS ⊕ FF`` — transfer the next data byte only; ``6X``/``9X`` (not ``60``) —
SW1, then SW2. APDU mapping (§12.2): case 1 is sent with P3 = 00; case 2 with P3 = Le
(``00`` = 256) and ``6Cxx`` → resend the header with P3 = xx; case 3 with P3 = Lc; case 4 as
case 3, then ``61xx`` → GET RESPONSE ``00 C0 00 00 xx`` repeated while more data remains; a
case 4 command answered with a warning (``62xx``, ``63xx``, ``9xxx``) is followed by GET
RESPONSE with P3 = 00 and the data returned with the warning (EMV Book 1 §9.3.1.3, Annex A7).
Extended-length APDUs would need ENVELOPE and are refused (:class:`protocol.errors.EncodeError`).
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from hardware.clock import Clock
from hardware.errors import CardMuteError, TransmissionError
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
    "MAX_REPEATS",
    "CharChannel",
    "CharLine",
    "CleanChannel",
    "Complete",
    "Direction",
    "Executed",
    "LineStats",
    "MemoryCharLine",
    "RxChar",
    "Send",
    "T0Card",
    "T0Terminal",
    "T0WiredCard",
    "char_line_pair",
    "serve_t0",
    "t0_transmit",
    "wire_t0",
]

MAX_REPEATS = 3
"""Repetitions of one character after error signals before giving up (EMV Book 1 §9.2.2.1)."""

NULL = 0x60

DEFAULT_INCOMING_INS = frozenset({0xA4, 0xA8, 0xAE, 0x20, 0x24, 0x88, 0x82, 0x1E, 0x18, 0x16, 0xDA, 0xDC,
                                  0xD6, 0xE2, 0xC2})
"""INS codes whose P3 is Lc (data to the card): SELECT, GPO, GENERATE AC, VERIFY, CHANGE PIN,
INTERNAL/EXTERNAL AUTHENTICATE, APPLICATION BLOCK/UNBLOCK, CARD BLOCK, PUT DATA, UPDATE
RECORD/BINARY, APPEND RECORD, ENVELOPE. Every other INS is outgoing (P3 is Le)."""

DEFAULT_CASE4_INS = frozenset({0xA4, 0xA8, 0xAE, 0x88})
"""Incoming INS codes that are case 4 (response data expected): the card adapter hands them
to ``execute`` with Le = 00, as a terminal speaking T=1 would have sent them."""


# --- the line seam ------------------------------------------------------------------------
class Direction(enum.Enum):
    TO_CARD = "terminal → card"
    TO_TERMINAL = "card → terminal"


@dataclass(frozen=True, slots=True)
class RxChar:
    """A character as the receiver's UART saw it; ``parity_ok`` False = parity error detected."""

    value: int
    parity_ok: bool = True


@runtime_checkable
class CharLine(Protocol):
    """One end of the I/O line (ISO/IEC 7816-3 §7): single characters, error signal included."""

    async def send(self, char: int) -> bool:
        """Transmit one character. ``False`` when the receiver signalled a parity error (§7.3)."""
        ...

    async def receive(self, timeout: float | None = None) -> RxChar | None:
        """The next character, or ``None`` when ``timeout`` clock seconds pass first."""
        ...


@runtime_checkable
class CharChannel(Protocol):
    """A synchronous wire: what the receiver sees when ``char`` is sent in ``direction``."""

    def carry(self, direction: Direction, char: int) -> RxChar: ...


class CleanChannel:
    """A perfect wire."""

    def carry(self, direction: Direction, char: int) -> RxChar:
        return RxChar(char, True)


@dataclass(slots=True)
class LineStats:
    """Counters a driver keeps for one line."""

    chars: int = 0
    repeats: int = 0
    tpdus: int = 0


class MemoryCharLine:
    """An in-memory line end (see :func:`char_line_pair`).

    With a ``clock`` and ``char_time`` each character takes that long on the clock (12 etu
    ≈ 1.25 ms at 9600 bit/s, ISO/IEC 7816-3 §7.2); without, characters arrive at once.
    """

    def __init__(self, clock: Clock | None = None, char_time: float = 0.0) -> None:
        self._rx: asyncio.Queue[RxChar] = asyncio.Queue()
        self.peer: MemoryCharLine | None = None
        self.clock = clock
        self.char_time = char_time

    async def send(self, char: int) -> bool:
        if self.peer is None:
            raise TransmissionError("line not connected")
        if self.clock is not None and self.char_time:
            await self.clock.sleep(self.char_time)
        self.peer._rx.put_nowait(RxChar(char & 0xFF, True))
        return True

    async def receive(self, timeout: float | None = None) -> RxChar | None:
        if timeout is None:
            return await self._rx.get()
        try:
            async with asyncio.timeout(timeout):
                return await self._rx.get()
        except TimeoutError:
            return None


def char_line_pair(clock: Clock | None = None, char_time: float = 0.0) -> tuple[MemoryCharLine, MemoryCharLine]:
    """Two connected line ends: ``(terminal_end, card_end)``."""
    a, b = MemoryCharLine(clock, char_time), MemoryCharLine(clock, char_time)
    a.peer, b.peer = b, a
    return a, b


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


# --- drivers ------------------------------------------------------------------------------------
async def _send_char(line: CharLine, b: int, stats: LineStats, max_repeats: int) -> None:
    for attempt in range(max_repeats + 1):
        if await line.send(b):
            stats.chars += 1
            return
        if attempt < max_repeats:
            stats.repeats += 1
    raise TransmissionError(f"character still rejected after {max_repeats} repetitions "
                            "(parity error signals, ISO/IEC 7816-3 §7.3)")


async def _recv_char(line: CharLine, timeout: float | None, stats: LineStats, max_repeats: int) -> int:
    bad = 0
    while True:
        rx = await line.receive(timeout)
        if rx is None:
            raise CardMuteError(f"no character from the card within the work waiting time ({timeout} s)")
        if rx.parity_ok:
            stats.chars += 1
            return rx.value
        bad += 1   # the receiver signalled the error; the sender repeats the character
        stats.repeats += 1
        if bad > max_repeats:
            raise TransmissionError(f"character received with parity errors {bad} times "
                                    "(ISO/IEC 7816-3 §7.3)")


async def t0_transmit(
    line: CharLine,
    apdu: bytes | CommandApdu,
    *,
    wwt: float = 1.0,
    max_repeats: int = MAX_REPEATS,
    stats: LineStats | None = None,
) -> bytes:
    """Terminal side: exchange one C-APDU over ``line``; returns the R-APDU.

    ``wwt`` is the work waiting time in clock seconds (ISO/IEC 7816-3 §10.2: 960 × WI × Fi/f,
    about 1 s for WI = 10 at 3.57 MHz). A NULL byte restarts it.
    """
    st = stats if stats is not None else LineStats()
    tt = T0Terminal(apdu)
    while True:
        ev = tt.next_event()
        if isinstance(ev, Send):
            for b in ev.data:
                await _send_char(line, b, st, max_repeats)
        elif isinstance(ev, Complete):
            st.tpdus += len(tt.tpdu_headers)
            return ev.response
        else:
            tt.receive_data(bytes([await _recv_char(line, wwt, st, max_repeats)]))


async def serve_t0(card: T0Card | VirtualCard, line: CharLine, *, max_repeats: int = MAX_REPEATS,
                   stats: LineStats | None = None) -> None:
    """Card side: answer TPDUs on ``line`` until cancelled."""
    machine = card if isinstance(card, T0Card) else T0Card(card)
    st = stats if stats is not None else LineStats()
    while True:
        rx = await line.receive(None)
        if rx is None or not rx.parity_ok:
            continue
        st.chars += 1
        machine.receive_data(bytes([rx.value]))
        for b in machine.data_to_send():
            await _send_char(line, b, st, max_repeats)


class T0WiredCard:
    """A ``VirtualCard`` reached through T=0 characters: terminal TTL ⇄ channel ⇄ :class:`T0Card`.

    ``execute(apdu)`` runs the whole exchange synchronously (both sides are sans-IO), so a
    reader that calls ``execute`` gets the same R-APDU as from the bare card, while every
    character crosses :attr:`channel` — the seam where a fault injector corrupts characters.
    Characters the channel flags with a parity error are repeated up to ``max_repeats``
    times, then :class:`hardware.errors.TransmissionError` is raised. A card that stops
    answering makes ``execute`` return ``b""`` (mute).
    """

    def __init__(
        self,
        card: VirtualCard,
        channel: CharChannel | None = None,
        *,
        max_repeats: int = MAX_REPEATS,
        nulls: int = 0,
        byte_by_byte: bool = False,
        warning_first: bool = False,
    ) -> None:
        self.inner = card
        self.channel: CharChannel = channel or CleanChannel()
        self.max_repeats = max_repeats
        self.port = T0Card(card, nulls=nulls, byte_by_byte=byte_by_byte, warning_first=warning_first)
        self.stats = LineStats()
        self.last_tpdus: tuple[bytes, ...] = ()

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return self.inner.stripe

    def reset(self) -> None:
        self.port.reset()
        self.inner.reset()

    def _carry(self, direction: Direction, b: int) -> int:
        for attempt in range(self.max_repeats + 1):
            rx = self.channel.carry(direction, b)
            if rx.parity_ok:
                self.stats.chars += 1
                return rx.value
            if attempt < self.max_repeats:
                self.stats.repeats += 1
        raise TransmissionError(f"character {direction.value} still rejected after {self.max_repeats} "
                                "repetitions (parity error signals, ISO/IEC 7816-3 §7.3)")

    def execute(self, apdu: bytes) -> bytes:
        tt = T0Terminal(apdu)
        from_card = bytearray()
        try:
            while True:
                ev = tt.next_event()
                if isinstance(ev, Send):
                    for b in ev.data:
                        self.port.receive_data(bytes([self._carry(Direction.TO_CARD, b)]))
                elif isinstance(ev, Complete):
                    return ev.response
                else:
                    if not from_card:
                        from_card += self.port.data_to_send()
                        if not from_card:
                            self.port.reset()
                            return b""   # mute card: the reader's waiting time expires
                    tt.receive_data(bytes([self._carry(Direction.TO_TERMINAL, from_card.pop(0))]))
        except BaseException:
            self.port.reset()   # a broken exchange leaves no half-received TPDU behind
            raise
        finally:
            self.last_tpdus = tuple(tt.tpdu_headers)
            self.stats.tpdus += len(tt.tpdu_headers)


def wire_t0(card: VirtualCard, channel: CharChannel | None = None, **options: int | bool) -> T0WiredCard:
    """``card`` behind a T=0 character wire (see :class:`T0WiredCard`).

    The sim reader uses it for profiles with ``chip.t0_wire = true``; a ``?protocol=t0`` URL
    parameter can wrap any card the same way.
    """
    max_repeats = int(options.pop("max_repeats", MAX_REPEATS))
    nulls = int(options.pop("nulls", 0))
    byte_by_byte = bool(options.pop("byte_by_byte", False))
    warning_first = bool(options.pop("warning_first", False))
    if options:
        raise TypeError(f"unknown option(s): {', '.join(options)}")
    return T0WiredCard(card, channel, max_repeats=max_repeats, nulls=nulls, byte_by_byte=byte_by_byte,
                       warning_first=warning_first)
