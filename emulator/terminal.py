"""The POS terminal: sign-on, balance inquiry, purchase, the transaction set, settlement, reversals.

The terminal owns no I/O of its own: it drives a :class:`hardware.ports.CardReader`, a
:class:`emulator.ports.PinPad`, a display callback, a :class:`emulator.hostlink.HostLink`, the
:class:`emulator.journal.Journal` and the :class:`emulator.trace.Trace`, all on one Clock.
Every step goes through the state machine in :mod:`emulator.fsm`, which also holds the session
flags (keys, lock, operator failures).

:class:`Terminal` is the flow and its record (screens shown, evidence noted, events fired, the
:class:`~emulator.outcome.Outcome`); the rooms of the flow are collaborators it owns and calls, each
firing its events through the terminal's one machine and holding no flow state of its own:

* :class:`emulator.card_session.CardSession` — acquiring and reading the card, PIN, removal;
* :class:`emulator.online.OnlineExchange` — the financial request, the host's answer, its outcome;
* :class:`emulator.sign_on.KeySession` — sign-on and sign-off (the working keys);
* :class:`emulator.settlement.Settlement` — batch totals, settlement and batch upload;
* :class:`emulator.reversals.Reversals` — the reversals owed to the host.

The result types live in :mod:`emulator.outcome` and are re-exported here.

Screens follow a real terminal: a failed balance inquiry shows 查询卡信息失败 with the reason
below it; a card that is not removed — or that leaves the reader (pulled out, reset by a
brown-out, a contact that bounces) in the middle of a transaction — shows 拔出卡失败.

**Evidence.** Every failure is recorded in the trace with a stable evidence code (``code``:
``reader.card_mute``, ``pcsc.0x80100069``, ``tcp.refused``, ``mac.mismatch``, ``host.rc.55`` …),
between a ``txn begin`` and ``txn end`` entry, so the diagnosis can look at the failed
transaction alone and match codes, never message wording.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from emulator import config as configmod
from emulator.card_session import CardSession
from emulator.errors import JournalError
from emulator.fsm import Event, Machine, State
from emulator.hostlink import Exchange, HostLink
from emulator.journal import Entry, Journal, Status
from emulator.messages import Msg, Screen
from emulator.online import OnlineExchange
from emulator.originals import ref_of, refusal
from emulator.outcome import (
    KEYS_REFUSED,
    RC_SCREENS,
    ChipCard,
    Failure,
    Outcome,
    Ref,
    amount_params,
)
from emulator.ports import Display, PinPad
from emulator.reversals import Reversals
from emulator.settlement import Settlement
from emulator.sign_on import CLOCK_TOLERANCE_S, KeySession
from emulator.trace import Kind, Trace
from hardware.clock import Clock
from hardware.ports import CardReader
from protocol import keys as keymod
from protocol.masking import mask_pan
from protocol.session import MacStatus, check_mac
from protocol.specs import Profile
from protocol.txn import VOIDS, BatchTotals, CardData, OriginalRef, TerminalIds, TxnType

__all__ = ["CLOCK_TOLERANCE_S", "KEYS_REFUSED", "RC_SCREENS", "ChipCard", "Failure", "Outcome", "Ref", "Terminal"]


class Terminal:
    """A POS terminal over its ports: sign-on/off, balance inquiry, purchase, reversals.

    One flow at a time (``_busy``); the state and the session flags live in ``self.machine``
    (:mod:`emulator.fsm`). Front ends call the coroutines and :meth:`abort`; they never edit the
    machine or the journal themselves.
    """

    def __init__(self, cfg: configmod.TerminalConfig, *, clock: Clock, reader: CardReader, pinpad: PinPad,
                 journal: Journal, link: HostLink, trace: Trace | None = None,
                 display: Display | None = None) -> None:
        self._cfg = cfg
        self.clock = clock
        self.journal = journal
        self.link = link
        self.trace = trace or link.trace
        self.profile: Profile = cfg.wire_profile()        # the host's dialect (config [host])
        self.machine = Machine()
        self._displays: list[Display] = [display] if display else []
        self._screens: list[Screen] = []
        self._evidence: list[str] = []
        self._busy = asyncio.Lock()
        # the rooms of the flow: each fires its events through self.machine (see the module docstring)
        self.card = CardSession(cfg, reader=reader, pinpad=pinpad, clock=clock, trace=self.trace,
                                show=self.show, note=self._note, fire=self._fire)
        self.online = OnlineExchange(self)
        self.key_session = KeySession(self)
        self.settlement = Settlement(self)
        self.reversals = Reversals(self)
        header = self.profile.default_header
        if len(header) == 11 and self.profile.tpdu_len == 5:     # CUP: TPDU + header, version in byte 2
            header = header[:6] + bytes([cfg.software_version & 0xFF]) + header[7:]
        self.ids = TerminalIds(cfg.terminal_id, cfg.merchant_id, header,
                               f"{journal.counter('batch', 1):06d}")
        static = cfg.static_keys()            # a host without sign-on: working keys from the config
        if static is not None:
            self.machine.session.keys = static
        self._seed_stan(journal)
        recovered = journal.recover()
        if recovered:
            self.trace.record(Kind.JOURNAL, "recovered pending reversals", count=recovered,
                              code="journal.recovered")

    # --- parts a front end or the fault injector may replace (the card session follows) -------------------
    @property
    def cfg(self) -> configmod.TerminalConfig:
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: configmod.TerminalConfig) -> None:
        self._cfg = cfg
        self.card.cfg = cfg

    @property
    def reader(self) -> CardReader:
        return self.card.reader

    @reader.setter
    def reader(self, reader: CardReader) -> None:
        self.card.reader = reader

    @property
    def pinpad(self) -> PinPad:
        return self.card.pinpad

    @pinpad.setter
    def pinpad(self, pinpad: PinPad) -> None:
        self.card.pinpad = pinpad

    # --- state (read-only views for front ends) ---------------------------------------------------
    @property
    def fsm(self) -> Machine:
        return self.machine

    @property
    def signed_on(self) -> bool:
        return self.machine.session.signed_on

    @property
    def locked(self) -> bool:
        return self.machine.locked

    @property
    def keys(self) -> keymod.WorkingKeys | None:
        keys: keymod.WorkingKeys | None = self.machine.session.keys
        return keys

    # --- display and evidence -----------------------------------------------------------------------
    def add_display(self, fn: Display) -> None:
        self._displays.append(fn)

    def show(self, msg: Msg, **params: str) -> Screen:
        s = Screen(msg, dict(params))
        self._screens.append(s)
        self.trace.record(Kind.SCREEN, msg.value, params=dict(params))
        for fn in self._displays:
            fn(s)
        return s

    def _note(self, kind: Kind, what: str, code: str, **data: object) -> None:
        """Record an observation with its evidence code."""
        self._evidence.append(code)
        self.trace.record(kind, what, code=code, **data)

    def _fire(self, ev: Event) -> State:
        old = self.machine.state
        new = self.machine.fire(ev)
        self.trace.record(Kind.STATE, f"{old.value} → {new.value}", event=ev.value)
        return new

    def _begin(self, kind: str) -> None:
        self._screens = []
        self._evidence = []
        self.trace.record(Kind.TXN, "begin", txn=kind)

    def _stan(self) -> str:
        return f"{self.journal.next_counter('stan'):06d}"

    @staticmethod
    def _seed_stan(journal: Journal) -> None:
        """A new journal (a new or reinstalled terminal) starts its STAN at a random point, so it does
        not replay the STANs of a previous installation; the host refuses the rare collision (94) and
        the terminal resends under the next STAN."""
        if journal.counter("stan", -1) < 0:
            journal.set_counter("stan", secrets.randbelow(999_000))

    # --- operator ---------------------------------------------------------------------------------------
    def operator_login(self, password: str) -> bool:
        """Check the operator password; too many failures lock the terminal (B12)."""
        session = self.machine.session
        if self.machine.locked:
            self._note(Kind.NOTE, "terminal locked", "terminal.locked")
            self.show(Msg.TERMINAL_LOCKED)
            return False
        if password == self.cfg.operator_password:
            session.operator_failures = 0
            return True
        session.operator_failures += 1
        self._note(Kind.NOTE, "operator password wrong", "operator.wrong_password", failures=session.operator_failures)
        if session.operator_failures >= self.cfg.operator_tries and self.machine.can(Event.LOCK):
            self._fire(Event.LOCK)
            self.show(Msg.TERMINAL_LOCKED)
        else:
            self.show(Msg.OPERATOR_PASSWORD)
        return False

    def unlock(self, admin_password: str) -> bool:
        """The administrator's way out of an operator lock: the admin password (``operator_password``
        of the configuration, reset by the administrator) unlocks and clears the failure count."""
        if not self.machine.locked or admin_password != self.cfg.admin_password:
            return False
        self._fire(Event.UNLOCK)
        self.machine.session.operator_failures = 0
        self.trace.record(Kind.NOTE, "terminal unlocked by the administrator")
        return True

    async def abort(self, reason: str = "aborted") -> None:
        """Abandon the flow in progress (the UI's Esc, a cancelled task): the journal row of a
        transaction that may have reached the host becomes ``unknown`` with its reversal pending; the
        machine goes back to IDLE as a recorded ``abort``."""
        state = self.machine.state
        recovered = self.journal.recover()
        if recovered:
            self.trace.record(Kind.JOURNAL, "abandoned transaction: reversal pending", count=recovered)
        for e in self.journal.entries(limit=10):
            if e.status is Status.PENDING:      # written before send: it may have reached the host
                self.journal.complete(e.id, Status.UNKNOWN, screen=Msg.CANCELLED.value)
        if state in (State.ONLINE, State.SIGNING_ON, State.SIGNING_OFF, State.REVERSING, State.SETTLING,
                     State.UPLOADING):
            await self.link.close()             # a late answer must not be taken for the next request's
        if self.machine.abort():
            self.trace.record(Kind.NOTE, "flow aborted", reason=reason, state=state.value)


    # --- sign-on / sign-off (emulator.sign_on) -------------------------------------------------------------
    async def sign_on(self) -> Outcome:
        async with self._busy:
            try:
                return await self._sign_on()
            finally:
                await self._hang_up()

    async def _sign_on(self, *, again: bool = False) -> Outcome:
        return await self.key_session.sign_on(again=again)

    async def sign_off(self) -> Outcome:
        """Sign off (签退): the host drops the working keys; so does the terminal."""
        async with self._busy:
            return await self.key_session.sign_off()

    # --- the host's dialect (config [host]) ----------------------------------------------------------------
    def _mak(self, keys: keymod.WorkingKeys) -> bytes | None:
        """The key to MAC a request with: the MAK, unless the host's dialect has no MAC."""
        return keys.mak if self.cfg.dialect.mac_enabled else None

    def _rc_screen(self, rc: str) -> Msg:
        """The screen for a response code: the dialect's table first, then the terminal's."""
        return self.cfg.dialect.screen_for(rc) or RC_SCREENS.get(rc, Msg.DECLINED)

    def _response_mac(self, ex: Exchange) -> MacStatus | None:
        """``None`` when the response is authentic (or MACs are off); else what is wrong with its MAC.

        With working keys every response must carry a valid MAC: a missing MAC is never skipped."""
        keys = self.keys
        if keys is None or not self.cfg.response_mac:
            return None
        status = check_mac(ex.response, ex.raw, self.profile, keys.mak)
        return None if status.ok else status

    # --- transactions -------------------------------------------------------------------------------------
    async def balance_inquiry(self) -> Outcome:
        return await self._transaction(TxnType.BALANCE, None)

    async def purchase(self, amount: int) -> Outcome:
        return await self._transaction(TxnType.PURCHASE, amount)

    async def preauth(self, amount: int) -> Outcome:
        """Pre-authorization 预授权 (0100, 03xxxx, 60.1 10): the host holds ``amount`` on the account."""
        return await self._transaction(TxnType.PREAUTH, amount)

    async def void(self, original_id: int) -> Outcome:
        """Void 撤销 the journal's transaction ``original_id`` (of this batch): a purchase (消费撤销,
        0200 20xxxx 60.1 23), a pre-authorization (预授权撤销, 0100 60.1 11) or a completion
        (完成撤销, 0200 60.1 21). The card is read again and must be the original's. A transaction
        already voided, reversed, settled or not approved is refused before the card is asked for."""
        return await self._referencing(None, original_id, None)

    async def complete(self, original_id: int, amount: int | None = None) -> Outcome:
        """Completion 预授权完成 (0200 00xxxx 60.1 20) of the pre-authorization ``original_id``, for
        ``amount`` (default: the pre-authorized amount; the host takes up to 115 %)."""
        return await self._referencing(TxnType.COMPLETION, original_id, amount)

    async def refund(self, amount: int | None, *, original_id: int | None = None, rrn: str | None = None,
                     date: str | None = None) -> Outcome:
        """Refund 退货 (0220 20xxxx 60.1 25) of at most the original's amount: the original is a
        journal row (``original_id``; ``amount`` ``None``: all of it) or, for a sale of another batch
        or terminal, its retrieval reference number (``rrn``, field 37) and date (``date`` MMDD, 61.3)."""
        if original_id is not None:
            return await self._referencing(TxnType.REFUND, original_id, amount)
        if rrn is None or amount is None:
            raise TypeError("a refund names its original: original_id, or rrn and the amount")
        ref = OriginalRef("000000", "000000", date or f"{self.clock.wall():%m%d}", rrn=rrn)
        return await self._transaction(TxnType.REFUND, amount, ref=ref)

    async def _referencing(self, txn: TxnType | None, original_id: int, amount: int | None) -> Outcome:
        try:
            original: Entry | None = self.journal.get(original_id)
        except KeyError:
            original = None
        if txn is None:                      # a void: its type follows the original's
            orig_type = TxnType.from_kind(original.kind) if original is not None else None
            txn = VOIDS.get(orig_type, TxnType.VOID) if orig_type is not None else TxnType.VOID
        if amount is None:
            amount = original.amount if original is not None else 0
        return await self._transaction(txn, amount, original=original, original_id=original_id)

    def _refuse(self, kind: str) -> Outcome | None:
        """The outcome of a transaction the terminal cannot start (locked, not signed on), else ``None``."""
        if not (self.machine.locked or not self.signed_on):
            return None
        self._begin(kind)
        if self.machine.locked:
            self._note(Kind.NOTE, "terminal locked", "terminal.locked")
            self.show(Msg.TERMINAL_LOCKED)
            return self._end(self._outcome(kind, False, Msg.TERMINAL_LOCKED, error="terminal locked"))
        self._note(Kind.NOTE, "transaction before sign-on", "terminal.not_signed_on")
        self.show(Msg.SIGN_ON_REQUIRED)
        return self._end(self._outcome(kind, False, Msg.SIGN_ON_REQUIRED, error="not signed on"))

    async def _transaction(self, txn: TxnType, amount: int | None, *, original: Entry | None = None,
                           original_id: int | None = None, ref: OriginalRef | None = None) -> Outcome:
        try:
            return await self._transaction_flow(txn, amount, original=original, original_id=original_id, ref=ref)
        finally:
            await self._hang_up()

    async def _transaction_flow(self, txn: TxnType, amount: int | None, *, original: Entry | None,
                                original_id: int | None, ref: OriginalRef | None) -> Outcome:
        kind = txn.kind
        fail_head = Msg.QUERY_CARD_FAILED if txn is TxnType.BALANCE else Msg.TXN_FAILED
        async with self._busy:
            if self.machine.session.sign_on_owed and not self.machine.locked:
                await self._sign_on(again=True)
            refused = self._refuse(kind)
            if refused is not None:
                return refused
            await self._send_pending_reversals()
            self._begin(kind)
            if txn.references_original and ref is None:
                why = refusal(txn, original, amount)
                if why is not None:
                    msg, code = why
                    self._note(Kind.NOTE, "refused against its original", code, original=original_id)
                    self.show(Msg.TXN_REFUSED)
                    self.show(msg)
                    out = self._outcome(kind, False, Msg.TXN_REFUSED, msg, error=code, amount=amount)
                    out.original_id = original_id
                    return self._end(out)
                assert original is not None
                ref = ref_of(original)
            self.card.record_health()
            self._fire(Event.START)
            got = await self.card.acquire(txn, amount)
            if isinstance(got, Failure):
                return await self._fail(kind, fail_head, got, amount=amount)
            card = got.card
            self._fire(Event.CARD_READ)
            local = self.card.local_checks(card)
            if local is None and original is not None and original.pan_masked \
                    and mask_pan(card.pan) != original.pan_masked:
                self._note(Kind.NOTE, "not the original's card", "card.not_original")
                local = Failure(Msg.CARD_MISMATCH, "card.not_original", "the card is not the original transaction's")
            if local is not None:
                return await self._fail(kind, fail_head, local, amount=amount, card=card)
            keys = self.keys
            assert keys is not None
            verified = await self.card.verify_cardholder(got, amount, keys)
            if isinstance(verified, Failure):
                return await self._fail(kind, fail_head, verified, amount=amount, card=card)
            out = await self.online.run(txn, kind, card, amount, verified, fail_head,
                                        kernel=got.kernel if txn.carries_chip_data else None, ref=ref,
                                        original_id=original_id)
            out.original_id = original_id
        if self.machine.session.sign_on_owed:
            async with self._busy:
                await self._sign_on(again=True)
                if self.signed_on:
                    await self._send_pending_reversals()
        return out


    # --- settlement (emulator.settlement) -------------------------------------------------------------------
    def batch_totals(self) -> tuple[BatchTotals, list[Entry]]:
        """The open batch's totals as the terminal sees them (approved, unvoided purchases and
        completions are debits, refunds credits) and the transactions a batch upload sends."""
        return self.settlement.batch_totals()

    async def settle(self) -> Outcome:
        """Settlement 结算 of the open batch: 0500 with the totals in field 48; when the host's totals
        differ (95) every transaction is uploaded (0320) and the 0500 sent again (60.3 202). Settled,
        the batch is closed (its transactions can no longer be voided) and a new batch opens.
        Repeating a settlement whose answer was lost is harmless: the host answers it again."""
        try:
            return await self._settle()
        finally:
            await self._hang_up()

    async def _settle(self) -> Outcome:
        async with self._busy:
            refused = self._refuse("settle")
            if refused is not None:
                return refused
            await self._send_pending_reversals()
            self._begin("settle")
            return await self.settlement.run()

    # --- end of transaction -------------------------------------------------------------------------------
    async def _fail(self, kind: str, headline: Msg, failure: Failure, *, amount: int | None = None,
                    card: CardData | None = None, rc: str | None = None, journal_id: int | None = None,
                    fired: bool = False, ref: Ref | None = None) -> Outcome:
        if not fired:
            self._fire(failure.event)
        return await self._finish(kind, False, headline, failure.detail, rc=rc, error=failure.reason,
                                  journal_id=journal_id, amount=amount, card=card, removal=failure.removal, ref=ref,
                                  hint=failure.hint)

    async def _finish(self, kind: str, approved: bool, headline: Msg, detail: Msg | None, *, rc: str | None = None,
                      error: str | None = None, journal_id: int | None = None, shown: bool = False,
                      amount: int | None = None, card: CardData | None = None, removal: bool = False,
                      ref: Ref | None = None, hint: dict[str, str] | None = None) -> Outcome:
        if removal:
            headline = Msg.REMOVE_CARD_FAILED       # 拔出卡失败: the card left the reader mid-transaction
        if not shown:
            self.show(headline, **self._amount_params(amount))
            if detail is not None and detail is not headline:
                self.show(detail, rc=rc or "")
            if hint is not None:
                self.show(Msg.READER_PROBLEM, **hint)
        if self.machine.state is State.RESULT and not await self.card.remove_card():
            headline = Msg.REMOVE_CARD_FAILED
            error = error or "card removal failed"
        elif self.machine.state is not State.IDLE:
            self.machine.abort()
        out = self._outcome(kind, approved, headline, detail, rc=rc, error=error, journal_id=journal_id,
                            amount=amount, card=card, ref=ref)
        return self._end(out)


    async def _hang_up(self) -> None:
        """One connection per transaction (CUP POS practice), unless the config keeps it open."""
        if not self.cfg.persistent_connection:
            await self.link.close()

    def _end(self, out: Outcome) -> Outcome:
        self.trace.record(Kind.TXN, "end", txn=out.kind, approved=out.approved, headline=out.headline.value,
                          detail=out.detail.value if out.detail else None, evidence=list(self._evidence))
        return out

    def _outcome(self, kind: str, approved: bool, headline: Msg, detail: Msg | None = None, *,
                 rc: str | None = None, error: str | None = None, journal_id: int | None = None,
                 amount: int | None = None, card: CardData | None = None, ref: Ref | None = None) -> Outcome:
        ref = ref or Ref()
        return Outcome(kind, approved, headline, detail, rc, journal_id=journal_id, screens=list(self._screens),
                       error=error, amount=amount, pan_masked=mask_pan(card.pan) if card else "",
                       stan=ref.stan, rrn=ref.rrn, auth_code=ref.auth_code,
                       batch=self.ids.batch, tid=self.ids.tid, mid=self.ids.mid,
                       when=self.clock.wall().isoformat(timespec="seconds"),
                       entry=card.entry.name if card else "", evidence=list(self._evidence))

    def _link_original(self, txn: TxnType, jid: int, original_id: int | None) -> None:
        """An approved void or completion marks its original in the journal (a completion's void gives
        the pre-authorization back to be completed again)."""
        if original_id is None:
            return
        try:
            if txn in (TxnType.VOID, TxnType.PREAUTH_VOID):
                self.journal.mark_voided(original_id, jid)
            elif txn is TxnType.COMPLETION:
                self.journal.mark_completed(original_id, jid)
            elif txn is TxnType.COMPLETION_VOID:
                self.journal.mark_voided(original_id, jid)
                completion = self.journal.get(original_id)
                if completion.original_id is not None:
                    self.journal.mark_completed(completion.original_id, None)
        except (JournalError, KeyError) as e:
            self._note(Kind.ERROR, "original not marked in the journal", "journal.error", error=str(e))

    def _amount_params(self, amount: int | None) -> dict[str, str]:
        return amount_params(amount, self.cfg.currency)


    # --- reversals (emulator.reversals) ---------------------------------------------------------------------
    async def _send_pending_reversals(self) -> int:
        return await self.reversals.send_pending()

    async def send_pending_reversals(self) -> int:
        async with self._busy:
            try:
                return await self._send_pending_reversals()
            finally:
                await self._hang_up()

    async def close(self) -> None:
        await self.link.close()
        with contextlib.suppress(Exception):
            await self.reader.close()
