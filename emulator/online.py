"""The online exchange of a financial transaction: request, journal, the host's answer, its outcome.

:class:`OnlineExchange` is owned by :class:`emulator.terminal.Terminal`. The journal row is written
*before* the send (a reversal armed for what may move money); the answer's MAC is checked, the
response code turned into the screen, a reused STAN (94) resent once under the next STAN, and a chip
transaction the host approved is completed with the card by the terminal's
:class:`~emulator.card_session.CardSession`. An answer that says nothing about the outcome — none, an
unauthentic one, one without a response code, a card pulled meanwhile — leaves the transaction
``unknown`` and a purchase owed as a reversal (0400). Every step is an event fired through the
terminal's machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emulator.errors import ConnectError, DnsError, HostLinkError, JournalError
from emulator.fsm import Event
from emulator.journal import Reversal, Status
from emulator.messages import Msg, format_amount
from emulator.originals import ref_doc
from emulator.outcome import KEYS_REFUSED, Failure, Outcome, Ref, error_screen, text
from emulator.trace import Kind
from protocol.errors import PosemuError
from protocol.masking import mask_pan
from protocol.txn import RC, CardData, EntryMode, OriginalRef, TxnType, financial_request

if TYPE_CHECKING:
    from emulator.terminal import Terminal


class OnlineExchange:
    """The host side of a financial transaction, for the terminal that owns it (see the module docstring)."""

    def __init__(self, terminal: Terminal) -> None:
        self.t = terminal

    async def run(self, txn: TxnType, kind: str, card: CardData, amount: int | None,
                  pin_block: bytes | None, fail_head: Msg, *, resent: bool = False, kernel: Any = None,
                  ref: OriginalRef | None = None, original_id: int | None = None) -> Outcome:
        """Send the transaction (its journal row written first) and act on the host's answer; a chip
        transaction the host approved is completed with the card (second GENERATE AC)."""
        t = self.t
        keys = t.keys
        assert keys is not None
        try:
            stan = t._stan()
            now = t.clock.wall()
            req = financial_request(t.profile, t.ids, txn, card, stan=stan, now=now, amount=amount,
                                    currency=t.cfg.currency, pin_block=pin_block, original=ref)
            reversible = req if txn.reversible else None
            jid = t.journal.begin(kind=kind, stan=stan, date=now.strftime("%m%d"), pan_masked=mask_pan(card.pan),
                                  amount=amount or 0, currency=t.cfg.currency, entry=card.entry.name,
                                  reversible=reversible, batch=t.ids.batch, tid=t.ids.tid, mid=t.ids.mid,
                                  original_id=original_id, original_ref=ref_doc(ref))
        except JournalError as e:       # nothing is sent without its journal row
            t._note(Kind.ERROR, "journal not written: nothing sent", e.code, error=str(e))
            return await t._fail(kind, fail_head, Failure(Msg.JOURNAL_FULL, e.code, str(e), Event.HOST_FAILED),
                                 amount=amount, card=card)
        t.trace.record(Kind.JOURNAL, "written before send", id=jid, stan=stan)
        t.show(Msg.PROCESSING, **t._amount_params(amount))
        t._fire(Event.SENT)
        pulled = False
        try:
            if card.entry is EntryMode.CHIP:      # a chip card must stay in until the transaction completes
                ex, pulled = await t.card.while_card_in_online(t.link.exchange(req, mak=t._mak(keys)))
            else:
                ex = await t.link.exchange(req, mak=t._mak(keys))
        except HostLinkError as e:
            return await self._host_failed(kind, fail_head, e, jid, stan, reversible is not None, amount, card)
        resp = ex.response
        rc = str(resp.get(39, ""))
        info = Ref(stan, text(resp.get(37)), text(resp.get(38)))
        mac = t._response_mac(ex)
        if mac is not None:
            # an answer we cannot authenticate says nothing about the outcome: a purchase is reversed
            t._note(Kind.ERROR, "response MAC " + mac.value, f"mac.{mac.value}", mti=resp.mti, rc=rc)
            t.machine.session.sign_on_owed = True
            t._fire(Event.RESPONSE)
            return await self._unknown_outcome(kind, fail_head, jid, reversible is not None, Msg.MAC_ERROR,
                                               RC.MAC_ERROR, rc=rc, amount=amount, card=card, info=info)
        if not rc:
            # an answer without a response code says nothing about the outcome: a purchase is reversed
            t._note(Kind.ERROR, "answer without a response code (field 39)", "iso.no_rc", mti=resp.mti)
            t._fire(Event.RESPONSE)
            return await self._unknown_outcome(kind, fail_head, jid, reversible is not None, Msg.FORMAT_ERROR,
                                               RC.NO_RESPONSE, amount=amount, card=card, info=info, code="iso.no_rc")
        t._note(Kind.NOTE, "host answer", f"host.rc.{rc}", rc=rc)
        if rc == RC.DUPLICATE.value and not resent:
            # the host saw this STAN today for another transaction (a reinstalled terminal): it moved
            # nothing; send the transaction again, once, under the next STAN
            t.journal.complete(jid, Status.DECLINED, rc=rc, screen=Msg.DUPLICATE.value, reversal=Reversal.NONE)
            t.trace.record(Kind.NOTE, "host refused a reused STAN (94): resending under a new STAN", stan=stan)
            t._fire(Event.RESEND)
            return await self.run(txn, kind, card, amount, pin_block, fail_head, resent=True, kernel=kernel,
                                  ref=ref, original_id=original_id)
        if rc != "00":
            t._fire(Event.RESPONSE)
            detail = t._rc_screen(rc)
            if rc in KEYS_REFUSED:
                t.machine.session.keys = None
                t.machine.session.sign_on_owed = True
            t.journal.complete(jid, Status.DECLINED, rc=rc, screen=detail.value, reversal=Reversal.NONE,
                               rrn=info.rrn, auth_code=info.auth_code)
            return await t._fail(kind, fail_head, Failure(detail, f"host.rc.{rc}", f"declined {rc}",
                                                          Event.RESPONSE),
                                 amount=amount, card=card, rc=rc, journal_id=jid, fired=True, ref=info)
        balance, currency = self._balance(resp)
        if txn is TxnType.BALANCE and balance is None and (t.cfg.dialect.balance_missing == "error"
                                                           or resp.get(t.cfg.dialect.balance_field) is not None):
            t._fire(Event.RESPONSE)
            t._note(Kind.ERROR, "balance missing from the answer", "iso.no_balance")
            t.journal.complete(jid, Status.DECLINED, rc=rc, screen=Msg.FORMAT_ERROR.value)
            return await t._fail(kind, fail_head, Failure(Msg.FORMAT_ERROR, "iso.no_balance", "no balance",
                                                          Event.RESPONSE),
                                 amount=amount, card=card, rc=rc, journal_id=jid, fired=True, ref=info)
        if pulled:
            # the chip card left while the host was deciding: the transaction cannot be completed
            t._fire(Event.RESPONSE)
            return await self._unknown_outcome(kind, fail_head, jid, reversible is not None,
                                               Msg.CARD_REMOVED_EARLY, RC.TERMINAL_ERROR, rc=rc, amount=amount,
                                               card=card, info=info, removal=True)
        if kernel is not None:
            declined = await t.card.complete_with_card(kernel, rc)
            if declined is not None:
                return await self._unknown_outcome(kind, fail_head, jid, reversible is not None, declined.detail,
                                                   RC.TERMINAL_ERROR, rc=rc, amount=amount, card=card, info=info,
                                                   removal=declined.removal, code=declined.code,
                                                   error=declined.reason)
        else:
            t._fire(Event.RESPONSE)
        approved_head = Msg.APPROVED
        if txn is TxnType.BALANCE:
            approved_head = Msg.APPROVED_BALANCE if balance is not None else Msg.APPROVED_NO_BALANCE
        t.journal.complete(jid, Status.APPROVED, rc=rc, screen=approved_head.value, reversal=Reversal.NONE,
                           rrn=info.rrn, auth_code=info.auth_code)
        t._link_original(txn, jid, original_id)
        if txn is TxnType.BALANCE:
            head = approved_head
            if balance is None:      # the dialect shows an approval without a balance (balance_missing)
                t._note(Kind.NOTE, "approved without a balance", "iso.no_balance")
                t.show(head)
            else:
                t.show(head, balance=format_amount(balance, currency))
        else:
            head = Msg.APPROVED
            t.show(head, **t._amount_params(amount))
        out = await t._finish(kind, True, head, None, rc=rc, journal_id=jid, shown=True, amount=amount,
                              card=card, ref=info)
        out.balance, out.currency = balance, currency
        return out

    def _balance(self, resp: object) -> tuple[int | None, str]:
        from protocol.iso import Message

        t = self.t
        assert isinstance(resp, Message)
        try:            # the field and format the host's dialect names (54, ISO 8583:1987 additional amounts)
            got = t.cfg.dialect.read_balance(resp, t.cfg.currency)
        except PosemuError as e:
            t.trace.record(Kind.ERROR, "bad balance field", error=str(e), code="iso.bad_balance")
            got = None
        return got if got is not None else (None, t.cfg.currency)

    async def _host_failed(self, kind: str, fail_head: Msg, e: HostLinkError, jid: int, stan: str, reversible: bool,
                           amount: int | None, card: CardData) -> Outcome:
        t = self.t
        t._note(Kind.ERROR, "no usable answer from the host", e.code, error=str(e))
        t._fire(Event.HOST_FAILED)
        detail = error_screen(e)
        sent = not isinstance(e, DnsError | ConnectError)
        if not sent:
            t.journal.complete(jid, Status.FAILED, screen=detail.value, reversal=Reversal.NONE)
            return await t._fail(kind, fail_head, Failure(detail, e.code, str(e), Event.HOST_FAILED),
                                 amount=amount, card=card, journal_id=jid, fired=True, ref=Ref(stan))
        return await self._unknown_outcome(kind, fail_head, jid, reversible, detail, RC.NO_RESPONSE, amount=amount,
                                           card=card, info=Ref(stan), fired=True, error=str(e), code=e.code)

    async def _unknown_outcome(self, kind: str, fail_head: Msg, jid: int, reversible: bool, detail: Msg, reason: RC, *,
                               rc: str | None = None, amount: int | None, card: CardData,
                               info: Ref, removal: bool = False, fired: bool = True,
                               error: str | None = None, code: str | None = None) -> Outcome:
        """The request may have moved money and we do not know: a purchase is reversed."""
        t = self.t
        rev = Reversal.PENDING if reversible else Reversal.NONE
        status = Status.UNKNOWN
        t.journal.complete(jid, status, rc=rc, screen=detail.value, reversal=rev,
                           reason=reason.value if reversible else None)
        failure = Failure(detail, code or reason.value, error or detail.value, Event.HOST_FAILED, removal=removal)
        out = await t._fail(kind, fail_head, failure, amount=amount, card=card, rc=rc, journal_id=jid, fired=fired,
                            ref=info)
        if reversible:
            await t._send_pending_reversals()
        return out
