"""The receipt (签购单) on screen: a journal row's slip in the usual two copies, with the copy to show
and export to text or PDF — the desktop's view of :mod:`emulator.receipt`, what ``posemu receipt``
prints. Every receipt shown here is a reprint (重打印 / DUPLICATE): the terminal printed the original
when the transaction was approved.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from emulator.journal import Entry
from emulator.receipt import Copy, Merchant, pdf_bytes, receipt_text
from protocol.errors import PosemuError

COPIES: tuple[tuple[str, tuple[Copy, ...]], ...] = (
    ("both", (Copy.MERCHANT, Copy.CARDHOLDER)), ("merchant", (Copy.MERCHANT,)), ("cardholder", (Copy.CARDHOLDER,)),
)
"""The copies shown, in the order ``m`` steps through them."""


def receipt_path(folder: Path, entry: Entry, suffix: str) -> Path:
    """Where the receipt of ``entry`` is saved: ``<state>/receipts/receipt-<id>-<voucher>.<suffix>``."""
    return folder / f"receipt-{entry.id}-{entry.stan or 'none'}.{suffix}"


class ReceiptScreen(ModalScreen[None]):
    """One journal row's receipt: ``m`` the copies (both, merchant, cardholder), ``t`` saves it as
    text, ``p`` as PDF (in ``<state>/receipts/``); Esc, Enter or q closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "close", "Close"),
        Binding("m", "copies", "Copies"),
        Binding("t", "save('txt')", "Save text"),
        Binding("p", "save('pdf')", "Save PDF"),
    ]

    def __init__(self, entry: Entry, *, merchant: Merchant, folder: Path) -> None:
        super().__init__()
        self.entry = entry
        self.merchant = merchant
        self.folder = folder
        self.which = 0
        self.saved: list[Path] = []

    @property
    def copies(self) -> tuple[Copy, ...]:
        return COPIES[self.which][1]

    def text(self) -> str:
        """The receipt as shown (and as saved to text)."""
        return receipt_text(self.entry, copies=self.copies, merchant=self.merchant, reprint=True)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="receipt-body"):
            yield Label(self._title(), id="receipt-title", classes="dialog-title")
            with VerticalScroll(id="receipt-scroll"):
                yield Static(self.text(), id="receipt-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copies m", id="receipt-copies", compact=True)
                yield Button("Text t", id="receipt-txt", compact=True)
                yield Button("PDF p", id="receipt-pdf", compact=True)
                yield Button("Close Esc", id="receipt-close", compact=True)

    def _title(self) -> str:
        e = self.entry
        return f"签购单 Receipt #{e.id} · {e.kind} · voucher {e.stan or '—'} · {COPIES[self.which][0]}"

    def on_mount(self) -> None:
        self.query_one("#receipt-scroll").focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        which = event.button.id or ""
        if which == "receipt-copies":
            self.action_copies()
        elif which == "receipt-close":
            self.action_close()
        elif which in ("receipt-txt", "receipt-pdf"):
            self.action_save(which.removeprefix("receipt-"))

    def action_copies(self) -> None:
        self.which = (self.which + 1) % len(COPIES)
        self.query_one("#receipt-text", Static).update(self.text())
        self.query_one("#receipt-title", Label).update(self._title())

    def action_save(self, suffix: str) -> None:
        path = receipt_path(self.folder, self.entry, suffix)
        try:
            data = (pdf_bytes(self.entry, copies=self.copies, merchant=self.merchant, reprint=True)
                    if suffix == "pdf" else self.text().encode())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except (OSError, PosemuError) as e:
            self.notify(f"Receipt not saved: {e}", severity="error", timeout=10)
            return
        self.saved.append(path)
        self.notify(f"Receipt saved: {path}")

    def action_close(self) -> None:
        self.dismiss(None)
