"""How a command prints a transaction's outcome: one ``result:`` line, or a JSON document.

Both carry what a payments engineer looks for (issue 12): amount, masked PAN (6+4), STAN (11),
RRN (37), authorization code (38), batch, TID/MID, date and time, entry mode and the screen codes.
The ``result:`` line is ``key=value`` pairs after the status, so a CI step can grep it.
"""

from __future__ import annotations

from typing import Any

from emulator.messages import format_amount
from emulator.terminal import Outcome


def outcome_doc(out: Outcome) -> dict[str, Any]:
    """The outcome as JSON-ready data (PAN masked; no card data beyond it)."""
    doc: dict[str, Any] = {
        "kind": out.kind, "approved": out.approved, "headline": out.headline.value,
        "detail": out.detail.value if out.detail else None, "rc": out.rc, "amount": out.amount,
        "currency": out.currency, "balance": out.balance, "pan": out.pan_masked or None, "entry": out.entry or None,
        "stan": out.stan, "rrn": out.rrn, "auth_code": out.auth_code, "batch": out.batch, "tid": out.tid,
        "mid": out.mid, "time": out.when, "journal_id": out.journal_id, "original_id": out.original_id,
        "screens": out.codes, "evidence": out.evidence,
    }
    if out.totals is not None:
        t = out.totals
        doc["totals"] = {"debit_amount": t.debit_amount, "debit_count": t.debit_count,
                         "credit_amount": t.credit_amount, "credit_count": t.credit_count}
    return doc


def result_line(out: Outcome, *, ok: bool | None = None) -> str:
    """``result: APPROVED APPROVED rc=00 kind=purchase amount=12.50 currency=CNY pan=… stan=… rrn=… auth=…``;
    ``ok`` overrides the status (an approval whose card could not be taken out is ``FAILED``)."""
    status = "APPROVED" if (out.approved if ok is None else ok) else "FAILED"
    detail = f" ({out.detail.value})" if out.detail else ""
    head = f"result: {status} {out.headline.value}{detail}" + (f" rc={out.rc}" if out.rc else "")
    pairs: list[tuple[str, str | None]] = [
        ("kind", out.kind),
        ("amount", _money(out.amount)), ("balance", _money(out.balance)),
        ("currency", _currency(out.currency) if out.amount is not None or out.balance is not None else None),
        ("pan", out.pan_masked or None), ("entry", out.entry or None), ("stan", out.stan), ("rrn", out.rrn),
        ("auth", out.auth_code), ("batch", out.batch or None), ("tid", out.tid or None), ("mid", out.mid or None),
        ("time", out.when or None), ("journal", str(out.journal_id) if out.journal_id is not None else None),
    ]
    return head + "".join(f" {k}={v}" for k, v in pairs if v)


def _money(minor: int | None) -> str | None:
    if minor is None:
        return None
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


def _currency(code: str) -> str:
    return format_amount(0, code).split(" ")[0]
