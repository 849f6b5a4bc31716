"""The POS terminal: sign-on, balance inquiry, purchase, reversals — one flow over the ports.

The terminal owns no I/O of its own: it drives a :class:`hardware.ports.CardReader`, a
:class:`emulator.ports.PinPad`, a display callback, a :class:`emulator.hostlink.HostLink`, the
:class:`emulator.journal.Journal` and the :class:`emulator.trace.Trace`, all on one Clock.
Every step goes through the state machine in :mod:`emulator.fsm`.

Screens follow a real terminal: a failed balance inquiry shows 查询卡信息失败 with the reason
below it; a card that is not removed (or is pulled out mid-transaction) shows 拔出卡失败.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from emulator import config as configmod
from emulator.errors import (
    ConnectError,
    DnsError,
    HostLinkError,
    HostTimeout,
    LinkLost,
    NotSignedOn,
    TerminalLocked,
)
from emulator.fsm import Event, Machine, State
from emulator.hostlink import HostLink
from emulator.journal import Journal, Reversal, Status
from emulator.messages import Msg, Screen, format_amount
from emulator.ports import Display, PinPad
from emulator.trace import Kind, Trace
from hardware.clock import Clock
from hardware.errors import HardwareError, NoReaderError, ReaderError, ServiceUnavailableError
from hardware.ports import CardReader, ReaderEventKind, SwipeResult
from protocol import keys as keymod
from protocol.errors import CryptoError, PosemuError
from protocol.masking import mask_pan
from protocol.pinblock import encrypt_pinblock
from protocol.session import mac_ok
from protocol.specs import Profile, get_profile
from protocol.txn import (
    RC,
    CardData,
    EntryMode,
    Field60,
    TerminalIds,
    TxnType,
    financial_request,
    parse_balances,
    reversal_request,
    sign_on_request,
)

RC_SCREENS: dict[str, Msg] = {
    "12": Msg.NOT_PERMITTED, "13": Msg.DECLINED, "14": Msg.INVALID_CARD, "30": Msg.FORMAT_ERROR,
    "51": Msg.INSUFFICIENT_FUNDS, "54": Msg.EXPIRED_CARD, "55": Msg.WRONG_PIN, "57": Msg.NOT_PERMITTED,
    "58": Msg.NOT_PERMITTED, "62": Msg.RESTRICTED_CARD, "75": Msg.PIN_TRIES_EXCEEDED, "91": Msg.HOST_BUSY,
    "96": Msg.HOST_BUSY, "77": Msg.SIGN_ON_REQUIRED, "A0": Msg.MAC_ERROR, "A4": Msg.VERSION_REJECTED,
}


class CardReadFailed(PosemuError):
    """The card could not be read (after the retries a terminal allows)."""

    def __init__(self, detail: Msg, reason: str) -> None:
        self.detail = detail
        super().__init__(reason)


@dataclass(slots=True)
class Outcome:
    """What a transaction ended with."""

    kind: str
    approved: bool
    headline: Msg
    detail: Msg | None = None
    rc: str | None = None
    balance: int | None = None
    currency: str = "156"
    journal_id: int | None = None
    screens: list[Screen] = field(default_factory=list)
    error: str | None = None

    @property
    def codes(self) -> list[str]:
        return [s.code for s in self.screens]


class Terminal:
    def __init__(self, cfg: configmod.TerminalConfig, *, clock: Clock, reader: CardReader, pinpad: PinPad,
                 journal: Journal, link: HostLink, trace: Trace | None = None,
                 display: Display | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.reader = reader
        self.pinpad = pinpad
        self.journal = journal
        self.link = link
        self.trace = trace or link.trace
        self.profile: Profile = get_profile(cfg.profile)
        self.fsm = Machine()
        self._displays: list[Display] = [display] if display else []
        self._screens: list[Screen] = []
        self.keys: keymod.WorkingKeys | None = None
        self.locked = False
        self._operator_failures = 0
        self._busy = asyncio.Lock()
        header = self.profile.default_header
        if header:
            header = header[:6] + bytes([cfg.software_version & 0xFF]) + header[7:]
        self.ids = TerminalIds(cfg.terminal_id, cfg.merchant_id, header,
                               f"{journal.counter('batch', 1):06d}")
        recovered = journal.recover()
        if recovered:
            self.trace.record(Kind.JOURNAL, "recovered pending reversals", count=recovered)

    # --- display --------------------------------------------------------------------------
    def add_display(self, fn: Display) -> None:
        self._displays.append(fn)

    def show(self, msg: Msg, **params: str) -> Screen:
        s = Screen(msg, dict(params))
        self._screens.append(s)
        self.trace.record(Kind.SCREEN, msg.value, params=dict(params))
        for fn in self._displays:
            fn(s)
        return s

    def _fire(self, ev: Event) -> State:
        old = self.fsm.state
        new = self.fsm.fire(ev)
        self.trace.record(Kind.STATE, f"{old.value} → {new.value}", event=ev.value)
        return new

    @property
    def signed_on(self) -> bool:
        return self.keys is not None

    def _stan(self) -> str:
        return f"{self.journal.next_counter('stan'):06d}"

    # --- operator -------------------------------------------------------------------------
    def operator_login(self, password: str) -> bool:
        """Check the operator password; too many failures lock the terminal (B12)."""
        if self.locked:
            self.show(Msg.TERMINAL_LOCKED)
            return False
        if password == self.cfg.operator_password:
            self._operator_failures = 0
            return True
        self._operator_failures += 1
        self.trace.record(Kind.NOTE, "operator password wrong", failures=self._operator_failures)
        if self._operator_failures >= self.cfg.operator_tries:
            self.locked = True
            self.show(Msg.TERMINAL_LOCKED)
        else:
            self.show(Msg.OPERATOR_PASSWORD)
        return False

    # --- sign-on ---------------------------------------------------------------------------
    async def sign_on(self) -> Outcome:
        async with self._busy:
            self._screens = []
            if self.locked:
                self.show(Msg.TERMINAL_LOCKED)
                return self._outcome("sign_on", False, Msg.TERMINAL_LOCKED)
            self._fire(Event.SIGN_ON)
            self.show(Msg.SIGNING_ON)
            req = sign_on_request(self.profile, self.ids, stan=self._stan(), operator=self.cfg.operator,
                                  key_scheme=self.cfg.key_scheme)
            try:
                ex = await self.link.exchange(req)
            except HostLinkError as e:
                self._fire(Event.SIGN_ON_FAILED)
                detail = self._link_screen(e)
                self.show(Msg.SIGN_ON_FAILED)
                self.show(detail)
                return self._outcome("sign_on", False, Msg.SIGN_ON_FAILED, detail, error=str(e))
            rc = ex.response.get(39)
            if rc != "00":
                self._fire(Event.SIGN_ON_FAILED)
                detail = RC_SCREENS.get(str(rc), Msg.DECLINED)
                self.show(Msg.SIGN_ON_FAILED)
                self.show(detail, rc=str(rc))
                return self._outcome("sign_on", False, Msg.SIGN_ON_FAILED, detail, rc=str(rc))
            try:
                block = ex.response.binary(62)
                self.keys = keymod.parse_field62(self.cfg.tmk, block, keymod.KeyScheme(self.cfg.key_scheme))
            except (KeyError, TypeError, PosemuError) as e:
                self._fire(Event.SIGN_ON_FAILED)
                self.show(Msg.SIGN_ON_FAILED)
                self.show(Msg.MAC_ERROR if isinstance(e, CryptoError) else Msg.FORMAT_ERROR)
                return self._outcome("sign_on", False, Msg.SIGN_ON_FAILED, error=f"working keys: {e}")
            f60 = ex.response.get(60)
            if isinstance(f60, str):
                with contextlib.suppress(PosemuError):
                    batch = Field60.parse(f60).batch
                    self.ids = TerminalIds(self.ids.tid, self.ids.mid, self.ids.header, batch)
            self._fire(Event.SIGNED_ON)
            self.show(Msg.SIGN_ON_OK)
            return self._outcome("sign_on", True, Msg.SIGN_ON_OK, rc="00")

    # --- transactions ----------------------------------------------------------------------
    async def balance_inquiry(self) -> Outcome:
        return await self._transaction(TxnType.BALANCE, None)

    async def purchase(self, amount: int) -> Outcome:
        return await self._transaction(TxnType.PURCHASE, amount)

    async def _transaction(self, txn: TxnType, amount: int | None) -> Outcome:
        kind = "balance" if txn is TxnType.BALANCE else "purchase"
        fail_head = Msg.QUERY_CARD_FAILED if txn is TxnType.BALANCE else Msg.TXN_FAILED
        async with self._busy:
            self._screens = []
            if self.locked:
                self.show(Msg.TERMINAL_LOCKED)
                return self._outcome(kind, False, Msg.TERMINAL_LOCKED, error=str(TerminalLocked("locked")))
            if not self.signed_on:
                self.show(Msg.SIGN_ON_REQUIRED)
                return self._outcome(kind, False, Msg.SIGN_ON_REQUIRED, error=str(NotSignedOn("not signed on")))
            await self._send_pending_reversals()
            self._fire(Event.START)
            try:
                card = await self._acquire_card(txn, amount)
            except CardReadFailed as e:
                return await self._finish(kind, False, fail_head, e.detail, error=str(e))
            pin_block = None
            assert self.keys is not None
            if card.entry is not EntryMode.CHIP:
                pin = await self._ask_pin()
                if pin is None:
                    self._fire(Event.CANCEL)
                    return await self._finish(kind, False, fail_head, Msg.CANCELLED)
                pin_block = encrypt_pinblock(pin, card.pan, self.keys.pik)
                self._fire(Event.PIN_ENTERED)
            elif self._chip_online_pin is not None:
                pin_block = encrypt_pinblock(self._chip_online_pin, card.pan, self.keys.pik)
                self._chip_online_pin = None
                self._fire(Event.PIN_ENTERED)
            else:
                self._fire(Event.PIN_ENTERED if self._chip_pin_verified else Event.NO_PIN)
            return await self._online(txn, kind, card, amount, pin_block, fail_head)

    _chip_online_pin: str | None = None
    _chip_pin_verified = False

    async def _ask_pin(self) -> str | None:
        prompt = self.show(Msg.ENTER_PIN)
        waiter = asyncio.ensure_future(self.pinpad.get_pin(prompt, self.cfg.timeouts.pin_entry))
        try:
            async with asyncio.timeout(self.cfg.timeouts.pin_entry):
                return await waiter
        except TimeoutError:
            self.trace.record(Kind.NOTE, "PIN entry timed out")
            return None

    async def _online(self, txn: TxnType, kind: str, card: CardData, amount: int | None,
                      pin_block: bytes | None, fail_head: Msg) -> Outcome:
        assert self.keys is not None
        stan = self._stan()
        now = self.clock.wall()
        req = financial_request(self.profile, self.ids, txn, card, stan=stan, now=now, amount=amount,
                                currency=self.cfg.currency, pin_block=pin_block)
        reversible = req if txn is TxnType.PURCHASE else None
        jid = self.journal.begin(kind=kind, stan=stan, date=now.strftime("%m%d"), pan_masked=mask_pan(card.pan),
                                 amount=amount or 0, currency=self.cfg.currency, entry=card.entry.name,
                                 reversible=reversible)
        self.trace.record(Kind.JOURNAL, "written before send", id=jid, stan=stan)
        self.show(Msg.PROCESSING)
        try:
            self._fire(Event.SENT)
            ex = await self.link.exchange(req, mak=self.keys.mak)
        except HostLinkError as e:
            self._fire(Event.HOST_FAILED)
            detail = self._link_screen(e)
            sent = not isinstance(e, DnsError | ConnectError)
            status = Status.UNKNOWN if sent else Status.FAILED
            rev = Reversal.PENDING if (sent and reversible is not None) else Reversal.NONE
            reason = RC.NO_RESPONSE.value if rev is Reversal.PENDING else None
            self.journal.complete(jid, status, screen=detail.value, reversal=rev, reason=reason)
            out = await self._finish(kind, False, fail_head, detail, error=str(e), journal_id=jid)
            if rev is Reversal.PENDING:
                await self._send_pending_reversals()
            return out
        resp = ex.response
        rc = str(resp.get(39, ""))
        if 64 in resp.fields and not mac_ok(ex.raw, self.profile, self.keys.mak):
            self._fire(Event.RESPONSE)
            rev = Reversal.PENDING if (reversible is not None and rc == "00") else Reversal.NONE
            self.journal.complete(jid, Status.UNKNOWN if rev is Reversal.PENDING else Status.DECLINED, rc=rc,
                                  screen=Msg.MAC_ERROR.value, reversal=rev,
                                  reason=RC.MAC_ERROR.value if rev is Reversal.PENDING else None)
            out = await self._finish(kind, False, fail_head, Msg.MAC_ERROR, rc=rc, journal_id=jid)
            if rev is Reversal.PENDING:
                await self._send_pending_reversals()
            return out
        self._fire(Event.RESPONSE)
        if rc != "00":
            detail = RC_SCREENS.get(rc, Msg.DECLINED)
            if rc == "77":
                self.keys = None
            self.journal.complete(jid, Status.DECLINED, rc=rc, screen=detail.value, reversal=Reversal.NONE)
            return await self._finish(kind, False, fail_head, detail, rc=rc, journal_id=jid)
        balance = None
        currency = self.cfg.currency
        f54 = resp.get(54)
        if isinstance(f54, str):
            try:
                entries = parse_balances(f54)
                avail = [b for b in entries if b.amount_type == "02"] or entries
                balance, currency = avail[0].amount, avail[0].currency
            except PosemuError as e:
                self.trace.record(Kind.ERROR, "bad balance field", error=str(e))
        if txn is TxnType.BALANCE and balance is None:
            self.journal.complete(jid, Status.DECLINED, rc=rc, screen=Msg.FORMAT_ERROR.value)
            return await self._finish(kind, False, fail_head, Msg.FORMAT_ERROR, rc=rc, journal_id=jid)
        self.journal.complete(jid, Status.APPROVED, rc=rc, screen=Msg.APPROVED.value, reversal=Reversal.NONE)
        if txn is TxnType.BALANCE:
            assert balance is not None
            head = Msg.APPROVED_BALANCE
            self.show(head, balance=format_amount(balance, currency))
        else:
            head = Msg.APPROVED
            self.show(head)
        out = await self._finish(kind, True, head, None, rc=rc, journal_id=jid, shown=True)
        out.balance, out.currency = balance, currency
        return out

    # --- card acquisition ------------------------------------------------------------------
    async def _acquire_card(self, txn: TxnType, amount: int | None) -> CardData:
        self.show(Msg.INSERT_OR_SWIPE)
        swipe_failures = 0
        chip_failures = 0
        fallback = False
        while True:
            try:
                ev = await self.reader.next_event(self.cfg.timeouts.card)
            except (ServiceUnavailableError, NoReaderError) as e:
                self._fire(Event.TIMEOUT)
                raise CardReadFailed(Msg.NO_READER, str(e)) from None
            except HardwareError as e:
                self._fire(Event.TIMEOUT)
                raise CardReadFailed(Msg.READER_ERROR, str(e)) from None
            if ev is None:
                self._fire(Event.TIMEOUT)
                raise CardReadFailed(Msg.TIMEOUT, "no card presented in time")
            self.trace.record(Kind.READER, ev.kind.value)
            if ev.kind is ReaderEventKind.CARD_SWIPED and ev.swipe is not None:
                self.trace.record(Kind.READER, "swipe read", tracks=[
                    {"track": t.track, "status": t.status.value, "detail": t.detail, "chars": len(t.data)}
                    for t in ev.swipe.tracks])
                self._fire(Event.CARD_SWIPED)
                self.show(Msg.READING_CARD)
                if "swipe" in self.cfg.disabled_entry:
                    self._fire(Event.READ_FAILED)
                    raise CardReadFailed(Msg.CARD_NOT_SUPPORTED, "magstripe entry is disabled in the config")
                try:
                    card = self._card_from_swipe(ev.swipe, fallback)
                except CardReadFailed as e:
                    if e.detail is Msg.INSERT_CHIP:
                        self._fire(Event.RETRY_READ)
                        self.show(Msg.INSERT_CHIP)
                        continue
                    swipe_failures += 1
                    if swipe_failures >= 3:
                        self._fire(Event.READ_FAILED)
                        raise
                    self._fire(Event.RETRY_READ)
                    self.show(Msg.SWIPE_AGAIN)
                    continue
                self._fire(Event.CARD_READ)
                return card
            if ev.kind is ReaderEventKind.CARD_INSERTED:
                self._fire(Event.CARD_INSERTED)
                self.show(Msg.READING_CARD)
                if "chip" in self.cfg.disabled_entry:
                    self._fire(Event.READ_FAILED)
                    raise CardReadFailed(Msg.CARD_NOT_SUPPORTED, "chip entry is disabled in the config")
                try:
                    card = await self._read_chip(txn, amount)
                except CardReadFailed as e:
                    if e.detail in (Msg.PIN_BLOCKED, Msg.CANCELLED, Msg.CARD_REMOVED_EARLY):
                        self._fire(Event.READ_FAILED)
                        raise
                    chip_failures += 1
                    self.trace.record(Kind.READER, "chip read failed", failures=chip_failures, error=str(e))
                    if chip_failures >= self.cfg.chip_retries:
                        if not self.cfg.allow_fallback:
                            self._fire(Event.READ_FAILED)
                            raise CardReadFailed(Msg.READER_ERROR, f"chip unreadable {chip_failures} times; "
                                                 "fallback to the stripe is not allowed") from None
                        fallback = True
                        self._fire(Event.RETRY_READ)
                        self.show(Msg.FALLBACK_SWIPE)
                        continue
                    self._fire(Event.RETRY_READ)
                    self.show(Msg.READER_ERROR)
                    continue
                self._fire(Event.CARD_READ)
                return card
            # CARD_REMOVED while waiting, READER_LOST…
            if ev.kind is ReaderEventKind.READER_LOST:
                self._fire(Event.TIMEOUT)
                raise CardReadFailed(Msg.NO_READER, "the card reader went away")

    def _card_from_swipe(self, swipe: SwipeResult, fallback: bool) -> CardData:
        t2 = swipe.track(2)
        if t2 is None or not t2.ok:
            status = t2.status.value if t2 else "absent"
            raise CardReadFailed(Msg.SWIPE_AGAIN, f"track 2 {status}")
        pan, sep, rest = t2.data.partition("=")
        if not sep or not pan.isdigit() or len(rest) < 7 or not rest[:7].isdigit():
            raise CardReadFailed(Msg.SWIPE_AGAIN, "track 2 is not ISO/IEC 7813 format")
        service = rest[4:7]
        if service[0] in "26" and not fallback:
            raise CardReadFailed(Msg.INSERT_CHIP, "chip card swiped: insert it")
        t3 = swipe.track(3)
        return CardData(pan=pan, entry=EntryMode.FALLBACK if fallback else EntryMode.SWIPE, expiry=rest[:4],
                        track2=t2.data, track3=t3.data if t3 is not None and t3.ok and t3.data else None,
                        service_code=service)

    async def _read_chip(self, txn: TxnType, amount: int | None) -> CardData:
        """Read the chip with the EMV kernel (:mod:`emulator.emv`); the kernel runs the CVM and
        collects the PIN through our PIN pad (offline PIN verified by the card, or online PIN kept
        for the PIN block)."""
        from emulator import emv

        self._chip_online_pin = None
        self._chip_pin_verified = False

        async def pin_entry(tries_left: int | None) -> str | None:
            if tries_left is not None and tries_left < 3:
                prompt = self.show(Msg.PIN_RETRY, tries=str(tries_left))
            else:
                prompt = self.show(Msg.ENTER_PIN)
            try:
                async with asyncio.timeout(self.cfg.timeouts.pin_entry):
                    return await self.pinpad.get_pin(prompt, self.cfg.timeouts.pin_entry)
            except TimeoutError:
                return None

        kcfg = emv.KernelConfig(
            aids=tuple(emv.TerminalAid(bytes.fromhex(a)) for a in self.cfg.aids),
            currency="0" + self.cfg.currency, ifd_serial=self.cfg.terminal_id, terminal_id=self.cfg.terminal_id)
        kernel = emv.EmvKernel(self.reader, self.clock, kcfg)
        ttype = emv.TransactionType.BALANCE_INQUIRY if txn is TxnType.BALANCE else emv.TransactionType.PURCHASE
        try:
            read = await kernel.read(emv.Transaction(amount=amount or 0, type=ttype), pin_entry)
        except emv.PinBlockedError as e:
            self.show(Msg.PIN_BLOCKED)
            raise CardReadFailed(Msg.PIN_BLOCKED, str(e)) from None
        except emv.CardholderCancelledError as e:
            raise CardReadFailed(Msg.CANCELLED, str(e)) from None
        except (ReaderError, PosemuError) as e:
            if not await self._card_present():
                raise CardReadFailed(Msg.CARD_REMOVED_EARLY, str(e)) from None
            raise CardReadFailed(Msg.READER_ERROR, str(e)) from None
        for entry in read.apdu_log:     # steps and status words only: APDU data may hold card data
            sw = entry.response[-2:].hex().upper() if len(entry.response) >= 2 else ""
            self.trace.record(Kind.APDU, entry.step, ins=f"{entry.command[1]:02X}" if len(entry.command) > 1 else "",
                              sw=sw, lc=len(entry.command), le=len(entry.response))
        self._chip_online_pin = read.online_pin if read.cvm is emv.Cvm.ONLINE_PIN else None
        self._chip_pin_verified = read.cvm is emv.Cvm.OFFLINE_PIN_OK
        seq = None if read.pan_sequence is None else f"{read.pan_sequence:03d}"
        return CardData(pan=read.pan, entry=EntryMode.CHIP, expiry=read.expiry, track2=read.track2_equivalent,
                        pan_seq=seq, icc=read.icc_data, service_code=read.service_code)

    async def _card_present(self) -> bool:
        try:
            return await self.reader.card_present()
        except PosemuError:
            return False

    # --- end of transaction ----------------------------------------------------------------
    async def _finish(self, kind: str, approved: bool, headline: Msg, detail: Msg | None, *, rc: str | None = None,
                      error: str | None = None, journal_id: int | None = None, shown: bool = False) -> Outcome:
        if detail is Msg.CARD_REMOVED_EARLY:
            headline = Msg.REMOVE_CARD_FAILED       # 拔出卡失败: the card left the reader mid-transaction
        if not shown:
            self.show(headline)
            if detail is not None and detail is not headline:
                self.show(detail, rc=rc or "")
        if self.fsm.state is not State.RESULT:
            self.fsm.reset()
            return self._outcome(kind, approved, headline, detail, rc=rc, error=error, journal_id=journal_id)
        removal_ok = await self._remove_card()
        if not removal_ok:
            headline_out = Msg.REMOVE_CARD_FAILED
            return self._outcome(kind, approved, headline_out, detail, rc=rc, error=error or "card removal failed",
                                 journal_id=journal_id)
        return self._outcome(kind, approved, headline, detail, rc=rc, error=error, journal_id=journal_id)

    async def _remove_card(self) -> bool:
        if not await self._card_present():
            self._fire(Event.NO_CARD)
            return True
        self._fire(Event.CARD_IN_SLOT)
        self.show(Msg.REMOVE_CARD)
        deadline = self.clock.now() + self.cfg.timeouts.removal
        while True:
            left = deadline - self.clock.now()
            try:
                ev = await self.reader.next_event(max(0.0, left)) if left > 0 else None
            except HardwareError as e:      # the reader cannot tell us the card left
                return self._removal_failed("removal not confirmed: reader error", error=str(e))
            if ev is not None and ev.kind is ReaderEventKind.CARD_REMOVED:
                self.trace.record(Kind.READER, ev.kind.value)
                self._fire(Event.CARD_REMOVED)
                return True
            if ev is None:
                return self._removal_failed("card still detected after removal timeout",
                                            seconds=self.cfg.timeouts.removal)

    def _removal_failed(self, what: str, **data: object) -> bool:
        """拔出卡失败: the terminal cannot confirm the card left the reader."""
        self.trace.record(Kind.READER, what, **data)
        self._fire(Event.REMOVAL_TIMEOUT)
        self.show(Msg.REMOVE_CARD_FAILED)
        self._fire(Event.CANCEL)
        return False

    def _outcome(self, kind: str, approved: bool, headline: Msg, detail: Msg | None = None, *,
                 rc: str | None = None, error: str | None = None, journal_id: int | None = None) -> Outcome:
        return Outcome(kind, approved, headline, detail, rc, journal_id=journal_id, screens=list(self._screens),
                       error=error)

    def _link_screen(self, e: HostLinkError) -> Msg:
        if isinstance(e, DnsError):
            return Msg.DNS_FAILED
        if isinstance(e, ConnectError):
            return Msg.CONNECT_FAILED
        if isinstance(e, HostTimeout):
            return Msg.TIMEOUT
        if isinstance(e, LinkLost):
            return Msg.LINK_LOST
        return Msg.CONNECT_FAILED

    # --- reversals -------------------------------------------------------------------------
    async def _send_pending_reversals(self) -> int:
        """Send every pending reversal once; those not acknowledged stay pending."""
        done = 0
        if self.keys is None:
            return 0
        for entry, original in self.journal.pending_reversals():
            if self.fsm.state is not State.IDLE:
                self.fsm.reset()
            self._fire(Event.REVERSE)
            self.show(Msg.REVERSAL_PENDING)
            reason = RC.parse(entry.reversal_reason or "98") or RC.NO_RESPONSE
            req = reversal_request(self.profile, original, reason=reason, ids=self.ids)
            self.journal.reversal_attempted(entry.id)
            try:
                ex = await self.link.exchange(req, mak=self.keys.mak)
            except HostLinkError as e:
                self.trace.record(Kind.JOURNAL, "reversal not acknowledged", id=entry.id, error=str(e))
                self._fire(Event.HOST_FAILED)
                continue
            rc = ex.response.get(39)
            if rc in ("00", "25", "12"):
                self.journal.reversal_done(entry.id)
                self.trace.record(Kind.JOURNAL, "reversal acknowledged", id=entry.id, rc=rc)
                self.show(Msg.REVERSAL_DONE)
                done += 1
                self._fire(Event.REVERSAL_DONE)
            else:
                self.trace.record(Kind.JOURNAL, "reversal refused", id=entry.id, rc=rc)
                self._fire(Event.HOST_FAILED)
        return done

    async def send_pending_reversals(self) -> int:
        async with self._busy:
            return await self._send_pending_reversals()

    async def close(self) -> None:
        await self.link.close()
        with contextlib.suppress(Exception):
            await self.reader.close()
