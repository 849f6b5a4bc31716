"""The card's side of a transaction: acquiring the card, reading it, verifying the cardholder, removal.

:class:`CardSession` is owned by :class:`emulator.terminal.Terminal` and given the parts it works
with — the card reader, the PIN pad, the clock, the trace, the configuration — and the terminal's
``show`` (screens), ``note`` (evidence) and ``fire`` (:mod:`emulator.fsm` events). It keeps no flow
state of its own: every step is an event fired through the terminal's machine, and every result is
returned (a :class:`~emulator.outcome.ChipCard`, a PIN block, or a
:class:`~emulator.outcome.Failure`).

Screens follow a real terminal: a card that leaves the reader (pulled out, reset by a brown-out, a
contact that bounces) in the middle of a transaction, or that is not removed, gives 拔出卡失败.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from emulator import config as configmod
from emulator.fsm import Event, State
from emulator.hostlink import Exchange
from emulator.messages import Msg, Screen
from emulator.outcome import ChipCard, Failure, amount_params, root_cause
from emulator.ports import PinPad
from emulator.trace import Kind, Trace
from hardware.clock import Clock
from hardware.errors import CardAbsentError, CardResetError, HardwareError, NoReaderError, ServiceUnavailableError
from hardware.pcsc_status import explain
from hardware.ports import CardReader, HealthSensors, ReaderEventKind, SwipeResult
from protocol import keys as keymod
from protocol.errors import PosemuError
from protocol.pinblock import encrypt_pinblock
from protocol.txn import CardData, EntryMode, TxnType

T = TypeVar("T")

Show = Callable[..., Screen]                   # Terminal.show(msg, **params)
Note = Callable[..., None]                     # Terminal._note(kind, what, code, **data)
Fire = Callable[[Event], State]                # Terminal._fire(event)


class CardSession:
    """The card reader and PIN pad side of a terminal flow (see the module docstring).

    ``reader`` and ``cfg`` are plain attributes: the terminal hands over a new reader (a fault
    wrapper) or configuration when it gets one.
    """

    def __init__(self, cfg: configmod.TerminalConfig, *, reader: CardReader, pinpad: PinPad, clock: Clock,
                 trace: Trace, show: Show, note: Note, fire: Fire) -> None:
        self.cfg = cfg
        self.reader = reader
        self.pinpad = pinpad
        self.clock = clock
        self.trace = trace
        self._show = show
        self._note = note
        self._fire = fire

    def _amount_params(self, amount: int | None) -> dict[str, str]:
        return amount_params(amount, self.cfg.currency)

    # --- the terminal's own sensors ------------------------------------------------------------------------
    def record_health(self) -> None:
        """The terminal's own sensors, where its reader has them (supply voltage, case temperature)."""
        if isinstance(self.reader, HealthSensors):
            try:
                readings = self.reader.health()
            except PosemuError:
                return
            self.trace.record(Kind.NOTE, "terminal health", code="terminal.health", **readings)

    # --- card acquisition -------------------------------------------------------------------------------
    async def acquire(self, txn: TxnType, amount: int | None) -> ChipCard | Failure:
        """INSERT_OR_SWIPE until a card is read, or why none could be."""
        self._show(Msg.INSERT_OR_SWIPE, **self._amount_params(amount))
        swipe_failures = chip_failures = 0
        fallback = False
        while True:
            try:
                ev = await self.reader.next_event(self.cfg.timeouts.card)
            except (ServiceUnavailableError, NoReaderError) as e:
                return self._reader_failed(Msg.NO_READER, e)
            except HardwareError as e:
                return self._reader_failed(Msg.READER_ERROR, e)
            if ev is None:
                self._note(Kind.READER, "no card presented in time", "reader.no_card",
                           seconds=self.cfg.timeouts.card)
                return Failure(Msg.TIMEOUT, "reader.no_card", "no card presented in time", Event.TIMEOUT)
            self.trace.record(Kind.READER, ev.kind.value)
            if ev.kind is ReaderEventKind.READER_LOST:
                problem = explain("reader.lost")
                self._note(Kind.READER, "the card reader went away", "reader.lost", reason=problem.reason,
                           remedy=problem.remedy)
                return Failure(Msg.NO_READER, "reader.lost", "the card reader went away", Event.READER_FAILED,
                               hint=problem.params())
            if ev.kind is ReaderEventKind.CARD_SWIPED and ev.swipe is not None:
                self._fire(Event.CARD_SWIPED)
                self._show(Msg.READING_CARD, **self._amount_params(amount))
                if "swipe" in self.cfg.disabled_entry:
                    self._note(Kind.READER, "magstripe entry disabled", "config.entry_disabled.swipe")
                    return Failure(Msg.CARD_NOT_SUPPORTED, "config.entry_disabled.swipe",
                                   "magstripe entry is disabled in the config")
                read = self._card_from_swipe(ev.swipe, fallback)
                if isinstance(read, CardData):
                    return ChipCard(read)
                if read.detail is Msg.INSERT_CHIP:
                    self._fire(Event.RETRY_READ)
                    self._show(Msg.INSERT_CHIP)
                    continue
                swipe_failures += 1
                if swipe_failures >= 3:
                    return read
                self._fire(Event.RETRY_READ)
                self._show(Msg.SWIPE_AGAIN)
                continue
            if ev.kind is ReaderEventKind.CARD_INSERTED:
                self._fire(Event.CARD_INSERTED)
                self._show(Msg.READING_CARD, **self._amount_params(amount))
                if "chip" in self.cfg.disabled_entry:
                    self._note(Kind.READER, "chip entry disabled", "config.entry_disabled.chip")
                    return Failure(Msg.CARD_NOT_SUPPORTED, "config.entry_disabled.chip",
                                   "chip entry is disabled in the config")
                chip = await self._read_chip(txn, amount)
                if isinstance(chip, ChipCard):
                    return chip
                if not chip.retry:
                    if chip.detail is Msg.PIN_BLOCKED:
                        self._show(Msg.PIN_BLOCKED)
                    return chip
                chip_failures += 1
                self.trace.record(Kind.READER, "chip read failed", failures=chip_failures, error=chip.reason,
                                  code=chip.code)
                if chip_failures >= self.cfg.chip_retries:
                    if not self.cfg.allow_fallback:
                        return Failure(Msg.READER_ERROR, chip.code, f"chip unreadable {chip_failures} times; "
                                       "fallback to the stripe is not allowed")
                    fallback = True
                    self._note(Kind.READER, "fallback to the stripe", "chip.fallback", failures=chip_failures)
                    self._fire(Event.RETRY_READ)
                    self._show(Msg.FALLBACK_SWIPE)
                    continue
                self._fire(Event.RETRY_READ)
                self._show(Msg.READER_ERROR)
                continue
            # CARD_REMOVED while waiting: nothing to do

    def _reader_failed(self, detail: Msg, e: PosemuError) -> Failure:
        """The reader itself is unusable: the screen's detail line, the trace and the diagnosis get
        the reason (with the PC/SC status in the code, e.g. ``pcsc.0x8010001D``) and the remedy that
        ``posemu readers`` gives (:func:`hardware.pcsc_status.explain`)."""
        problem = explain(e.code, str(e))
        self._note(Kind.READER, "reader failed", e.code, error=str(e), reason=problem.reason, remedy=problem.remedy)
        return Failure(detail, e.code, str(e), Event.READER_FAILED, hint=problem.params())

    def _card_from_swipe(self, swipe: SwipeResult, fallback: bool) -> CardData | Failure:
        tracks = [{"track": t.track, "status": t.status.value, "detail": t.detail, "chars": len(t.data)}
                  for t in swipe.tracks]
        t2 = swipe.track(2)
        if t2 is None or not t2.ok:
            status = t2.status.value if t2 else "absent"
            code = f"stripe.t2.{status.replace(' ', '_')}"
            self._note(Kind.READER, "swipe read", code, tracks=tracks)
            return Failure(Msg.SWIPE_AGAIN, code, f"track 2 {status}")
        pan, sep, rest = t2.data.partition("=")
        if not sep or not pan.isdigit() or len(rest) < 7 or not rest[:7].isdigit():
            self._note(Kind.READER, "swipe read", "stripe.t2.format", tracks=tracks)
            return Failure(Msg.SWIPE_AGAIN, "stripe.t2.format", "track 2 is not ISO/IEC 7813 format")
        service = rest[4:7]
        if service[0] in "26" and not fallback:
            self._note(Kind.READER, "swipe read", "card.chip_swiped", tracks=tracks)
            return Failure(Msg.INSERT_CHIP, "card.chip_swiped", "chip card swiped: insert it")
        self.trace.record(Kind.READER, "swipe read", tracks=tracks)
        t3 = swipe.track(3)
        return CardData(pan=pan, entry=EntryMode.FALLBACK if fallback else EntryMode.SWIPE, expiry=rest[:4],
                        track2=t2.data, track3=t3.data if t3 is not None and t3.ok and t3.data else None,
                        service_code=service)

    async def _read_chip(self, txn: TxnType, amount: int | None) -> ChipCard | Failure:
        """Read the chip with the EMV kernel (:mod:`emulator.emv`); the kernel runs the CVM and collects
        the PIN through our PIN pad (offline PIN verified by the card, or an online PIN for the PIN block)."""
        from emulator import emv

        async def pin_entry(tries_left: int | None) -> str | None:
            if tries_left is not None and tries_left < 3:
                prompt = self._show(Msg.PIN_RETRY, tries=str(tries_left))
            else:
                prompt = self._show(Msg.ENTER_PIN, **self._amount_params(amount))
            got = await self._while_card_in(self._typed_pin(prompt))
            return None if isinstance(got, _Pulled) else got

        kcfg = emv.KernelConfig(
            aids=tuple(emv.TerminalAid(bytes.fromhex(a)) for a in self.cfg.aids),
            currency="0" + self.cfg.currency, ifd_serial=self.cfg.terminal_id, terminal_id=self.cfg.terminal_id)
        kernel = emv.EmvKernel(self.reader, self.clock, kcfg)
        ttype = {TxnType.BALANCE: emv.TransactionType.BALANCE_INQUIRY, TxnType.VOID: emv.TransactionType.REFUND,
                 TxnType.REFUND: emv.TransactionType.REFUND}.get(txn, emv.TransactionType.PURCHASE)
        try:
            read = await kernel.read(emv.Transaction(amount=amount or 0, type=ttype), pin_entry)
        except emv.PinBlockedError as e:
            self._note(Kind.READER, "PIN blocked", "chip.pin_blocked", error=str(e))
            return Failure(Msg.PIN_BLOCKED, "chip.pin_blocked", str(e))
        except emv.CardBlockedError as e:        # SELECT 6A81: never fall back to the stripe
            self._note(Kind.READER, "card blocked", "chip.blocked", error=str(e))
            return Failure(Msg.CARD_BLOCKED, "chip.blocked", str(e))
        except emv.CardholderCancelledError as e:
            if not await self.card_present():
                return self.pulled("the card was pulled out during PIN entry")
            self._note(Kind.NOTE, "PIN entry cancelled", "pin.cancelled", error=str(e))
            return Failure(Msg.CANCELLED, "pin.cancelled", str(e), Event.CANCEL)
        except PosemuError as e:
            return await self._chip_error(e)
        for entry in read.apdu_log:     # steps and status words only: APDU data may hold card data
            sw = entry.response[-2:].hex().upper() if len(entry.response) >= 2 else ""
            self.trace.record(Kind.APDU, entry.step, ins=f"{entry.command[1]:02X}" if len(entry.command) > 1 else "",
                              sw=sw, lc=len(entry.command), le=len(entry.response))
        seq = None if read.pan_sequence is None else f"{read.pan_sequence:03d}"
        card = CardData(pan=read.pan, entry=EntryMode.CHIP, expiry=read.expiry, track2=read.track2_equivalent,
                        pan_seq=seq, icc=read.icc_data, service_code=read.service_code)
        return ChipCard(card, online_pin=read.online_pin if read.cvm is emv.Cvm.ONLINE_PIN else None,
                        offline_pin_ok=read.cvm is emv.Cvm.OFFLINE_PIN_OK,
                        kernel=kernel if read.cryptogram_type is emv.CryptogramType.ARQC else None)

    async def _chip_error(self, e: PosemuError) -> Failure:
        """A chip read that failed: the card left or was reset (拔出卡失败), or the read may be retried."""
        root = root_cause(e)
        present = await self.card_present()
        if isinstance(root, CardAbsentError) or not present:
            return self.pulled(str(e), code=root.code if isinstance(root, CardAbsentError) else None)
        if isinstance(root, CardResetError):
            self._note(Kind.READER, "card reset during the transaction", root.code, error=str(e))
            return Failure(Msg.CARD_RESET, root.code, str(e), Event.CARD_PULLED, removal=True)
        self._note(Kind.READER, "chip read error", root.code, error=str(e))
        self.record_health()                   # what the supply monitor and case sensor say at the failure
        return Failure(Msg.READER_ERROR, root.code, str(e), retry=True)

    def pulled(self, reason: str, *, code: str | None = None) -> Failure:
        """The card left the reader in the middle of the transaction (拔出卡失败)."""
        code = code or "reader.card_removed"
        self._note(Kind.READER, "card left the reader during the transaction", code, error=reason)
        return Failure(Msg.CARD_REMOVED_EARLY, code, reason, Event.CARD_PULLED, removal=True)

    async def card_present(self) -> bool:
        """Whether the reader sees a card; ``False`` when it cannot tell."""
        try:
            return await self.reader.card_present()
        except PosemuError:
            return False

    # --- checks and cardholder verification ---------------------------------------------------------------
    def local_checks(self, card: CardData) -> Failure | None:
        """What a terminal checks before going online: the card's expiry against its own clock."""
        today = self.clock.wall()
        if card.expiry and len(card.expiry) == 4 and card.expiry.isdigit() and card.expiry < f"{today:%y%m}":
            self._note(Kind.NOTE, "card expired by the terminal's clock", "card.expired_local",
                       expiry_before=f"{today:%y%m}", terminal_date=f"{today:%Y-%m-%d}")
            return Failure(Msg.EXPIRED_CARD, "card.expired_local", "the card's expiry date has passed")
        return None

    async def verify_cardholder(self, got: ChipCard, amount: int | None,
                                keys: keymod.WorkingKeys) -> bytes | Failure | None:
        """The PIN block to send (``None``: no online PIN), or why verification failed."""
        card = got.card
        if card.entry is EntryMode.CHIP:
            if got.online_pin is not None:
                self._fire(Event.PIN_ENTERED)
                return self._pin_block(got.online_pin, card.pan, keys)
            self._fire(Event.PIN_ENTERED if got.offline_pin_ok else Event.NO_PIN)
            return None
        prompt = self._show(Msg.ENTER_PIN, **self._amount_params(amount))
        pin = await self._typed_pin(prompt)
        if pin is None:
            self._note(Kind.NOTE, "PIN entry cancelled or timed out", "pin.cancelled")
            return Failure(Msg.CANCELLED, "pin.cancelled", "PIN entry cancelled", Event.CANCEL)
        self._fire(Event.PIN_ENTERED)
        return self._pin_block(pin, card.pan, keys)

    def _pin_block(self, pin: str, pan: str, keys: keymod.WorkingKeys) -> bytes:
        """Field 52: the PIN block in the dialect's ISO 9564 format under the PIK."""
        return encrypt_pinblock(pin, pan, keys.pik, self.cfg.dialect.pin_format)

    async def _typed_pin(self, prompt: Screen) -> str | None:
        try:
            async with asyncio.timeout(self.cfg.timeouts.pin_entry):
                return await self.pinpad.get_pin(prompt, self.cfg.timeouts.pin_entry)
        except TimeoutError:
            self.trace.record(Kind.NOTE, "PIN entry timed out", code="pin.timeout")
            return None

    # --- while the card is in ------------------------------------------------------------------------------
    async def _while_card_in(self, work: Awaitable[T]) -> T | _Pulled:
        """Run ``work`` while watching the reader: a card pulled out meanwhile ends it (:data:`_PULLED`)."""
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(self._removed())
        try:
            done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, watch):
                if not t.done():
                    t.cancel()
            for t in (task, watch):
                with contextlib.suppress(asyncio.CancelledError, PosemuError):
                    await t
        if task in done and not task.cancelled() and task.exception() is None:
            return task.result()
        if watch in done and not watch.cancelled() and watch.exception() is None and watch.result():
            return _PULLED
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return _PULLED

    async def while_card_in_online(self, work: Awaitable[Exchange]) -> tuple[Exchange, bool]:
        """The host exchange of a chip transaction; a card pulled meanwhile is noted (the answer still
        comes, and decides whether a reversal is owed)."""
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(self._removed())
        pulled = False
        try:
            done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done and not watch.cancelled() and watch.exception() is None and watch.result():
                pulled = True
                self._note(Kind.READER, "card pulled out while online", "reader.card_removed")
                self._fire(Event.CARD_PULLED)
            return await task, pulled
        finally:
            for t in (task, watch):
                if not t.done():
                    t.cancel()
            with contextlib.suppress(asyncio.CancelledError, PosemuError):
                await watch

    async def _removed(self) -> bool:
        """Wait until the reader reports the card removed; ``False`` if it cannot tell."""
        while True:
            try:
                ev = await self.reader.next_event(None)
            except PosemuError:
                return False
            if ev is not None and ev.kind is ReaderEventKind.CARD_REMOVED:
                self.trace.record(Kind.READER, ev.kind.value)
                return True

    # --- completion with the card ---------------------------------------------------------------------------
    async def complete_with_card(self, kernel: Any, rc: str) -> Failure | None:
        """Second GENERATE AC with the host's approval (EMV Book 3 §10.11): ``None`` when the card
        accepts (TC); otherwise why the transaction cannot stand (the card declined, failed or left),
        and a purchase the host approved must be reversed."""
        from emulator import emv

        self._fire(Event.COMPLETE)
        try:
            done = await kernel.complete(True, rc)
        except emv.EmvError as e:
            root = root_cause(e)
            if isinstance(root, CardAbsentError) or not await self.card_present():
                self._fire(Event.CARD_PULLED)
                return self.pulled(str(e), code=root.code if isinstance(root, CardAbsentError) else None)
            self._note(Kind.READER, "second GENERATE AC failed", root.code if root is not e else "chip.complete_failed",
                       error=str(e))
            self._fire(Event.READ_FAILED)
            return Failure(Msg.CARD_DECLINED, "chip.complete_failed", str(e), Event.READ_FAILED)
        except PosemuError as e:
            root = root_cause(e)
            if isinstance(root, CardAbsentError | CardResetError) or not await self.card_present():
                self._fire(Event.CARD_PULLED)
                return self.pulled(str(e), code=root.code)
            self._note(Kind.READER, "second GENERATE AC failed", root.code, error=str(e))
            self._fire(Event.READ_FAILED)
            return Failure(Msg.CARD_DECLINED, root.code, str(e), Event.READ_FAILED)
        if done.declined:
            self._note(Kind.READER, "the card declined after the host approved (AAC)", "chip.declined_after_online")
            self._fire(Event.READ_FAILED)
            return Failure(Msg.CARD_DECLINED, "chip.declined_after_online", "the card answered the second "
                           "GENERATE AC with an AAC")
        self._fire(Event.COMPLETED)
        return None

    # --- removal -------------------------------------------------------------------------------------------
    async def remove_card(self) -> bool:
        """At the result: wait for the card to leave the slot; ``False`` when removal is not confirmed."""
        if not await self.card_present():
            self._note(Kind.READER, "no card in the slot", "slot.empty")
            self._fire(Event.NO_CARD)
            return True
        self._note(Kind.READER, "a card is in the slot", "slot.card_in")
        self._fire(Event.CARD_IN_SLOT)
        self._show(Msg.REMOVE_CARD)
        deadline = self.clock.now() + self.cfg.timeouts.removal
        while True:
            left = deadline - self.clock.now()
            try:
                ev = await self.reader.next_event(max(0.0, left)) if left > 0 else None
            except HardwareError as e:      # the reader cannot tell us the card left
                return self._removal_failed("removal not confirmed: reader error", e.code, error=str(e))
            if ev is not None and ev.kind is ReaderEventKind.CARD_REMOVED:
                self.trace.record(Kind.READER, ev.kind.value)
                self._fire(Event.CARD_REMOVED)
                return True
            if ev is None:
                return self._removal_failed("card still detected after removal timeout", "reader.removal_unconfirmed",
                                            seconds=self.cfg.timeouts.removal)

    def _removal_failed(self, what: str, code: str, **data: object) -> bool:
        """拔出卡失败: the terminal cannot confirm the card left the reader."""
        self._note(Kind.READER, what, code, **data)
        self._fire(Event.REMOVAL_TIMEOUT)
        self._show(Msg.REMOVE_CARD_FAILED)
        self._fire(Event.REMOVAL_ACKNOWLEDGED)
        return False


class _Pulled:
    def __repr__(self) -> str:
        return "PULLED"


_PULLED = _Pulled()
