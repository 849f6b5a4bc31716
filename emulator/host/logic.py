"""What the host answers: one request in, one decision out (no sockets here).

:class:`HostLogic` checks, in the order an acquirer does: transaction type, terminal,
software version, host rules (overload), MAC, sign-on, card, expiry, permissions, PIN, then
moves money. Every well-formed request gets a response with the echoed matching fields and a
response code (see :class:`protocol.txn.RC`). Reversals are idempotent: a repeated ``0400``
never refunds twice. A retransmitted purchase (same terminal, STAN, date, processing code, amount
and PAN) gets the original's answer and is debited once; a *different* transaction under a reused
STAN is refused with ``94``.

Network management (0800 field 70 on ``iso87ascii``; 0800/0820 with 60.3 on ``cup``): sign-on
(001) needs a MAC under the terminal master key — an unauthenticated or replayed 0800 changes
nothing —, sign-off (002) drops the working keys, echo (301) is answered and never re-keys.

The standard transaction set (:meth:`HostLogic._txnset`, see :mod:`protocol.txn` for the message
shapes): a void gives back what its original took, a refund credits at most what the original
debited, a pre-authorization holds the amount on the account (the balance shown is what is
available), its completion captures up to 115 % of it and releases the rest, and their voids undo
them. Every one is logged with the money it moved (``effect``) and the original it names
(``target``), so a reversal (0400) undoes exactly that, once. Settlement (0500) compares the
terminal's batch totals (field 48) with the host's: ``00`` when they agree, ``95`` when they do not;
the terminal then uploads each transaction (0320) and settles again (60.3 ``202``), which the host
accepts. A settled batch cannot be voided.

Authorization (ISO 8583:1987 ``0100``/``0110``) alongside financial ``0200``/``0210``: a balance
inquiry (processing code ``31``) as in an 0200, and a pre-authorization (``03``, or ``00`` in an
0100; CUP 预授权) that checks the card like a purchase and holds the amount — the available
balance goes down, the hold is logged with its authorization code, and a reversal of it (0400)
releases it. A pre-authorization needs the ``preauth`` permission (or ``purchase``) of the card and
the terminal.

:class:`HostLogic` keeps the order of the checks and calls its collaborators, each given the store,
the profile or the request explicitly: :mod:`emulator.host.kinds` (what a request asks, pure),
:mod:`emulator.host.pins` (PIN blocks, the PIN cache, PIN jobs), :mod:`emulator.host.txnset` (the
originals of voids, refunds and completions, the money each moves, undoing them on reversal) and
:mod:`emulator.host.settlement` (batch totals, 0500, 0320). Their public names are importable from
here as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from emulator.demo import ACQUIRER_ID
from emulator.host import settlement
from emulator.host.kinds import MONEY_KINDS, TXNSET, batch_of, card_from, permission, permitted, summary, txn_kind
from emulator.host.pins import PinCache, PinJob, check_pin, decrypt_pin
from emulator.host.provision import seed_demo
from emulator.host.rules import HostRules, RuleAction
from emulator.host.store import CardRow, HostStore, TerminalRow, TxRow
from emulator.host.txnset import find_original, link, money_effect, undo_links
from hardware.clock import Clock
from protocol import keys as keymod
from protocol.errors import DecodeError, PosemuError
from protocol.iso import Message, encode
from protocol.masking import mask_pan
from protocol.session import check_mac
from protocol.specs import Profile
from protocol.txn import (
    RC,
    Balance,
    BatchTotals,
    Field60,
    NetCode,
    TxnType,
    encode_balances,
    key_block_value,
    original_mti,
    response_to,
)

__all__ = ["MONEY_KINDS", "Decision", "HostLogic", "PinCache", "PinJob", "permitted", "seed_demo", "summary",
           "txn_kind"]

log = logging.getLogger("posemu.host")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request."""

    response: Message | None
    delay: float = 0.0
    close: bool = False
    mak: bytes | None = None       # seal the response with this MAC key
    mangle: str = ""               # a GARBAGE rule's mode: the encoded answer is spoilt on the way out


class _Unset:
    """No value given (``None`` is one)."""


_UNSET = _Unset()


@dataclass(frozen=True, slots=True)
class _Call:
    """One request being decided."""

    req: Message
    raw: bytes
    pin_ok: bool | None = None


class HostLogic:
    """The acquirer's decisions, request by request, over a :class:`HostStore` (no sockets).

    Checks run in the order an acquirer runs them: terminal, software version, host rules, MAC (or,
    for a sign-on, proof of the terminal master key), duplicate transmission, card, expiry,
    permissions, PIN; then money moves and is committed before the answer leaves. A terminal that
    holds a MAC key must MAC every request (``TerminalRow.mac_required``); a request without a
    valid MAC changes nothing and is answered ``A0``.
    """

    def __init__(self, store: HostStore, profile: Profile, clock: Clock, *,
                 rules: HostRules | None = None,
                 token_bytes: Callable[[int], bytes] = os.urandom, lane: tuple[int, int] = (0, 1)) -> None:
        self.store = store
        self.profile = profile
        self.clock = clock
        self.rules = rules or HostRules()
        self.token_bytes = token_bytes
        self.pin_cache = PinCache()
        self._day, self._yymmdd = -1, ""
        # retrieval reference numbers stay unique across restarts of the host: count on from its log;
        # worker ``k`` of ``n`` sharing one database (lane) takes the numbers ≡ k (mod n)
        k, n = lane
        if not 0 <= k < n:
            raise ValueError(f"lane {k} of {n}")
        base = store.tx_count()
        if n > 1:   # lanes fill unevenly: count on from the highest RRN given, not only the number of rows
            base = max(base, store.highest_rrn_number())
        self._rrn_step = n
        self._rrn = base + 1 + (k - base - 1) % n - n

    # --- entry points -----------------------------------------------------------------------
    def handle(self, req: Message, raw: bytes, *, pin_ok: bool | None = None) -> Decision:
        """Decide the answer to a decoded request. ``pin_ok`` is the verdict of this request's
        :class:`PinJob` when the caller ran it off the event loop (``None``: check here)."""
        if req.mti[2] not in "02468":   # a response or acknowledgement: nothing to answer
            log.warning("ignoring %s: a host answers requests, not responses", req.mti)
            return Decision(None)
        rule = self.rules.first_match(req.mti)
        if rule is None:                # no behaviour rule (the usual case): decided as it is
            try:
                return self._process(_Call(req, raw, pin_ok))
            except PosemuError as e:   # a request whose fields do not make sense: format error
                log.warning("format error in %s: %s", req.mti, e)
                return self._format_error(req)
        if rule.action is RuleAction.NO_RESPONSE:
            log.info("rule: no response to %s STAN %s", req.mti, req.get(11))
            return Decision(None)
        if rule.action is RuleAction.CLOSE:
            return Decision(None, close=True)
        if rule.action is RuleAction.RESPOND:
            return Decision(self._respond(req, rule.rc), delay=rule.delay, mak=self._response_mak(req))
        delay = rule.delay if rule.action is RuleAction.DELAY else 0.0
        drop = rule.action is RuleAction.DROP_RESPONSE
        wrong_stan = rule.action is RuleAction.WRONG_STAN
        garbage = rule.mode if rule.action is RuleAction.GARBAGE else ""
        try:
            decision = self._process(_Call(req, raw, pin_ok))
        except PosemuError as e:   # a request whose fields do not make sense: format error
            log.warning("format error in %s: %s", req.mti, e)
            decision = self._format_error(req)
        if delay:
            decision = replace(decision, delay=delay)
        if wrong_stan and decision.response is not None and 11 in decision.response:
            stan = decision.response.text(11)
            decision = replace(decision, response=decision.response.replace(f11=f"{(int(stan) + 1) % 1_000_000:06d}"))
        if drop:
            log.info("rule: response to %s STAN %s processed and dropped", req.mti, req.get(11))
            decision = replace(decision, response=None)
        if garbage and decision.response is not None:
            if garbage == "no-rc":
                decision = replace(decision, response=decision.response.replace(f39=None))
            else:
                decision = replace(decision, mangle=garbage)
        return decision

    def pin_job(self, req: Message, raw: bytes) -> PinJob | None:
        """The PIN check a financial request needs, if any, after the cheap checks (terminal, MAC,
        card, tries left) — so the slow part can run off the event loop. ``None``: nothing slow to do
        (:meth:`handle` decides everything).

        With behaviour rules configured (a fault scenario, a test) every request is decided inline, in
        arrival order, so the rules' counting (``first``, ``every``, ``count``) is reproducible."""
        if req.mti not in ("0100", "0200") or not isinstance(req.fields.get(52), bytes) or self.rules.rules:
            return None
        tid = req.get(41)
        term = self.store.terminal(tid) if isinstance(tid, str) else None
        if term is None or term.pik is None or not self._mac_ok(term, req, raw):
            return None
        pan, _ = card_from(req)
        card = self.store.card(pan) if pan else None
        if card is None or card.pin_tries_left <= 0:
            return None
        block = req.binary(52)
        tag = self.pin_cache.tag(card, term.pik, block)
        if tag in self.pin_cache:       # verified before: decided inline, no scrypt
            return None
        return PinJob(card, decrypt_pin(block, card.pan, term.pik), tag, self.pin_cache)

    def malformed(self, mti: str | None, partial: dict[str, object], error: DecodeError) -> Decision:
        """A frame that did not decode: a ``30`` echoing what can be echoed, or a close with a reason."""
        if mti is None or len(mti) != 4 or mti[2] not in "0246":
            log.warning("closing connection: unreadable request (%s)", error)
            return Decision(None, close=True)
        fields = {int(k): v for k, v in partial.items() if k in ("11", "41", "42") and isinstance(v, str)}
        log.warning("format error: %s", error)
        return self._format_error(Message(mti, dict(fields), self.profile.default_header))

    def _format_error(self, req: Message) -> Decision:
        """A ``30`` with whichever of the matching fields (11, 41, 42) encode; a close if none does."""
        for keep in ((11, 41, 42), (11, 41), (41,), (11,), ()):
            fields = {n: v for n, v in req.fields.items() if n in keep}
            resp = self._respond(Message(req.mti, fields, req.header), RC.FORMAT_ERROR)
            try:
                encode(resp, self.profile)
            except (PosemuError, TypeError):
                continue
            return Decision(resp)
        log.warning("closing connection: cannot answer a malformed %s", req.mti)
        return Decision(None, close=True)

    # --- helpers ------------------------------------------------------------------------------
    def _respond(self, req: Message, rc: RC | str, **extra: str | bytes) -> Message:
        return response_to(req, rc, tpdu_len=self.profile.tpdu_len, **extra)

    def _next_rrn(self) -> str:
        self._rrn += self._rrn_step
        return f"{self._today()}{self._rrn % 1_000_000:06d}"

    def _today(self) -> str:
        """Today's date as YYMMDD (formatted once a day)."""
        w = self.clock.wall()
        day = w.toordinal()
        if day != self._day:
            self._day, self._yymmdd = day, f"{w.year % 100:02d}{w.month:02d}{w.day:02d}"
        return self._yymmdd

    def _response_mak(self, req: Message) -> bytes | None:
        """The key to MAC a response with: the terminal's MAK once it holds one."""
        tid = req.fields.get(41)
        term = self.store.terminal(tid) if isinstance(tid, str) else None
        if term is None or term.mak is None or NetCode.of(req) is NetCode.SIGN_ON:
            return None
        return term.mak if term.mac_required or 64 in req or 128 in req else None

    def _mac_ok(self, term: TerminalRow, req: Message, raw: bytes) -> bool:
        if term.mak is None or not term.mac_required:
            return True
        return check_mac(req, raw, self.profile, term.mak).ok

    def _process(self, c: _Call) -> Decision:
        req = c.req
        net = NetCode.of(req)
        if req.mti in ("0800", "0820") and net is not None:
            fn = {NetCode.SIGN_ON: self._sign_on, NetCode.SIGN_OFF: self._sign_off, NetCode.ECHO: self._echo}[net]
            return self._with_terminal(c, fn, None)
        if req.mti == "0400":
            return self._with_terminal(c, self._reversal, "reversal")
        if req.mti in ("0500", "0320"):
            return self._with_terminal(c, self._settle if req.mti == "0500" else self._batch_upload, None)
        txn = TxnType.from_request(req)
        if txn in TXNSET:
            assert txn is not None
            return self._with_terminal(c, self._txnset, permission(txn))
        kind = txn_kind(req)
        if kind is None:
            return Decision(self._respond(req, RC.INVALID_TRANSACTION), mak=self._response_mak(req))
        return self._with_terminal(c, self._financial, kind)

    def _with_terminal(self, c: _Call, fn: Callable[[_Call, TerminalRow], Decision], kind: str | None) -> Decision:
        req = c.req
        tid = req.fields.get(41)
        term = self.store.terminal(tid) if isinstance(tid, str) else None
        if term is None:
            return Decision(self._respond(req, RC.NOT_PERMITTED_TERMINAL))
        signing_on = req.mti[1] == "8" and NetCode.of(req) is NetCode.SIGN_ON    # NetCode: 08x0 only
        if not signing_on:
            if term.require_sign_on and not term.signed_on:
                return Decision(self._respond(req, RC.SIGN_ON_REQUIRED))
            if term.mak is not None and term.mac_required:
                status = check_mac(req, c.raw, self.profile, term.mak)
                if not status.ok:
                    log.warning("%s from %s STAN %s: MAC %s", req.mti, term.tid, req.get(11), status.value)
                    return Decision(self._respond(req, RC.MAC_ERROR), mak=term.mak)
        if self.profile.header_len and term.min_version:
            version = req.header[6] if len(req.header) > 6 else 0
            if version < term.min_version:
                return Decision(self._respond(req, RC.VERSION_NOT_ACCEPTED),
                                mak=None if signing_on else self._response_mak(req))
        if not signing_on and kind is not None and not permitted(kind, term.permissions):
            return Decision(self._respond(req, RC.NOT_PERMITTED_TERMINAL), mak=self._response_mak(req))
        decision = fn(c, term)
        if decision.response is not None and decision.mak is None:
            mak = self._response_mak(req)
            if mak is not None:
                decision = Decision(decision.response, decision.delay, decision.close, mak, decision.mangle)
        return decision

    # --- network management -------------------------------------------------------------------
    def _sign_on(self, c: _Call, term: TerminalRow) -> Decision:
        req = c.req
        if term.sign_on_proof:
            status = check_mac(req, c.raw, self.profile, term.tmk)
            if not status.ok:   # no proof of the terminal master key: nothing changes
                log.warning("sign-on of %s refused: MAC under the terminal master key %s", term.tid, status.value)
                return Decision(self._respond(req, RC.MAC_ERROR))
        stan = req.get(11)
        stamp = f"{self.clock.wall():%Y%m%d}:{stan if isinstance(stan, str) else ''}"
        if term.last_sign_on == stamp:
            log.warning("sign-on of %s refused: a replay of the last one (STAN %s)", term.tid, req.get(11))
            return Decision(self._respond(req, RC.DUPLICATE))
        f60 = req.get(60)
        scheme = Field60.parse(f60).net_code if isinstance(f60, str) else "003"
        try:
            ks = keymod.KeyScheme(scheme)
            wk = keymod.generate_working_keys(ks, token_bytes=self.token_bytes)
            block = keymod.build_field62(term.tmk, wk, ks)
        except (PosemuError, ValueError):
            return Decision(self._respond(req, RC.FORMAT_ERROR))
        self.store.begin()          # the new keys are committed before the 0810 leaves
        self.store.set_terminal(replace(term, pik=wk.pik, mak=wk.mak, signed_on=True, last_sign_on=stamp))
        self.store.commit()
        now = self.clock.wall()
        resp = self._respond(req, RC.APPROVED, f12=f"{now:%H%M%S}", f13=f"{now:%m%d}",
                             f32=ACQUIRER_ID, f37=self._next_rrn(), f62=key_block_value(block, self.profile))
        log.info("terminal %s signed on (scheme %s)", term.tid, scheme)
        return Decision(resp)

    def _sign_off(self, c: _Call, term: TerminalRow) -> Decision:
        mak = term.mak
        self.store.begin()
        self.store.set_terminal(replace(term, pik=None, mak=None, signed_on=False))
        self.store.commit()
        log.info("terminal %s signed off", term.tid)
        return Decision(self._respond(c.req, RC.APPROVED), mak=mak if term.mac_required else None)

    def _echo(self, c: _Call, term: TerminalRow) -> Decision:
        return Decision(self._respond(c.req, RC.APPROVED))

    # --- financial ----------------------------------------------------------------------------
    def _identity(self, req: Message, pan: str | _Unset | None = _UNSET) -> str:
        """Who, what and how much: processing code, amount and PAN, as a keyed fingerprint (``pan``:
        what :func:`card_from` gives for ``req``, when the caller has it already)."""
        if isinstance(pan, _Unset):
            pan, _ = card_from(req)
        f = req.fields
        pc, amount = f.get(3), f.get(4)
        return self.store.fingerprint(pc if isinstance(pc, str) else "", amount if isinstance(amount, str) else "",
                                      pan or "")

    def _financial(self, c: _Call, term: TerminalRow) -> Decision:
        req = c.req
        f = req.fields
        kind = txn_kind(req) or "purchase"
        date = f.get(13)
        date_s = date if isinstance(date, str) else f"{self.clock.wall():%m%d}"
        stan = req.text(11) if 11 in f else "000000"
        pan, expiry = card_from(req)
        ident = self._identity(req, pan)
        prior = self.store.find_tx(term.tid, stan, date_s, req.mti)
        if prior is not None and prior.ident != ident:
            # a STAN reused for another transaction (a reinstalled terminal…): never the other's answer
            log.warning("duplicate STAN %s from %s for a different transaction: 94", stan, term.tid)
            return Decision(self._respond(req, RC.DUPLICATE))
        if prior is not None and kind in MONEY_KINDS:
            # the same purchase again (a retransmission): the same answer, no second debit
            extra = {"f38": prior.auth_code} if prior.auth_code else {}
            return Decision(self._respond(req, prior.rc, **({"f37": prior.rrn} if prior.rrn else {}), **extra))
        card = self.store.card(pan) if pan else None
        rc = self._check_card(c, term, card, expiry, kind)
        if rc is not RC.APPROVED or card is None:
            self._log(req, term, card, kind, stan, date_s, 0, rc, ident)
            return Decision(self._respond(req, rc))
        bal, cur = self.store.balance(card.account_id)
        if kind == "balance":
            self._log(req, term, card, kind, stan, date_s, 0, RC.APPROVED, ident)
            f54 = Balance(bal, cur, "10", "01").encode() + Balance(bal, cur, "10", "02").encode()  # encode_balances
            return Decision(response_to(req, RC.APPROVED, tpdu_len=self.profile.tpdu_len, f37=self._next_rrn(),
                                        f54=f54))
        amount = int(req.text(4)) if 4 in req else 0
        if amount <= 0:
            return Decision(self._respond(req, RC.INVALID_AMOUNT))
        if amount > bal:
            self._log(req, term, card, kind, stan, date_s, amount, RC.INSUFFICIENT_FUNDS, ident)
            return Decision(self._respond(req, RC.INSUFFICIENT_FUNDS))
        self.store.begin()
        new_bal = self.store.move_money(card.account_id, -amount)
        rrn = self._next_rrn()
        auth = f"{self._rrn % 1_000_000:06d}"
        self.store.log_tx(tid=term.tid, stan=stan, date=date_s, mti=req.mti, kind=kind,
                          pan_masked=mask_pan(card.pan), account_id=card.account_id, amount=amount,
                          rc=RC.APPROVED.value, auth_code=auth, rrn=rrn, ident=ident, batch=batch_of(req),
                          effect=-amount)
        self.store.commit()
        f54 = encode_balances([Balance(new_bal, cur, "10", "02")])
        return Decision(self._respond(req, RC.APPROVED, f37=rrn, f38=auth, f54=f54))

    def _check_card(self, c: _Call, term: TerminalRow, card: CardRow | None, expiry: str | None,
                    kind: str) -> RC:
        if card is None:
            return RC.INVALID_CARD
        if card.status == "blocked":
            return RC.INVALID_CARD
        if card.status == "restricted":
            return RC.RESTRICTED_CARD
        if expiry is None or expiry != card.expiry:
            return RC.INVALID_CARD if expiry is not None else RC.FORMAT_ERROR
        if expiry < self._today()[:4]:       # YYMM
            return RC.EXPIRED_CARD
        if not permitted(kind, card.permissions):
            return RC.NOT_PERMITTED_CARDHOLDER
        return check_pin(self.store, self.pin_cache, c.req, term, card, c.pin_ok)

    def _reversal(self, c: _Call, term: TerminalRow) -> Decision:
        """Undo what the reversed request did, once: the money it moved (``effect``; a purchase of an
        older release: its amount) and the state it changed on its original."""
        req = c.req
        stan = req.text(11) if 11 in req else ""
        date = req.get(13)
        date_s = date if isinstance(date, str) else f"{self.clock.wall():%m%d}"
        orig = next((t for mti in dict.fromkeys((original_mti(req), "0200", "0100"))
                     if (t := self.store.find_tx(term.tid, stan, date_s, mti)) is not None), None)
        rc = RC.APPROVED
        if orig is not None and orig.ident is not None and orig.ident != self._identity(req):
            # not the transaction it names (other card, amount or type): nothing is refunded
            log.warning("reversal from %s STAN %s does not match its original: 25", term.tid, stan)
            rc = RC.UNKNOWN_ORIGINAL
            orig = None
        self.store.begin()
        if orig is not None and orig.rc == RC.APPROVED.value and not orig.reversed and orig.account_id:
            effect = orig.effect if orig.effect or orig.kind not in MONEY_KINDS else -orig.amount
            self.store.move_money(orig.account_id, -effect)
            self.store.update_tx(orig.id, reversed=1)
            undo_links(self.store, orig)
            log.info("reversed %s %s STAN %s: %+d", term.tid, orig.kind, stan, -effect)
        self.store.log_tx(tid=term.tid, stan=stan, date=date_s, mti="0400", kind="reversal",
                          pan_masked=mask_pan(req.text(2)) if 2 in req else "",
                          account_id=orig.account_id if orig else None,
                          amount=orig.amount if orig else 0, rc=rc.value)
        self.store.commit()
        return Decision(self._respond(req, rc))

    def _log(self, req: Message, term: TerminalRow, card: CardRow | None, kind: str, stan: str,
             date: str, amount: int, rc: RC, ident: str | None = None) -> None:
        self.store.log_tx(tid=term.tid, stan=stan, date=date, mti=req.mti, kind=kind,
                          pan_masked=mask_pan(card.pan) if card else "", account_id=card.account_id if card
                          else None, amount=amount, rc=rc.value, ident=ident)


    # --- the standard transaction set (issue 12) --------------------------------------------------
    def _txnset(self, c: _Call, term: TerminalRow) -> Decision:
        """Void, refund, pre-authorization, completion and the voids of the pre-authorization family:
        the same checks as a purchase (duplicate STAN, card, expiry, permission, PIN), then the
        original (:func:`emulator.host.txnset.find_original`) and the money."""
        req = c.req
        txn = TxnType.from_request(req)
        assert txn is not None
        date_s = str(req.get(13)) if isinstance(req.get(13), str) else f"{self.clock.wall():%m%d}"
        stan = req.text(11) if 11 in req else "000000"
        ident = self._identity(req)
        prior = self.store.find_tx(term.tid, stan, date_s, req.mti)
        if prior is not None and prior.ident != ident:
            log.warning("duplicate STAN %s from %s for a different transaction: 94", stan, term.tid)
            return Decision(self._respond(req, RC.DUPLICATE))
        if prior is not None:       # a retransmission: the same answer, nothing moves twice
            extra = {k: v for k, v in (("f37", prior.rrn), ("f38", prior.auth_code)) if v}
            return Decision(self._respond(req, prior.rc, **extra))
        pan, expiry = card_from(req)
        card = self.store.card(pan) if pan else None
        rc = self._check_card(c, term, card, expiry, permission(txn))
        amount = int(req.text(4)) if 4 in req and req.text(4).isdigit() else 0
        if rc is RC.APPROVED and amount <= 0:
            rc = RC.INVALID_AMOUNT
        if rc is not RC.APPROVED or card is None:
            self._log(req, term, card, txn.kind, stan, date_s, amount, rc, ident)
            return Decision(self._respond(req, rc))
        orig: TxRow | None = None
        if txn.references_original:
            found = find_original(self.store, req, term.tid, txn, card, amount)
            if isinstance(found, RC):
                self._log(req, term, card, txn.kind, stan, date_s, amount, found, ident)
                return Decision(self._respond(req, found))
            orig = found
        effect = money_effect(self.store, txn, amount, orig)
        bal, cur = self.store.balance(card.account_id)
        if effect < 0 and -effect > bal:
            self._log(req, term, card, txn.kind, stan, date_s, amount, RC.INSUFFICIENT_FUNDS, ident)
            return Decision(self._respond(req, RC.INSUFFICIENT_FUNDS))
        self.store.begin()          # money and links are committed before the answer leaves
        new_bal = self.store.move_money(card.account_id, effect)
        rrn = self._next_rrn()
        auth = f"{self._rrn % 1_000_000:06d}" if txn in (TxnType.PREAUTH, TxnType.COMPLETION) else (
            orig.auth_code if orig is not None and orig.auth_code else f"{self._rrn % 1_000_000:06d}")
        self.store.log_tx(tid=term.tid, stan=stan, date=date_s, mti=req.mti, kind=txn.kind,
                          pan_masked=mask_pan(card.pan), account_id=card.account_id, amount=amount,
                          rc=RC.APPROVED.value, auth_code=auth, rrn=rrn, ident=ident, batch=batch_of(req),
                          effect=effect, target=orig.id if orig else None)
        if orig is not None:
            link(self.store, txn, orig, amount)
        self.store.commit()
        log.info("%s %s STAN %s: %+d (balance %d)", term.tid, txn.kind, stan, effect, new_bal)
        f54 = encode_balances([Balance(new_bal, cur, "10", "02")])
        return Decision(self._respond(req, RC.APPROVED, f37=rrn, f38=auth, f54=f54))

    # --- settlement (emulator.host.settlement) -------------------------------------------------------
    def batch_totals(self, tid: str, batch: str) -> BatchTotals:
        """The host's totals of a terminal's batch (:func:`emulator.host.settlement.batch_totals`)."""
        return settlement.batch_totals(self.store, tid, batch)

    def _settle(self, c: _Call, term: TerminalRow) -> Decision:
        return Decision(settlement.settle(self.store, self.profile, c.req, term.tid))

    def _batch_upload(self, c: _Call, term: TerminalRow) -> Decision:
        return Decision(settlement.batch_upload(self.store, self.profile, c.req, term.tid))
