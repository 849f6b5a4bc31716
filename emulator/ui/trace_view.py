"""The trace pane: every event of the (already masked) trace, ISO 8583 messages field by field.

:func:`format_entry` turns one :class:`emulator.trace.TraceEntry` into display lines; the
:class:`TracePane` widget shows them with a kind filter and exports the trace (JSON lines, as
``posemu inquiry --trace`` writes it). The trace masks values when they are recorded (PAN 6+4,
track data, PIN blocks and keys replaced by their length), so nothing here can show them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, RichLog, Select

from emulator.messages import Lang, Msg, Screen, render
from emulator.trace import Kind, TraceEntry
from protocol.specs import get_profile

MTI_NAMES = {
    "0100": "authorisation", "0110": "authorisation response",
    "0200": "financial request", "0210": "financial response",
    "0400": "reversal", "0410": "reversal response",
    "0800": "network management (sign-on)", "0810": "network management response",
}

KIND_STYLE: dict[Kind, str] = {
    Kind.ISO_OUT: "bold #268bd2", Kind.ISO_IN: "bold #2aa198", Kind.APDU: "#6c71c4",
    Kind.READER: "#b58900", Kind.TCP: "#859900", Kind.SCREEN: "bold", Kind.STATE: "#839496",
    Kind.JOURNAL: "#d33682", Kind.ERROR: "bold #dc322f", Kind.NOTE: "#839496",
}

FILTERS: dict[str, frozenset[Kind]] = {
    "all": frozenset(Kind),
    "iso": frozenset({Kind.ISO_OUT, Kind.ISO_IN}),
    "apdu": frozenset({Kind.APDU, Kind.READER}),
    "link": frozenset({Kind.TCP, Kind.ISO_OUT, Kind.ISO_IN, Kind.ERROR}),
    "screens": frozenset({Kind.SCREEN, Kind.STATE, Kind.ERROR}),
}
FILTER_LABELS = {"all": "everything", "iso": "ISO 8583", "apdu": "APDUs + reader",
                 "link": "link + ISO 8583", "screens": "screens + states"}


VALUE_COLUMN = 19
"""Width the field values are padded to, so the field names line up after the usual values."""


def field_names(profile: str) -> dict[int, str]:
    """Field number → description from the ISO 8583 profile's spec (``{}`` if unknown)."""
    try:
        spec = get_profile(profile).spec
    except Exception:
        return {}
    out: dict[int, str] = {}
    for key, f in spec.items():
        if key.isdigit():
            out[int(key)] = str(f.get("desc", ""))
    return out


def _kv(data: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v}" for k, v in data.items())


def format_entry(e: TraceEntry, names: dict[int, str], lang: Lang = "both") -> list[Text]:
    """Display lines for one trace entry: a head line with the timestamp, then details."""
    style = KIND_STYLE.get(e.kind, "")
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append(f"{e.t:8.3f} ", "#839496")
    lines = [head]
    if e.kind in (Kind.ISO_OUT, Kind.ISO_IN):
        arrow = "→" if e.kind is Kind.ISO_OUT else "←"
        fields: dict[str, Any] = dict(e.data.get("fields", {}))
        head.append(f"{arrow} {e.what}", style)
        head.append(f"  {MTI_NAMES.get(e.what, '')}")
        rc = fields.get("39")
        if rc is not None:
            head.append(f"  rc {rc}", "bold" if rc == "00" else "bold #dc322f")
        for key in sorted(fields, key=lambda k: int(k) if k.isdigit() else 999):
            n = int(key) if key.isdigit() else -1
            # the value right after the field number, the field's name after it: in a narrow pane
            # (80×24) the name is what gets cut, never the value
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(f"{'':2}{key:>4} ", "#839496")
            line.append(f"{fields[key]!s:<{VALUE_COLUMN}} ")
            line.append(names.get(n, ""), "#839496")
            lines.append(line)
        return lines
    if e.kind is Kind.SCREEN:
        try:
            shown = render(Screen(Msg(e.what), {str(k): str(v) for k, v in e.data.get("params", {}).items()}), lang)
        except (ValueError, KeyError):
            shown = e.what
        head.append("screen ", "#839496")
        head.append(shown, style)
        return lines
    head.append(f"{e.kind.value:<7} ", style)
    head.append(e.what)
    if e.data:
        head.append(f"  {_kv(e.data)}", "#839496")
    return lines


class TracePane(Vertical):
    """The trace, newest at the bottom, with a kind filter and an export button."""

    class ExportRequested(Message):
        """The user asked to export the trace (the app picks the file)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries: list[TraceEntry] = []
        self.names: dict[int, str] = {}
        self.lang: Lang = "both"
        self._filter = "all"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="pane-tools"):
            yield Select([(label, key) for key, label in FILTER_LABELS.items()], value="all", allow_blank=False,
                         compact=True, id="trace-filter")
            yield Button("Export (x)", id="trace-export", compact=True)
        yield RichLog(id="trace-log", wrap=False, markup=False, highlight=False, max_lines=20_000,
                      auto_scroll=True)

    @property
    def log_widget(self) -> RichLog:
        return self.query_one("#trace-log", RichLog)

    def add(self, e: TraceEntry) -> None:
        self.entries.append(e)
        if self.is_mounted and e.kind in FILTERS[self._filter]:
            for line in format_entry(e, self.names, self.lang):
                self.log_widget.write(line)

    def note(self, text: str) -> None:
        """A separator line (not part of the trace), e.g. when the terminal is reopened."""
        if self.is_mounted:
            self.log_widget.write(Text(f"── {text} ──", "#839496"))

    def rebuild(self) -> None:
        log = self.log_widget
        log.clear()
        for e in self.entries:
            if e.kind in FILTERS[self._filter]:
                for line in format_entry(e, self.names, self.lang):
                    log.write(line)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "trace-filter" and isinstance(event.value, str):
            self._filter = event.value
            self.rebuild()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "trace-export":
            event.stop()
            self.post_message(self.ExportRequested())


def export_entries(entries: Iterable[TraceEntry], path: str | Path) -> int:
    """Write entries as JSON lines (the format of ``posemu inquiry --trace``); returns the count."""
    rows = [e.to_json() + "\n" for e in entries]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(rows), encoding="utf-8")
    return len(rows)

