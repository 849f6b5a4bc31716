"""What the host answers: one request in, one decision out (no sockets here).

:class:`HostLogic` checks, in the order an acquirer does: transaction type, terminal,
software version, host rules (overload), MAC, sign-on, card, expiry, permissions, PIN, then
moves money. Every well-formed request gets a response with the echoed matching fields and a
response code (see :class:`protocol.txn.RC`). Reversals are idempotent: a repeated ``0400``
never refunds twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from emulator.demo import ACQUIRER_ID, DEMO_MID, DEMO_TID, DEMO_TMK, LOAD_TIDS
from emulator.host.rules import HostRules, RuleAction
from emulator.host.store import CardRow, HostStore, TerminalRow, hash_pin
from hardware.cards.profiles import list_profiles, load_profile
from hardware.clock import Clock
from protocol import keys as keymod
from protocol.errors import DecodeError, PosemuError
from protocol.iso import Message
from protocol.masking import mask_pan
from protocol.pinblock import decrypt_pinblock
from protocol.session import mac_ok
from protocol.specs import Profile
from protocol.txn import RC, Balance, Field60, TxnType, encode_balances, response_to

log = logging.getLogger("posemu.host")



@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request."""

    response: Message | None
    delay: float = 0.0
    close: bool = False
    mak: bytes | None = None       # seal the response with this MAC key


_PIN_HASHES: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _hashed(pan: str, pin: str) -> tuple[bytes, bytes]:
    """(salt, scrypt hash) for a demo card, computed once per process: demo data is reseeded often
    (every regression scenario) and scrypt is slow on purpose."""
    key = (pan, pin)
    if key not in _PIN_HASHES:
        salt = os.urandom(16)
        _PIN_HASHES[key] = (salt, hash_pin(pin, salt))
    return _PIN_HASHES[key]


def seed_demo(store: HostStore, *, profiles: list[str] | None = None) -> None:
    """Seed the demo terminal, the load-test terminals and every bundled card profile."""
    store.begin()
    store.add_terminal(DEMO_TID, DEMO_MID, DEMO_TMK)
    for tid in LOAD_TIDS:
        store.add_terminal(tid, DEMO_MID, DEMO_TMK, require_sign_on=False)
    for name in profiles if profiles is not None else list_profiles():
        prof = load_profile(name)
        salt, digest = _hashed(prof.pan, prof.pin)
        store.add_card(prof, pin_required=not name.startswith("load"), salt=salt, pin_hash=digest)
    store.commit()


class HostLogic:
    def __init__(self, store: HostStore, profile: Profile, clock: Clock, *,
                 rules: HostRules | None = None,
                 token_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.store = store
        self.profile = profile
        self.clock = clock
        self.rules = rules or HostRules()
        self.token_bytes = token_bytes
        self._rrn = 0

    # --- entry points -----------------------------------------------------------------------
    def handle(self, req: Message, raw: bytes) -> Decision:
        """Decide the answer to a decoded request."""
        if req.mti[2] not in "02468":   # a response or acknowledgement: nothing to answer
            log.warning("ignoring %s: a host answers requests, not responses", req.mti)
            return Decision(None)
        rule = self.rules.first_match(req.mti)
        if rule is not None:
            if rule.action is RuleAction.NO_RESPONSE:
                log.info("rule: no response to %s STAN %s", req.mti, req.get(11))
                return Decision(None)
            if rule.action is RuleAction.CLOSE:
                return Decision(None, close=True)
            if rule.action is RuleAction.RESPOND:
                return Decision(self._respond(req, rule.rc), delay=rule.delay)
        delay = rule.delay if rule is not None and rule.action is RuleAction.DELAY else 0.0
        drop = rule is not None and rule.action is RuleAction.DROP_RESPONSE
        wrong_stan = rule is not None and rule.action is RuleAction.WRONG_STAN
        try:
            decision = self._process(req, raw)
        except PosemuError as e:   # a request whose fields do not make sense: format error
            log.warning("format error in %s: %s", req.mti, e)
            decision = Decision(self._respond(req, RC.FORMAT_ERROR))
        if delay:
            decision = replace(decision, delay=delay)
        if wrong_stan and decision.response is not None and 11 in decision.response:
            stan = decision.response.text(11)
            decision = replace(decision, response=decision.response.replace(f11=f"{(int(stan) + 1) % 1_000_000:06d}"))
        if drop:
            log.info("rule: response to %s STAN %s processed and dropped", req.mti, req.get(11))
            decision = replace(decision, response=None)
        return decision

    def malformed(self, mti: str | None, partial: dict[str, object], error: DecodeError) -> Decision:
        """A frame that did not decode: answer 30 when its MTI is readable, else close."""
        if mti is None or len(mti) != 4 or mti[2] not in "0246":
            log.warning("closing connection: unreadable request (%s)", error)
            return Decision(None, close=True)
        fields = {int(k): v for k, v in partial.items()
                  if k in ("11", "41", "42") and isinstance(v, str)}
        req = Message(mti, dict(fields), self.profile.default_header)
        log.warning("format error: %s", error)
        return Decision(self._respond(req, RC.FORMAT_ERROR))

    # --- helpers ------------------------------------------------------------------------------
    def _respond(self, req: Message, rc: RC | str, **extra: str | bytes) -> Message:
        return response_to(req, rc, **extra)

    def _next_rrn(self) -> str:
        self._rrn += 1
        return f"{self.clock.wall():%y%m%d}{self._rrn % 1_000_000:06d}"

    def _process(self, req: Message, raw: bytes) -> Decision:
        txn = TxnType.from_request(req)
        if req.mti == "0400":
            return self._with_terminal(req, raw, self._reversal, "reversal")
        if req.mti == "0800":
            return self._with_terminal(req, raw, self._sign_on, None)
        if req.mti != "0200" or txn is None:
            return Decision(self._respond(req, RC.INVALID_TRANSACTION))
        kind = "balance" if txn is TxnType.BALANCE else "purchase"
        return self._with_terminal(req, raw, self._financial, kind)

    def _with_terminal(self, req: Message, raw: bytes,
                       fn: Callable[[Message, TerminalRow], Decision], kind: str | None) -> Decision:
        tid = req.get(41)
        term = self.store.terminal(tid) if isinstance(tid, str) else None
        if term is None:
            return Decision(self._respond(req, RC.NOT_PERMITTED_TERMINAL))
        if self.profile.header_len and term.min_version:
            version = req.header[6] if len(req.header) > 6 else 0
            if version < term.min_version:
                return Decision(self._respond(req, RC.VERSION_NOT_ACCEPTED))
        if req.mti != "0800":
            if term.require_sign_on and not term.signed_on:
                return Decision(self._respond(req, RC.SIGN_ON_REQUIRED))
            if 64 in req.fields and (term.mak is None or not mac_ok(raw, self.profile, term.mak)):
                return Decision(self._respond(req, RC.MAC_ERROR))
            if kind is not None and kind not in term.permissions:
                return Decision(self._respond(req, RC.NOT_PERMITTED_TERMINAL), mak=term.mak)
        decision = fn(req, term)
        if decision.response is not None and 64 in req.fields and term.mak and req.mti != "0800":
            resp = decision.response.replace(f64=bytes(8))
            decision = replace(decision, response=resp, mak=term.mak)
        return decision

    def _sign_on(self, req: Message, term: TerminalRow) -> Decision:
        f60 = req.get(60)
        scheme = Field60.parse(f60).net_code if isinstance(f60, str) else "003"
        try:
            ks = keymod.KeyScheme(scheme)
            wk = keymod.generate_working_keys(ks, token_bytes=self.token_bytes)
            block = keymod.build_field62(term.tmk, wk, ks)
        except (PosemuError, ValueError):
            return Decision(self._respond(req, RC.FORMAT_ERROR))
        self.store.set_terminal(replace(term, pik=wk.pik, mak=wk.mak, signed_on=True))
        now = self.clock.wall()
        resp = self._respond(req, RC.APPROVED, f12=f"{now:%H%M%S}", f13=f"{now:%m%d}",
                             f32=ACQUIRER_ID, f37=self._next_rrn(), f62=block)
        log.info("terminal %s signed on (scheme %s)", term.tid, scheme)
        return Decision(resp)

    def _card_from(self, req: Message) -> tuple[str | None, str | None]:
        pan = req.get(2)
        expiry = req.get(14)
        t2 = req.get(35)
        if isinstance(t2, str) and "=" in t2:
            tpan, _, rest = t2.partition("=")
            pan = pan if isinstance(pan, str) else tpan
            if not isinstance(expiry, str):
                expiry = rest[:4]
        return (pan if isinstance(pan, str) else None, expiry if isinstance(expiry, str) else None)

    def _financial(self, req: Message, term: TerminalRow) -> Decision:
        kind = "balance" if TxnType.from_request(req) is TxnType.BALANCE else "purchase"
        pan, expiry = self._card_from(req)
        card = self.store.card(pan) if pan else None
        rc = self._check_card(req, term, card, expiry, kind)
        date = req.get(13) if isinstance(req.get(13), str) else f"{self.clock.wall():%m%d}"
        date_s = str(date)
        stan = req.text(11) if 11 in req else "000000"
        if rc is not RC.APPROVED or card is None:
            self._log(req, term, card, kind, stan, date_s, 0, rc)
            return Decision(self._respond(req, rc))
        bal, cur = self.store.balance(card.account_id)
        if kind == "balance":
            self._log(req, term, card, kind, stan, date_s, 0, RC.APPROVED)
            f54 = encode_balances([Balance(bal, cur, "10", "01"), Balance(bal, cur, "10", "02")])
            return Decision(self._respond(req, RC.APPROVED, f37=self._next_rrn(), f54=f54))
        # purchase: idempotent by (terminal, STAN, date)
        prior = self.store.find_tx(term.tid, stan, date_s, "0200")
        if prior is not None:
            extra = {"f38": prior.auth_code} if prior.auth_code else {}
            return Decision(self._respond(req, prior.rc, **({"f37": prior.rrn} if prior.rrn else {}), **extra))
        amount = int(req.text(4)) if 4 in req else 0
        if amount <= 0:
            return Decision(self._respond(req, RC.INVALID_AMOUNT))
        if amount > bal:
            self._log(req, term, card, kind, stan, date_s, amount, RC.INSUFFICIENT_FUNDS)
            return Decision(self._respond(req, RC.INSUFFICIENT_FUNDS))
        self.store.begin()
        new_bal = self.store.move_money(card.account_id, -amount)
        rrn = self._next_rrn()
        auth = f"{self._rrn % 1_000_000:06d}"
        self.store.log_tx(tid=term.tid, stan=stan, date=date_s, mti="0200", kind=kind,
                          pan_masked=mask_pan(card.pan), account_id=card.account_id, amount=amount,
                          rc=RC.APPROVED.value, auth_code=auth, rrn=rrn)
        self.store.commit()
        f54 = encode_balances([Balance(new_bal, cur, "10", "02")])
        return Decision(self._respond(req, RC.APPROVED, f37=rrn, f38=auth, f54=f54))

    def _check_card(self, req: Message, term: TerminalRow, card: CardRow | None, expiry: str | None,
                    kind: str) -> RC:
        if card is None:
            return RC.INVALID_CARD
        if card.status == "blocked":
            return RC.INVALID_CARD
        if card.status == "restricted":
            return RC.RESTRICTED_CARD
        if expiry is None or expiry != card.expiry:
            return RC.INVALID_CARD if expiry is not None else RC.FORMAT_ERROR
        if expiry < f"{self.clock.wall():%y%m}":
            return RC.EXPIRED_CARD
        if kind not in card.permissions:
            return RC.NOT_PERMITTED_CARDHOLDER
        return self._check_pin(req, term, card)

    def _check_pin(self, req: Message, term: TerminalRow, card: CardRow) -> RC:
        block = req.get(52)
        if card.pin_tries_left <= 0:
            return RC.PIN_TRIES_EXCEEDED
        if not isinstance(block, bytes):
            if not card.pin_required or _offline_pin_verified(req):
                return RC.APPROVED
            return RC.WRONG_PIN
        if term.pik is None:
            return RC.SIGN_ON_REQUIRED
        try:
            pin = decrypt_pinblock(block, card.pan, term.pik)
        except PosemuError:
            pin = None
        if pin is not None and card.pin_matches(pin):
            if card.pin_tries_left != card.pin_tries_max:
                self.store.update_card(card.pan, pin_tries_left=card.pin_tries_max)
            return RC.APPROVED
        left = card.pin_tries_left - 1
        self.store.update_card(card.pan, pin_tries_left=left)
        return RC.PIN_TRIES_EXCEEDED if left <= 0 else RC.WRONG_PIN

    def _reversal(self, req: Message, term: TerminalRow) -> Decision:
        stan = req.text(11) if 11 in req else ""
        date = req.get(13)
        date_s = date if isinstance(date, str) else f"{self.clock.wall():%m%d}"
        orig = self.store.find_tx(term.tid, stan, date_s, "0200")
        self.store.begin()
        if orig is not None and orig.rc == RC.APPROVED.value and not orig.reversed and orig.account_id:
            self.store.move_money(orig.account_id, orig.amount)
            self.store.mark_reversed(orig.id)
            log.info("reversed %s STAN %s: refunded %d", term.tid, stan, orig.amount)
        self.store.log_tx(tid=term.tid, stan=stan, date=date_s, mti="0400", kind="reversal",
                          pan_masked=mask_pan(req.text(2)) if 2 in req else "",
                          account_id=orig.account_id if orig else None,
                          amount=orig.amount if orig else 0, rc=RC.APPROVED.value)
        self.store.commit()
        return Decision(self._respond(req, RC.APPROVED))

    def _log(self, req: Message, term: TerminalRow, card: CardRow | None, kind: str, stan: str,
             date: str, amount: int, rc: RC) -> None:
        self.store.log_tx(tid=term.tid, stan=stan, date=date, mti=req.mti, kind=kind,
                          pan_masked=mask_pan(card.pan) if card else "", account_id=card.account_id if card
                          else None, amount=amount, rc=rc.value)


def _offline_pin_verified(req: Message) -> bool:
    """Chip data (field 55) says the card itself verified the PIN: CVM Results 9F34, method
    plaintext/enciphered offline PIN (01, 03, 04, 05) with result 02 successful (EMV Book 3 C3)."""
    icc = req.get(55)
    if not isinstance(icc, bytes) or not str(req.get(22, "")).startswith("05"):
        return False
    from protocol import tlv

    try:
        cvm = tlv.flatten(tlv.decode(icc)).get(0x9F34)
    except PosemuError:
        return False
    return cvm is not None and len(cvm) == 3 and (cvm[0] & 0x3F) in (0x01, 0x03, 0x04, 0x05) and cvm[2] == 0x02
