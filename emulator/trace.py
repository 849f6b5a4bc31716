"""The event trace of a terminal: what happened, when (clock time), masked.

Every screen, state change, reader event, APDU, ISO 8583 message and TCP event goes here.
The trace feeds the UI's trace pane, ``--trace FILE`` exports (JSON lines) and the diagnosis.
Values are masked when recorded (PAN 6+4; track data, PIN blocks and keys never recorded),
so nothing downstream can leak them.

The file format lives here only: :meth:`TraceEntry.to_json` writes one entry per line
(``{"t": …, "kind": …, "what": …, **data}``), :func:`parse_trace` / :func:`read_trace` read a
file back. Lines without ``"kind"`` are headers (``posemu regress --trace-dir`` writes one with
the scenario and seed) and are skipped.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.clock import Clock
from protocol.errors import DecodeError
from protocol.iso import Message
from protocol.masking import mask_text

NOT_A_TRACE = "not a JSON-lines trace"


class Kind(enum.Enum):
    """What a trace entry records."""

    SCREEN = "screen"
    STATE = "state"
    READER = "reader"
    APDU = "apdu"
    ISO_OUT = "iso-out"
    ISO_IN = "iso-in"
    TCP = "tcp"
    JOURNAL = "journal"
    ERROR = "error"
    NOTE = "note"
    TXN = "txn"          # a transaction's begin and end: the diagnosis looks at the failed one only


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One event: seconds since the trace began (its clock), kind, a short text and data, masked when recorded."""

    t: float
    kind: Kind
    what: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"t": round(self.t, 6), "kind": self.kind.value, "what": self.what, **self.data},
                          ensure_ascii=False, default=str)


def parse_trace(data: str | bytes) -> list[TraceEntry]:
    """The entries of a JSON-lines trace (as :meth:`Trace.export` writes it). Header lines (no
    ``"kind"``) and blank lines are skipped; anything else raises
    :class:`~protocol.errors.DecodeError` naming the line.

    >>> parse_trace('{"posemu_trace": 1}\\n{"t": 0.5, "kind": "screen", "what": "ENTER_PIN", "params": {}}\\n')
    [TraceEntry(t=0.5, kind=<Kind.SCREEN: 'screen'>, what='ENTER_PIN', data={'params': {}})]
    >>> parse_trace('{"t": 1, "kind": "nope", "what": "x"}')
    Traceback (most recent call last):
    ...
    protocol.errors.DecodeError: line 1: unknown trace entry {'t': 1, 'kind': 'nope', 'what': 'x'}
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"{NOT_A_TRACE} (not UTF-8 text)") from None
    else:
        text = data
    entries = []
    # split on \n only, not splitlines(): an entry may hold U+0085 or U+2028 unescaped
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise DecodeError(f"line {n} is not JSON: {NOT_A_TRACE}") from None
        if not isinstance(doc, dict):
            raise DecodeError(f"line {n} is not a JSON object: {NOT_A_TRACE}")
        if "kind" not in doc:
            continue                                     # a header line
        extra = {k: v for k, v in doc.items() if k not in ("t", "kind", "what")}
        try:
            t = float(doc["t"])
            if not math.isfinite(t):
                raise ValueError(t)
            entries.append(TraceEntry(t, Kind(doc["kind"]), str(doc["what"]), extra))
        except (ValueError, KeyError, TypeError):
            raise DecodeError(f"line {n}: unknown trace entry {mask_text(repr(doc)):.80}") from None
    return entries


def read_trace(path: str | Path) -> list[TraceEntry]:
    """:func:`parse_trace` of a file (``OSError`` when it cannot be read)."""
    return parse_trace(Path(path).read_bytes())


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


class Trace:
    """The terminal's event trace, masked as it is recorded; listeners hear each entry, :meth:`export` writes it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: list[TraceEntry] = []
        self._listeners: list[Callable[[TraceEntry], None]] = []
        self._t0 = clock.now()

    def subscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        """Stop calling ``fn`` (no error if it was not subscribed)."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def record(self, kind: Kind, what: str, **data: Any) -> TraceEntry:
        e = TraceEntry(self.clock.now() - self._t0, kind, mask_text(what), _safe(data))
        self.entries.append(e)
        for fn in self._listeners:
            fn(e)
        return e

    def message(self, direction: Kind, msg: Message) -> TraceEntry:
        """An ISO 8583 message, field by field, as :meth:`Message.redacted` shows it (PAN 6+4,
        track data, PIN block and keys hidden, PAN-like runs in other fields masked)."""
        e = TraceEntry(self.clock.now() - self._t0, direction, msg.mti,
                       {"fields": {str(k): v for k, v in msg.redacted().items()}})
        self.entries.append(e)
        for fn in self._listeners:
            fn(e)
        return e

    def __iter__(self) -> Iterator[TraceEntry]:
        return iter(self.entries)

    def export(self, path: str | Path) -> None:
        """Write the trace as JSON lines (mode 0600: masked, but still what happened at the counter)."""
        from emulator.keystore import write_private

        write_private(Path(path), "".join(e.to_json() + "\n" for e in self.entries).encode("utf-8"))
