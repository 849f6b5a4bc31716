"""What the main screen's keys and buttons do: each binding, menu entry and card-slot event
becomes a call on the session (:class:`emulator.ui.session.TerminalSession`), the keypad flow
(:class:`emulator.ui.keypad.KeypadFlow`) or the card (:class:`emulator.ui.card_actions.CardActions`),
or opens a modal screen. :class:`TerminalActions` adds this layer to the screen; the drawing is the
layer below's (:class:`emulator.ui.rendering.TerminalRendering`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from rich.text import Text
from textual.binding import Binding, BindingType

from emulator import config as configmod
from emulator.journal import Entry
from emulator.messages import Msg, format_amount
from emulator.outcome import Outcome
from emulator.receipt import RECEIPT_KINDS, Merchant
from emulator.terminal import Terminal
from emulator.trace import Kind
from emulator.ui.card_slot import CardSlot
from emulator.ui.face import Keypad, Page
from emulator.ui.keypad import RRN_DIGITS, Command, Do, Txn
from emulator.ui.readers import SIM_URL, find_sim
from emulator.ui.receipt_screen import ReceiptScreen
from emulator.ui.rendering import LANGS, TerminalRendering, lang_of
from emulator.ui.screens import ExportScreen, HelpScreen, JournalPick, JournalScreen, SettingsScreen
from emulator.ui.trace_view import TracePane, export_entries
from hardware.cards.profiles import load_profile
from hardware.sim import card_for_profile
from protocol.errors import PosemuError

VOUCHER_KINDS = ("purchase", "preauth", "completion", "refund", "void", "preauth_void", "completion_void",
                 "balance")
"""Kinds a voucher number typed on the keypad is looked up among (the terminal refuses the wrong ones)."""


class TerminalActions(TerminalRendering):
    """The main screen's key bindings and the terminal actions they start."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "balance", "Balance"),
        Binding("w", "card('swipe')", "Swipe"),
        Binding("i", "card('insert')", "Insert"),
        Binding("r", "card('remove')", "Remove"),
        Binding("k", "card('pin')", "Test PIN"),
        Binding("s", "sign_on", "Sign on", show=False),
        Binding("p", "purchase", "Purchase", show=False),
        Binding("j", "journal", "Journal", show=False),
        Binding("c", "settings", "Settings", show=False),
        Binding("o", "operator", "Operator", show=False),
        Binding("v", "reversals", "Reversals", show=False),
        Binding("m", "key('menu')", "Menu", show=False),
        Binding("l", "language", "Language", show=False),
        Binding("a", "pane('card')", "Card pane", show=False),
        Binding("t", "pane('trace')", "Trace pane", show=False),
        Binding("h", "pane('history')", "Screens pane", show=False),
        Binding("g", "pane('swipe')", "Swipe view", show=False),
        Binding("f", "pane('faults')", "Faults pane", show=False),
        Binding("d", "pane('diag')", "Diagnosis pane", show=False),
        Binding("x", "export", "Export trace", show=False),
        Binding("z", "zoom", "Zoom swipe plot", show=False),
        Binding("e", "regress", "Regression run", show=False),
        Binding("y", "pane('bridge')", "Proxy/relay pane", show=False),
    ]

    # --- running terminal actions ----------------------------------------------------------------------
    def start(self, name: str, op: Callable[[Terminal], Any]) -> bool:
        """Run a terminal operation in the session's worker; ``False`` (and a bell) when not now."""
        if self.rig is not None and self.is_busy:
            self.app.bell()
        if self.rig is None or self.is_busy:
            return self.session.start(name, op)
        self.screens = []
        self.last_outcome = None
        self.printed_id = None
        self.note = ""
        self.txn_amount = self.txn_card = ""
        self.set_focus(None)                       # the keys are the terminal's while it works
        self.history.write(Text(f"── {name} ──", "#839496"))
        self.keys.busy()
        started = self.session.start(name, op)
        self.refresh_face()
        return started

    def cancel_action(self) -> None:
        """Esc while the terminal works: cancel PIN entry, or the whole action."""
        self.session.cancel()

    # --- the terminal's keys ---------------------------------------------------------------------------
    def on_keypad_pressed(self, event: Keypad.Pressed) -> None:
        self.press(event.key)

    def press(self, key: str) -> None:
        """One terminal key: a digit, ``00``, ``confirm``, ``cancel``, ``correct``, ``menu`` or ``help``."""
        cmd = self.keys.press(key, busy=self.is_busy)
        if cmd is not None:
            self._do(cmd)
        self.refresh_face()

    def _do(self, cmd: Command) -> None:
        if cmd.do is Do.BELL:
            self.app.bell()
        elif cmd.do is Do.HELP:
            self.app.push_screen(HelpScreen())
        elif cmd.do is Do.CANCEL_ACTION:
            self.cancel_action()
        elif cmd.do is Do.MENU:
            self.menu(cmd.arg)
        elif cmd.do is Do.PURCHASE:
            amount = int(cmd.arg)
            if self.start("purchase", lambda t: t.purchase(amount)):
                self.txn_amount = format_amount(amount, self.cfg.currency)
        elif cmd.do is Do.PREAUTH:
            held = int(cmd.arg)
            if self.start("preauth", lambda t: t.preauth(held)):
                self.txn_amount = format_amount(held, self.cfg.currency)
        elif cmd.do in (Do.VOID, Do.REFUND, Do.COMPLETE):
            self._against_original(cmd)
        elif cmd.do is Do.SETTLE:
            self.start("settle", lambda t: t.settle())
        elif cmd.do is Do.SIGN_OFF:
            self.start("sign off", lambda t: t.sign_off())
        elif cmd.do is Do.OPERATOR:
            self._operator_login(cmd.arg)
        elif cmd.do is Do.UNLOCK:
            self._unlock(cmd.arg)

    def _against_original(self, cmd: Command) -> None:
        """A void, refund or completion of the original the keypad or the journal named: the journal
        row picked, or the latest one with the voucher number typed (a refund may name another
        batch's sale by its reference number instead). The terminal's own checks refuse an original
        that is missing, of the wrong kind, voided, reversed or settled, on its screen."""
        voucher, original_id, amount = cmd.voucher, cmd.original_id, cmd.amount
        name = {Do.VOID: "void", Do.REFUND: "refund", Do.COMPLETE: "completion"}[cmd.do]

        async def op(t: Terminal) -> Outcome:
            if cmd.do is Do.REFUND and original_id is None and len(voucher) == RRN_DIGITS:
                return await t.refund(amount, rrn=voucher)
            oid = original_id if original_id is not None else self._voucher_row(t, voucher)
            if cmd.do is Do.VOID:
                return await t.void(oid)
            if cmd.do is Do.COMPLETE:
                return await t.complete(oid, amount)
            return await t.refund(amount, original_id=oid)

        if self.start(name, op) and amount:
            self.txn_amount = format_amount(amount, self.cfg.currency)

    @staticmethod
    def _voucher_row(t: Terminal, voucher: str) -> int:
        """The journal row of the latest transaction with this voucher number (0: none, which the
        terminal shows as 原交易不存在)."""
        found = t.journal.find(stan=voucher, kinds=VOUCHER_KINDS)
        return found.id if found is not None else 0

    def _operator_login(self, password: str) -> None:
        rig = self.rig
        if rig is None:
            return
        self.screens = []
        self.last_outcome = None
        then, self.keys.after_operator = self.keys.after_operator, None
        term = rig.terminal
        if term.operator_login(password):
            self.operator_ok = True
            self.note = ""
            term.show(Msg.OPERATOR_OK)
            self.keys.page = Page.RESULT
            if then == "settings":
                self.keys.to_menu()
                self.action_settings()
        elif term.locked:
            self.note = (f"终端已锁定 · 按6输入管理员密码解锁 / Locked after {self.cfg.operator_tries} wrong "
                         "passwords: press 6 and type the administrator password")
            self.notify_user(f"Terminal locked after {self.cfg.operator_tries} wrong operator passwords. Unlock: "
                             "press 6 (operator) and type the administrator password (admin_password in the "
                             "configuration; see ? help).", "error", 15)
            self.keys.page = Page.RESULT
        else:
            left = max(0, self.cfg.operator_tries - term.machine.session.operator_failures)
            self.note = f"密码错误 还可尝试{left}次 / Wrong password: {left} {'try' if left == 1 else 'tries'} left"
            self.notify_user(f"Wrong operator password: {left} {'try' if left == 1 else 'tries'} left before "
                             "the terminal locks.", "warning")
            self.keys.ask_password(then=then)
        self.refresh_all()

    def _unlock(self, password: str) -> None:
        rig = self.rig
        if rig is None:
            return
        if rig.terminal.unlock(password):
            self.notify_user("Terminal unlocked: the operator's tries start again.")
            self.keys.to_menu()
            self.note = "终端已解锁 / Unlocked by the administrator"
        else:
            self.note = "管理员密码错误 / Wrong administrator password"
            self.notify_user("Wrong administrator password: the terminal stays locked.", "error")
            self.keys.ask_password(admin=True)
        self.refresh_all()

    def menu(self, key: str) -> None:
        actions: dict[str, Callable[[], None]] = {
            "1": self.action_sign_on, "2": self.action_balance, "3": self.action_purchase,
            "4": self.action_journal, "5": self.action_settings, "6": self.action_operator,
            "7": self.action_reversals, "8": self.action_more, "9": self.action_reprint,
        }
        actions[key]()

    # --- actions ---------------------------------------------------------------------------------------
    def action_sign_on(self) -> None:
        self.start("sign on", lambda t: t.sign_on())

    def action_balance(self) -> None:
        self.start("balance inquiry", lambda t: t.balance_inquiry())

    def action_purchase(self) -> None:
        if self.is_busy:
            self.app.bell()
            return
        self.keys.ask_amount()
        self.refresh_face()

    def _show_result(self, msg: Msg) -> None:
        """A screen of the terminal's own, with nothing sent (nothing to print, no reversal pending),
        shown as the result until a key returns to the menu."""
        if self.rig is None:
            return
        self.screens = []
        self.last_outcome = None
        self.rig.terminal.show(msg)
        self.keys.page = Page.RESULT
        self.refresh_face()

    def action_more(self) -> None:
        """Main menu 8 其他交易: void, refund, pre-authorization, completion, settlement, sign-off."""
        if self.is_busy:
            self.app.bell()
            return
        self.keys.ask_more()
        self.refresh_face()

    def action_reprint(self) -> None:
        """Main menu 9 重打印: the receipt of the last transaction (or of the one just printed)."""
        rig = self.rig
        if rig is None or self.is_busy:
            self.app.bell()
            return
        entry = None
        if self.printed_id is not None:
            with contextlib.suppress(KeyError):
                entry = rig.journal.get(self.printed_id)
        entry = entry or rig.journal.last(RECEIPT_KINDS)
        if entry is None:
            self._show_result(Msg.NOTHING_TO_PRINT)
            return
        self.show_receipt(entry)

    def show_receipt(self, entry: Entry) -> None:
        self.app.push_screen(ReceiptScreen(entry, merchant=Merchant(operator=self.cfg.operator),
                                           folder=self.state_dir / "receipts"))

    def action_operator(self, then: str | None = None) -> None:
        if self.is_busy:
            self.app.bell()
            return
        locked = self.rig is not None and self.rig.terminal.locked
        if locked:
            self.note = ""                         # the prompt for the administrator's password instead
        self.keys.ask_password(then=None if locked else then, admin=locked)
        self.refresh_face()

    def action_reversals(self) -> None:
        rig = self.rig
        if rig is None or self.is_busy:
            self.app.bell()
            return
        if not rig.journal.pending_reversals():
            self._show_result(Msg.NO_PENDING_REVERSAL)
            return

        async def op(t: Terminal) -> None:
            await t.send_pending_reversals()

        self.start("reversals", op)

    def action_regress(self) -> None:
        """Run the fault-regression suite (in a worker thread, with progress and cancel)."""
        from emulator.ui.regress_screen import RegressScreen

        self.app.push_screen(RegressScreen())

    def action_journal(self) -> None:
        if self.rig is not None:
            self.app.push_screen(JournalScreen(self.rig.journal, merchant=Merchant(operator=self.cfg.operator),
                                               receipts=self.state_dir / "receipts"), self._journal_done)

    def _journal_done(self, pick: JournalPick | None) -> None:
        """A row picked in the journal: void it now; a refund or completion asks for its amount."""
        if pick is None:
            return
        if self.is_busy:
            self.app.bell()
            return
        e = pick.entry
        if pick.action == "void":
            self._against_original(Command(Do.VOID, voucher=e.stan, original_id=e.id))
        else:
            self.keys.ask_amount(Txn.REFUND if pick.action == "refund" else Txn.COMPLETION, voucher=e.stan,
                                 original_id=e.id)
        self.refresh_face()

    def action_settings(self) -> None:
        if self.is_busy:
            self.app.bell()
            return
        if not self.operator_ok:
            self.action_operator(then="settings")
            return
        rig = self.rig
        if rig is not None and rig.host is not None:
            addr, port = rig.host.address
            host_addr = f"bundled host on {addr}:{port}"
        else:
            host_addr = self.cfg.host or "—"
        path = self.config_path or self.state_dir / "terminal.toml"
        self.app.push_screen(SettingsScreen(self.cfg, path, host_addr), self._settings_done)

    def _settings_done(self, cfg: configmod.TerminalConfig | None) -> None:
        if cfg is None or cfg == self.cfg:
            return
        self.lang = lang_of(cfg.language)
        self.trace_pane.lang = self.lang
        if cfg.reader.startswith(SIM_URL) and cfg.reader.removeprefix(SIM_URL).split("?")[0]:
            self.session.card = cfg.reader.removeprefix(SIM_URL).split("?")[0]
        self.slot.set_reader(cfg.reader)
        self.reopen(cfg)

    def reopen(self, cfg: configmod.TerminalConfig) -> None:
        if self.is_busy:
            self.app.bell()
            self.notify("Finish or cancel (Esc) the running action first.", severity="warning")
            return
        self.screens = []
        self.cfg = cfg
        self.session.open(cfg, sign_on=self.auto_sign_on)
        self.refresh_face()

    def action_key(self, key: str) -> None:
        self.press(key)

    def action_language(self) -> None:
        self.lang = LANGS[(LANGS.index(self.lang) + 1) % len(LANGS)]
        self.trace_pane.lang = self.lang
        self.trace_pane.rebuild()
        self.refresh_face()

    def action_pane(self, name: str) -> None:
        self.show_pane(name)

    def action_zoom(self) -> None:
        self.swipe_view.toggle_zoom()

    def action_export(self) -> None:
        stamp = self.clock.wall().strftime("%Y%m%d-%H%M%S")
        default = self.state_dir / "traces" / f"trace-{stamp}.jsonl"
        self.app.push_screen(ExportScreen(default), self._export_done)

    def _export_done(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            n = export_entries(self.trace_pane.entries, path)
        except OSError as e:
            self.notify(f"Export failed: {e}", severity="error")
            return
        self.notify(f"Trace exported: {n} events to {path}")

    def on_trace_pane_export_requested(self, event: TracePane.ExportRequested) -> None:
        self.action_export()

    # --- the card --------------------------------------------------------------------------------------
    def action_card(self, action: Literal["insert", "swipe", "remove", "pin"] | str) -> None:
        if action == "pin":
            self._test_pin()
            return
        sim = find_sim(self.rig.reader) if self.rig is not None else None
        if sim is None:
            self.notify("A real reader is in use: present the card to it.", severity="warning")
            return
        if action == "insert":
            self.cards.insert(sim)
        elif action == "remove":
            self.cards.remove(sim)
        elif action == "swipe":
            speed, tilt = self.slot.swipe_values()
            habits = self.rig.swipe_faults if self.rig is not None else {}
            swiped = self.cards.swipe(sim, speed, tilt, habits)
            if swiped is not None:
                self.swipe_view.show_report(swiped.report)
                if self.rig is not None:
                    self.rig.trace.record(Kind.READER, "swipe", speed_ips=swiped.params.speed_ips,
                                          tilt_deg=swiped.params.skew_deg, tracks=swiped.statuses)
                if swiped.track2_failed:
                    self.notify(f"Track 2: {swiped.track2_failed} — see the swipe view (g).", severity="warning")
        self.refresh_slot()

    def _test_pin(self) -> None:
        if not self.pinpad.active:
            self.app.bell()
            self.notify("The terminal is not asking for a PIN.")
            return
        if not self.cfg.reader.startswith(SIM_URL):
            self.notify("With a real card the cardholder types the PIN on the keypad.", severity="warning")
            return
        pin = self.cards.pin_of(self.card_name)
        if pin is not None:
            self.pinpad.type_pin(pin)

    def on_card_slot_action(self, event: CardSlot.Action) -> None:
        self.action_card(event.action)

    def on_card_slot_profile_changed(self, event: CardSlot.ProfileChanged) -> None:
        self.session.card = event.name
        self.cfg = replace(self.cfg, reader=f"{SIM_URL}{event.name}")
        sim = find_sim(self.rig.reader) if self.rig is not None else None
        if sim is not None:
            try:
                sim.default_card = card_for_profile(load_profile(event.name))
            except PosemuError as e:
                self.notify(str(e), severity="error")
        self.refresh_status()
        self.refresh_slot()
        self.set_focus(None)

    def on_card_slot_reader_changed(self, event: CardSlot.ReaderChanged) -> None:
        url = f"{SIM_URL}{self.card_name}" if event.url == SIM_URL else event.url
        self.slot.set_reader(url)
        self.set_focus(None)
        self.reopen(replace(self.cfg, reader=url))
