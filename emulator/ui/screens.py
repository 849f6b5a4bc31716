"""Modal screens: help, journal, settings (TOML load/save) and trace export."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Markdown, Select, Static

from emulator import config as configmod
from emulator.journal import Entry, Journal
from emulator.messages import format_amount
from emulator.receipt import Merchant
from emulator.ui.receipt_screen import ReceiptScreen
from protocol.errors import ConfigError, PosemuError

HELP = """\
# posemu — desktop POS terminal emulator

**Quick start**: the terminal signs on by itself. Press **b** (or **2**) for a balance
inquiry, **w** to swipe the selected test card, then type the PIN on the keypad (or press
**k**: the virtual cardholder types the test card's PIN) and **Enter**.

## The terminal
| key | keypad | does |
|---|---|---|
| 0–9 | digits | menu choice, PIN, amount, password |
| Enter | 确认 | confirm |
| Esc | 取消 | cancel: PIN entry, waiting for a card or for the host |
| Backspace | 更正 | correct the last digit |
| m | 菜单 | back to the main menu |
| s / 1 | | sign on |
| b / 2 | | balance inquiry |
| p / 3 | | purchase (type the amount in cents, Enter) |
| j / 4 | | journal (PANs masked 6+4) |
| c / 5 | | settings (operator password first; default 0000) |
| o / 6 | | operator password; when locked, the administrator password unlocks |
| v / 7 | | send pending reversals |
| 8 | | 其他交易: 1 撤销 void · 2 退货 refund · 3 预授权 · 4 预授权完成 · 5 结算 settle · 6 签退 |
| 9 | | 重打印 the receipt (签购单) of the last transaction: m copies, t save text, p save PDF |
| l | | screen language: 中文 / English / both |

**The transaction set** (8): a void asks for the original's voucher number (凭证号, as printed on
its receipt; leading zeros may be left out) and voids a purchase, pre-authorization or completion;
a completion asks for the pre-authorization's voucher number and the amount (Enter alone: the
pre-authorized amount); a refund asks for the original's voucher number — or, for a sale of another
batch, its 12-digit reference number (参考号) — and the amount (Enter alone: the whole sale). The
terminal refuses what cannot be done (already voided, settled, more than the original) before it
asks for the card. In the **journal** (4) the row under the cursor can be picked instead: **Enter**
shows its receipt, **v** voids it, **f** refunds it, **c** completes it.

## The card
| key | does |
|---|---|
| i | insert the card (chip) |
| w | swipe it, with the speed (in/s) and tilt (°) set in the card pane |
| r | remove it |
| k | the virtual cardholder types the test card's PIN and confirms |

A USB magstripe reader in keyboard mode works too: swipe a card while the terminal waits and
its keystrokes (`%B…?;…?` + Enter) are recognised as a swipe.

**Operator lock**: each wrong operator password says how many tries are left; after the last one
(`operator_tries`, 3) the terminal locks. The way out needs no operator password: press **6** and
type the **administrator password** (`admin_password` in `terminal.toml`, default `99999999`).
Reopening the terminal (restarting the UI) also starts unlocked.

## Panes
| key | pane |
|---|---|
| a | card slot (reader, card, swipe controls) |
| h | screens: every message the terminal showed, in order, nothing cut |
| t | trace: every ISO 8583 message field by field, APDUs, reader and link events; **x** exports it |
| g | swipe view: the head signal of the last swipe, **z** zooms to where decoding broke |
| f | faults: ↑↓ choose, **Enter** arms or disarms, Esc back to the terminal (click selects, double click arms) |
| d | diagnosis of the last action (its own trace only) |
| e | run the fault-regression suite: progress, results, Esc cancels |
| y | bridge: run `posemu proxy` or `posemu relay` here; the fault panel drives it, its traffic live |

**?** or **F1** shows this help, **Ctrl+P** the command palette, **Ctrl+Q** quits.
"""


class HelpScreen(ModalScreen[None]):
    """The keys, the menu, the operator lock and the panes (``?`` or F1; Esc, q, ? or F1 closes)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body", classes="dialog"):
            yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True, slots=True)
class JournalPick:
    """What the journal asks of the terminal for the row under the cursor: ``void`` it (撤销), or a
    ``refund`` (退货) or ``completion`` (预授权完成) of it — its amount is typed on the keypad next."""

    action: Literal["void", "refund", "completion"]
    entry: Entry


class JournalScreen(ModalScreen[JournalPick | None]):
    """The terminal's journal, newest last; PANs are stored masked. On the row under the cursor:
    Enter shows its receipt (a reprint), ``v`` voids it, ``f`` refunds it, ``c`` completes a
    pre-authorization (the terminal's own checks refuse what cannot be done, on its screen)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("enter,p", "receipt", "Receipt"),
        Binding("v", "pick('void')", "Void"),
        Binding("f", "pick('refund')", "Refund"),
        Binding("c", "pick('completion')", "Complete"),
    ]

    def __init__(self, journal: Journal, *, merchant: Merchant | None = None, receipts: Path | None = None) -> None:
        super().__init__()
        self.journal = journal
        self.merchant = merchant or Merchant()
        self.receipts = receipts or Path("receipts")
        self.rows: list[Entry] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="journal-body"):
            yield Label("Journal · Enter receipt · v void · f refund · c complete · Esc closes", classes="dialog-title")
            yield DataTable(id="journal-table", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("id", "time", "kind", "batch", "STAN", "card", "amount", "auth", "RRN", "status", "rc",
                          "screen", "reversal")
        self.rows = self.journal.entries(limit=500)
        for e in self.rows:
            table.add_row(str(e.id), e.created.replace("T", " ")[:19], e.kind, e.batch, e.stan, e.pan_masked,
                          format_amount(e.amount, e.currency) if e.amount else "", e.auth_code or "", e.rrn or "",
                          e.state, e.rc or "", e.screen or "", e.reversal.value)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)
        table.focus()

    def selected(self) -> Entry | None:
        """The row under the cursor."""
        table = self.query_one(DataTable)
        row = table.cursor_row
        return self.rows[row] if self.rows and 0 <= row < len(self.rows) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_receipt()

    def action_receipt(self) -> None:
        entry = self.selected()
        if entry is None:
            self.app.bell()
            return
        self.app.push_screen(ReceiptScreen(entry, merchant=self.merchant, folder=self.receipts))

    def action_pick(self, action: Literal["void", "refund", "completion"]) -> None:
        entry = self.selected()
        if entry is None:
            self.app.bell()
            return
        self.dismiss(JournalPick(action, entry))

    def action_close(self) -> None:
        self.dismiss(None)


class ExportScreen(ModalScreen[Path | None]):
    """Ask where to write the trace."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: Path) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="export-body"):
            yield Label("Export the trace (JSON lines) to:", classes="dialog-title")
            yield Input(str(self.default), id="export-path")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export-ok", variant="primary", compact=True)
                yield Button("Cancel", id="export-cancel", compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._done(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-ok":
            self._done(self.query_one("#export-path", Input).value)
        else:
            self.dismiss(None)

    def _done(self, value: str) -> None:
        value = value.strip()
        self.dismiss(Path(value).expanduser() if value else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


_TIMEOUTS = ("connect", "response", "pin_entry", "card", "removal")


class SettingsScreen(ModalScreen[configmod.TerminalConfig | None]):
    """The terminal configuration: edit, load from and save to TOML, apply (reopens the terminal).

    The terminal master key is kept but never shown.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, cfg: configmod.TerminalConfig, path: Path, host_address: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.path = path
        self.host_address = host_address

    def compose(self) -> ComposeResult:
        c = self.cfg
        with VerticalScroll(classes="dialog", id="settings-body"):
            yield Label(Text.assemble(("Settings (TOML)", "bold"), (f"  host now: {self.host_address}", "#839496")),
                        classes="dialog-title")
            yield from self._row("Terminal id", Input(c.terminal_id, id="set-terminal_id", compact=True))
            yield from self._row("Merchant id", Input(c.merchant_id, id="set-merchant_id", compact=True))
            yield from self._row("ISO profile", Select([("cup", "cup"), ("iso87ascii", "iso87ascii")],
                                                       value=c.profile, allow_blank=False, compact=True,
                                                       id="set-profile"))
            yield from self._row("Host", Input(c.host or "", placeholder="empty: bundled host", id="set-host",
                                               compact=True))
            yield from self._row("Reader URL", Input(c.reader, id="set-reader", compact=True))
            yield from self._row("Language", Select([("中文 + English", "both"), ("中文", "zh"), ("English", "en")],
                                                    value=c.language, allow_blank=False, compact=True,
                                                    id="set-language"))
            yield from self._row("Software ver.", Input(str(c.software_version), type="integer",
                                                        id="set-software_version", compact=True))
            for name in _TIMEOUTS:
                field = Input(f"{getattr(c.timeouts, name):g}", type="number", id=f"set-t-{name}", compact=True)
                yield from self._row(f"{name.replace('_', ' ')} (s)", field)
            yield from self._row("Operator pw", Input(c.operator_password, password=True, id="set-operator_password",
                                                      compact=True))
            yield from self._row("Config file", Input(str(self.path), id="set-path", compact=True))
            yield Static(id="settings-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply", id="set-apply", variant="primary", compact=True)
                yield Button("Load", id="set-load", compact=True)
                yield Button("Save ^s", id="set-save", compact=True)
                yield Button("Cancel", id="set-cancel", compact=True)

    @staticmethod
    def _row(label: str, widget: Input | Select[str]) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label(label, classes="form-label")
            yield widget

    def _value(self, wid: str) -> str:
        w = self.query_one(f"#{wid}")
        if isinstance(w, Input):
            return w.value.strip()
        if isinstance(w, Select) and isinstance(w.value, str):
            return w.value
        return ""

    def build(self) -> configmod.TerminalConfig:
        """The configuration the form describes (raises ConfigError when invalid)."""
        try:
            timeouts = replace(self.cfg.timeouts, **{n: float(self._value(f"set-t-{n}")) for n in _TIMEOUTS})
            version = int(self._value("set-software_version"))
        except ValueError as e:
            raise ConfigError(f"not a number: {e}") from None
        cfg = replace(self.cfg, terminal_id=self._value("set-terminal_id"), merchant_id=self._value("set-merchant_id"),
                      profile=self._value("set-profile"), host=self._value("set-host") or None,
                      reader=self._value("set-reader"), language=self._value("set-language"),
                      software_version=version, operator_password=self._value("set-operator_password"),
                      timeouts=timeouts)
        return cfg.validate()

    def _error(self, msg: str, ok: bool = False) -> None:
        self.query_one("#settings-error", Static).update(Text(msg, "#2aa198" if ok else "bold #dc322f"))

    def _fill(self, c: configmod.TerminalConfig) -> None:
        values = {"set-terminal_id": c.terminal_id, "set-merchant_id": c.merchant_id, "set-host": c.host or "",
                  "set-reader": c.reader, "set-software_version": str(c.software_version),
                  "set-operator_password": c.operator_password}
        for wid, v in values.items():
            self.query_one(f"#{wid}", Input).value = v
        for n in _TIMEOUTS:
            self.query_one(f"#set-t-{n}", Input).value = f"{getattr(c.timeouts, n):g}"
        self.query_one("#set-profile", Select).value = c.profile
        self.query_one("#set-language", Select).value = c.language
        self.cfg = c

    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id
        if bid == "set-apply":
            try:
                self.dismiss(self.build())
            except PosemuError as e:
                self._error(str(e))
        elif bid == "set-load":
            self.load()
        elif bid == "set-save":
            self.action_save()
        elif bid == "set-cancel":
            self.dismiss(None)

    def load(self) -> None:
        path = Path(self._value("set-path")).expanduser()
        try:
            self._fill(configmod.load(path))
        except PosemuError as e:
            self._error(str(e))
            return
        self._error(f"loaded {path}", ok=True)

    def action_save(self) -> None:
        path = Path(self._value("set-path")).expanduser()
        try:
            cfg = self.build()
            path.parent.mkdir(parents=True, exist_ok=True)
            configmod.save(cfg, path)
        except (PosemuError, OSError) as e:
            self._error(str(e))
            return
        self._error(f"saved {path}", ok=True)

    def action_cancel(self) -> None:
        self.dismiss(None)
