"""The main screen of ``posemu ui``: the terminal's face on the left, the panes on the right.

All terminal work (opening the rig, sign-on, transactions, reversals) runs in one Textual
worker at a time on the app's event loop, so the UI never freezes while the terminal waits on
the reader, the PIN pad or the host. Esc cancels: PIN entry through the PIN pad; waiting for
a card or for the host by cancelling the worker and putting the terminal back to idle (an
abandoned purchase's reversal becomes pending, as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from rich.console import Console
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen as TScreen
from textual.timer import Timer
from textual.widgets import Footer, Input, ProgressBar, Select, Static, TabbedContent, TabPane
from textual.worker import Worker

from emulator import config as configmod
from emulator.app import Rig, open_rig
from emulator.messages import Lang, Msg, Screen, format_amount
from emulator.terminal import Outcome, Terminal
from emulator.trace import Kind, TraceEntry
from emulator.ui.card_slot import CardSlot
from emulator.ui.diagnosis import DiagnosisPane
from emulator.ui.face import MENU, FaceState, Keypad, Page, ScreenView, face_renderable
from emulator.ui.fault_panel import FaultPanel
from emulator.ui.faults_adapter import ActiveFault, Armed, CauseReport, FaultsAdapter, FaultWiringError
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.readers import SIM_URL, UiReader, discover_blocking, find_sim
from emulator.ui.screens import ExportScreen, HelpScreen, JournalScreen, SettingsScreen
from emulator.ui.swipe_view import SwipeView
from emulator.ui.trace_view import TracePane, export_entries, field_names
from hardware.cards.profiles import load_profile
from hardware.clock import Clock, RealClock, run_external
from hardware.magstripe import SwipeParams, simulate_swipe
from hardware.registry import open_reader
from hardware.sim import card_for_profile
from hardware.wedge import START_SENTINELS, WedgeEvent, WedgeEventKind, WedgeFeeder
from protocol.errors import PosemuError
from protocol.masking import mask_pan, mask_text

if TYPE_CHECKING:
    from emulator.host.rules import HostRules

LANGS: tuple[Lang, ...] = ("both", "zh", "en")
WAITING_FOR_HOST = frozenset({Msg.PROCESSING, Msg.SIGNING_ON, Msg.REVERSAL_PENDING, Msg.CONNECTING})
AMOUNT_DIGITS = 10

Op = Callable[[Terminal], Awaitable[Outcome | None]]


def _lang(value: str) -> Lang:
    for lang in LANGS:
        if value == lang:
            return lang
    return "both"


def _hint(page: Page, last: Msg | None, busy: bool, signed_on: bool) -> str:
    """The next step, in one line (UI chrome)."""
    if page is Page.AMOUNT:
        return "amount in cents · Enter confirm · Esc back"
    if page is Page.OPERATOR:
        return "operator password · Enter confirm · Esc back"
    if busy:
        return {
            Msg.INSERT_OR_SWIPE: "w swipe · i insert · Esc cancel",
            Msg.ENTER_PIN: "type the PIN · Enter · k test PIN · Esc",
            Msg.PIN_RETRY: "type the PIN · Enter · k test PIN · Esc",
            Msg.REMOVE_CARD: "r remove the card",
            Msg.INSERT_CHIP: "i insert the chip card",
            Msg.FALLBACK_SWIPE: "r remove, then w swipe",
            Msg.SWIPE_AGAIN: "w swipe again (g: swipe view)",
            Msg.READING_CARD: "reading the card, do not remove it",
        }.get(last or Msg.WELCOME, "waiting for the host · Esc cancels" if last in WAITING_FOR_HOST
              else "Esc cancels")
    if page is Page.RESULT:
        return "Enter/Esc: menu · d diagnosis · t trace"
    return "b balance · p purchase · s sign on · ? help" if signed_on else "s sign on · ? help"


class TerminalScreen(TScreen[None]):
    """The desktop emulator's one main screen."""

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
        Binding("g", "pane('swipe')", "Swipe view", show=False),
        Binding("f", "pane('faults')", "Faults pane", show=False),
        Binding("d", "pane('diag')", "Diagnosis pane", show=False),
        Binding("x", "export", "Export trace", show=False),
        Binding("z", "zoom", "Zoom swipe plot", show=False),
        Binding("e", "regress", "Regression run", show=False),
    ]

    def __init__(self, cfg: configmod.TerminalConfig, *, state_dir: Path, config_path: Path | None = None,
                 card: str = "demo", clock: Clock | None = None, auto_sign_on: bool = True,
                 faults: FaultsAdapter | None = None, hotplug: bool = True, wedge_timeout: float = 0.1,
                 host_rules: HostRules | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.lang: Lang = _lang(cfg.language)
        self.state_dir = state_dir
        self.config_path = config_path
        self.card_name = card
        self.clock: Clock = clock or RealClock()
        self.auto_sign_on = auto_sign_on
        self.faults = faults or FaultsAdapter()
        self.hotplug = hotplug
        self.host_rules = host_rules
        self.rig: Rig | None = None
        self.ui_reader: UiReader | None = None
        self.pinpad = KeypadPinPad(self.refresh_face)
        self.page = Page.MENU
        self.screens: list[Screen] = []
        self.entry: list[str] = []
        self.after_operator: str | None = None
        self.operator_ok = False
        self.busy: str | None = None
        self.worker: Worker[None] | None = None
        self.active_faults: tuple[ActiveFault, ...] = ()
        self.last_outcome: Outcome | None = None
        self.menu_title: Screen | None = None
        self.swipe_seed = 0
        self.feeder = WedgeFeeder(RealClock(), inter_key_timeout=wedge_timeout)
        self._wait_since: float | None = None
        self._progress_timer: Timer | None = None

    # --- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="terminal"):
                yield ScreenView(id="lcd")
                yield Static(id="status")
                yield ProgressBar(id="progress", show_eta=False, show_percentage=False)
                yield Static(id="hint")
                yield Keypad(id="keypad")
            with TabbedContent(id="panes", initial="pane-card"):
                with TabPane("Card", id="pane-card"):
                    yield CardSlot(profile=self.card_name, reader_url=self.cfg.reader, id="slot")
                with TabPane("Trace", id="pane-trace"):
                    yield TracePane(id="trace")
                with TabPane("Swipe", id="pane-swipe"):
                    yield SwipeView(id="swipe")
                with TabPane("Faults", id="pane-faults"):
                    yield FaultPanel(self.faults, id="faults")
                with TabPane("Diag", id="pane-diag"):
                    yield DiagnosisPane(id="diag")
        yield Footer()

    @property
    def lcd(self) -> ScreenView:
        return self.query_one("#lcd", ScreenView)

    @property
    def slot(self) -> CardSlot:
        return self.query_one("#slot", CardSlot)

    @property
    def trace_pane(self) -> TracePane:
        return self.query_one("#trace", TracePane)

    @property
    def diag(self) -> DiagnosisPane:
        return self.query_one("#diag", DiagnosisPane)

    def on_mount(self) -> None:
        self.query_one("#progress", ProgressBar).display = False
        self.trace_pane.lang = self.lang
        self.diag.show_nothing()
        self.slot.set_reader(self.cfg.reader)
        self.refresh_all()
        self.set_focus(None)
        self._begin("opening", self._open(self.cfg, sign_on=self.auto_sign_on))
        if self.hotplug:
            self.set_interval(3.0, self.scan_readers)
            self.scan_readers()

    async def on_unmount(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the terminal and close the rig (reader, host link, journal, bundled host)."""
        if self.worker is not None and self.worker.is_running:
            self.worker.cancel()
        rig, self.rig = self.rig, None
        if rig is not None:
            with contextlib.suppress(Exception):
                await rig.close()

    # --- rendering -------------------------------------------------------------------------
    def face_state(self) -> FaceState:
        entry: str | None = None
        screens = tuple(self.screens[-8:])
        if self.pinpad.active:
            entry = self.pinpad.masked
        elif self.page is Page.AMOUNT:
            entry = format_amount(self.amount, self.cfg.currency)
            screens = (Screen(Msg.ENTER_AMOUNT),)
        elif self.page is Page.OPERATOR:
            entry = "*" * len(self.entry)
            screens = (Screen(Msg.OPERATOR_PASSWORD),)
        title = None
        rig = self.rig
        if rig is not None:
            if rig.terminal.locked:
                title = Screen(Msg.TERMINAL_LOCKED)
            elif not rig.terminal.signed_on:
                title = Screen(Msg.SIGN_ON_REQUIRED)
            else:
                title = self.menu_title or Screen(Msg.WELCOME)
        return FaceState(self.page, screens, self.lang, entry, title)

    def lcd_text(self) -> str:
        """The terminal screen as plain text (what the user reads; for tests and the log)."""
        width = max(20, self.lcd.content_size.width or 38)
        console = Console(width=width, record=True, color_system=None, force_terminal=False, legacy_windows=False)
        with console.capture() as cap:
            console.print(face_renderable(self.face_state(), 50))
        return cap.get()

    def refresh_face(self) -> None:
        if self.is_mounted:
            self.lcd.show(self.face_state())
            self._refresh_hint()

    def _refresh_hint(self) -> None:
        last = self.screens[-1].msg if self.screens else None
        signed = self.rig is not None and self.rig.terminal.signed_on
        self.query_one("#hint", Static).update(Text(_hint(self.page, last, self.busy is not None, signed),
                                                    "#839496", no_wrap=True, overflow="ellipsis"))

    def refresh_status(self) -> None:
        if not self.is_mounted:
            return
        rig = self.rig
        t = Text(no_wrap=True, overflow="ellipsis")
        if rig is None:
            t.append("○ terminal not open", "bold #b58900")
        elif rig.terminal.locked:
            t.append("■ 已锁定 locked", "bold #dc322f")
        elif rig.terminal.signed_on:
            t.append("● 已签到 signed on", "bold #2aa198")
        else:
            t.append("○ 未签到 not signed on", "bold #b58900")
        host = "bundled" if self.cfg.host is None else self.cfg.host
        t.append(f"  host {host}")
        t.append("\n")
        reader = self.cfg.reader
        t.append(f"reader {reader}")
        if rig is not None:
            up = rig.terminal.link.connected
            t.append("  link ")
            t.append("up" if up else "idle", "#2aa198" if up else "#839496")
            t.append(f"  {rig.terminal.fsm.state.value}", "#839496")
        if self.active_faults:
            t.append(f"\nfaults: {', '.join(a.id for a in self.active_faults)}", "bold #dc322f")
        self.query_one("#status", Static).update(t)

    def refresh_slot(self) -> None:
        if not self.is_mounted:
            return
        sim = find_sim(self.rig.reader) if self.rig is not None else None
        t = Text(no_wrap=True, overflow="ellipsis")
        if not self.cfg.reader.startswith(SIM_URL):
            t.append(f"real reader {self.cfg.reader}: present the card to it", "#839496")
        else:
            try:
                prof = load_profile(self.card_name)
                what = f"{self.card_name} {mask_pan(prof.pan)} ({'chip' if prof.chip else 'stripe'})"
            except PosemuError as e:
                what = f"{self.card_name}: {e}"
            if sim is not None and sim.card is not None:
                t.append("■ card in slot  ", "bold #b58900")
            else:
                t.append("□ slot empty  ", "#839496")
            t.append(what)
        self.slot.set_state(t)

    def refresh_all(self) -> None:
        self.refresh_face()
        self.refresh_status()
        self.refresh_slot()

    # --- terminal callbacks ----------------------------------------------------------------
    def on_terminal_screen(self, s: Screen) -> None:
        """The terminal's display port."""
        self.screens.append(s)
        del self.screens[:-20]
        if s.msg in WAITING_FOR_HOST:
            self._start_progress()
        else:
            self._stop_progress()
        self.refresh_face()
        self.refresh_status()

    def on_trace_entry(self, e: TraceEntry) -> None:
        self.trace_pane.add(e)
        if e.kind in (Kind.TCP, Kind.READER, Kind.STATE):
            self.refresh_status()
            self.refresh_slot()

    # --- host-wait progress ----------------------------------------------------------------
    def _start_progress(self) -> None:
        bar = self.query_one("#progress", ProgressBar)
        loop = asyncio.get_running_loop()
        self._wait_since = loop.time()
        bar.total = self.cfg.timeouts.response
        bar.progress = 0
        bar.display = True
        if self._progress_timer is None:
            self._progress_timer = self.set_interval(0.1, self._tick_progress)

    def _tick_progress(self) -> None:
        if self._wait_since is None:
            return
        elapsed = asyncio.get_running_loop().time() - self._wait_since
        self.query_one("#progress", ProgressBar).progress = min(elapsed, self.cfg.timeouts.response)

    def _stop_progress(self) -> None:
        self._wait_since = None
        timer = self._progress_timer
        self._progress_timer = None
        if timer is not None:
            timer.stop()
        if self.is_mounted:
            self.query_one("#progress", ProgressBar).display = False

    # --- running terminal actions ----------------------------------------------------------
    @property
    def is_busy(self) -> bool:
        return self.busy is not None

    def _begin(self, name: str, coro: Awaitable[None]) -> None:
        self.busy = name
        self.worker = self.run_worker(coro, name=name, group="terminal", exit_on_error=False)
        self.refresh_face()

    def start(self, name: str, op: Op, *, clear: bool = True) -> bool:
        """Run a terminal operation in the worker; ``False`` (and a bell) when that is not possible now."""
        if self.rig is None:
            self.notify("The terminal is not open (see the diagnosis pane).", severity="error")
            return False
        if self.is_busy:
            self.app.bell()
            self.notify(f"The terminal is busy ({self.busy}); Esc cancels.", severity="warning")
            return False
        if clear:
            self.screens = []
        self.page = Page.BUSY
        self._begin(name, self._operate(name, op))
        return True

    async def _operate(self, name: str, op: Op) -> None:
        rig = self.rig
        if rig is None:
            self._idle()
            return
        armed: Armed | None = None
        try:
            try:
                armed = await self.faults.arm(rig, self.active_faults,
                                              card_profile=self.card_name if find_sim(rig.reader) else None)
            except FaultWiringError as e:
                self.notify(str(e), severity="warning", timeout=10)
                return
            for hint in armed.hints:
                self.notify(f"Your part of the fault: {hint}", timeout=10)
            out = await op(rig.terminal)
            if out is not None:
                reports = [] if out.approved else await self.faults.diagnose(rig, rig.trace.entries, out)
                self._finished(rig, out, reports)
        except asyncio.CancelledError:
            await self._cancelled(rig)
            raise
        except Exception as e:
            await self._crashed(rig, name, e)
        finally:
            if armed is not None:
                with contextlib.suppress(Exception):
                    await armed.disarm()
            self._idle()

    def _idle(self) -> None:
        self.busy = None
        self.worker = None
        self._stop_progress()
        if self.page is Page.BUSY:
            self.page = Page.RESULT
        self.refresh_all()

    def _finished(self, rig: Rig, out: Outcome, reports: Sequence[CauseReport]) -> None:
        self.last_outcome = out
        self.menu_title = None
        if out.kind == "sign_on" and out.approved:
            self.menu_title = Screen(Msg.SIGN_ON_OK)
            self.page = Page.MENU  # signed on: straight back to the menu
        if not out.approved:
            self.diag.show_outcome(out, rig.trace.entries, self.lang, reports)
            if out.kind != "sign_on" or self.page is Page.BUSY:
                self.action_pane("diag")

    async def _cancelled(self, rig: Rig) -> None:
        """Put the terminal back to idle after the user cancelled the running action."""
        self.pinpad.cancel()
        await rig.terminal.abort("cancelled by the operator")
        rig.terminal.show(Msg.CANCELLED)

    async def _crashed(self, rig: Rig, name: str, e: Exception) -> None:
        error = mask_text(f"{type(e).__name__}: {e}")
        rig.trace.record(Kind.ERROR, f"{name} failed", error=error, code="terminal.crash")
        await rig.terminal.abort(f"{name} failed")
        rig.terminal.show(Msg.SYSTEM_ERROR)
        out = Outcome(name, False, Msg.SYSTEM_ERROR, error=error)
        self.last_outcome = out
        self.diag.show_outcome(out, rig.trace.entries, self.lang, ())
        self.action_pane("diag")

    async def _open(self, cfg: configmod.TerminalConfig, *, sign_on: bool) -> None:
        """(Re)open the rig for ``cfg``; then sign on if asked."""
        old, self.rig = self.rig, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
            self.trace_pane.note("terminal reopened")
        self.trace_pane.names = field_names(cfg.profile)
        try:
            inner = self.faults.wrap_reader(open_reader(cfg.reader, clock=self.clock), self.clock)
            reader = UiReader(inner, self.clock)
            sim = find_sim(inner)
            rig = await open_rig(cfg, clock=self.faults.terminal_clock(self.clock), state_dir=self.state_dir,
                                 pinpad=self.pinpad,
                                 display=self.on_terminal_screen, reader=reader,
                                 card_profile=self.card_name if sim is not None else None,
                                 host_rules=self.host_rules, auto_cardholder=False)
        except Exception as e:
            error = mask_text(f"{type(e).__name__}: {e}")
            self.notify(f"Cannot open the terminal: {error}", severity="error", timeout=10)
            out = Outcome("open", False, Msg.NO_READER if "reader" in error.lower() else Msg.SYSTEM_ERROR,
                          error=error)
            self.diag.show_outcome(out, [], self.lang, ())
            self.busy = None
            self.worker = None
            self.page = Page.MENU
            self.refresh_all()
            return
        rig.trace.subscribe(self.on_trace_entry)
        self.rig, self.ui_reader = rig, reader
        self.cfg = cfg
        self.operator_ok = False
        self.busy = None
        self.worker = None
        self.page = Page.MENU
        self.refresh_all()
        if sign_on:
            self.start("sign on", lambda t: t.sign_on())

    # --- keys ------------------------------------------------------------------------------
    def on_key(self, event: events.Key) -> None:
        focused = self.focused
        if isinstance(focused, Input | Select):
            if event.key == "escape":
                self.set_focus(None)
                event.stop()
            return
        if self._wedge(event):
            event.stop()
            event.prevent_default()
            return
        key = {"enter": "confirm", "escape": "cancel", "backspace": "correct"}.get(event.key, event.key)
        if (key.isdigit() and len(key) == 1) or key in ("confirm", "cancel", "correct"):
            event.stop()
            event.prevent_default()
            self.press(key)

    def on_keypad_pressed(self, event: Keypad.Pressed) -> None:
        self.press(event.key)

    def press(self, key: str) -> None:
        """One terminal key: a digit, ``00``, ``confirm``, ``cancel``, ``correct``, ``menu`` or ``help``."""
        if key == "help":
            self.app.push_screen(HelpScreen())
            return
        if self.pinpad.active:
            ok = True
            if key.isdigit():
                ok = all(self.pinpad.digit(d) for d in key)
            elif key == "correct":
                ok = self.pinpad.backspace()
            elif key == "confirm":
                ok = self.pinpad.confirm()
            elif key == "cancel":
                ok = self.pinpad.cancel()
            if not ok:
                self.app.bell()
            return
        if self.is_busy:
            if key == "cancel":
                self.cancel_action()
            else:
                self.app.bell()
            return
        if self.page in (Page.MENU, Page.RESULT):
            if key.isdigit() and len(key) == 1:
                self.menu(key)
            elif key in ("confirm", "cancel", "menu"):
                self.page = Page.MENU
                self.refresh_face()
            return
        if key in ("cancel", "menu"):
            self.entry = []
            self.page = Page.MENU
        elif key == "correct":
            if self.entry:
                self.entry.pop()
        elif key.isdigit():
            self._type(key)
        elif key == "confirm":
            self._confirm_entry()
        self.refresh_face()

    def _type(self, digits: str) -> None:
        limit = AMOUNT_DIGITS if self.page is Page.AMOUNT else 12
        for d in digits:
            if self.page is Page.AMOUNT and not self.entry and d == "0":
                continue
            if len(self.entry) >= limit:
                self.app.bell()
                return
            self.entry.append(d)

    @property
    def amount(self) -> int:
        return int("".join(self.entry) or "0")

    def _confirm_entry(self) -> None:
        if self.page is Page.AMOUNT:
            amount = self.amount
            if amount <= 0:
                self.app.bell()
                return
            self.entry = []
            self.start("purchase", lambda t: t.purchase(amount))
        elif self.page is Page.OPERATOR:
            self._operator_login("".join(self.entry))

    def _operator_login(self, password: str) -> None:
        self.entry = []
        rig = self.rig
        if rig is None:
            return
        self.screens = []
        then, self.after_operator = self.after_operator, None
        if rig.terminal.operator_login(password):
            self.operator_ok = True
            rig.terminal.show(Msg.OPERATOR_OK)
            self.page = Page.RESULT
            if then == "settings":
                self.page = Page.MENU
                self.action_settings()
        else:
            self.page = Page.RESULT
            if not rig.terminal.locked:
                self.page = Page.OPERATOR
                self.after_operator = then
        self.refresh_all()

    def menu(self, key: str) -> None:
        actions: dict[str, Callable[[], None]] = {
            "1": self.action_sign_on, "2": self.action_balance, "3": self.action_purchase,
            "4": self.action_journal, "5": self.action_settings, "6": self.action_operator,
            "7": self.action_reversals,
        }
        fn = actions.get(key)
        if fn is None or key not in dict(MENU):
            self.app.bell()
            return
        fn()

    def cancel_action(self) -> None:
        """Esc while the terminal works: cancel PIN entry, or the whole action."""
        if self.pinpad.cancel():
            return
        if self.worker is not None and self.worker.is_running:
            self.worker.cancel()

    # --- keyboard-wedge magstripe reader ---------------------------------------------------
    def _wedge(self, event: events.Key) -> bool:
        """Keys of a USB magstripe reader in keyboard mode become a swipe (see hardware.wedge)."""
        ch = event.character if event.character and event.character.isprintable() else None
        key = "enter" if event.key == "enter" else ch
        if key is None:
            return False
        if not self.feeder.pending and key not in START_SENTINELS:
            return False
        self._wedge_events(self.feeder.feed(key))
        if self.feeder.pending:
            self.set_timer(self.feeder_timeout + 0.05, self._wedge_poll)
        return True

    @property
    def feeder_timeout(self) -> float:
        deadline = self.feeder.deadline
        return 0.1 if deadline is None else max(0.0, deadline - RealClock().now())

    def _wedge_poll(self) -> None:
        self._wedge_events(self.feeder.poll())

    def _wedge_events(self, evs: tuple[WedgeEvent, ...]) -> None:
        for ev in evs:
            if ev.kind is WedgeEventKind.SWIPE and ev.swipe is not None:
                statuses = ", ".join(f"T{t.track} {t.status.value}" for t in ev.swipe.tracks)
                if self.rig is not None:
                    self.rig.trace.record(Kind.READER, "keyboard-wedge swipe", tracks=statuses)
                if self.ui_reader is not None:
                    self.ui_reader.inject_swipe(ev.swipe)
                if not self.is_busy:
                    self.notify("Magstripe reader swipe received; start a transaction (b) to use it.")
            elif ev.kind is WedgeEventKind.UNREADABLE:
                if self.rig is not None:
                    self.rig.trace.record(Kind.READER, "keyboard-wedge input unreadable",
                                          error=str(ev.error) if ev.error else "")
                self.notify("The magstripe reader typed something that is not a swipe.", severity="warning")
            elif ev.kind is WedgeEventKind.KEYS:
                for ch in ev.keys:
                    if ch.isdigit():
                        self.press(ch)

    # --- actions ---------------------------------------------------------------------------
    def action_sign_on(self) -> None:
        self.start("sign on", lambda t: t.sign_on())

    def action_balance(self) -> None:
        self.start("balance inquiry", lambda t: t.balance_inquiry())

    def action_purchase(self) -> None:
        if self.is_busy:
            self.app.bell()
            return
        self.entry = []
        self.page = Page.AMOUNT
        self.refresh_face()

    def action_operator(self, then: str | None = None) -> None:
        if self.is_busy:
            self.app.bell()
            return
        self.entry = []
        self.after_operator = then
        self.page = Page.OPERATOR
        self.refresh_face()

    def action_reversals(self) -> None:
        rig = self.rig
        if rig is None or self.is_busy:
            self.app.bell()
            return
        if not rig.journal.pending_reversals():
            self.screens = []
            rig.terminal.show(Msg.NO_PENDING_REVERSAL)
            self.page = Page.RESULT
            self.refresh_face()
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
            self.app.push_screen(JournalScreen(self.rig.journal))

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
        self.lang = _lang(cfg.language)
        self.trace_pane.lang = self.lang
        if cfg.reader.startswith(SIM_URL) and cfg.reader.removeprefix(SIM_URL).split("?")[0]:
            self.card_name = cfg.reader.removeprefix(SIM_URL).split("?")[0]
        self.slot.set_reader(cfg.reader)
        self.reopen(cfg)

    def reopen(self, cfg: configmod.TerminalConfig) -> None:
        if self.is_busy:
            self.app.bell()
            self.notify("Finish or cancel (Esc) the running action first.", severity="warning")
            return
        self.screens = []
        self._begin("opening", self._open(cfg, sign_on=self.auto_sign_on))

    def action_key(self, key: str) -> None:
        self.press(key)

    def action_language(self) -> None:
        self.lang = LANGS[(LANGS.index(self.lang) + 1) % len(LANGS)]
        self.trace_pane.lang = self.lang
        self.trace_pane.rebuild()
        self.refresh_face()

    def action_pane(self, name: str) -> None:
        self.query_one("#panes", TabbedContent).active = f"pane-{name}"

    def action_zoom(self) -> None:
        self.query_one("#swipe", SwipeView).toggle_zoom()

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

    # --- the card --------------------------------------------------------------------------
    def action_card(self, action: Literal["insert", "swipe", "remove", "pin"] | str) -> None:
        if action == "pin":
            self._test_pin()
            return
        rig = self.rig
        sim = find_sim(rig.reader) if rig is not None else None
        if sim is None:
            self.notify("A real reader is in use: present the card to it.", severity="warning")
            return
        try:
            if action == "insert":
                if sim.card is not None:
                    self.notify("A card is already in the slot (r removes it).")
                    return
                sim.insert()
            elif action == "remove":
                if sim.card is None:
                    self.notify("The slot is empty.")
                    return
                sim.remove()
            elif action == "swipe":
                self._swipe(sim)
        except PosemuError as e:
            self.notify(str(e), severity="error")
        self.refresh_slot()

    def _swipe(self, sim: object) -> None:
        from hardware.sim import SimReader

        if not isinstance(sim, SimReader) or sim.default_card is None:
            self.notify("No card selected.", severity="warning")
            return
        speed_s, skew_s = self.slot.swipe_values()
        try:
            params = SwipeParams(speed_ips=float(speed_s or "10"), skew_deg=float(skew_s or "0"),
                                 seed=self.swipe_seed)
        except ValueError:
            self.notify("Speed and tilt must be numbers.", severity="error")
            return
        armed = self.rig.swipe_faults if self.rig is not None else {}
        if armed:                                   # armed swipe faults: stripe damage, EMI noise, head dirt
            from dataclasses import replace as dc_replace

            if "speed_ips" in armed:             # the fault's swipe, not the sliders'
                params = dc_replace(params, speed_ips=float(armed["speed_ips"]))
            if "skew_deg" in armed:
                params = dc_replace(params, skew_deg=float(armed["skew_deg"]))
            if "accel_ips2" in armed:
                params = dc_replace(params, accel_ips2=float(armed["accel_ips2"]))
            if "noise" in armed:
                params = dc_replace(params, noise=float(armed["noise"]))
            if "dirt_um" in armed:
                params = dc_replace(params, dirt_um=float(armed["dirt_um"]))
        self.swipe_seed += 1
        card = sim.default_card
        from hardware.sim import stripe_damage

        worn = stripe_damage(card)              # the card profile's own damaged stripe regions
        if worn:
            from dataclasses import replace as dc_replace

            params = dc_replace(params, damage=params.damage + worn)
        report = simulate_swipe(card.stripe, params)
        sim.swipe(card, result=report.result)
        self.query_one("#swipe", SwipeView).show_report(report)
        if self.rig is not None:
            statuses = ", ".join(f"T{t.track} {t.status.value}" for t in report.result.tracks)
            self.rig.trace.record(Kind.READER, "swipe", speed_ips=params.speed_ips, tilt_deg=params.skew_deg,
                                  tracks=statuses)
        t2 = report.result.track(2)
        if t2 is not None and not t2.ok and card.stripe[1] is not None:
            self.notify(f"Track 2: {t2.status.value} — see the swipe view (g).", severity="warning")

    def _test_pin(self) -> None:
        if not self.pinpad.active:
            self.app.bell()
            self.notify("The terminal is not asking for a PIN.")
            return
        if not self.cfg.reader.startswith(SIM_URL):
            self.notify("With a real card the cardholder types the PIN on the keypad.", severity="warning")
            return
        try:
            pin = load_profile(self.card_name).pin
        except PosemuError as e:
            self.notify(str(e), severity="error")
            return
        self.pinpad.type_pin(pin)

    def on_card_slot_action(self, event: CardSlot.Action) -> None:
        self.action_card(event.action)

    def on_card_slot_profile_changed(self, event: CardSlot.ProfileChanged) -> None:
        self.card_name = event.name
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

    def scan_readers(self) -> None:
        self.run_worker(self._scan(), group="scan", exclusive=True, exit_on_error=False)

    async def _scan(self) -> None:
        choices, note = await run_external(self.clock, discover_blocking)
        if self.is_mounted:
            self.slot.set_readers(choices, note)

    def on_fault_panel_changed(self, event: FaultPanel.Changed) -> None:
        self.active_faults = event.active
        self.refresh_status()
