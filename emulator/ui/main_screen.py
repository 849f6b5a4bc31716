"""The main screen of ``posemu ui``: the terminal's face on the left, the panes on the right.

The screen is built in layers, one module each, along the seams of what it does:

* :mod:`emulator.ui.layout` — the widgets, the tabs that stay in sight at 80 columns, and the
  state the screen shows (:class:`~emulator.ui.layout.TerminalLayout`);
* :mod:`emulator.ui.rendering` — what it draws: the display, status, hint, card slot, screens
  history, trace and diagnosis panes; the session's view (:class:`~emulator.ui.rendering.TerminalRendering`);
* :mod:`emulator.ui.actions` — what its keys and buttons do (:class:`~emulator.ui.actions.TerminalActions`);
* this module — the screen itself: its parts wired together, the keyboard (terminal keys and a
  keyboard-wedge magstripe reader), reader hot-plug, and where the fault panel's faults go.

The work is done by three objects: :class:`emulator.ui.session.TerminalSession` (the rig, the one
terminal action running in a worker, the panel's faults armed for it, recovery after Esc or a
failure), :class:`emulator.ui.keypad.KeypadFlow` (what each terminal key does: menu, amount,
operator password, the terminal's PIN pad) and :class:`emulator.ui.card_actions.CardActions`
(insert, swipe, remove and the test PIN).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import events
from textual.widgets import Button, Input, ProgressBar, Select

from emulator import config as configmod
from emulator.messages import Screen
from emulator.terminal import Outcome
from emulator.trace import Kind
from emulator.ui.actions import TerminalActions
from emulator.ui.bridges import BridgePane
from emulator.ui.card_actions import CardActions
from emulator.ui.fault_panel import FaultPanel, FaultTree
from emulator.ui.faults_adapter import ActiveFault, FaultsAdapter
from emulator.ui.keypad import KeypadFlow
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.readers import discover_blocking
from emulator.ui.rendering import hint, lang_of
from emulator.ui.session import TerminalSession
from hardware.clock import Clock, RealClock, run_external
from hardware.wedge import START_SENTINELS, WedgeEvent, WedgeEventKind, WedgeFeeder

if TYPE_CHECKING:
    from emulator.host.rules import HostRules

__all__ = ["TerminalScreen", "hint"]


class TerminalScreen(TerminalActions):
    """The desktop emulator's one main screen."""

    def __init__(self, cfg: configmod.TerminalConfig, *, state_dir: Path, config_path: Path | None = None,
                 card: str = "demo", clock: Clock | None = None, auto_sign_on: bool = True,
                 faults: FaultsAdapter | None = None, hotplug: bool = True, wedge_timeout: float = 0.1,
                 host_rules: HostRules | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.lang = lang_of(cfg.language)
        self.state_dir = state_dir
        self.config_path = config_path
        self.clock = clock or RealClock()
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
        self.printed_id: int | None = None         # the journal row whose receipt the last result printed
        self.last_outcome: Outcome | None = None
        self.menu_title: Screen | None = None
        self.note = ""                             # the display's own line (operator lock feedback)
        self.txn_amount = ""
        self.txn_card = ""
        self.feeder = WedgeFeeder(RealClock(), inter_key_timeout=wedge_timeout)
        self._wait_since = None
        self._progress_timer = None

    def on_mount(self) -> None:
        self.fit_tabs(self.app.size.width)
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

    # --- readers plugged in and out --------------------------------------------------------------------
    def scan_readers(self) -> None:
        self.run_worker(self._scan(), group="scan", exclusive=True, exit_on_error=False)

    async def _scan(self) -> None:
        choices, note = await run_external(self.clock, discover_blocking)
        if self.is_mounted:
            self.slot.set_readers(choices, note)

    # --- faults: the terminal's, or a running bridge's ---------------------------------------------------
    async def on_fault_panel_changed(self, event: FaultPanel.Changed) -> None:
        await self._route_faults(event.active)

    async def on_bridge_pane_changed(self, event: BridgePane.Changed) -> None:
        await self._route_faults(tuple(self.panel.active.values()))

    async def _route_faults(self, active: tuple[ActiveFault, ...]) -> None:
        """While a proxy or relay runs the panel's faults are its faults; otherwise the terminal's."""
        if self.bridge.controller is None:
            self.session.active_faults = active
        else:
            self.session.active_faults = ()
            refused = self.bridge.sync({a.id: a.spec() for a in active})
            for name, why in refused.items():
                self.notify(f"{name}: {why}", severity="warning", timeout=10)
                await self.panel.drop(name, why)
        self.refresh_status()
