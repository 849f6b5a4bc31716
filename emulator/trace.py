"""The event trace of a terminal: what happened, when (clock time), masked.

Every screen, state change, reader event, APDU, ISO 8583 message and TCP event goes here.
The trace feeds the UI's trace pane, ``--trace FILE`` exports (JSON lines) and the diagnosis.
Values are masked when recorded (PAN 6+4; track data, PIN blocks and keys never recorded),
so nothing downstream can leak them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.clock import Clock
from protocol.iso import Message
from protocol.masking import mask_text


class Kind(enum.Enum):
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
    t: float
    kind: Kind
    what: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"t": round(self.t, 6), "kind": self.kind.value, "what": self.what, **self.data},
                          ensure_ascii=False, default=str)


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


class Trace:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: list[TraceEntry] = []
        self._listeners: list[Callable[[TraceEntry], None]] = []
        self._t0 = clock.now()

    def subscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._listeners.append(fn)

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

    def of(self, kind: Kind) -> list[TraceEntry]:
        return [e for e in self.entries if e.kind is kind]

    def export(self, path: str | Path) -> None:
        """Write the trace as JSON lines (mode 0600: masked, but still what happened at the counter)."""
        from emulator.keystore import write_private

        write_private(Path(path), "".join(e.to_json() + "\n" for e in self.entries).encode("utf-8"))
