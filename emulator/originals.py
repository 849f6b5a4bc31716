"""A transaction against its original (void, completion, refund): the pure rules.

Whether the terminal will start it at all (:func:`refusal`, checked in its own journal before the
card is asked for), what the request names of the original (:func:`ref_of`) and what the journal
keeps of it (:func:`ref_doc`, for the receipt's 原凭证号/原参考号).
"""

from __future__ import annotations

from emulator.journal import Entry, Status
from emulator.messages import Msg
from protocol.txn import VOIDS, OriginalRef, TxnType


def refusal(txn: TxnType, original: Entry | None, amount: int | None) -> tuple[Msg, str] | None:
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

def ref_of(original: Entry) -> OriginalRef:
    """What a request names of a journal row: its batch, STAN, date, RRN and authorization code."""
    batch = original.batch if len(original.batch) == 6 and original.batch.isdigit() else "000000"
    rrn = original.rrn if original.rrn and len(original.rrn) == 12 else None
    return OriginalRef(batch, original.stan, original.date, rrn=rrn, auth_code=original.auth_code or None)


def ref_doc(ref: OriginalRef | None) -> dict[str, str] | None:
    """What the journal keeps of the original a transaction names (for the receipt's 原凭证号/原参考号)."""
    if ref is None:
        return None
    doc = {"batch": ref.batch, "stan": ref.stan, "date": ref.date}
    if ref.rrn:
        doc["rrn"] = ref.rrn
    if ref.auth_code:
        doc["auth_code"] = ref.auth_code
    return doc
