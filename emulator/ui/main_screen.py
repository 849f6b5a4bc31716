"""The main screen of ``posemu ui``: the terminal's face on the left, the panes on the right.

The screen lays out and draws; the work is done by three objects along the seams:

* :class:`emulator.ui.session.TerminalSession` — the rig, the one terminal action running in a
  worker, the panel's faults armed for it, recovery after Esc or a failure;
* :class:`emulator.ui.keypad.KeypadFlow` — what each terminal key does (menu, amount, operator
  password, the terminal's PIN pad);
* :class:`emulator.ui.card_actions.CardActions` — insert, swipe, remove and the test PIN.

The display shows what a real terminal's does: the action, its amount and the card (masked 6+4),
the current screen and the entry line; every screen the terminal showed is in the *Screens* pane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from rich.console import Console
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen as TScreen
from textual.timer import Timer
from textual.widgets import Button, Footer, Input, ProgressBar, RichLog, Select, Static, TabbedContent, TabPane

from emulator import config as configmod
from emulator.app import Rig
from emulator.fsm import Event
from emulator.messages import Lang, Msg, Screen, format_amount, render
from emulator.terminal import Outcome, Terminal
from emulator.trace import Kind, TraceEntry
from emulator.ui.bridges import BridgePane
from emulator.ui.card_actions import CardActions
from emulator.ui.card_slot import CardSlot
from emulator.ui.diagnosis import DiagnosisPane
from emulator.ui.face import FaceState, Keypad, Page, ScreenView, face_renderable
from emulator.ui.fault_panel import FaultPanel, FaultTree
from emulator.ui.faults_adapter import ActiveFault, CauseReport, FaultsAdapter
from emulator.ui.keypad import Command, Do, KeypadFlow
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.readers import SIM_URL, UiReader, discover_blocking, find_sim
from emulator.ui.screens import ExportScreen, HelpScreen, JournalScreen, SettingsScreen
from emulator.ui.session import Severity, TerminalSession
from emulator.ui.swipe_view import SwipeView
from emulator.ui.trace_view import TracePane, export_entries, field_names
from hardware.cards.profiles import load_profile
from hardware.clock import Clock, RealClock, run_external
from hardware.sim import card_for_profile
from hardware.wedge import START_SENTINELS, WedgeEvent, WedgeEventKind, WedgeFeeder
from protocol.errors import PosemuError
from protocol.masking import mask_pan

if TYPE_CHECKING:
    from emulator.host.rules import HostRules

LANGS: tuple[Lang, ...] = ("both", "zh", "en")
WAITING_FOR_HOST = frozenset({Msg.PROCESSING, Msg.SIGNING_ON, Msg.REVERSAL_PENDING, Msg.CONNECTING})
FLOW_STEPS = WAITING_FOR_HOST | {Msg.INSERT_OR_SWIPE, Msg.READING_CARD, Msg.ENTER_PIN, Msg.PIN_RETRY}
"""Screens of a flow under way; what follows the last of them is the result (a chip error or a swipe
to do again can be the result's detail line, so they are not among them)."""
HEADINGS: dict[str, Msg] = {"sign on": Msg.MENU_SIGN_ON, "sign_on": Msg.MENU_SIGN_ON,
                            "balance inquiry": Msg.MENU_BALANCE, "balance": Msg.MENU_BALANCE,
                            "purchase": Msg.MENU_PURCHASE, "reversals": Msg.MENU_REVERSAL}
"""The display's heading by the action running (its name) or done (the outcome's kind)."""


def _lang(value: str) -> Lang:
    for lang in LANGS:
        if value == lang:
            return lang
    return "both"


#: the next step while the terminal works, by the screen it shows (keys of the virtual card slot)
_BUSY_HINTS = {
    "INSERT_OR_SWIPE": "w swipe · i insert · Esc cancel",
    "ENTER_PIN": "type the PIN · Enter · k test PIN · Esc",
    "PIN_RETRY": "type the PIN · Enter · k test PIN · Esc",
    "REMOVE_CARD": "r remove the card",
    "INSERT_CHIP": "chip card: r remove, i insert the chip · Esc cancel",
    "FALLBACK_SWIPE": "chip unreadable: r remove, then w swipe · Esc cancel",
    "SWIPE_AGAIN": "w swipe again, steady (g: swipe view) · Esc cancel",
    "READING_CARD": "reading the card, do not remove it",
    "READER_ERROR": "chip error: r remove, i reinsert the card or w swipe · Esc cancel",
    "READER_PROBLEM": "chip error: r remove, i reinsert the card or w swipe · Esc cancel",
}
#: the same with a real reader: the card is in the user's hand, not behind a key
_REAL_HINTS = {
    "INSERT_OR_SWIPE": "insert or swipe the card at the reader · Esc cancel",
    "REMOVE_CARD": "take the card out of the reader",
    "INSERT_CHIP": "chip card: insert it into the reader · Esc cancel",
    "FALLBACK_SWIPE": "chip unreadable: take it out and swipe it · Esc cancel",
    "SWIPE_AGAIN": "swipe again, steady · Esc cancel",
    "READER_ERROR": "chip error: take the card out and reinsert it, or swipe it · Esc cancel",
    "READER_PROBLEM": "chip error: take the card out and reinsert it, or swipe it · Esc cancel",
    "ENTER_PIN": "type the PIN on the keypad · Enter · Esc",
    "PIN_RETRY": "type the PIN on the keypad · Enter · Esc",
}


def hint(page: Page, codes: Sequence[str], *, busy: bool, signed_on: bool, real_reader: bool = False,
         locked: bool = False, unlocking: bool = False) -> str:
    """The next step, in one line (UI chrome). ``codes``: the screens shown, the last one current."""
    if page is Page.AMOUNT:
        return "amount in cents · Enter confirm · Esc back"
    if page is Page.OPERATOR:
        return ("administrator password (admin_password) · Enter · Esc back" if unlocking
                else "operator password · Enter confirm · Esc back")
    if busy:
        table = {**_BUSY_HINTS, **_REAL_HINTS} if real_reader else _BUSY_HINTS
        for code in reversed(codes[-2:]):        # a detail line (READER_PROBLEM) follows its screen
            if code in table:
                return table[code]
        last = codes[-1] if codes else ""
        return "waiting for the host · Esc cancels" if last in {m.value for m in WAITING_FOR_HOST} else "Esc cancels"
    if locked:
        return "locked: 6 then the administrator password unlocks · ? help"
    if page is Page.RESULT:
        return "Enter/Esc: menu · d diagnosis · t trace · h screens"
    return "b balance · p purchase · s sign on · ? help" if signed_on else "s sign on · ? help"


class TerminalScreen(TScreen[None]):
    """The desktop emulator's one main screen."""

    AUTO_FOCUS = None                  # the keys are the terminal's until the user picks a pane widget
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

    def __init__(self, cfg: configmod.TerminalConfig, *, state_dir: Path, config_path: Path | None = None,
                 card: str = "demo", clock: Clock | None = None, auto_sign_on: bool = True,
                 faults: FaultsAdapter | None = None, hotplug: bool = True, wedge_timeout: float = 0.1,
                 host_rules: HostRules | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.lang: Lang = _lang(cfg.language)
        self.state_dir = state_dir
        self.config_path = config_path
        self.clock: Clock = clock or RealClock()
        self.auto_sign_on = auto_sign_on
        self.faults = faults or FaultsAdapter()
        self.hotplug = hotplug
        self.pinpad = KeypadPinPad(self.refresh_face)
        self.keys = KeypadFlow(self.pinpad)
        self.session = TerminalSession(self, self, faults=self.faults, clock=self.clock, state_dir=state_dir,
                                       pinpad=self.pinpad, host_rules=host_rules, card=card)
        self.cards = CardActions(self.notify_user)
        self.screens: list[Screen] = []
        self.operator_ok = False
        self.last_outcome: Outcome | None = None
        self.menu_title: Screen | None = None
        self.note = ""                             # the display's own line (operator lock feedback)
        self.txn_amount = ""
        self.txn_card = ""
        self.feeder = WedgeFeeder(RealClock(), inter_key_timeout=wedge_timeout)
        self._wait_since: float | None = None
        self._progress_timer: Timer | None = None

    # --- what the tests and the app read ---------------------------------------------------------------
    @property
    def rig(self) -> Rig | None:
        return self.session.rig

    @property
    def ui_reader(self) -> UiReader | None:
        return self.session.ui_reader

    @property
    def busy(self) -> str | None:
        return self.session.busy

    @property
    def is_busy(self) -> bool:
        return self.session.is_busy

    @property
    def page(self) -> Page:
        return self.keys.page

    @property
    def card_name(self) -> str:
        return self.session.card

    @property
    def active_faults(self) -> tuple[ActiveFault, ...]:
        return self.session.active_faults

    # --- layout ----------------------------------------------------------------------------------------
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
                with TabPane("Screens", id="pane-history"):
                    yield RichLog(id="history", wrap=True, markup=False, highlight=False, max_lines=5000,
                                  auto_scroll=True)
                with TabPane("Trace", id="pane-trace"):
                    yield TracePane(id="trace")
                with TabPane("Swipe", id="pane-swipe"):
                    yield SwipeView(id="swipe")
                with TabPane("Faults", id="pane-faults"):
                    yield FaultPanel(self.faults, id="faults")
                with TabPane("Diag", id="pane-diag"):
                    yield DiagnosisPane(id="diag")
                with TabPane("Bridge", id="pane-bridge"):
                    yield BridgePane(clock=self.clock, profile=lambda: self.cfg.profile, upstream=self.host_address,
                                     id="bridge")
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
    def history(self) -> RichLog:
        return self.query_one("#history", RichLog)

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
        self.session.open(self.cfg, sign_on=self.auto_sign_on)
        self.refresh_face()
        if self.hotplug:
            self.set_interval(3.0, self.scan_readers)
            self.scan_readers()

    async def on_unmount(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop a running proxy or relay, the terminal, and close the rig (reader, host link,
        journal, bundled host)."""
        for bridge in self.query("#bridge").results(BridgePane):
            await bridge.stop()
        await self.session.shutdown()

    def notify_user(self, message: str, severity: Severity = "information", timeout: float | None = None) -> None:
        self.notify(message, severity=severity, timeout=timeout)

    # --- rendering -------------------------------------------------------------------------------------
    def _shown(self) -> tuple[tuple[Screen, ...], Screen | None]:
        """The current screen(s) and the one before as context."""
        s = self.screens
        if not s:
            return (), None
        if self.page is Page.RESULT and self.last_outcome is not None:
            # the result: everything after the last step of the flow (headline, detail, a removal
            # failure), without the 请拔卡 prompt that was answered
            at = next((i + 1 for i in range(len(s) - 1, -1, -1) if s[i].msg in FLOW_STEPS), 0)
            result = [x for i, x in enumerate(s[at:], at) if x.msg is not Msg.REMOVE_CARD or i == len(s) - 1]
            if result:
                return tuple(result[-4:]), None
        return (s[-1],), (s[-2] if len(s) > 1 else None)

    def face_state(self) -> FaceState:
        rig = self.rig
        title = None
        if rig is not None:
            if rig.terminal.locked:
                title = Screen(Msg.TERMINAL_LOCKED)
            elif not rig.terminal.signed_on:
                title = Screen(Msg.SIGN_ON_REQUIRED)
            else:
                title = self.menu_title or Screen(Msg.WELCOME)
        page = self.page
        if page is Page.AMOUNT:
            return FaceState(page, (Screen(Msg.ENTER_AMOUNT),), self.lang,
                             format_amount(self.keys.amount, self.cfg.currency), title,
                             heading=Msg.MENU_PURCHASE, note=self.note)
        if page is Page.OPERATOR:
            prompt = (Screen(Msg.TERMINAL_LOCKED),) if self.keys.unlocking else (Screen(Msg.OPERATOR_PASSWORD),)
            note = self.note or ("管理员密码 / Administrator password" if self.keys.unlocking else "")
            return FaceState(page, prompt, self.lang, self.keys.shown_entry(), title,
                             heading=Msg.MENU_OPERATOR, note=note)
        current, context = self._shown()
        if self.pinpad.active:
            current, context = (current[-1:] if current else ()), None
        heading = HEADINGS.get(self.busy or "") or HEADINGS.get(self.last_outcome.kind if self.last_outcome
                                                               and page is Page.RESULT else "")
        return FaceState(page, current, self.lang, self.keys.shown_entry(), title, heading=heading,
                         amount=self.txn_amount, card=self.txn_card, context=context, note=self.note)

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
        rig = self.rig
        focused = self.focused
        if isinstance(focused, FaultTree):
            line = "fault tree: ↑↓ choose · Enter arm/disarm · Esc back to the terminal"
        else:
            line = hint(self.page, [s.code for s in self.screens], busy=self.is_busy,
                        signed_on=rig is not None and rig.terminal.signed_on,
                        real_reader=not self.cfg.reader.startswith(SIM_URL),
                        locked=rig is not None and rig.terminal.locked, unlocking=self.keys.unlocking)
        self.query_one("#hint", Static).update(Text(line, "#839496", no_wrap=True, overflow="ellipsis"))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._refresh_hint()

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self._refresh_hint()

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
        t.append(f"reader {self.cfg.reader}")
        if rig is not None:
            up = rig.terminal.link.connected
            t.append("  link ")
            t.append("up" if up else "idle", "#2aa198" if up else "#839496")
            t.append(f"  {rig.terminal.fsm.state.value}", "#839496")
        if self.active_faults:
            t.append(f"\nfaults: {', '.join(a.id for a in self.active_faults)}", "bold #dc322f")
        bridge = self.query_one("#bridge", BridgePane).controller
        if bridge is not None:
            t.append(f"\n{bridge.kind} running: the fault panel drives it (y)", "bold #268bd2")
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

    # --- what the terminal and the session tell the screen ---------------------------------------------
    def on_terminal_screen(self, s: Screen) -> None:
        """The terminal's display port."""
        self.screens.append(s)
        del self.screens[:-20]
        if "amount" in s.params:
            self.txn_amount = s.params["amount"]
        if self.is_mounted:
            self.history.write(Text(render(s, self.lang), "bold" if s.msg is not Msg.CANCELLED else "#dc322f"))
        if s.msg in WAITING_FOR_HOST:
            self._start_progress()
        else:
            self._stop_progress()
        self.refresh_face()
        self.refresh_status()

    def on_trace_entry(self, e: TraceEntry) -> None:
        self.trace_pane.add(e)
        self._card_from(e)
        if e.kind in (Kind.TCP, Kind.READER, Kind.STATE):
            self.refresh_status()
            self.refresh_slot()

    def _card_from(self, e: TraceEntry) -> None:
        """The masked card number for the display, as soon as the terminal has read it."""
        card = ""
        if e.kind is Kind.ISO_OUT:
            card = str(e.data.get("fields", {}).get("2", ""))
        elif e.kind is Kind.JOURNAL and e.what == "written before send" and self.rig is not None:
            try:
                card = self.rig.journal.get(int(e.data["id"])).pan_masked
            except (KeyError, ValueError, TypeError, PosemuError):
                card = ""
        elif e.kind is Kind.STATE and e.data.get("event") == Event.CARD_READ.value and self.rig is not None:
            sim = find_sim(self.rig.reader)
            profile: Any = getattr(sim.default_card, "profile", None) if sim is not None else None
            pan = getattr(profile, "pan", "")
            card = mask_pan(pan) if isinstance(pan, str) and pan else ""
        if card and card != self.txn_card:
            self.txn_card = card
            self.refresh_face()

    def session_opening(self, cfg: configmod.TerminalConfig, *, reopened: bool) -> None:
        if reopened:
            self.trace_pane.note("terminal reopened")
        self.trace_pane.names = field_names(cfg.profile)

    def session_opened(self, rig: Rig) -> None:
        self.cfg = rig.cfg
        self.operator_ok = False
        self.keys.to_menu()
        self.refresh_all()

    def session_open_failed(self, out: Outcome) -> None:
        self.diag.show_outcome(out, [], self.lang, ())
        self.keys.to_menu()
        self.refresh_all()

    def session_finished(self, out: Outcome, reports: Sequence[CauseReport], entries: Sequence[TraceEntry]) -> None:
        self.last_outcome = out
        self.menu_title = None
        if out.pan_masked:
            self.txn_card = out.pan_masked
        if out.amount:
            self.txn_amount = format_amount(out.amount, out.currency)
        if out.kind == "sign_on" and out.approved:
            self.menu_title = Screen(Msg.SIGN_ON_OK)
            self.keys.to_menu()                   # signed on: straight back to the menu
        if out.approved:
            self.diag.show_approved(out, self.lang)
        else:
            self.diag.show_outcome(out, entries, self.lang, reports)
            if out.kind != "sign_on" or self.page is Page.BUSY:
                self.action_pane("diag")

    def session_idle(self) -> None:
        self._stop_progress()
        self.keys.idle()
        self.refresh_all()

    # --- host-wait progress ----------------------------------------------------------------------------
    def _start_progress(self) -> None:
        bars = self.query("#progress").results(ProgressBar)
        bar = next(bars, None)
        if bar is None:                            # the screen is going away
            return
        self._wait_since = asyncio.get_running_loop().time()
        bar.total = self.cfg.timeouts.response
        bar.progress = 0
        bar.display = True
        if self._progress_timer is None:
            self._progress_timer = self.set_interval(0.1, self._tick_progress)

    def _tick_progress(self) -> None:
        if self._wait_since is None:
            return
        elapsed = asyncio.get_running_loop().time() - self._wait_since
        for bar in self.query("#progress").results(ProgressBar):
            bar.progress = min(elapsed, self.cfg.timeouts.response)

    def _stop_progress(self) -> None:
        self._wait_since = None
        timer, self._progress_timer = self._progress_timer, None
        if timer is not None:
            timer.stop()
        for bar in self.query("#progress").results(ProgressBar):
            bar.display = False

    # --- running terminal actions ----------------------------------------------------------------------
    def start(self, name: str, op: Callable[[Terminal], Any]) -> bool:
        """Run a terminal operation in the session's worker; ``False`` (and a bell) when not now."""
        if self.rig is not None and self.is_busy:
            self.app.bell()
        if self.rig is None or self.is_busy:
            return self.session.start(name, op)
        self.screens = []
        self.last_outcome = None
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

    # --- keys ------------------------------------------------------------------------------------------
    def on_key(self, event: events.Key) -> None:
        focused = self.focused
        if isinstance(focused, Input | Select):
            if event.key == "escape":
                self.set_focus(None)
                event.stop()
            return
        if isinstance(focused, FaultTree | Button) and event.key in ("enter", "escape"):
            # the fault tree or a pane's button has the focus: Enter is its own (the tree arms a
            # fault, the button presses) and never the terminal's 确认; Esc hands the keys back
            if event.key == "escape" and not isinstance(focused, FaultTree):
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
        elif cmd.do is Do.OPERATOR:
            self._operator_login(cmd.arg)
        elif cmd.do is Do.UNLOCK:
            self._unlock(cmd.arg)

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
            "7": self.action_reversals,
        }
        actions[key]()

    # --- keyboard-wedge magstripe reader ---------------------------------------------------------------
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
            self.screens = []
            self.last_outcome = None
            rig.terminal.show(Msg.NO_PENDING_REVERSAL)
            self.keys.page = Page.RESULT
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
        self.query_one("#panes", TabbedContent).active = f"pane-{name}"
        if name == "faults":
            self.query_one("#faults", FaultPanel).focus_tree()

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
                self.query_one("#swipe", SwipeView).show_report(swiped.report)
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

    def scan_readers(self) -> None:
        self.run_worker(self._scan(), group="scan", exclusive=True, exit_on_error=False)

    async def _scan(self) -> None:
        choices, note = await run_external(self.clock, discover_blocking)
        if self.is_mounted:
            self.slot.set_readers(choices, note)

    # --- faults: the terminal's, or a running bridge's ---------------------------------------------------
    def host_address(self) -> str:
        """The host the terminal talks to, as HOST:PORT (the bundled one's address when it runs)."""
        rig = self.rig
        if rig is not None and rig.host is not None:
            addr, port = rig.host.address
            return f"{addr}:{port}"
        return self.cfg.host or ""

    @property
    def bridge(self) -> BridgePane:
        return self.query_one("#bridge", BridgePane)

    async def on_fault_panel_changed(self, event: FaultPanel.Changed) -> None:
        await self._route_faults(event.active)

    async def on_bridge_pane_changed(self, event: BridgePane.Changed) -> None:
        await self._route_faults(tuple(self.query_one("#faults", FaultPanel).active.values()))

    async def _route_faults(self, active: tuple[ActiveFault, ...]) -> None:
        """While a proxy or relay runs the panel's faults are its faults; otherwise the terminal's."""
        if self.bridge.controller is None:
            self.session.active_faults = active
        else:
            self.session.active_faults = ()
            refused = self.bridge.sync({a.id: a.spec() for a in active})
            panel = self.query_one("#faults", FaultPanel)
            for name, why in refused.items():
                self.notify(f"{name}: {why}", severity="warning", timeout=10)
                await panel.drop(name, why)
        self.refresh_status()
