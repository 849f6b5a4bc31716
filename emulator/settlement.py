"""Settlement 结算 and batch upload: the close of a terminal's batch.

:class:`Settlement` is owned by :class:`emulator.terminal.Terminal` and works with the terminal's
journal, host link, identities and flow record (screens, evidence, the :mod:`emulator.fsm` events it
fires through the terminal's machine). 0500 carries the batch totals (field 48); when the host's
totals differ (response code 95) every transaction of the batch is uploaded (0320) and the 0500 is
sent again (60.3 202). Settled, the batch is closed in the journal and a new batch opens.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from emulator.errors import HostLinkError, JournalError
from emulator.fsm import Event
from emulator.hostlink import Exchange
from emulator.journal import Entry, Status
from emulator.messages import Msg, format_amount
from emulator.originals import ref_of
from emulator.outcome import KEYS_REFUSED, Outcome, Ref, error_screen, text
from emulator.trace import Kind
from protocol.txn import (
    RC,
    BatchTotals,
    TerminalIds,
    TxnType,
    UploadItem,
    batch_upload_request,
    settlement_request,
)

if TYPE_CHECKING:
    from emulator.terminal import Terminal


class Settlement:
    """The settlement of the open batch, for the terminal that owns it (see the module docstring)."""

    def __init__(self, terminal: Terminal) -> None:
        self.t = terminal

    def batch_totals(self) -> tuple[BatchTotals, list[Entry]]:
        """The open batch's totals as the terminal sees them (approved, unvoided purchases and
        completions are debits, refunds credits) and the transactions a batch upload sends."""
        debit = credit = nd = nc = 0
        items: list[Entry] = []
        for e in self.t.journal.batch_entries(self.t.ids.batch):
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

    async def run(self) -> Outcome:
        """Settle, once the terminal has begun the flow (signed on, not busy, reversals sent)."""
        t = self.t
        cfg = t.cfg
        keys = t.keys
        assert keys is not None
        if t.journal.pending_reversals():
            t._note(Kind.JOURNAL, "settlement with reversals still pending", "settle.reversal_pending")
            t.show(Msg.SETTLE_FAILED)
            t.show(Msg.REVERSAL_PENDING)
            return t._end(t._outcome("settle", False, Msg.SETTLE_FAILED, Msg.REVERSAL_PENDING,
                                     error="reversals pending"))
        totals, items = self.batch_totals()
        batch = t.ids.batch
        t._fire(Event.SETTLE)
        t.show(Msg.SETTLING, batch=batch, debit=format_amount(totals.debit_amount, cfg.currency),
               debits=str(totals.debit_count), credit=format_amount(totals.credit_amount, cfg.currency),
               credits=str(totals.credit_count))
        now = t.clock.wall()
        try:
            stan = t._stan()
            jid = t.journal.begin(kind="settle", stan=stan, date=now.strftime("%m%d"),
                                  amount=totals.debit_amount - totals.credit_amount, currency=cfg.currency,
                                  batch=batch, tid=t.ids.tid, mid=t.ids.mid,
                                  original_ref={"debit": str(totals.debit_amount),
                                                "debits": str(totals.debit_count),
                                                "credit": str(totals.credit_amount),
                                                "credits": str(totals.credit_count)})
        except JournalError as e:
            t._note(Kind.ERROR, "journal not written: nothing sent", e.code, error=str(e))
            return self._failed(None, Msg.JOURNAL_FULL, error=str(e), totals=totals)
        try:
            ex = await t.link.exchange(settlement_request(t.profile, t.ids, totals, stan=stan, now=now,
                                                          currency=cfg.currency, operator=cfg.operator),
                                       mak=t._mak(keys))
            rc = self._answer(ex)
            if rc == RC.RECONCILE_ERROR.value:
                t._note(Kind.NOTE, "the host's totals differ: batch upload", "settle.totals_differ", items=len(items))
                t._fire(Event.UPLOAD)
                t.show(Msg.BATCH_UPLOAD, count=str(len(items)))
                for entry in items:
                    item = UploadItem(TxnType.from_kind(entry.kind) or TxnType.PURCHASE, entry.amount,
                                      ref_of(entry))
                    up = await t.link.exchange(batch_upload_request(t.profile, t.ids, item, stan=t._stan(),
                                                                    currency=cfg.currency),
                                               mak=t._mak(keys))
                    up_rc = self._answer(up)
                    if up_rc != "00":
                        return self._failed(jid, t._rc_screen(up_rc), rc=up_rc, totals=totals)
                t._fire(Event.SETTLE)
                ex = await t.link.exchange(settlement_request(
                    t.profile, t.ids, totals, stan=t._stan(), now=t.clock.wall(),
                    currency=cfg.currency, after_upload=True, operator=cfg.operator),
                    mak=t._mak(keys))
                rc = self._answer(ex)
        except HostLinkError as e:
            t._note(Kind.ERROR, "settlement not answered", e.code, error=str(e))
            return self._failed(jid, error_screen(e), error=str(e), totals=totals)
        except JournalError as e:
            t._note(Kind.ERROR, "journal not written", e.code, error=str(e))
            return self._failed(jid, Msg.JOURNAL_FULL, error=str(e), totals=totals)
        if rc != "00":
            return self._failed(jid, t._rc_screen(rc), rc=rc, totals=totals)
        t.journal.complete(jid, Status.APPROVED, rc=rc, screen=Msg.SETTLE_OK.value)
        settled = t.journal.settle_batch(batch)
        new_batch = f"{int(batch) % 999_999 + 1:06d}"
        t.journal.set_counter("batch", int(new_batch))
        t.ids = TerminalIds(t.ids.tid, t.ids.mid, t.ids.header, new_batch)
        t.trace.record(Kind.JOURNAL, "batch settled", batch=batch, transactions=settled, new_batch=new_batch)
        t._fire(Event.SETTLED)
        t.show(Msg.SETTLE_OK, batch=batch, new_batch=new_batch)
        out = t._outcome("settle", True, Msg.SETTLE_OK, rc=rc, journal_id=jid, amount=totals.debit_amount,
                         ref=Ref(stan, text(ex.response.get(37))))
        out.batch, out.totals = batch, totals
        return t._end(out)

    def _answer(self, ex: Exchange) -> str:
        """The response code of a settlement message, ``A0`` when its MAC is not right."""
        t = self.t
        rc = str(ex.response.get(39, ""))
        mac = t._response_mac(ex)
        if mac is not None:
            t._note(Kind.ERROR, "response MAC " + mac.value, f"mac.{mac.value}", mti=ex.response.mti, rc=rc)
            return RC.MAC_ERROR.value
        t._note(Kind.NOTE, "host answer", f"host.rc.{rc or 'none'}", rc=rc, mti=ex.response.mti)
        return rc

    def _failed(self, jid: int | None, detail: Msg, *, rc: str | None = None, error: str | None = None,
                totals: BatchTotals | None = None) -> Outcome:
        t = self.t
        if jid is not None:
            with contextlib.suppress(JournalError):
                t.journal.complete(jid, Status.FAILED if rc is None else Status.DECLINED, rc=rc,
                                   screen=detail.value)
        if rc in KEYS_REFUSED:
            t.machine.session.keys = None
            t.machine.session.sign_on_owed = True
        if t.machine.can(Event.SETTLE_FAILED):
            t._fire(Event.SETTLE_FAILED)
        t.show(Msg.SETTLE_FAILED)
        t.show(detail, rc=rc or "")
        out = t._outcome("settle", False, Msg.SETTLE_FAILED, detail, rc=rc, error=error, journal_id=jid,
                         amount=totals.debit_amount if totals else None)
        out.totals = totals
        return t._end(out)
