"""The standard transaction set against its originals, on the host: which logged transaction a void,
refund or completion names (:func:`find_original`), the money each moves on the cardholder's account
(:func:`money_effect`; a pre-authorization's hold counts as moved), what it changes on its original
(:func:`link`) and how a reversal undoes that (:func:`undo_links`). Functions over the
:class:`HostStore`; the caller opens and commits the store's transaction."""

from __future__ import annotations

from emulator.host.store import CardRow, HostStore, TxRow
from protocol.errors import PosemuError
from protocol.iso import Message
from protocol.txn import RC, OriginalRef, TxnType


def find_original(store: HostStore, req: Message, tid: str, txn: TxnType, card: CardRow,
                  amount: int) -> TxRow | RC:
    """The transaction a void, refund or completion names (field 61 batch + STAN [+ date], 37
    RRN, 38 authorization code), or why it cannot be acted on: ``25`` not found (or another
    card's), ``64`` not its amount, ``12`` already voided, completed, reversed or settled."""
    want = {TxnType.VOID: ("purchase",), TxnType.PREAUTH_VOID: ("preauth",), TxnType.COMPLETION: ("preauth",),
            TxnType.COMPLETION_VOID: ("completion",), TxnType.REFUND: ("purchase", "completion")}[txn]
    rrn = req.get(37)
    auth = req.get(38)
    f61 = req.get(61)
    try:
        batch, ostan, odate = OriginalRef.parse61(f61) if isinstance(f61, str) else ("", "", "0000")
    except PosemuError:
        return RC.FORMAT_ERROR
    candidates: list[TxRow] = []
    if txn is TxnType.REFUND and isinstance(rrn, str):
        found = store.find_by_rrn(rrn)      # a refund may name another terminal's sale
        candidates = [found] if found is not None else []
    elif ostan:
        candidates = [t for t in store.find_txs(tid, stan=ostan, date=None if odate == "0000" else odate,
                                                kinds=want) if t.batch in (batch, None)]
    orig = next((t for t in candidates if t.kind in want and t.rc == RC.APPROVED.value), None)
    if orig is None or orig.account_id != card.account_id:
        return RC.UNKNOWN_ORIGINAL
    if (isinstance(rrn, str) and orig.rrn and rrn != orig.rrn) or (
            isinstance(auth, str) and txn is not TxnType.REFUND and orig.auth_code and auth != orig.auth_code):
        return RC.UNKNOWN_ORIGINAL
    if orig.reversed or orig.voided:
        return RC.INVALID_TRANSACTION
    if txn is TxnType.REFUND:
        return orig if amount <= orig.amount - orig.refunded else RC.INVALID_AMOUNT
    if txn is TxnType.COMPLETION:
        if orig.completed:
            return RC.INVALID_TRANSACTION
        return orig if amount * 100 <= orig.amount * 115 else RC.ORIGINAL_AMOUNT_INCORRECT
    if orig.settled or (txn is TxnType.PREAUTH_VOID and orig.completed):
        return RC.INVALID_TRANSACTION
    return orig if amount == orig.amount else RC.ORIGINAL_AMOUNT_INCORRECT


def money_effect(store: HostStore, txn: TxnType, amount: int, orig: TxRow | None) -> int:
    """The money a transaction moves on the cardholder's account (a hold counts as moved)."""
    if txn is TxnType.PREAUTH:
        return -amount
    assert orig is not None
    if txn is TxnType.COMPLETION:               # release the hold, take the amount
        return orig.amount - amount
    if txn is TxnType.COMPLETION_VOID:          # give the amount back, hold the pre-authorization again
        pre = store.tx(orig.target) if orig.target is not None else None
        return amount - (pre.amount if pre is not None and not pre.voided and not pre.reversed else 0)
    return amount                               # void, pre-auth void, refund: back to the cardholder


def link(store: HostStore, txn: TxnType, orig: TxRow, amount: int) -> None:
    """What a transaction of the set changes on its original (voided, completed, refunded so far)."""
    if txn in (TxnType.VOID, TxnType.PREAUTH_VOID):
        store.update_tx(orig.id, voided=1)
    elif txn is TxnType.COMPLETION:
        store.update_tx(orig.id, completed=1)
    elif txn is TxnType.COMPLETION_VOID:
        store.update_tx(orig.id, voided=1)
        if orig.target is not None:
            store.update_tx(orig.target, completed=0)
    elif txn is TxnType.REFUND:
        store.update_tx(orig.id, refunded=orig.refunded + amount)


def undo_links(store: HostStore, row: TxRow) -> None:
    """A reversed transaction's changes to its original, undone."""
    orig = store.tx(row.target) if row.target is not None else None
    if orig is None:
        return
    if row.kind in ("void", "preauth_void"):
        store.update_tx(orig.id, voided=0)
    elif row.kind == "completion":
        store.update_tx(orig.id, completed=0)
    elif row.kind == "completion_void":
        store.update_tx(orig.id, voided=0)
        if orig.target is not None:
            store.update_tx(orig.target, completed=1)
    elif row.kind == "refund":
        store.update_tx(orig.id, refunded=max(0, orig.refunded - row.amount))
