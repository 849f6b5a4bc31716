"""The terminal's session in the desktop emulator: opening the rig, running one terminal action
at a time in a Textual worker, arming the panel's faults for it, and recovering when the user
cancels or the action fails.

All terminal work (opening the rig, sign-on, transactions, reversals) runs in one worker at a time
on the app's event loop, so the UI never freezes while the terminal waits on the reader, the PIN
pad or the host. Esc cancels: the worker is cancelled and :meth:`emulator.terminal.Terminal.abort`
puts the terminal back to idle (an abandoned purchase's reversal becomes pending, as after a
crash). The session tells its :class:`SessionView` (the main screen) what happened; it never
draws anything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from textual.dom import DOMNode
from textual.worker import Worker

from emulator import config as configmod
from emulator.app import Rig, open_rig
from emulator.messages import Msg, Screen
from emulator.terminal import Outcome, Terminal
from emulator.trace import Kind, TraceEntry
from emulator.ui.faults_adapter import ActiveFault, Armed, CauseReport, FaultsAdapter, FaultWiringError
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.readers import UiReader, find_sim
from hardware.clock import Clock
from hardware.registry import open_reader
from protocol.masking import mask_text

if TYPE_CHECKING:
    from emulator.host.rules import HostRules

Op = Callable[[Terminal], Awaitable[Outcome | None]]
Severity = Literal["information", "warning", "error"]


class SessionView(Protocol):
    """What the session tells the screen."""

    def notify_user(self, message: str, severity: Severity = "information", timeout: float | None = None) -> None: ...

    def on_terminal_screen(self, s: Screen) -> None: ...

    def on_trace_entry(self, e: TraceEntry) -> None: ...

    def session_opening(self, cfg: configmod.TerminalConfig, *, reopened: bool) -> None: ...

    def session_opened(self, rig: Rig) -> None: ...

    def session_open_failed(self, out: Outcome) -> None: ...

    def session_finished(self, out: Outcome, reports: Sequence[CauseReport], entries: Sequence[TraceEntry]) -> None: ...

    def session_idle(self) -> None: ...


class TerminalSession:
    """The rig and the one terminal action running on it."""

    def __init__(self, owner: DOMNode, view: SessionView, *, faults: FaultsAdapter, clock: Clock, state_dir: Path,
                 pinpad: KeypadPinPad, host_rules: HostRules | None = None, card: str = "demo") -> None:
        self.owner = owner
        self.view = view
        self.faults = faults
        self.clock = clock
        self.state_dir = state_dir
        self.pinpad = pinpad
        self.host_rules = host_rules
        self.card = card
        self.rig: Rig | None = None
        self.ui_reader: UiReader | None = None
        self.busy: str | None = None
        self.worker: Worker[None] | None = None
        self.active_faults: tuple[ActiveFault, ...] = ()

    @property
    def is_busy(self) -> bool:
        return self.busy is not None

    @property
    def terminal(self) -> Terminal | None:
        return self.rig.terminal if self.rig is not None else None

    def _begin(self, name: str, coro: Awaitable[None]) -> None:
        self.busy = name
        self.worker = self.owner.run_worker(coro, name=name, group="terminal", exit_on_error=False)

    # --- opening ------------------------------------------------------------------------------------------
    def open(self, cfg: configmod.TerminalConfig, *, sign_on: bool) -> None:
        """(Re)open the rig for ``cfg`` in the worker; then sign on if asked."""
        self._begin("opening", self._open(cfg, sign_on=sign_on))

    async def _open(self, cfg: configmod.TerminalConfig, *, sign_on: bool) -> None:
        old, self.rig = self.rig, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self.view.session_opening(cfg, reopened=old is not None)
        try:
            inner = self.faults.wrap_reader(open_reader(cfg.reader, clock=self.clock), self.clock)
            reader = UiReader(inner, self.clock)
            sim = find_sim(inner)
            rig = await open_rig(cfg, clock=self.faults.terminal_clock(self.clock), state_dir=self.state_dir,
                                 pinpad=self.pinpad, display=self.view.on_terminal_screen, reader=reader,
                                 card_profile=self.card if sim is not None else None,
                                 host_rules=self.host_rules, auto_cardholder=False)
        except Exception as e:
            error = mask_text(f"{type(e).__name__}: {e}")
            self.view.notify_user(f"Cannot open the terminal: {error}", "error", 10)
            self.busy = None
            self.worker = None
            self.view.session_open_failed(Outcome("open", False, Msg.NO_READER if "reader" in error.lower()
                                             else Msg.SYSTEM_ERROR, error=error))
            return
        rig.trace.subscribe(self.view.on_trace_entry)
        self.rig, self.ui_reader = rig, reader
        self.busy = None
        self.worker = None
        self.view.session_opened(rig)
        if sign_on:
            self.start("sign on", lambda t: t.sign_on())

    async def shutdown(self) -> None:
        """Stop the terminal and close the rig (reader, host link, journal, bundled host)."""
        if self.worker is not None and self.worker.is_running:
            self.worker.cancel()
        rig, self.rig = self.rig, None
        if rig is not None:
            with contextlib.suppress(Exception):
                await rig.close()

    # --- actions ------------------------------------------------------------------------------------------
    def start(self, name: str, op: Op) -> bool:
        """Run a terminal operation in the worker; ``False`` (and why) when that is not possible now."""
        if self.rig is None:
            self.view.notify_user("The terminal is not open (see the diagnosis pane).", "error")
            return False
        if self.is_busy:
            self.view.notify_user(f"The terminal is busy ({self.busy}); Esc cancels.", "warning")
            return False
        self._begin(name, self._operate(name, op))
        return True

    def cancel(self) -> None:
        """Esc while the terminal works: cancel PIN entry, or the whole action."""
        if self.pinpad.cancel():
            return
        if self.worker is not None and self.worker.is_running:
            self.worker.cancel()

    async def _operate(self, name: str, op: Op) -> None:
        rig = self.rig
        if rig is None:
            self._idle()
            return
        armed: Armed | None = None
        first = len(rig.trace.entries)               # this action's trace: its diagnosis looks at it only
        try:
            try:
                armed = await self.faults.arm(rig, self.active_faults,
                                              card_profile=self.card if find_sim(rig.reader) else None)
            except FaultWiringError as e:
                self.view.notify_user(str(e), "warning", 10)
                return
            for hint in armed.hints:
                self.view.notify_user(f"Your part of the fault: {hint}", "information", 10)
            out = await op(rig.terminal)
            if out is not None:
                mine = rig.trace.entries[first:]
                reports = [] if out.approved else await self.faults.diagnose(rig, mine, out)
                self.view.session_finished(out, reports, mine)
        except asyncio.CancelledError:
            self.pinpad.cancel()
            await rig.terminal.abort("cancelled by the operator")
            rig.terminal.show(Msg.CANCELLED)
            raise
        except Exception as e:
            error = mask_text(f"{type(e).__name__}: {e}")
            rig.trace.record(Kind.ERROR, f"{name} failed", error=error, code="terminal.crash")
            await rig.terminal.abort(f"{name} failed")
            rig.terminal.show(Msg.SYSTEM_ERROR)
            self.view.session_finished(Outcome(name, False, Msg.SYSTEM_ERROR, error=error), (),
                                  rig.trace.entries[first:])
        finally:
            if armed is not None:
                with contextlib.suppress(Exception):
                    await armed.disarm()
            self._idle()

    def _idle(self) -> None:
        self.busy = None
        self.worker = None
        self.view.session_idle()
