"""The bridge pane: faults in the user's own system, from the desktop emulator (issue 14 item 5).

Start ``posemu proxy`` (the ISO 8583-aware fault proxy in front of any host,
:class:`faults.wire.MessageProxy`) or ``posemu relay`` (a card presented in vpcd's reader with
faults on the way, :class:`faults.relay.CardRelay`) inside the UI; while one runs, the fault panel
switches *its* faults (through the :class:`faults.control.Controller` API the HTTP control API and
the CLI use: ``arm``/``disarm`` by name) instead of the terminal's, and its masked traffic (the
tool's trace: ISO 8583 messages field by field, APDUs by name) scrolls by live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, RichLog, Select, Static

from emulator.trace import TraceEntry
from emulator.ui.trace_view import field_names, format_entry
from faults.control import Controller
from faults.relay import CardRelay
from faults.wire import MessageProxy, parse_upstream
from hardware.clock import Clock
from hardware.registry import open_reader
from hardware.vpcd import DEFAULT_PORT, parse_endpoint
from protocol.errors import ConfigError, PosemuError
from protocol.specs import get_profile

KINDS: tuple[tuple[str, str], ...] = (("ISO 8583 fault proxy (posemu proxy)", "proxy"),
                                      ("card relay to vpcd (posemu relay)", "relay"))
LABELS = {"proxy": ("Listen", "Upstream"), "relay": ("From", "To vpcd")}


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _listen(text: str) -> tuple[str, int]:
    """Where the proxy listens: loopback only (as ``posemu proxy`` without ``--allow-remote``);
    port 0 takes a free one (the pane shows which)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or host not in LOOPBACK or not (port.isascii() and port.isdigit() and int(port) < 65536):
        raise ConfigError(f"listen {text!r}: give 127.0.0.1:PORT (loopback only; port 0 picks a free one)")
    return host, int(port)


def make_controller(kind: str, first: str, second: str, *, profile: str, clock: Clock) -> Controller:
    """The tool for the pane's fields: a proxy listening on ``first`` in front of ``second``
    (``HOST:PORT``), or a relay of the reader ``first`` (a URL) to vpcd at ``second``."""
    if kind == "proxy":
        listen = _listen(first or "127.0.0.1:0")
        return MessageProxy(parse_upstream(second), get_profile(profile), clock=clock, listen=listen)
    if kind == "relay":
        return CardRelay(open_reader(first or "sim://cup_debit", clock=clock), clock=clock,
                         vpcd=parse_endpoint(second or str(DEFAULT_PORT)), target_reader=None)
    raise ConfigError(f"unknown bridge {kind!r}: proxy or relay")


class BridgePane(Vertical):
    """Start/stop a proxy or relay, see what it does, its traffic live."""

    class Changed(Message):
        """A bridge started or stopped (``controller`` is ``None`` when stopped)."""

        def __init__(self, controller: Controller | None) -> None:
            super().__init__()
            self.controller = controller

    DEFAULTS: ClassVar[dict[str, tuple[str, str]]] = {"proxy": ("127.0.0.1:0", ""),
                                                      "relay": ("sim://cup_debit", f"127.0.0.1:{DEFAULT_PORT + 1}")}

    def __init__(self, *, clock: Clock, profile: Callable[[], str], upstream: Callable[[], str],
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.profile = profile          # the terminal's ISO 8583 profile (the proxy's dialect)
        self.upstream = upstream        # the host the terminal uses (the proxy's default upstream)
        self.controller: Controller | None = None
        self.entries: list[TraceEntry] = []
        self._given: dict[str, str] = {}       # armed toxic → the spec the panel gave

    def compose(self) -> ComposeResult:
        with Horizontal(classes="slot-row"):
            yield Label("Tool", classes="bridge-label")
            yield Select(list(KINDS), value="proxy", allow_blank=False, compact=True, id="bridge-kind")
        with Horizontal(classes="slot-row"):
            yield Label("Listen", classes="bridge-label", id="bridge-a-label")
            yield Input(self.DEFAULTS["proxy"][0], compact=True, id="bridge-a")
        with Horizontal(classes="slot-row"):
            yield Label("Upstream", classes="bridge-label", id="bridge-b-label")
            yield Input("", placeholder="HOST:PORT (empty: the terminal's host)", compact=True, id="bridge-b")
        with Horizontal(classes="slot-buttons"):
            yield Button("Start", id="bridge-start", compact=True, variant="primary")
            yield Button("Stop", id="bridge-stop", compact=True, disabled=True)
        yield Static(id="bridge-status")
        yield RichLog(id="bridge-log", wrap=False, markup=False, highlight=False, max_lines=5000, auto_scroll=True)

    def on_mount(self) -> None:
        self._status()

    @property
    def log_widget(self) -> RichLog:
        return self.query_one("#bridge-log", RichLog)

    def _status(self, error: str = "") -> None:
        c = self.controller
        t = Text()
        if error:
            t.append(error + "\n", "bold #dc322f")
        if c is None:
            t.append("stopped — the fault panel drives the terminal", "#839496")
        else:
            st = c.status()
            where = st.get("listen") or st.get("vpcd") or ""
            t.append(f"● {c.kind} running", "bold #2aa198")
            if where:
                t.append(f"  {where}")
            if st.get("upstream"):
                t.append(f" → {st['upstream']}")
            t.append("\nthe fault panel drives this bridge: ", "#839496")
            toxics = [x.name + ("" if x.enabled else " (off)") for x in c.toxics()]
            t.append(", ".join(toxics) or "no faults", "bold #dc322f" if toxics else "#839496")
        self.query_one("#bridge-status", Static).update(t)

    # --- running ------------------------------------------------------------------------------------
    async def start(self) -> bool:
        """Start the tool the fields describe; ``False`` with the reason on the pane."""
        if self.controller is not None:
            return True
        kind = str(self.query_one("#bridge-kind", Select).value)
        first = self.query_one("#bridge-a", Input).value.strip()
        second = self.query_one("#bridge-b", Input).value.strip() or (self.upstream() if kind == "proxy" else "")
        self.entries = []
        self._given = {}
        try:
            c = make_controller(kind, first, second, profile=self.profile(), clock=self.clock)
            c.subscribe(self._traffic)          # live, from its first entry ("proxy started")
            await c.start()
        except (PosemuError, OSError, ValueError) as e:
            self._status(f"cannot start the {kind}: {e}")
            return False
        self.controller = c
        self._buttons()
        self._status()
        self.post_message(self.Changed(c))
        return True

    async def stop(self) -> None:
        c, self.controller = self.controller, None
        if c is not None:
            c.unsubscribe(self._traffic)
            await c.stop()
            self.log_widget.write(Text(f"── {c.kind} stopped ──", "#839496"))
        if self.is_mounted:
            self._buttons()
            self._status()
        self.post_message(self.Changed(None))

    def _buttons(self) -> None:
        running = self.controller is not None
        self.query_one("#bridge-start", Button).disabled = running
        self.query_one("#bridge-stop", Button).disabled = not running
        for wid in ("#bridge-kind", "#bridge-a", "#bridge-b"):
            self.query_one(wid).disabled = running

    def _traffic(self, e: TraceEntry) -> None:
        self.entries.append(e)
        if self.is_mounted:
            for line in format_entry(e, field_names(self.profile())):
                self.log_widget.write(line)

    # --- the fault panel's faults -----------------------------------------------------------------------
    def sync(self, specs: dict[str, str]) -> dict[str, str]:
        """Make the bridge's armed faults the panel's (``name → spec``); returns the ones the tool
        refused, with the reason (a fault that needs another world than this tool's)."""
        c = self.controller
        if c is None:
            return {}
        refused: dict[str, str] = {}
        armed = {t.name for t in c.toxics()}
        for name in armed:
            if name not in specs or specs[name] != self._given.get(name):
                c.disarm(name)
                self._given.pop(name, None)
        for name, spec in specs.items():
            if name in self._given:
                continue
            try:
                c.arm(spec, name=name)
                self._given[name] = spec
            except (ConfigError, PosemuError) as e:
                refused[name] = str(e)
        self._status()
        return refused

    # --- events ---------------------------------------------------------------------------------------
    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "bridge-start":
            event.stop()
            await self.start()
        elif event.button.id == "bridge-stop":
            event.stop()
            await self.stop()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "bridge-kind" or not isinstance(event.value, str):
            return
        event.stop()
        a, b = LABELS[event.value]
        self.query_one("#bridge-a-label", Label).update(a)
        self.query_one("#bridge-b-label", Label).update(b)
        self.query_one("#bridge-a", Input).value = self.DEFAULTS[event.value][0]
        self.query_one("#bridge-b", Input).value = self.DEFAULTS[event.value][1]
