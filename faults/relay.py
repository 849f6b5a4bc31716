"""``posemu relay``: a card in one reader, presented in vpcd's virtual reader with faults on the way.

:class:`CardRelay` takes any :class:`~hardware.ports.CardReader` as its source — a real PC/SC
reader (``pcsc://…``) or a posemu virtual card (``sim://cup_debit``) — wraps it in the one
:class:`~faults.reader.FaultyReader` (the contact, supply, seat, latch and environment model of
:mod:`faults.physics`), and serves the card to a vpcd slot (:mod:`hardware.vpcd`): every PC/SC
application on the machine sees it in "Virtual PCD 00 0N", ATR and answers as the source gives
them. Catalogue faults act by name through the seam (:mod:`faults.control`), and what they do
reaches the application the way a real reader shows it:

* **the card leaves** (the cardholder pulls it — ``user.card-pulled``; a bouncing contact, a
  card not fully in — ``reader.dirty-contacts@intermittent``, ``card.wrong-insertion@partial``; a
  loose reader — ``reader.dropped@loose``): the relay drops the vpcd connection with a reset, so
  the command in flight gets no answer (vpcd hands the application an empty response; a CCID
  reader would say 0x80100016 or 0x8010000C) and, once pcscd has polled the slot (every 0.4 s),
  every handle gets ``SCARD_W_REMOVED_CARD`` (0x80100069) and the slot is empty. A card still
  physically in the source comes back after ``reinsert_after`` seconds (a new insertion); a
  pulled card too, as the cardholder puts it back;
* **the card resets** (a brown-out through dirty contacts or a weak supply —
  ``reader.dirty-contacts@crypto-brownout``, ``reader.power-unstable``; EMI, heat —
  ``env.emi``, ``env.temperature``): the command in flight gets no answer from the card (``6F00``,
  "no precise diagnosis"), the card loses its state, and the relay resets it the PC/SC way — a
  reset through pcscd (``SCardReconnect(SCARD_RESET_CARD)`` on the target reader), so the
  application's next call gets ``SCARD_W_RESET_CARD`` (0x80100068) as from any reset by another
  program. (If the application holds the card exclusively or inside a transaction, the notice
  cannot be given; the card still resets.) A parity failure answers ``6F00`` too;
* **no answer to reset** (a reversed card, a brown-out at power-up, a frozen card): the card
  gives vpcd no ATR; pcscd takes the slot as emptied and the application's connect fails;
* **a dead reader** (``reader.dropped``): the card disappears and no card is ever presented
  while it is dead; **a dead card-present sensor** (``reader.sensor-dead``): a card put in is
  never presented; **a stuck seat switch or latch**: a card taken out of the source stays
  "present" and its commands fail;
* **a slow card** (``card.slow``): each command waits for the card's waiting-time extensions
  (T=0 NULL procedure bytes, T=1 S(WTX) requests: ISO/IEC 7816-3 §10.3.3, §11.6.2.3) before
  its answer comes.

Onsets the relay sees: ``card-read`` (the application powers the card), ``pin-entry`` (the first
VERIFY, or the first command after the READ RECORDs), ``online`` (the first GENERATE AC),
``removal`` (the application powers the card off), ``transaction`` (the first SELECT of a card
session) and ``step:N`` (the Nth command).

The relay's trace (masked: command headers, lengths and status words only — never APDU data, so
no PAN, track data or PIN) holds each card session as a transaction with its evidence codes
(``pcsc.0x80100069`` with ``slot.empty`` for a card pulled, ``pcsc.0x80100069`` alone for a
contact that opened, ``pcsc.0x80100068`` for a reset, ``reader.atr_timeout``,
``reader.no_response`` …) and the reader model's own sensors (``terminal.health``), so
``posemu diagnose --trace`` names the cause group.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.trace import Kind, Trace, TraceEntry
from faults.control import Toxic, ToxicSet
from faults.environment import Environment, SkewedClock
from faults.injectors import Points
from faults.model import OnsetKind
from faults.reader import FaultyReader
from hardware.clock import Clock, run_external
from hardware.errors import (
    CardAbsentError,
    CardMuteError,
    CardResetError,
    NoReaderError,
    ReaderError,
    TransmissionError,
)
from hardware.ports import CardReader, ReaderEventKind
from hardware.vpcd import ApduMessage, Control, ControlMessage, VpcdDecoder, encode_frame
from protocol.errors import DecodeError
from protocol.sansio import NEED_DATA

__all__ = ["RELAY_INJECTORS", "CardRelay", "apdu_name"]

RELAY_INJECTORS = ("reader", "environment", "habits")
RELAY_ONSETS = (OnsetKind.CARD_READ, OnsetKind.PIN_ENTRY, OnsetKind.ONLINE, OnsetKind.REMOVAL,
                OnsetKind.TRANSACTION, OnsetKind.STEP)
NOTICE_PAUSE_S = 0.3
"""Real seconds the answer to a command that reset the card waits for pcscd to take the reset notice."""
NO_DIAGNOSIS = bytes.fromhex("6F00")
"""ISO/IEC 7816-4 §5.1.3: no precise diagnosis — the answer of a command the card never finished."""

_NAMES = {0xA4: "SELECT", 0xB2: "READ RECORD", 0xA8: "GET PROCESSING OPTIONS", 0xAE: "GENERATE AC",
          0x20: "VERIFY", 0xCA: "GET DATA", 0x88: "INTERNAL AUTHENTICATE", 0x82: "EXTERNAL AUTHENTICATE",
          0xC0: "GET RESPONSE", 0x84: "GET CHALLENGE", 0xB0: "READ BINARY"}


def apdu_name(apdu: bytes) -> str:
    """What a command is, by its INS (EMV Book 3 §6.5).

    >>> apdu_name(bytes.fromhex("00B2010C00")), apdu_name(bytes.fromhex("80AE8000"))
    ('READ RECORD', 'GENERATE AC')
    """
    return _NAMES.get(apdu[1], f"INS {apdu[1]:02X}") if len(apdu) > 1 else "?"


@dataclass(slots=True)
class _Session:
    """One presentation of the card to vpcd (one TCP connection)."""

    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None
    powered: bool = False
    read_records: bool = False
    after_records: bool = False
    pulled_here: bool = False
    errors: int = 0
    begun: bool = False


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def reset_through_pcscd(reader_name: str) -> str:
    """Reset the card in ``reader_name`` the PC/SC way (another program's ``SCardReconnect`` with
    ``SCARD_RESET_CARD``): every other handle's next call returns ``SCARD_W_RESET_CARD``. Blocks;
    returns ``""`` or why it could not be done."""
    try:
        from smartcard import scard as s
    except ImportError:
        return "pyscard is not installed"
    hr, ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
    if hr != s.SCARD_S_SUCCESS:
        return f"no PC/SC context (0x{hr & 0xFFFFFFFF:08X})"
    try:
        hr, hcard, _proto = s.SCardConnect(ctx, reader_name, s.SCARD_SHARE_SHARED,
                                           s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1)
        if hr != s.SCARD_S_SUCCESS:
            return f"cannot connect to {reader_name} (0x{hr & 0xFFFFFFFF:08X})"
        try:
            hr, _ = s.SCardReconnect(hcard, s.SCARD_SHARE_SHARED, s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1,
                                     s.SCARD_RESET_CARD)
            return "" if hr == s.SCARD_S_SUCCESS else f"reset refused (0x{hr & 0xFFFFFFFF:08X})"
        finally:
            s.SCardDisconnect(hcard, s.SCARD_LEAVE_CARD)
    finally:
        s.SCardReleaseContext(ctx)


class CardRelay:
    """The card relay; a :class:`faults.control.Controller`.

    ``await start()`` watches the source reader and presents its card on vpcd at
    ``vpcd`` (host, port); ``target_reader`` is the PC/SC name of that slot (for the reset
    notice; ``None``: no notice)."""

    kind = "relay"

    def __init__(self, source: CardReader, *, clock: Clock, vpcd: tuple[str, int],
                 target_reader: str | None = None, seed: int = 7, trace: Trace | None = None,
                 reinsert_after: float = 1.0, connect_timeout: float = 30.0,
                 reset_notice: Callable[[str], str] = reset_through_pcscd) -> None:
        self.clock = clock
        self.vpcd = vpcd
        self.target_reader = target_reader
        self.reinsert_after = reinsert_after
        self.connect_timeout = connect_timeout
        self._reset_notice = reset_notice
        self._trace = trace or Trace(clock)
        self.environment = Environment()
        self.reader = FaultyReader(source, None, clock, self.environment)
        self.rng = random.Random(seed)
        self.toxic_set = ToxicSet(tool="relay", points=self._points, injectors=RELAY_INJECTORS,
                                  onsets=RELAY_ONSETS, trace=self._trace, seed=seed)
        self.stats: dict[str, int] = {"presented": 0, "withdrawn": 0, "apdus": 0, "pulled": 0, "bounced": 0,
                                      "resets": 0, "reset_notices": 0, "mute": 0}
        self.atr = b""
        self.card_in = False           # the source says a card is in (through the fault model)
        self.mute = False
        self.dead = False
        self._session: _Session | None = None
        self._watch: asyncio.Task[None] | None = None
        self._later: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.last_notice = ""

    # --- Controller --------------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        return self._trace

    @property
    def presented(self) -> bool:
        return self._session is not None

    async def start(self) -> None:
        if self._watch is None:
            self._stopping = False
            self._trace.record(Kind.NOTE, "relay started", source=self.reader.name,
                               vpcd=f"{self.vpcd[0]}:{self.vpcd[1]}", target=self.target_reader or "")
            self._watch = asyncio.ensure_future(self._watch_source())

    async def stop(self) -> None:
        self._stopping = True
        tasks = [self._watch, *self._later]
        self._watch = None
        await self._withdraw("the relay stopped", reset=False)
        for t in tasks:
            if t is not None:
                t.cancel()
        for t in tasks:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self.toxic_set.reset()
        with contextlib.suppress(ReaderError):
            await self.reader.close()

    def arm(self, spec: str, *, name: str | None = None, enabled: bool = True) -> Toxic:
        return self.toxic_set.add(spec, name=name, enabled=enabled)

    def disarm(self, name: str) -> None:
        self.toxic_set.remove(name)

    def enable(self, name: str, on: bool = True) -> Toxic:
        return self.toxic_set.enable(name, on)

    def toxics(self) -> list[Toxic]:
        return self.toxic_set.all()

    def reset(self) -> None:
        self.toxic_set.reset()

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.reader.name, "vpcd": f"{self.vpcd[0]}:{self.vpcd[1]}",
                "target": self.target_reader, "card_in": self.card_in, "presented": self.presented,
                "atr": self.atr.hex().upper(), "stats": dict(self.stats), "reader": self.reader.counters(),
                "toxics": [t.to_json() for t in self.toxics()]}

    def subscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._trace.subscribe(fn)

    def unsubscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._trace.unsubscribe(fn)

    def _points(self) -> Points:
        return Points(environment=self.environment, clock=SkewedClock(self.clock), reader=self.reader)

    def _pulls_at(self) -> str:
        return next((p.habits.pulls_card_at for p in self.toxic_set.plans() if p.habits.pulls_card_at), "")

    # --- the source ------------------------------------------------------------------------------
    async def _watch_source(self) -> None:
        while not self._stopping:
            try:
                ev = await self.reader.next_event(0.5)
            except NoReaderError as e:
                if not self.dead:
                    self.dead = True
                    self._error("the card reader does not respond", e.code)
                    await self._withdraw("the reader went dead", reset=True)
                await self.clock.sleep(0.5)
                continue
            except ReaderError as e:
                self._error("the source reader failed", e.code)
                await self.clock.sleep(0.5)
                continue
            if self.dead:
                self.dead = False
                self._trace.record(Kind.READER, "the card reader answers again")
                if self.card_in and self._session is None:
                    await self._present()
            if ev is None:
                continue
            self._trace.record(Kind.READER, f"source: {ev.kind.value}")
            if ev.kind is ReaderEventKind.CARD_INSERTED:
                self.card_in = True
                self.atr = b""
                self.mute = False
                await self._present()
            elif ev.kind in (ReaderEventKind.CARD_REMOVED, ReaderEventKind.READER_LOST):
                self.card_in = False
                await self._withdraw("the card was taken out of the source reader", reset=False)

    # --- presenting to vpcd ----------------------------------------------------------------------
    async def _present(self) -> None:
        if self._session is not None or self._stopping or self.dead or not self.card_in:
            return
        attempts = max(1, int(self.connect_timeout / 0.2))
        for i in range(attempts):
            try:
                r, w = await asyncio.open_connection(*self.vpcd)
                break
            except OSError:
                if i + 1 == attempts:
                    self._error(f"cannot reach vpcd at {self.vpcd[0]}:{self.vpcd[1]}", "reader.service_down")
                    return
                await self.clock.sleep(0.2)
        session = _Session(w)
        self._session = session
        self.stats["presented"] += 1
        self._trace.record(Kind.READER, "card presented to vpcd", slot=self.target_reader or "")
        session.task = asyncio.ensure_future(self._serve(session, r, w))

    async def _withdraw(self, why: str, *, reset: bool, code: str | None = None) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        self.stats["withdrawn"] += 1
        if reset:
            _rst(session.writer)
        else:
            session.writer.close()
        self._trace.record(Kind.READER, f"card withdrawn from vpcd: {why}", **({"code": code} if code else {}))
        self._end_txn(session)
        task = session.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _later_present(self, after: float) -> None:
        async def back() -> None:
            await self.clock.sleep(after)
            if self.card_in and self._session is None:
                self._trace.record(Kind.READER, "the card is back in the slot")
                await self._present()

        t = asyncio.ensure_future(back())
        self._later.add(t)
        t.add_done_callback(self._later.discard)

    async def _serve(self, session: _Session, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        decoder = VpcdDecoder()
        try:
            while True:
                data = await r.read(4096)
                if not data:
                    break
                decoder.receive_data(data)
                while True:
                    msg = decoder.next_event()
                    if msg is NEED_DATA:
                        break
                    if self._session is not session:
                        return
                    reply = await self._handle(session, msg)
                    if self._session is not session:
                        return
                    if reply is not None:
                        w.write(encode_frame(reply))
                        await w.drain()
        except (ConnectionError, OSError, DecodeError):
            pass
        if self._session is session:          # vpcd let go of the card (pcscd stopped, a mute card ejected)
            self._session = None
            self._trace.record(Kind.READER, "vpcd closed the connection")
            self._end_txn(session)
            with contextlib.suppress(Exception):
                w.close()
            if self.card_in and not self._stopping:
                self._later_present(self.reinsert_after)

    async def _handle(self, session: _Session, msg: ControlMessage | ApduMessage) -> bytes | None:
        if isinstance(msg, ApduMessage):
            return await self._apdu(session, msg.apdu)
        ctl = msg.control
        if ctl is Control.GET_ATR:               # pcscd's presence poll: answered without touching the card
            if not self.atr and not self.mute:
                await self._power_on(session)
            return b"" if self.mute else self.atr
        if ctl in (Control.POWER_ON, Control.RESET):
            await self._power_on(session)
            return None
        if session.powered:                      # power off: the application is done with the card
            session.powered = False
            self.toxic_set.reached(OnsetKind.REMOVAL, "the application powered the card off")
            with contextlib.suppress(ReaderError):
                await self.reader.power_off()
            self._end_txn(session)
        return None

    def _begin_txn(self, session: _Session) -> None:
        if session.begun:
            return
        session.begun = True
        session.errors = 0
        session.read_records = session.after_records = session.pulled_here = False
        self._trace.record(Kind.TXN, "begin", txn="card_session")
        self._trace.record(Kind.NOTE, "reader health", code="terminal.health", **self.reader.health())

    def _end_txn(self, session: _Session) -> None:
        if session.begun:
            session.begun = False
            self._trace.record(Kind.TXN, "end", txn="card_session", approved=session.errors == 0)

    def _error(self, what: str, code: str, **data: Any) -> None:
        if self._session is not None:
            self._session.errors += 1
        self._trace.record(Kind.ERROR, what, code=code, **data)

    async def _power_on(self, session: _Session) -> None:
        self._begin_txn(session)
        self.toxic_set.reached(OnsetKind.CARD_READ, "the application powers the card")
        try:
            self.atr = await self.reader.power_on()
            self.mute = False
            session.powered = True
            self._trace.record(Kind.READER, "card powered", atr_len=len(self.atr))
        except CardMuteError as e:
            self.mute = True
            self.stats["mute"] += 1
            self._error("no answer to reset", e.code)
        except NoReaderError as e:
            self.mute = True
            self._error("the card reader does not respond", e.code)
        except CardAbsentError as e:
            self.mute = True
            self._error("no card at power-up", e.code)

    async def _apdu(self, session: _Session, apdu: bytes) -> bytes | None:
        self._begin_txn(session)
        self.stats["apdus"] += 1
        self.toxic_set.step()
        ins = apdu[1] if len(apdu) > 1 else 0
        name = apdu_name(apdu)
        moment = self._moment(session, ins)
        pull = self._pulls_at()
        if pull and moment == pull and not session.pulled_here:
            session.pulled_here = True
            await self._pull(session, apdu, "the cardholder pulled the card", bounce=False)
            return None
        if not session.powered and not self.atr:
            await self._power_on(session)
        try:
            resp = await self.reader.transmit(apdu)
        except CardAbsentError as e:
            await self._pull(session, apdu, "the card's contacts opened", bounce=True, code=e.code)
            return None
        except CardResetError as e:
            self._apdu_entry(apdu, NO_DIAGNOSIS)
            self._error(f"the card reset during {name}", e.code, ins=f"{ins:02X}")
            self.stats["resets"] += 1
            self.atr = b""
            session.powered = False
            await self._notify_reset()
            return NO_DIAGNOSIS
        except (TransmissionError, CardMuteError) as e:
            self._apdu_entry(apdu, NO_DIAGNOSIS)
            self._error(f"{name} failed at the contacts", e.code, ins=f"{ins:02X}")
            return NO_DIAGNOSIS
        except NoReaderError as e:
            self._error("the card reader does not respond", e.code)
            self.dead = True
            await self._withdraw("the reader went dead", reset=True)
            return None
        self._apdu_entry(apdu, resp)
        return resp

    def _moment(self, session: _Session, ins: int) -> str:
        """Which of the cardholder's moments this command is (and the onsets it brings)."""
        moment = ""
        if ins == 0xA4:
            self.toxic_set.reached(OnsetKind.TRANSACTION, "SELECT")
        if ins == 0xB2:
            if not session.read_records:
                moment = "reading"
            session.read_records = True
        elif session.read_records and not session.after_records and ins not in (0xC0,):
            session.after_records = True
            moment = "pin"
            self.toxic_set.reached(OnsetKind.PIN_ENTRY, f"{_NAMES.get(ins, hex(ins))} after the records")
        if ins == 0x20:
            self.toxic_set.reached(OnsetKind.PIN_ENTRY, "VERIFY")
        if ins == 0xAE:
            self.toxic_set.reached(OnsetKind.ONLINE, "GENERATE AC")
            if not moment:
                moment = "online"
        return moment

    def _apdu_entry(self, apdu: bytes, resp: bytes) -> None:
        self._trace.record(Kind.APDU, apdu_name(apdu), header=apdu[:4].hex().upper(), lc=len(apdu),
                           le=len(resp), sw=resp[-2:].hex().upper() if len(resp) >= 2 else "")

    async def _pull(self, session: _Session, apdu: bytes, why: str, *, bounce: bool,
                    code: str = "pcsc.0x80100069") -> None:
        """The card leaves mid-exchange: the vpcd connection is reset (the command in flight fails)."""
        self._trace.record(Kind.APDU, apdu_name(apdu), header=apdu[:4].hex().upper(), lc=len(apdu), le=0,
                           sw="")
        self._error(why, code, ins=f"{apdu[1]:02X}" if len(apdu) > 1 else "")
        if bounce:
            self.stats["bounced"] += 1
        else:
            self.stats["pulled"] += 1
            self._trace.record(Kind.READER, "card removed", code="reader.card_removed")
            self._trace.record(Kind.READER, "the slot is empty", code="slot.empty")
        self.atr = b""
        await self._withdraw(why, reset=True)
        if self.card_in and not self._stopping:
            self._later_present(self.reinsert_after)

    async def _notify_reset(self) -> None:
        """Tell PC/SC the card was reset (another program's reset). pcscd marks every other handle
        reset at once, then waits for the command in flight to finish before it resets the card
        through vpcd — so the notice runs in the background and the answer goes after a short pause
        (real time) in which pcscd takes the notice."""
        if not self.target_reader:
            return
        reader = self.target_reader

        async def notice() -> None:
            why = await run_external(self.clock, self._reset_notice, reader)
            self.last_notice = why or "ok"
            if why:
                self._trace.record(Kind.NOTE, "the reset could not be announced to PC/SC", reason=why)
            else:
                self.stats["reset_notices"] += 1
                self._trace.record(Kind.READER, "card reset announced to PC/SC")

        t = asyncio.ensure_future(notice())
        self._later.add(t)
        t.add_done_callback(self._later.discard)
        with self.clock.external():
            await asyncio.wait({t}, timeout=NOTICE_PAUSE_S)
