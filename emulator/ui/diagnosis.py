"""The diagnosis pane: after a failure, what the screen said, why, the evidence and the remedy.

Two sources, best first:

1. the fault package's diagnosis (cause ids from ``../shared/fault-causes.md`` with evidence and
   the article's remedy), through :class:`emulator.ui.faults_adapter.FaultsAdapter.diagnose`;
2. until that exists (or when it names nothing), the built-in :data:`HINTS`: for each screen
   message, the causes that commonly produce it and what to check.

The evidence is taken from the masked trace: errors, reader and link events, and the host's
response code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from emulator.messages import Lang, Msg, Screen, format_amount, render
from emulator.terminal import Outcome
from emulator.trace import Kind, TraceEntry
from emulator.ui.faults_adapter import CauseReport


@dataclass(frozen=True, slots=True)
class Hint:
    """The built-in explanation of one terminal message: the cause ids that commonly produce it
    (``../shared/fault-causes.md``), why it appears and what to check."""

    causes: tuple[str, ...]
    why: str
    check: str


HINTS: dict[Msg, Hint] = {
    Msg.WRONG_PIN: Hint(("A12", "A20"), "The host answered 55: the PIN does not match the issuer's record.",
                        "Re-enter the PIN carefully; repeated wrong PINs lock the card (75)."),
    Msg.PIN_TRIES_EXCEEDED: Hint(("A12",), "The host answered 75: too many wrong PINs, the card is locked.",
                                 "The cardholder must contact the issuer to reset the PIN."),
    Msg.SWIPE_AGAIN: Hint(("A10", "A11", "A13", "A14", "A15"),
                          "The reader could not decode track 2 (see the swipe view for where it broke).",
                          "Swipe at a steady, moderate speed with the card level; check the stripe for "
                          "damage and the head for dirt; keep away from strong magnetic fields."),
    Msg.READER_ERROR: Hint(("A1", "A2", "A18", "B1", "B2"),
                           "The chip did not answer properly (ATR or APDU failed).",
                           "Clean the card contacts and the reader slot; measure contact resistance; "
                           "try another card and another reader."),
    Msg.FALLBACK_SWIPE: Hint(("A1", "B2", "B9"), "The chip failed repeatedly, so the terminal fell back to the stripe.",
                             "Check the card is inserted fully and the right way round; clean the contacts."),
    Msg.NO_READER: Hint(("B1", "B5", "B18"), "No card reader was found (PC/SC service or driver, cable).",
                        "Check that pcscd runs and the reader is listed (`posemu readers`); reinstall the driver."),
    Msg.REMOVE_CARD_FAILED: Hint(("B2", "B9", "B18"),
                                 "The card-seat switch still reported a card after the removal timeout.",
                                 "Remove the card; if it is out and the terminal still sees it, the seat switch "
                                 "is stuck or dirty — clean or service the reader."),
    Msg.CARD_REMOVED_EARLY: Hint(("B9", "B10"), "The card left the slot while the chip was being read.",
                                 "Leave the card inserted until the terminal says 请拔卡 / Remove card."),
    Msg.TIMEOUT: Hint(("A8", "A22", "B7", "B11"), "No answer in time (host response or card presentation).",
                      "Check the network path and the host's load; retry off-peak; a purchase is reversed."),
    Msg.CONNECT_FAILED: Hint(("A7", "A22", "B7"), "The TCP connection to the host could not be made.",
                             "Check the host address and port in the settings and that the host is up."),
    Msg.DNS_FAILED: Hint(("A9",), "The host name could not be resolved.", "Check the DNS servers and the host name."),
    Msg.LINK_LOST: Hint(("A7", "A22", "B7"), "The connection broke while the answer was awaited.",
                        "Check WiFi/network stability; the terminal reverses an unknown purchase."),
    Msg.HOST_BUSY: Hint(("A8", "B11"), "The host answered 91/96: it is overloaded or unavailable.",
                        "Retry later, off-peak."),
    Msg.NOT_PERMITTED: Hint(("A21", "B8"), "The host refused: the card or terminal lacks the permission (57/58).",
                            "The bank or administrator must grant the permission."),
    Msg.RESTRICTED_CARD: Hint(("A21", "B8"), "The account is restricted (62).", "Contact the issuer."),
    Msg.VERSION_REJECTED: Hint(("A4", "A19"), "The host no longer accepts this terminal software version (A4).",
                               "Upgrade the terminal software (settings: software_version)."),
    Msg.MAC_ERROR: Hint(("A19", "B17"), "The message authentication code did not verify (wrong or stale keys).",
                        "Sign on again to load fresh working keys; check the terminal master key."),
    Msg.CARD_NOT_SUPPORTED: Hint(("A5", "B6"), "This card type is switched off in the terminal's configuration.",
                                 "Correct the card type / track settings (settings: disabled_entry)."),
    Msg.SIGN_ON_REQUIRED: Hint(("B10", "B19"), "A transaction was started before signing on.",
                               "Sign on first (menu 1, or s)."),
    Msg.TERMINAL_LOCKED: Hint(("B12",), "Too many wrong operator passwords locked the terminal.",
                              "Reset the operator password (reopen the terminal from the settings)."),
    Msg.PIN_BLOCKED: Hint(("A12",), "The chip's PIN try counter is exhausted.", "The issuer must unblock the PIN."),
    Msg.EXPIRED_CARD: Hint(("A20",), "The card has expired (54).", "Use a valid card."),
    Msg.INVALID_CARD: Hint(("A20",), "The host does not know this card (14).", "Check the card number."),
    Msg.INSUFFICIENT_FUNDS: Hint((), "The account balance is too low (51).", "Use a smaller amount or another card."),
    Msg.FORMAT_ERROR: Hint(("A19",), "A message could not be processed (30 or a malformed field).",
                           "Check the ISO 8583 profile and the host's logs."),
    Msg.CANCELLED: Hint(("A17",), "The transaction was cancelled.", "Start it again."),
    Msg.SYSTEM_ERROR: Hint(("A19", "B4"), "The terminal software failed (see the error in the trace).",
                           "Restart the terminal; report the error with the exported trace."),
}

EVIDENCE_KINDS = frozenset({Kind.ERROR, Kind.READER, Kind.TCP, Kind.APDU, Kind.NOTE, Kind.JOURNAL, Kind.ISO_IN})


def evidence(entries: Sequence[TraceEntry], limit: int = 8) -> list[str]:
    """The last few trace entries that explain a failure (never card data: the trace is masked)."""
    picked: list[str] = []
    for e in entries:
        if e.kind not in EVIDENCE_KINDS:
            continue
        if e.kind is Kind.ISO_IN:
            rc = e.data.get("fields", {}).get("39")
            picked.append(f"{e.t:8.3f} ← {e.what} rc {rc}")
            continue
        extra = "  ".join(f"{k}={v}" for k, v in e.data.items() if k != "fields")
        picked.append(f"{e.t:8.3f} {e.kind.value} {e.what}" + (f"  {extra}" if extra else ""))
    return picked[-limit:]


def built_in(outcome: Outcome) -> list[CauseReport]:
    """Cause hints from the screen messages the terminal showed (detail first)."""
    out: list[CauseReport] = []
    for msg in (outcome.detail, outcome.headline):
        hint = HINTS.get(msg) if msg is not None else None
        if hint is not None:
            out.append(CauseReport(hint.causes, hint.why, (), hint.check, "built-in hint"))
    return out


def transaction_data(out: Outcome) -> list[tuple[str, str]]:
    """What a result carries, as the receipt names it (only what the action has): amount, card
    (masked 6+4), entry mode, authorization code (38), reference number (37), voucher (STAN, 11),
    batch, terminal and merchant ids, time and the final screen code; a settlement's batch totals."""
    rows = [("金额 Amount", format_amount(out.amount, out.currency) if out.amount else ""),
            ("卡号 Card", out.pan_masked), ("输入方式 Entry", out.entry),
            ("授权码 Auth code", out.auth_code or ""), ("参考号 Ref. no. (RRN)", out.rrn or ""),
            ("凭证号 Voucher (STAN)", out.stan or ""), ("批次号 Batch", out.batch),
            ("终端号 TID", out.tid), ("商户号 MID", out.mid), ("时间 Time", out.when),
            ("屏幕 Screen", out.headline.value)]
    if out.totals is not None:
        t = out.totals
        rows[1:1] = [("借记 Debits", f"{t.debit_count} · {format_amount(t.debit_amount, out.currency)}"),
                     ("贷记 Credits", f"{t.credit_count} · {format_amount(t.credit_amount, out.currency)}")]
    return [(k, v) for k, v in rows if v]


class DiagnosisPane(Static):
    """What went wrong with the last action: its outcome, the causes and the evidence of its own
    trace (the entries of that action only, never an earlier one's)."""

    plain = ""
    """The pane's text without styles (what a user reads; used by tests)."""

    def show_nothing(self) -> None:
        t = Text("No failure yet. After a failed transaction its diagnosis appears here.", "#839496")
        self.plain = t.plain
        self.update(t)

    def show_approved(self, outcome: Outcome, lang: Lang) -> None:
        """The last action went through: nothing of an earlier failure stays on show."""
        t = Text()
        t.append(render(Screen(outcome.headline), lang), "bold #2aa198")
        t.append(f"\nThe last action ({outcome.kind}) was approved: nothing to diagnose.", "#839496")
        data = transaction_data(outcome)
        if data:
            t.append("\n")
            for label, value in data:
                t.append(f"\n{label:<22}", "#839496")
                t.append(value)
        self.plain = t.plain
        self.update(t)

    def show_outcome(self, outcome: Outcome, entries: Sequence[TraceEntry], lang: Lang,
                     reports: Sequence[CauseReport] = ()) -> None:
        parts: list[Text] = []
        head = Text()
        head.append(render(Screen(outcome.headline), lang), "bold #dc322f")
        parts.append(head)
        if outcome.detail is not None:
            d = Text("  ↳ ")
            d.append(render(Screen(outcome.detail, {"rc": outcome.rc or ""}), lang), "bold")
            if outcome.rc:
                d.append(f"   rc {outcome.rc}")
            parts.append(d)
        if outcome.error:
            parts.append(Text(f"  error: {outcome.error}", "#839496"))
        causes = list(reports) or built_in(outcome)
        if causes:
            parts.append(Text(""))
            for c in causes:
                t = Text()
                if c.confidence is not None:
                    t.append(f"{c.confidence:.0%} ", "bold #dc322f")
                t.append("causes " + (" ".join(c.cause_ids) or "—"), "bold #b58900")
                t.append(f"  ({c.group or c.source})", "#839496")
                parts.append(t)
                parts.append(Text(f"  {c.summary}"))
                for ev in c.evidence:
                    parts.append(Text(f"  · {ev}", "#839496"))
                if c.remedy:
                    r = Text("  remedy: ", "bold")
                    r.append(c.remedy, "")
                    parts.append(r)
        trail = evidence(entries)
        if trail:
            parts.append(Text(""))
            parts.append(Text("evidence (trace)", "bold"))
            for line in trail:
                parts.append(Text(f"  {line}", "#839496", no_wrap=True, overflow="ellipsis"))
        self.plain = "\n".join(p.plain for p in parts)
        self.update(Group(*parts))
