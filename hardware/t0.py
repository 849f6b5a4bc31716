"""The T=0 character protocol (ISO/IEC 7816-3 §10, APDU mapping §12.2; EMV Book 1 §9.2–9.3).

Layers, each usable on its own (the state machines live in :mod:`hardware.t0_machines` and
are re-exported here):

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
import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hardware.clock import Clock
from hardware.errors import CardMuteError, TransmissionError
from hardware.ports import VirtualCard
from hardware.t0_machines import (
    DEFAULT_CASE4_INS,
    DEFAULT_INCOMING_INS,
    Complete,
    Executed,
    Send,
    T0Card,
    T0Terminal,
)
from protocol.apdu import CommandApdu

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


# --- the line seam ------------------------------------------------------------------------
class Direction(enum.Enum):
    """Which way a character travels on the I/O line."""

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
