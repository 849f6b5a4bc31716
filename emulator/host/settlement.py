"""Settlement on the host: the host's totals of a terminal's batch (:func:`batch_totals`), the
settlement request 0500 compared against them (:func:`settle`) and the batch upload 0320 of one
transaction (:func:`batch_upload`). Each answer is the response message; the message shapes and field
48's layout are in :mod:`protocol.txn`."""

from __future__ import annotations

import logging
from dataclasses import replace

from emulator.host.store import HostStore
from protocol.errors import PosemuError
from protocol.iso import Message, Value
from protocol.specs import Profile
from protocol.txn import RC, BatchTotals, Field60, OriginalRef, SettleCode, response_to

log = logging.getLogger("posemu.host")


def _respond(profile: Profile, req: Message, rc: RC, **extra: Value) -> Message:
    return response_to(req, rc, tpdu_len=profile.tpdu_len, **extra)


def batch_totals(store: HostStore, tid: str, batch: str) -> BatchTotals:
    """The host's totals of a terminal's batch: approved, unreversed, unvoided purchases and
    completions (debits), refunds (credits)."""
    debit = credit = nd = nc = 0
    for t in store.find_txs(tid, batch=batch, kinds=("purchase", "completion", "refund")):
        if t.rc != RC.APPROVED.value or t.reversed or t.voided:
            continue
        if t.kind == "refund":
            credit, nc = credit + t.amount, nc + 1
        else:
            debit, nd = debit + t.amount, nd + 1
    return BatchTotals(debit, nd, credit, nc)


def settle(store: HostStore, profile: Profile, req: Message, tid: str) -> Message:
    """0500: ``00`` (48 flag ``1``) when the terminal's totals agree with ours or it has uploaded
    its batch (60.3 ``202``), ``95`` (flag ``2``) when they do not; a batch settled before is
    answered the same way again."""
    f60, f48 = req.get(60), req.get(48)
    try:
        head = Field60.parse(f60) if isinstance(f60, str) else None
        theirs = BatchTotals.parse(f48) if isinstance(f48, str) else None
    except PosemuError:
        head = theirs = None
    if head is None or theirs is None:
        return _respond(profile, req, RC.FORMAT_ERROR)
    done = store.settlement(tid, head.batch)
    ours = batch_totals(store, tid, head.batch)
    after_upload = head.net_code == SettleCode.AFTER_UPLOAD.value
    agreed = done is not None or after_upload or theirs.same_totals(ours)
    if agreed:
        store.begin()
        uploads = 0
        for t in store.find_txs(tid, batch=head.batch):
            uploads += t.uploaded
            if not t.settled:
                store.update_tx(t.id, settled=1)
        if done is None:
            store.record_settlement(tid, head.batch, theirs.encode(), agreed=theirs.same_totals(ours),
                                    uploads=uploads)
        store.commit()
        log.info("terminal %s batch %s settled%s", tid, head.batch, " after batch upload" if after_upload
                 else "")
    else:
        log.info("terminal %s batch %s: totals differ (ours %s): 95", tid, head.batch, ours.encode())
    reply = replace(theirs, flag="1" if agreed else "2", foreign_flag="1")
    return _respond(profile, req, RC.APPROVED if agreed else RC.RECONCILE_ERROR, f48=reply.encode())


def batch_upload(store: HostStore, profile: Profile, req: Message, tid: str) -> Message:
    """0320: one transaction of the batch, found by its batch + STAN + date (61); recorded as
    uploaded. One the host does not know is answered ``00`` and logged: the terminal's batch is
    what settles."""
    f61 = req.get(61)
    try:
        batch, stan, date = OriginalRef.parse61(f61) if isinstance(f61, str) else ("", "", "")
    except PosemuError:
        return _respond(profile, req, RC.FORMAT_ERROR)
    found = store.find_txs(tid, stan=stan, date=date, batch=batch) if stan else []
    mine = [t for t in found if t.mti not in ("0400", "0320")]
    if mine:
        store.begin()
        store.update_tx(mine[0].id, uploaded=1)
        store.commit()
    else:
        log.warning("batch upload from %s: STAN %s of batch %s is not in the host's log", tid, stan, batch)
    return _respond(profile, req, RC.APPROVED)
