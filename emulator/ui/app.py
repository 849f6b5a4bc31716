"""``posemu ui``: the Textual desktop emulator.

>>> from emulator.config import TerminalConfig
>>> app = PosemuApp(TerminalConfig(), state_dir=Path("/tmp/posemu-doctest"))
>>> app.title
'posemu'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from emulator import config as configmod
from emulator.ui.faults_adapter import FaultsAdapter
from emulator.ui.main_screen import TerminalScreen
from emulator.ui.screens import HelpScreen
from hardware.clock import Clock

if TYPE_CHECKING:
    from emulator.host.rules import HostRules


class PosemuApp(App[None]):
    """The desktop emulator: one :class:`TerminalScreen` plus modal screens."""

    TITLE = "posemu"
    SUB_TITLE = "POS terminal emulator"
    CSS_PATH = "posemu.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("question_mark,f1", "help", "Help"),
    ]

    def __init__(self, cfg: configmod.TerminalConfig, *, state_dir: Path, config_path: Path | None = None,
                 card: str = "demo", clock: Clock | None = None, auto_sign_on: bool = True,
                 faults: FaultsAdapter | None = None, hotplug: bool = True, wedge_timeout: float = 0.1,
                 host_rules: HostRules | None = None, theme: str | None = None) -> None:
        super().__init__()
        self.main = TerminalScreen(cfg, state_dir=state_dir, config_path=config_path, card=card, clock=clock,
                                   auto_sign_on=auto_sign_on, faults=faults, hotplug=hotplug,
                                   wedge_timeout=wedge_timeout, host_rules=host_rules)
        if theme is not None:
            self.theme = theme

    def get_default_screen(self) -> TerminalScreen:
        return self.main

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
