"""The hardware ports: small ``typing.Protocol`` interfaces every backend implements.

A backend is chosen by URL (see :mod:`hardware.registry`): ``sim://<card-profile>``,
``pcsc://<reader name or index>``, ``serial:///dev/ttyUSB0?baud=9600``. Fault injectors wrap
these ports from outside; backends never know about faults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class TrackStatus(enum.Enum):
    """Per-track outcome of a magstripe read, as a reader ASIC reports it."""

    OK = "ok"
    NO_DATA = "no data"                    # no flux transitions / nothing decodable
    NO_START_SENTINEL = "no start sentinel"
    NO_END_SENTINEL = "no end sentinel"
    PARITY_ERROR = "parity error"
    LRC_ERROR = "LRC error"
    CLOCK_LOST = "clock lost"              # decoder lost bit synchronisation


@dataclass(frozen=True, slots=True)
class TrackRead:
    """One track as read. ``data`` is the characters between the sentinels (no SS/ES/LRC)."""

    track: int
    status: TrackStatus
    data: str = field(default="", repr=False)   # card data: never in a repr
    detail: str = ""                        # e.g. "parity error at character 12"

    @property
    def ok(self) -> bool:
        return self.status is TrackStatus.OK


@dataclass(frozen=True, slots=True)
class SwipeResult:
    """What a reader returns for one swipe: every track it reads."""

    tracks: tuple[TrackRead, ...]

    def track(self, n: int) -> TrackRead | None:
        for t in self.tracks:
            if t.track == n:
                return t
        return None


class ReaderEventKind(enum.Enum):
    """What happened at a reader: a card went in, came out or was swiped, or the reader went away."""

    CARD_INSERTED = "card inserted"
    CARD_REMOVED = "card removed"
    CARD_SWIPED = "card swiped"
    READER_LOST = "reader lost"


@dataclass(frozen=True, slots=True)
class ReaderEvent:
    """One reader event; ``swipe`` is the swipe's result for ``CARD_SWIPED``, else ``None``."""

    kind: ReaderEventKind
    swipe: SwipeResult | None = None


@runtime_checkable
class CardReader(Protocol):
    """A card reader with a contact IC slot and/or a magstripe head.

    ``transmit`` takes a command APDU and returns the response APDU (data + SW1 SW2) — the
    transport protocol (T=0 procedure bytes, GET RESPONSE) is handled below this port.
    All methods raise :class:`hardware.errors.ReaderError` subclasses on failure.
    """

    @property
    def name(self) -> str: ...

    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        """The next insert/remove/swipe event, or ``None`` when ``timeout`` (clock seconds) expires."""
        ...

    async def card_present(self) -> bool:
        """The card-seat switch: is a card in the IC slot?"""
        ...

    async def power_on(self) -> bytes:
        """Activate the card (ISO 7816-3 cold reset) and return the raw ATR."""
        ...

    async def transmit(self, apdu: bytes) -> bytes:
        """Send a C-APDU, return the R-APDU (data + SW1 SW2)."""
        ...

    async def power_off(self) -> None:
        """Deactivate the card."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class HealthSensors(Protocol):
    """What a terminal knows about its own condition, where its hardware reports it: the supply
    voltage at the card reader (the battery or power-supply monitor, V) and the temperature inside
    the case (°C). Optional: a reader that offers it gets it into every transaction's trace."""

    def health(self) -> dict[str, float]: ...


@runtime_checkable
class ByteLink(Protocol):
    """A byte stream to a device (serial port, pty)."""

    @property
    def name(self) -> str: ...

    async def write(self, data: bytes) -> None: ...

    async def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; fewer (possibly ``b""``) if ``timeout`` clock seconds pass first."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class VirtualCard(Protocol):
    """A card as a pure function, vsmartcard-style: ``execute(apdu) -> response``.

    ``atr`` is the answer to reset; ``stripe`` the magnetic stripe's track contents
    (index 0..2 for tracks 1..3, data between the sentinels, ``None`` = track absent).
    """

    @property
    def atr(self) -> bytes: ...

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]: ...

    def reset(self) -> None:
        """Cold/warm reset: volatile state (selected application, transaction) is cleared."""
        ...

    def execute(self, apdu: bytes) -> bytes: ...
