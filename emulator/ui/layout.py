"""The main screen's layout: the terminal's face on the left, the panes on the right.

:class:`TerminalLayout` composes the widgets, finds them again for the code that draws into them,
and keeps every pane's tab in sight: at 80 columns the terminal takes 40 and seven tabs with their
full names need 51, so below :data:`WIDE_TABS` columns the tabs get short names and one column
between them (the ``-narrow-tabs`` rules in ``posemu.tcss``). The styles are in ``posemu.tcss``.

The state the screen shows is declared here and set by :class:`emulator.ui.main_screen.TerminalScreen`;
the views over the session and the keypad flow (``rig``, ``is_busy``, ``page`` …) are here because
every layer above reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen as TScreen
from textual.widgets import Footer, ProgressBar, RichLog, Static, TabbedContent, TabPane

from emulator import config as configmod
from emulator.app import Rig
from emulator.messages import Lang
from emulator.ui.bridges import BridgePane
from emulator.ui.card_actions import CardActions
from emulator.ui.card_slot import CardSlot
from emulator.ui.diagnosis import DiagnosisPane
from emulator.ui.face import Keypad, Page, ScreenView
from emulator.ui.fault_panel import FaultPanel
from emulator.ui.faults_adapter import ActiveFault, FaultsAdapter
from emulator.ui.keypad import KeypadFlow
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.readers import UiReader
from emulator.ui.session import TerminalSession
from emulator.ui.swipe_view import SwipeView
from emulator.ui.trace_view import TracePane
from hardware.clock import Clock


@dataclass(frozen=True, slots=True)
class PaneTab:
    """One pane's tab: its id (``pane-<name>``), its full and short names, the key that shows it."""

    name: str
    label: str
    short: str
    key: str

    @property
    def pane_id(self) -> str:
        return f"pane-{self.name}"


PANE_TABS: Final = (
    PaneTab("card", "Card", "Card", "a"),
    PaneTab("history", "Screens", "Scrn", "h"),
    PaneTab("trace", "Trace", "Trace", "t"),
    PaneTab("swipe", "Swipe", "Swipe", "g"),
    PaneTab("faults", "Faults", "Fault", "f"),
    PaneTab("diag", "Diag", "Diag", "d"),
    PaneTab("bridge", "Bridge", "Bridge", "y"),
)
WIDE_TABS: Final = 91
"""Screen width from which the tabs keep their full names: the terminal column is
``max(40, 40%)`` wide (``#terminal`` in posemu.tcss), seven names with a padding of one
each side need 51 columns, so below 91 columns the panes are too narrow for them."""


def tab_labels(width: int) -> dict[str, str]:
    """Each pane's tab name at a screen ``width`` (pane id → name)."""
    wide = width >= WIDE_TABS
    return {t.pane_id: t.label if wide else t.short for t in PANE_TABS}


class TerminalLayout(TScreen[None]):
    """The widgets of the main screen and where the screen's state lives."""

    AUTO_FOCUS = None                  # the keys are the terminal's until the user picks a pane widget

    cfg: configmod.TerminalConfig
    lang: Lang
    state_dir: Path
    config_path: Path | None
    clock: Clock
    auto_sign_on: bool
    faults: FaultsAdapter
    hotplug: bool
    pinpad: KeypadPinPad
    keys: KeypadFlow
    session: TerminalSession
    cards: CardActions

    # --- what the tests, the app and the layers above read ----------------------------------------------
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

    def host_address(self) -> str:
        """The host the terminal talks to, as HOST:PORT (the bundled one's address when it runs)."""
        rig = self.rig
        if rig is not None and rig.host is not None:
            addr, port = rig.host.address
            return f"{addr}:{port}"
        return self.cfg.host or ""

    # --- layout ----------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        labels = tab_labels(self.app.size.width)
        with Horizontal(id="body"):
            with Vertical(id="terminal"):
                yield ScreenView(id="lcd")
                yield Static(id="status")
                yield ProgressBar(id="progress", show_eta=False, show_percentage=False)
                yield Static(id="hint")
                yield Keypad(id="keypad")
            with TabbedContent(id="panes", initial="pane-card"):
                with TabPane(labels["pane-card"], id="pane-card"):
                    yield CardSlot(profile=self.card_name, reader_url=self.cfg.reader, id="slot")
                with TabPane(labels["pane-history"], id="pane-history"):
                    yield RichLog(id="history", wrap=True, markup=False, highlight=False, max_lines=5000,
                                  auto_scroll=True)
                with TabPane(labels["pane-trace"], id="pane-trace"):
                    yield TracePane(id="trace")
                with TabPane(labels["pane-swipe"], id="pane-swipe"):
                    yield SwipeView(id="swipe")
                with TabPane(labels["pane-faults"], id="pane-faults"):
                    yield FaultPanel(self.faults, id="faults")
                with TabPane(labels["pane-diag"], id="pane-diag"):
                    yield DiagnosisPane(id="diag")
                with TabPane(labels["pane-bridge"], id="pane-bridge"):
                    yield BridgePane(clock=self.clock, profile=lambda: self.cfg.profile, upstream=self.host_address,
                                     id="bridge")
        yield Footer()

    def on_resize(self, event: events.Resize) -> None:
        self.fit_tabs(event.size.width)

    def fit_tabs(self, width: int) -> None:
        """Name the tabs for a screen ``width`` so that all of them stay in sight."""
        self.set_class(width < WIDE_TABS, "-narrow-tabs")
        panes = next(self.query("#panes").results(TabbedContent), None)
        if panes is None:
            return
        for pane_id, label in tab_labels(width).items():
            tab = panes.get_tab(pane_id)
            if str(tab.label) != label:
                tab.label = label

    def show_pane(self, name: str) -> None:
        """Bring a pane to the front (``card``, ``history``, ``trace``, ``swipe``, ``faults``, ``diag``,
        ``bridge``); the fault tree takes the keys when the faults pane is shown."""
        self.query_one("#panes", TabbedContent).active = f"pane-{name}"
        if name == "faults":
            self.panel.focus_tree()

    # --- the widgets -----------------------------------------------------------------------------------
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

    @property
    def panel(self) -> FaultPanel:
        return self.query_one("#faults", FaultPanel)

    @property
    def bridge(self) -> BridgePane:
        return self.query_one("#bridge", BridgePane)

    @property
    def swipe_view(self) -> SwipeView:
        return self.query_one("#swipe", SwipeView)
