"""The POS terminal: sign-on, balance inquiry, purchase, reversals — one flow over the ports.

The terminal owns no I/O of its own: it drives a :class:`hardware.ports.CardReader`, a
:class:`emulator.ports.PinPad`, a display callback, a :class:`emulator.hostlink.HostLink`, the
:class:`emulator.journal.Journal` and the :class:`emulator.trace.Trace`, all on one Clock.
Every step goes through the state machine in :mod:`emulator.fsm`, which also holds the session
flags (keys, lock, operator failures).

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
import datetime as dt
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from emulator import config as configmod
from emulator.errors import ConnectError, DnsError, HostLinkError, HostTimeout, JournalError, LinkLost
from emulator.fsm import Event, Machine, State
from emulator.hostlink import Exchange, HostLink
from emulator.journal import Entry, Journal, Reversal, Status
from emulator.messages import Msg, Screen, format_amount
from emulator.ports import Display, PinPad
from emulator.trace import Kind, Trace
from hardware.clock import Clock
from hardware.errors import CardAbsentError, CardResetError, HardwareError, NoReaderError, ServiceUnavailableError
from hardware.pcsc_status import explain
from hardware.ports import CardReader, HealthSensors, ReaderEventKind, SwipeResult
from protocol import keys as keymod
from protocol.errors import CryptoError, PosemuError
from protocol.masking import mask_pan
from protocol.pinblock import encrypt_pinblock
from protocol.session import MacStatus, check_mac
from protocol.specs import Profile
from protocol.txn import (
    RC,
    VOIDS,
    BatchTotals,
    CardData,
    EntryMode,
    Field60,
    NetCode,
    OriginalRef,
    TerminalIds,
    TxnType,
    UploadItem,
    batch_upload_request,
    financial_request,
    key_block,
    network_request,
    reversal_request,
    settlement_request,
    sign_on_request,
)

T = TypeVar("T")

RC_SCREENS: dict[str, Msg] = {
    "12": Msg.NOT_PERMITTED, "13": Msg.DECLINED, "14": Msg.INVALID_CARD, "30": Msg.FORMAT_ERROR,
    "51": Msg.INSUFFICIENT_FUNDS, "54": Msg.EXPIRED_CARD, "55": Msg.WRONG_PIN, "57": Msg.NOT_PERMITTED,
    "58": Msg.NOT_PERMITTED, "62": Msg.RESTRICTED_CARD, "75": Msg.PIN_TRIES_EXCEEDED, "91": Msg.HOST_BUSY,
    "94": Msg.DUPLICATE, "96": Msg.HOST_BUSY, "77": Msg.SIGN_ON_REQUIRED, "A0": Msg.MAC_ERROR,
    "A4": Msg.VERSION_REJECTED, "25": Msg.ORIGINAL_NOT_FOUND, "64": Msg.AMOUNT_MISMATCH,
}
KEYS_REFUSED = frozenset({"77", "A0"})          # the host no longer takes our working keys: sign on again


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a step of the flow could not go on (a value, not an exception)."""

    detail: Msg
    code: str                      # evidence code
    reason: str
    event: Event = Event.READ_FAILED
    removal: bool = False          # the card left the reader mid-transaction: 拔出卡失败
    retry: bool = False            # a chip read that may be tried again (READER_ERROR, then fallback)
    hint: dict[str, str] | None = None   # reason/remedy params of a READER_PROBLEM line under the detail


@dataclass(frozen=True, slots=True)
class ChipCard:
    """What the card read gave: the card data, how the cardholder was verified and, for a chip, the
    kernel that completes the transaction with the card after the host's answer."""

    card: CardData
    online_pin: str | None = field(default=None, repr=False)
    offline_pin_ok: bool = False
    kernel: Any = field(default=None, repr=False, compare=False)     # emulator.emv.EmvKernel


@dataclass(frozen=True, slots=True)
class Ref:
    """How the host and the terminal refer to one transaction: STAN (11), RRN (37), authorization code (38)."""

    stan: str | None = None
    rrn: str | None = None
    auth_code: str | None = None


@dataclass(slots=True)
class Outcome:
    """What a transaction ended with, with the data a receipt and the journal need."""

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
    amount: int | None = None
    pan_masked: str = ""
    stan: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    batch: str = ""
    tid: str = ""
    mid: str = ""
    when: str = ""
    entry: str = ""
    evidence: list[str] = field(default_factory=list)
    totals: BatchTotals | None = None          # a settlement's batch totals
    original_id: int | None = None             # the journal row a void, refund or completion names

    @property
    def codes(self) -> list[str]:
        return [s.code for s in self.screens]


CLOCK_TOLERANCE_S = 300.0
"""How far the terminal's clock may be from the host's (sign-on answer, fields 12/13) unnoticed."""


class Terminal:
    """A POS terminal over its ports: sign-on/off, balance inquiry, purchase, reversals.

    One flow at a time (``_busy``); the state and the session flags live in ``self.machine``
    (:mod:`emulator.fsm`). Front ends call the coroutines and :meth:`abort`; they never edit the
    machine or the journal themselves.
    """

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
        self.profile: Profile = cfg.wire_profile()        # the host's dialect (config [host])
        self.machine = Machine()
        self._displays: list[Display] = [display] if display else []
        self._screens: list[Screen] = []
        self._evidence: list[str] = []
        self._busy = asyncio.Lock()
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

    # --- sign-on / sign-off -------------------------------------------------------------------------------
    async def sign_on(self) -> Outcome:
        async with self._busy:
            try:
                return await self._sign_on()
            finally:
                await self._hang_up()

    async def _sign_on(self, *, again: bool = False) -> Outcome:
        self._begin("sign_on")
        if self.machine.locked:
            self._note(Kind.NOTE, "terminal locked", "terminal.locked")
            self.show(Msg.TERMINAL_LOCKED)
            return self._end(self._outcome("sign_on", False, Msg.TERMINAL_LOCKED, error="terminal locked"))
        self._fire(Event.SIGN_ON)
        static = self.cfg.static_keys()
        if static is not None:
            return self._static_keys(static)
        self.show(Msg.SIGNING_ON_AGAIN if again else Msg.SIGNING_ON)
        try:
            req = sign_on_request(self.profile, self.ids, stan=self._stan(), operator=self.cfg.operator,
                                  key_scheme=self.cfg.key_scheme)
            # the MAC under the terminal master key proves to the host that the sign-on is ours
            ex = await self.link.exchange(req, mak=self.cfg.tmk if self.cfg.request_sign_on_mac else None)
        except (HostLinkError, JournalError) as e:
            self._note(Kind.ERROR, "sign-on not answered", e.code, error=str(e))
            return self._sign_on_failed(self._error_screen(e), error=str(e))
        rc = str(ex.response.get(39, ""))
        self._note(Kind.NOTE, "sign-on answer", f"host.rc.{rc or 'none'}", rc=rc)
        if rc != "00":
            return self._sign_on_failed(self._rc_screen(rc), rc=rc)
        try:
            keys = keymod.parse_field62(self.cfg.tmk, key_block(ex.response), keymod.KeyScheme(self.cfg.key_scheme))
        except (KeyError, TypeError, PosemuError) as e:
            code = "keys.check_value" if isinstance(e, CryptoError) else "keys.malformed"
            self._note(Kind.ERROR, "working keys refused", code, error=f"working keys: {e}")
            return self._sign_on_failed(Msg.MAC_ERROR if isinstance(e, CryptoError) else Msg.FORMAT_ERROR,
                                        error=f"working keys: {e}")
        self.machine.session.keys = keys
        self.machine.session.sign_on_owed = False
        f60 = ex.response.get(60)
        if isinstance(f60, str):
            with contextlib.suppress(PosemuError):
                batch = Field60.parse(f60).batch
                self.ids = TerminalIds(self.ids.tid, self.ids.mid, self.ids.header, batch)
        self._compare_clock(ex.response.get(12), ex.response.get(13))
        self._fire(Event.SIGNED_ON)
        self.show(Msg.SIGN_ON_OK)
        return self._end(self._outcome("sign_on", True, Msg.SIGN_ON_OK, rc="00"))

    def _record_health(self) -> None:
        """The terminal's own sensors, where its reader has them (supply voltage, case temperature)."""
        if isinstance(self.reader, HealthSensors):
            try:
                readings = self.reader.health()
            except PosemuError:
                return
            self.trace.record(Kind.NOTE, "terminal health", code="terminal.health", **readings)

    def _compare_clock(self, hhmmss: object, mmdd: object) -> None:
        """The sign-on answer carries the host's local time (fields 12, 13): a terminal clock that
        is off by more than five minutes is noted in the trace (the year is not sent: the skew is
        taken within a year either way)."""
        if not (isinstance(hhmmss, str) and isinstance(mmdd, str) and len(hhmmss) == 6 and len(mmdd) == 4
                and hhmmss.isdigit() and mmdd.isdigit()):
            return
        mine = self.clock.wall()
        best: float | None = None
        for year in (mine.year - 1, mine.year, mine.year + 1):
            try:
                host = mine.replace(year=year, month=int(mmdd[:2]), day=int(mmdd[2:]), hour=int(hhmmss[:2]),
                                    minute=int(hhmmss[2:4]), second=int(hhmmss[4:]), microsecond=0)
            except ValueError:
                continue
            skew = (mine - host).total_seconds()
            if best is None or abs(skew) < abs(best):
                best = skew
        if best is not None and abs(best) >= CLOCK_TOLERANCE_S:
            self._note(Kind.NOTE, "terminal clock differs from the host's", "clock.host_skew", skew_s=round(best))

    def _static_keys(self, keys: keymod.WorkingKeys) -> Outcome:
        """A host without sign-on (config ``[host] sign_on = false``): the working keys installed in the
        config are the session's; nothing is sent."""
        self.machine.session.keys = keys
        self.machine.session.sign_on_owed = False
        self.trace.record(Kind.NOTE, "static working keys from the config: this host has no sign-on",
                          code="keys.static")
        self._fire(Event.SIGNED_ON)
        self.show(Msg.SIGN_ON_OK)
        return self._end(self._outcome("sign_on", True, Msg.SIGN_ON_OK))

    # --- the host's dialect (config [host]) ----------------------------------------------------------------
    def _mak(self, keys: keymod.WorkingKeys) -> bytes | None:
        """The key to MAC a request with: the MAK, unless the host's dialect has no MAC."""
        return keys.mak if self.cfg.dialect.mac_enabled else None

    def _pin_block(self, pin: str, pan: str, keys: keymod.WorkingKeys) -> bytes:
        """Field 52: the PIN block in the dialect's ISO 9564 format under the PIK."""
        return encrypt_pinblock(pin, pan, keys.pik, self.cfg.dialect.pin_format)

    def _rc_screen(self, rc: str) -> Msg:
        """The screen for a response code: the dialect's table first, then the terminal's."""
        return self.cfg.dialect.screen_for(rc) or RC_SCREENS.get(rc, Msg.DECLINED)

    def _sign_on_failed(self, detail: Msg, *, rc: str | None = None, error: str | None = None) -> Outcome:
        self._fire(Event.SIGN_ON_FAILED)
        self.show(Msg.SIGN_ON_FAILED)
        self.show(detail, rc=rc or "")
        return self._end(self._outcome("sign_on", False, Msg.SIGN_ON_FAILED, detail, rc=rc, error=error))

    async def sign_off(self) -> Outcome:
        """Sign off (签退): the host drops the working keys; so does the terminal."""
        async with self._busy:
            self._begin("sign_off")
            keys = self.keys
            if keys is None or not self.machine.can(Event.SIGN_OFF):
                return self._end(self._outcome("sign_off", False, Msg.SIGN_ON_REQUIRED))
            self._fire(Event.SIGN_OFF)
            self.show(Msg.SIGNING_OFF)
            try:
                req = network_request(self.profile, self.ids, NetCode.SIGN_OFF, stan=self._stan())
                ex = await self.link.exchange(req, mak=self._mak(keys) if self.cfg.mac_required else None)
            except (HostLinkError, JournalError) as e:
                self._note(Kind.ERROR, "sign-off not answered", e.code, error=str(e))
                self._fire(Event.SIGN_OFF_FAILED)
                self.show(Msg.SIGN_OFF_FAILED)
                return self._end(self._outcome("sign_off", False, Msg.SIGN_OFF_FAILED, error=str(e)))
            rc = str(ex.response.get(39, ""))
            self.machine.session.keys = None           # whatever the host said, these keys are done
            self._fire(Event.SIGNED_OFF if rc == "00" else Event.SIGN_OFF_FAILED)
            head = Msg.SIGN_OFF_OK if rc == "00" else Msg.SIGN_OFF_FAILED
            self.show(head)
            return self._end(self._outcome("sign_off", rc == "00", head, rc=rc))

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

    async def refund(self, amount: int, *, original_id: int | None = None, rrn: str | None = None,
                     date: str | None = None) -> Outcome:
        """Refund 退货 (0220 20xxxx 60.1 25) of at most the original's amount: the original is a
        journal row (``original_id``) or, for a sale of another batch or terminal, its retrieval
        reference number (``rrn``, field 37) and date (``date`` MMDD, 61.3)."""
        if original_id is not None:
            return await self._referencing(TxnType.REFUND, original_id, amount)
        if rrn is None:
            raise TypeError("a refund names its original: original_id or rrn")
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

    def _refusal(self, txn: TxnType, original: Entry | None, amount: int | None) -> tuple[Msg, str] | None:
        """Why the terminal will not even start this transaction against its original, checked in its
        own journal before the card is asked for (LiaoYang_POS ``SaleVoidGetData``: 原交易非消费 不能撤销)."""
        if not txn.references_original:
            return None
        if original is None:
            return Msg.ORIGINAL_NOT_FOUND, "txn.original_unknown"
        wanted = {TxnType.VOID: ("purchase",), TxnType.PREAUTH_VOID: ("preauth",), TxnType.COMPLETION: ("preauth",),
                  TxnType.COMPLETION_VOID: ("completion",), TxnType.REFUND: ("purchase", "completion")}[txn]
        if original.kind not in wanted:
            return Msg.CANNOT_VOID if txn in VOIDS.values() else Msg.NOT_PERMITTED, "txn.original_wrong_kind"
        if original.status is Status.REVERSED:
            return Msg.ALREADY_REVERSED, "txn.original_reversed"
        if original.status is not Status.APPROVED:
            return Msg.ORIGINAL_NOT_APPROVED, "txn.original_not_approved"
        if original.voided_by is not None:
            return Msg.ALREADY_VOIDED, "txn.original_voided"
        if txn is TxnType.COMPLETION and original.completed_by is not None:
            return Msg.ALREADY_COMPLETED, "txn.original_completed"
        if txn is TxnType.PREAUTH_VOID and original.completed_by is not None:
            return Msg.ALREADY_COMPLETED, "txn.original_completed"
        if original.settled and txn in (TxnType.VOID, TxnType.PREAUTH_VOID, TxnType.COMPLETION_VOID):
            return Msg.ALREADY_SETTLED, "txn.original_settled"
        if amount is not None and txn is TxnType.REFUND and amount > original.amount:
            return Msg.AMOUNT_MISMATCH, "txn.refund_exceeds_original"
        if amount is not None and txn is TxnType.COMPLETION and amount * 100 > original.amount * 115:
            return Msg.AMOUNT_MISMATCH, "txn.completion_exceeds_preauth"
        return None

    @staticmethod
    def _ref_of(original: Entry) -> OriginalRef:
        """What a request names of a journal row: its batch, STAN, date, RRN and authorization code."""
        batch = original.batch if len(original.batch) == 6 and original.batch.isdigit() else "000000"
        rrn = original.rrn if original.rrn and len(original.rrn) == 12 else None
        return OriginalRef(batch, original.stan, original.date, rrn=rrn, auth_code=original.auth_code or None)

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
                why = self._refusal(txn, original, amount)
                if why is not None:
                    msg, code = why
                    self._note(Kind.NOTE, "refused against its original", code, original=original_id)
                    self.show(Msg.TXN_REFUSED)
                    self.show(msg)
                    out = self._outcome(kind, False, Msg.TXN_REFUSED, msg, error=code, amount=amount)
                    out.original_id = original_id
                    return self._end(out)
                assert original is not None
                ref = self._ref_of(original)
            self._record_health()
            self._fire(Event.START)
            got = await self._acquire_card(txn, amount)
            if isinstance(got, Failure):
                return await self._fail(kind, fail_head, got, amount=amount)
            card = got.card
            self._fire(Event.CARD_READ)
            local = self._local_checks(card)
            if local is None and original is not None and original.pan_masked \
                    and mask_pan(card.pan) != original.pan_masked:
                self._note(Kind.NOTE, "not the original's card", "card.not_original")
                local = Failure(Msg.CARD_MISMATCH, "card.not_original", "the card is not the original transaction's")
            if local is not None:
                return await self._fail(kind, fail_head, local, amount=amount, card=card)
            verified = await self._verify_cardholder(got, amount)
            if isinstance(verified, Failure):
                return await self._fail(kind, fail_head, verified, amount=amount, card=card)
            out = await self._online(txn, kind, card, amount, verified, fail_head,
                                     kernel=got.kernel if txn.carries_chip_data else None, ref=ref,
                                     original_id=original_id)
            out.original_id = original_id
        if self.machine.session.sign_on_owed:
            async with self._busy:
                await self._sign_on(again=True)
                if self.signed_on:
                    await self._send_pending_reversals()
        return out

    # --- settlement ---------------------------------------------------------------------------------------
    def batch_totals(self) -> tuple[BatchTotals, list[Entry]]:
        """The open batch's totals as the terminal sees them (approved, unvoided purchases and
        completions are debits, refunds credits) and the transactions a batch upload sends."""
        debit = credit = nd = nc = 0
        items: list[Entry] = []
        for e in self.journal.batch_entries(self.ids.batch):
            if e.status is not Status.APPROVED or e.kind not in ("purchase", "completion", "refund"):
                continue
            if e.voided_by is not None:
                continue
            items.append(e)
            if e.kind == "refund":
                credit, nc = credit + e.amount, nc + 1
            else:
                debit, nd = debit + e.amount, nd + 1
        return BatchTotals(debit, nd, credit, nc), items

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
            keys = self.keys
            assert keys is not None
            if self.journal.pending_reversals():
                self._note(Kind.JOURNAL, "settlement with reversals still pending", "settle.reversal_pending")
                self.show(Msg.SETTLE_FAILED)
                self.show(Msg.REVERSAL_PENDING)
                return self._end(self._outcome("settle", False, Msg.SETTLE_FAILED, Msg.REVERSAL_PENDING,
                                               error="reversals pending"))
            totals, items = self.batch_totals()
            batch = self.ids.batch
            self._fire(Event.SETTLE)
            self.show(Msg.SETTLING, batch=batch, debit=format_amount(totals.debit_amount, self.cfg.currency),
                      debits=str(totals.debit_count), credit=format_amount(totals.credit_amount, self.cfg.currency),
                      credits=str(totals.credit_count))
            now = self.clock.wall()
            try:
                stan = self._stan()
                jid = self.journal.begin(kind="settle", stan=stan, date=now.strftime("%m%d"),
                                         amount=totals.debit_amount - totals.credit_amount, currency=self.cfg.currency,
                                         batch=batch, tid=self.ids.tid, mid=self.ids.mid,
                                         original_ref={"debit": str(totals.debit_amount),
                                                       "debits": str(totals.debit_count),
                                                       "credit": str(totals.credit_amount),
                                                       "credits": str(totals.credit_count)})
            except JournalError as e:
                self._note(Kind.ERROR, "journal not written: nothing sent", e.code, error=str(e))
                return self._settle_failed(None, Msg.JOURNAL_FULL, error=str(e), totals=totals)
            try:
                ex = await self.link.exchange(settlement_request(self.profile, self.ids, totals, stan=stan, now=now,
                                                                 currency=self.cfg.currency,
                                                                 operator=self.cfg.operator), mak=self._mak(keys))
                rc = self._settle_answer(ex)
                if rc == RC.RECONCILE_ERROR.value:
                    self._note(Kind.NOTE, "the host's totals differ: batch upload", "settle.totals_differ",
                               items=len(items))
                    self._fire(Event.UPLOAD)
                    self.show(Msg.BATCH_UPLOAD, count=str(len(items)))
                    for entry in items:
                        item = UploadItem(TxnType.from_kind(entry.kind) or TxnType.PURCHASE, entry.amount,
                                          self._ref_of(entry))
                        up = await self.link.exchange(batch_upload_request(self.profile, self.ids, item,
                                                                           stan=self._stan(),
                                                                           currency=self.cfg.currency),
                                                    mak=self._mak(keys))
                        up_rc = self._settle_answer(up)
                        if up_rc != "00":
                            return self._settle_failed(jid, self._rc_screen(up_rc), rc=up_rc,
                                                       totals=totals)
                    self._fire(Event.SETTLE)
                    ex = await self.link.exchange(settlement_request(
                        self.profile, self.ids, totals, stan=self._stan(), now=self.clock.wall(),
                        currency=self.cfg.currency, after_upload=True, operator=self.cfg.operator),
                        mak=self._mak(keys))
                    rc = self._settle_answer(ex)
            except HostLinkError as e:
                self._note(Kind.ERROR, "settlement not answered", e.code, error=str(e))
                return self._settle_failed(jid, self._error_screen(e), error=str(e), totals=totals)
            except JournalError as e:
                self._note(Kind.ERROR, "journal not written", e.code, error=str(e))
                return self._settle_failed(jid, Msg.JOURNAL_FULL, error=str(e), totals=totals)
            if rc != "00":
                return self._settle_failed(jid, self._rc_screen(rc), rc=rc, totals=totals)
            self.journal.complete(jid, Status.APPROVED, rc=rc, screen=Msg.SETTLE_OK.value)
            settled = self.journal.settle_batch(batch)
            new_batch = f"{int(batch) % 999_999 + 1:06d}"
            self.journal.set_counter("batch", int(new_batch))
            self.ids = TerminalIds(self.ids.tid, self.ids.mid, self.ids.header, new_batch)
            self.trace.record(Kind.JOURNAL, "batch settled", batch=batch, transactions=settled, new_batch=new_batch)
            self._fire(Event.SETTLED)
            self.show(Msg.SETTLE_OK, batch=batch, new_batch=new_batch)
            out = self._outcome("settle", True, Msg.SETTLE_OK, rc=rc, journal_id=jid, amount=totals.debit_amount,
                                ref=Ref(stan, _text(ex.response.get(37))))
            out.batch, out.totals = batch, totals
            return self._end(out)

    def _settle_answer(self, ex: Exchange) -> str:
        """The response code of a settlement message, ``A0`` when its MAC is not right."""
        rc = str(ex.response.get(39, ""))
        mac = self._response_mac(ex)
        if mac is not None:
            self._note(Kind.ERROR, "response MAC " + mac.value, f"mac.{mac.value}", mti=ex.response.mti, rc=rc)
            return RC.MAC_ERROR.value
        self._note(Kind.NOTE, "host answer", f"host.rc.{rc or 'none'}", rc=rc, mti=ex.response.mti)
        return rc

    def _settle_failed(self, jid: int | None, detail: Msg, *, rc: str | None = None, error: str | None = None,
                       totals: BatchTotals | None = None) -> Outcome:
        if jid is not None:
            with contextlib.suppress(JournalError):
                self.journal.complete(jid, Status.FAILED if rc is None else Status.DECLINED, rc=rc,
                                      screen=detail.value)
        if rc in KEYS_REFUSED:
            self.machine.session.keys = None
            self.machine.session.sign_on_owed = True
        if self.machine.can(Event.SETTLE_FAILED):
            self._fire(Event.SETTLE_FAILED)
        self.show(Msg.SETTLE_FAILED)
        self.show(detail, rc=rc or "")
        out = self._outcome("settle", False, Msg.SETTLE_FAILED, detail, rc=rc, error=error, journal_id=jid,
                            amount=totals.debit_amount if totals else None)
        out.totals = totals
        return self._end(out)

    # --- card acquisition -------------------------------------------------------------------------------
    async def _acquire_card(self, txn: TxnType, amount: int | None) -> ChipCard | Failure:
        self.show(Msg.INSERT_OR_SWIPE, **self._amount_params(amount))
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
                self.show(Msg.READING_CARD, **self._amount_params(amount))
                if "swipe" in self.cfg.disabled_entry:
                    self._note(Kind.READER, "magstripe entry disabled", "config.entry_disabled.swipe")
                    return Failure(Msg.CARD_NOT_SUPPORTED, "config.entry_disabled.swipe",
                                   "magstripe entry is disabled in the config")
                read = self._card_from_swipe(ev.swipe, fallback)
                if isinstance(read, CardData):
                    return ChipCard(read)
                if read.detail is Msg.INSERT_CHIP:
                    self._fire(Event.RETRY_READ)
                    self.show(Msg.INSERT_CHIP)
                    continue
                swipe_failures += 1
                if swipe_failures >= 3:
                    return read
                self._fire(Event.RETRY_READ)
                self.show(Msg.SWIPE_AGAIN)
                continue
            if ev.kind is ReaderEventKind.CARD_INSERTED:
                self._fire(Event.CARD_INSERTED)
                self.show(Msg.READING_CARD, **self._amount_params(amount))
                if "chip" in self.cfg.disabled_entry:
                    self._note(Kind.READER, "chip entry disabled", "config.entry_disabled.chip")
                    return Failure(Msg.CARD_NOT_SUPPORTED, "config.entry_disabled.chip",
                                   "chip entry is disabled in the config")
                chip = await self._read_chip(txn, amount)
                if isinstance(chip, ChipCard):
                    return chip
                if not chip.retry:
                    if chip.detail is Msg.PIN_BLOCKED:
                        self.show(Msg.PIN_BLOCKED)
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
                    self.show(Msg.FALLBACK_SWIPE)
                    continue
                self._fire(Event.RETRY_READ)
                self.show(Msg.READER_ERROR)
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
                prompt = self.show(Msg.PIN_RETRY, tries=str(tries_left))
            else:
                prompt = self.show(Msg.ENTER_PIN, **self._amount_params(amount))
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
            if not await self._card_present():
                return self._pulled("the card was pulled out during PIN entry")
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
        root = _root_cause(e)
        present = await self._card_present()
        if isinstance(root, CardAbsentError) or not present:
            return self._pulled(str(e), code=root.code if isinstance(root, CardAbsentError) else None)
        if isinstance(root, CardResetError):
            self._note(Kind.READER, "card reset during the transaction", root.code, error=str(e))
            return Failure(Msg.CARD_RESET, root.code, str(e), Event.CARD_PULLED, removal=True)
        self._note(Kind.READER, "chip read error", root.code, error=str(e))
        self._record_health()                  # what the supply monitor and case sensor say at the failure
        return Failure(Msg.READER_ERROR, root.code, str(e), retry=True)

    def _pulled(self, reason: str, *, code: str | None = None) -> Failure:
        code = code or "reader.card_removed"
        self._note(Kind.READER, "card left the reader during the transaction", code, error=reason)
        return Failure(Msg.CARD_REMOVED_EARLY, code, reason, Event.CARD_PULLED, removal=True)

    async def _card_present(self) -> bool:
        try:
            return await self.reader.card_present()
        except PosemuError:
            return False

    # --- checks and cardholder verification ---------------------------------------------------------------
    def _local_checks(self, card: CardData) -> Failure | None:
        """What a terminal checks before going online: the card's expiry against its own clock."""
        today = self.clock.wall()
        if card.expiry and len(card.expiry) == 4 and card.expiry.isdigit() and card.expiry < f"{today:%y%m}":
            self._note(Kind.NOTE, "card expired by the terminal's clock", "card.expired_local",
                       expiry_before=f"{today:%y%m}", terminal_date=f"{today:%Y-%m-%d}")
            return Failure(Msg.EXPIRED_CARD, "card.expired_local", "the card's expiry date has passed")
        return None

    async def _verify_cardholder(self, got: ChipCard, amount: int | None = None) -> bytes | Failure | None:
        """The PIN block to send (``None``: no online PIN), or why verification failed."""
        keys = self.keys
        assert keys is not None
        card = got.card
        if card.entry is EntryMode.CHIP:
            if got.online_pin is not None:
                self._fire(Event.PIN_ENTERED)
                return self._pin_block(got.online_pin, card.pan, keys)
            self._fire(Event.PIN_ENTERED if got.offline_pin_ok else Event.NO_PIN)
            return None
        prompt = self.show(Msg.ENTER_PIN, **self._amount_params(amount))
        pin = await self._typed_pin(prompt)
        if pin is None:
            self._note(Kind.NOTE, "PIN entry cancelled or timed out", "pin.cancelled")
            return Failure(Msg.CANCELLED, "pin.cancelled", "PIN entry cancelled", Event.CANCEL)
        self._fire(Event.PIN_ENTERED)
        return self._pin_block(pin, card.pan, keys)

    async def _typed_pin(self, prompt: Screen) -> str | None:
        try:
            async with asyncio.timeout(self.cfg.timeouts.pin_entry):
                return await self.pinpad.get_pin(prompt, self.cfg.timeouts.pin_entry)
        except TimeoutError:
            self.trace.record(Kind.NOTE, "PIN entry timed out", code="pin.timeout")
            return None

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

    # --- online -----------------------------------------------------------------------------------------
    async def _online(self, txn: TxnType, kind: str, card: CardData, amount: int | None,
                      pin_block: bytes | None, fail_head: Msg, *, resent: bool = False, kernel: Any = None,
                      ref: OriginalRef | None = None, original_id: int | None = None) -> Outcome:
        keys = self.keys
        assert keys is not None
        try:
            stan = self._stan()
            now = self.clock.wall()
            req = financial_request(self.profile, self.ids, txn, card, stan=stan, now=now, amount=amount,
                                    currency=self.cfg.currency, pin_block=pin_block, original=ref)
            reversible = req if txn.reversible else None
            jid = self.journal.begin(kind=kind, stan=stan, date=now.strftime("%m%d"), pan_masked=mask_pan(card.pan),
                                     amount=amount or 0, currency=self.cfg.currency, entry=card.entry.name,
                                     reversible=reversible, batch=self.ids.batch, tid=self.ids.tid, mid=self.ids.mid,
                                     original_id=original_id, original_ref=_ref_doc(ref))
        except JournalError as e:       # nothing is sent without its journal row
            self._note(Kind.ERROR, "journal not written: nothing sent", e.code, error=str(e))
            return await self._fail(kind, fail_head, Failure(Msg.JOURNAL_FULL, e.code, str(e), Event.HOST_FAILED),
                                    amount=amount, card=card)
        self.trace.record(Kind.JOURNAL, "written before send", id=jid, stan=stan)
        self.show(Msg.PROCESSING, **self._amount_params(amount))
        self._fire(Event.SENT)
        pulled = False
        try:
            if card.entry is EntryMode.CHIP:      # a chip card must stay in until the transaction completes
                ex, pulled = await self._while_card_in_online(self.link.exchange(req, mak=self._mak(keys)))
            else:
                ex = await self.link.exchange(req, mak=self._mak(keys))
        except HostLinkError as e:
            return await self._host_failed(kind, fail_head, e, jid, stan, reversible is not None, amount, card)
        resp = ex.response
        rc = str(resp.get(39, ""))
        info = Ref(stan, _text(resp.get(37)), _text(resp.get(38)))
        mac = self._response_mac(ex)
        if mac is not None:
            # an answer we cannot authenticate says nothing about the outcome: a purchase is reversed
            self._note(Kind.ERROR, "response MAC " + mac.value, f"mac.{mac.value}", mti=resp.mti, rc=rc)
            self.machine.session.sign_on_owed = True
            self._fire(Event.RESPONSE)
            return await self._unknown_outcome(kind, fail_head, jid, reversible is not None, Msg.MAC_ERROR,
                                               RC.MAC_ERROR, rc=rc, amount=amount, card=card, info=info)
        if not rc:
            # an answer without a response code says nothing about the outcome: a purchase is reversed
            self._note(Kind.ERROR, "answer without a response code (field 39)", "iso.no_rc", mti=resp.mti)
            self._fire(Event.RESPONSE)
            return await self._unknown_outcome(kind, fail_head, jid, reversible is not None, Msg.FORMAT_ERROR,
                                               RC.NO_RESPONSE, amount=amount, card=card, info=info, code="iso.no_rc")
        self._note(Kind.NOTE, "host answer", f"host.rc.{rc}", rc=rc)
        if rc == RC.DUPLICATE.value and not resent:
            # the host saw this STAN today for another transaction (a reinstalled terminal): it moved
            # nothing; send the transaction again, once, under the next STAN
            self.journal.complete(jid, Status.DECLINED, rc=rc, screen=Msg.DUPLICATE.value, reversal=Reversal.NONE)
            self.trace.record(Kind.NOTE, "host refused a reused STAN (94): resending under a new STAN", stan=stan)
            self._fire(Event.RESEND)
            return await self._online(txn, kind, card, amount, pin_block, fail_head, resent=True, kernel=kernel,
                                      ref=ref, original_id=original_id)
        if rc != "00":
            self._fire(Event.RESPONSE)
            detail = self._rc_screen(rc)
            if rc in KEYS_REFUSED:
                self.machine.session.keys = None
                self.machine.session.sign_on_owed = True
            self.journal.complete(jid, Status.DECLINED, rc=rc, screen=detail.value, reversal=Reversal.NONE,
                                  rrn=info.rrn, auth_code=info.auth_code)
            return await self._fail(kind, fail_head, Failure(detail, f"host.rc.{rc}", f"declined {rc}",
                                                             Event.RESPONSE),
                                    amount=amount, card=card, rc=rc, journal_id=jid, fired=True, ref=info)
        balance, currency = self._balance(resp)
        if txn is TxnType.BALANCE and balance is None and (self.cfg.dialect.balance_missing == "error"
                                                           or resp.get(self.cfg.dialect.balance_field) is not None):
            self._fire(Event.RESPONSE)
            self._note(Kind.ERROR, "balance missing from the answer", "iso.no_balance")
            self.journal.complete(jid, Status.DECLINED, rc=rc, screen=Msg.FORMAT_ERROR.value)
            return await self._fail(kind, fail_head, Failure(Msg.FORMAT_ERROR, "iso.no_balance", "no balance",
                                                             Event.RESPONSE),
                                    amount=amount, card=card, rc=rc, journal_id=jid, fired=True, ref=info)
        if pulled:
            # the chip card left while the host was deciding: the transaction cannot be completed
            self._fire(Event.RESPONSE)
            return await self._unknown_outcome(kind, fail_head, jid, reversible is not None,
                                               Msg.CARD_REMOVED_EARLY, RC.TERMINAL_ERROR, rc=rc, amount=amount,
                                               card=card, info=info, removal=True)
        if kernel is not None:
            declined = await self._complete_with_card(kernel, rc)
            if declined is not None:
                return await self._unknown_outcome(kind, fail_head, jid, reversible is not None, declined.detail,
                                                   RC.TERMINAL_ERROR, rc=rc, amount=amount, card=card, info=info,
                                                   removal=declined.removal, code=declined.code,
                                                   error=declined.reason)
        else:
            self._fire(Event.RESPONSE)
        approved_head = Msg.APPROVED
        if txn is TxnType.BALANCE:
            approved_head = Msg.APPROVED_BALANCE if balance is not None else Msg.APPROVED_NO_BALANCE
        self.journal.complete(jid, Status.APPROVED, rc=rc, screen=approved_head.value, reversal=Reversal.NONE,
                              rrn=info.rrn, auth_code=info.auth_code)
        self._link_original(txn, jid, original_id)
        if txn is TxnType.BALANCE:
            head = approved_head
            if balance is None:      # the dialect shows an approval without a balance (balance_missing)
                self._note(Kind.NOTE, "approved without a balance", "iso.no_balance")
                self.show(head)
            else:
                self.show(head, balance=format_amount(balance, currency))
        else:
            head = Msg.APPROVED
            self.show(head, **self._amount_params(amount))
        out = await self._finish(kind, True, head, None, rc=rc, journal_id=jid, shown=True, amount=amount,
                                 card=card, ref=info)
        out.balance, out.currency = balance, currency
        return out

    async def _complete_with_card(self, kernel: Any, rc: str) -> Failure | None:
        """Second GENERATE AC with the host's approval (EMV Book 3 §10.11): ``None`` when the card
        accepts (TC); otherwise why the transaction cannot stand (the card declined, failed or left),
        and a purchase the host approved must be reversed."""
        from emulator import emv

        self._fire(Event.COMPLETE)
        try:
            done = await kernel.complete(True, rc)
        except emv.EmvError as e:
            root = _root_cause(e)
            if isinstance(root, CardAbsentError) or not await self._card_present():
                self._fire(Event.CARD_PULLED)
                return self._pulled(str(e), code=root.code if isinstance(root, CardAbsentError) else None)
            self._note(Kind.READER, "second GENERATE AC failed", root.code if root is not e else "chip.complete_failed",
                       error=str(e))
            self._fire(Event.READ_FAILED)
            return Failure(Msg.CARD_DECLINED, "chip.complete_failed", str(e), Event.READ_FAILED)
        except PosemuError as e:
            root = _root_cause(e)
            if isinstance(root, CardAbsentError | CardResetError) or not await self._card_present():
                self._fire(Event.CARD_PULLED)
                return self._pulled(str(e), code=root.code)
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

    async def _while_card_in_online(self, work: Awaitable[Exchange]) -> tuple[Exchange, bool]:
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

    def _balance(self, resp: object) -> tuple[int | None, str]:
        from protocol.iso import Message

        assert isinstance(resp, Message)
        try:            # the field and format the host's dialect names (54, ISO 8583:1987 additional amounts)
            got = self.cfg.dialect.read_balance(resp, self.cfg.currency)
        except PosemuError as e:
            self.trace.record(Kind.ERROR, "bad balance field", error=str(e), code="iso.bad_balance")
            got = None
        return got if got is not None else (None, self.cfg.currency)

    async def _host_failed(self, kind: str, fail_head: Msg, e: HostLinkError, jid: int, stan: str, reversible: bool,
                           amount: int | None, card: CardData) -> Outcome:
        self._note(Kind.ERROR, "no usable answer from the host", e.code, error=str(e))
        self._fire(Event.HOST_FAILED)
        detail = self._error_screen(e)
        sent = not isinstance(e, DnsError | ConnectError)
        if not sent:
            self.journal.complete(jid, Status.FAILED, screen=detail.value, reversal=Reversal.NONE)
            return await self._fail(kind, fail_head, Failure(detail, e.code, str(e), Event.HOST_FAILED),
                                    amount=amount, card=card, journal_id=jid, fired=True, ref=Ref(stan))
        return await self._unknown_outcome(kind, fail_head, jid, reversible, detail, RC.NO_RESPONSE, amount=amount,
                                           card=card, info=Ref(stan), fired=True, error=str(e), code=e.code)

    async def _unknown_outcome(self, kind: str, fail_head: Msg, jid: int, reversible: bool, detail: Msg, reason: RC, *,
                               rc: str | None = None, amount: int | None, card: CardData,
                               info: Ref, removal: bool = False, fired: bool = True,
                               error: str | None = None, code: str | None = None) -> Outcome:
        """The request may have moved money and we do not know: a purchase is reversed."""
        rev = Reversal.PENDING if reversible else Reversal.NONE
        status = Status.UNKNOWN
        self.journal.complete(jid, status, rc=rc, screen=detail.value, reversal=rev,
                              reason=reason.value if reversible else None)
        failure = Failure(detail, code or reason.value, error or detail.value, Event.HOST_FAILED, removal=removal)
        out = await self._fail(kind, fail_head, failure, amount=amount, card=card, rc=rc, journal_id=jid, fired=fired,
                               ref=info)
        if reversible:
            await self._send_pending_reversals()
        return out

    def _response_mac(self, ex: Exchange) -> MacStatus | None:
        """``None`` when the response is authentic (or MACs are off); else what is wrong with its MAC.

        With working keys every response must carry a valid MAC: a missing MAC is never skipped."""
        keys = self.keys
        if keys is None or not self.cfg.response_mac:
            return None
        status = check_mac(ex.response, ex.raw, self.profile, keys.mak)
        return None if status.ok else status

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
        if self.machine.state is State.RESULT and not await self._remove_card():
            headline = Msg.REMOVE_CARD_FAILED
            error = error or "card removal failed"
        elif self.machine.state is not State.IDLE:
            self.machine.abort()
        out = self._outcome(kind, approved, headline, detail, rc=rc, error=error, journal_id=journal_id,
                            amount=amount, card=card, ref=ref)
        return self._end(out)

    async def _remove_card(self) -> bool:
        if not await self._card_present():
            self.trace.record(Kind.READER, "no card in the slot", code="slot.empty")
            self._evidence.append("slot.empty")
            self._fire(Event.NO_CARD)
            return True
        self.trace.record(Kind.READER, "a card is in the slot", code="slot.card_in")
        self._evidence.append("slot.card_in")
        self._fire(Event.CARD_IN_SLOT)
        self.show(Msg.REMOVE_CARD)
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
        self.show(Msg.REMOVE_CARD_FAILED)
        self._fire(Event.REMOVAL_ACKNOWLEDGED)
        return False

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
        return {} if amount is None else {"amount": format_amount(amount, self.cfg.currency)}

    @staticmethod
    def _error_screen(e: PosemuError) -> Msg:
        if isinstance(e, JournalError):
            return Msg.JOURNAL_FULL
        if isinstance(e, DnsError):
            return Msg.DNS_FAILED
        if isinstance(e, ConnectError):
            return Msg.CONNECT_FAILED
        if isinstance(e, HostTimeout):
            return Msg.TIMEOUT
        if isinstance(e, LinkLost):
            return Msg.FORMAT_ERROR if e.code == "iso.undecodable" else Msg.LINK_LOST
        return Msg.CONNECT_FAILED

    # --- reversals -----------------------------------------------------------------------------------------
    async def _send_pending_reversals(self) -> int:
        """Send every pending reversal, each up to ``reversal.retries`` times now; those not acknowledged
        stay pending and go again before the next transaction (also after a restart)."""
        done = 0
        keys = self.keys
        if keys is None:
            return 0
        for entry, original in self.journal.pending_reversals():
            if self.machine.state is not State.IDLE:
                self.machine.abort()
            reason = RC.parse(entry.reversal_reason or "98") or RC.NO_RESPONSE
            for _attempt in range(max(1, self.cfg.reversal_retries)):
                self._fire(Event.REVERSE)
                self.show(Msg.REVERSAL_PENDING)
                req = reversal_request(self.profile, original, reason=reason, ids=self.ids)
                self.journal.reversal_attempted(entry.id)
                try:
                    ex = await self.link.exchange(req, mak=self._mak(keys))
                except HostLinkError as e:
                    self.trace.record(Kind.JOURNAL, "reversal not acknowledged", id=entry.id, error=str(e),
                                      code=e.code)
                    self._fire(Event.HOST_FAILED)
                    if isinstance(e, DnsError | ConnectError):
                        break           # no network: try again later, not now
                    continue
                rc = ex.response.get(39)
                mac = self._response_mac(ex)
                if mac is not None:
                    self.trace.record(Kind.JOURNAL, "reversal answer not authentic", id=entry.id, mac=mac.value,
                                      code=f"mac.{mac.value}")
                    self._fire(Event.HOST_FAILED)
                    continue
                if rc in ("00", "25", "12"):
                    self.journal.reversal_done(entry.id)
                    self.trace.record(Kind.JOURNAL, "reversal acknowledged", id=entry.id, rc=rc)
                    self.show(Msg.REVERSAL_DONE)
                    done += 1
                    self._fire(Event.REVERSAL_DONE)
                    break
                self.trace.record(Kind.JOURNAL, "reversal refused", id=entry.id, rc=rc, code=f"host.rc.{_text(rc)}")
                self._fire(Event.HOST_FAILED)
                if rc in KEYS_REFUSED:
                    self.machine.session.sign_on_owed = True
                    break
        return done

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


class _Pulled:
    def __repr__(self) -> str:
        return "PULLED"


_PULLED = _Pulled()


def _root_cause(e: BaseException) -> PosemuError:
    """The hardware error under a kernel error (the card's or the reader's own), else ``e`` itself."""
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, HardwareError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e if isinstance(e, PosemuError) else PosemuError(str(e))


def _text(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _ref_doc(ref: OriginalRef | None) -> dict[str, str] | None:
    """What the journal keeps of the original a transaction names (for the receipt's 原凭证号/原参考号)."""
    if ref is None:
        return None
    doc = {"batch": ref.batch, "stan": ref.stan, "date": ref.date}
    if ref.rrn:
        doc["rrn"] = ref.rrn
    if ref.auth_code:
        doc["auth_code"] = ref.auth_code
    return doc


_ = dt  # dates come from the Clock
