"""The one sans-IO vocabulary of posemu (after h11).

Every byte-stream protocol object in posemu — the length framer, the terminal/host ISO 8583
sessions, the vpcd link, the ISO 7816-3 T=0 machines, the MSR605 codec — works the same way:

* ``receive_data(data: bytes) -> None`` hands it bytes read from the wire (any split, also
  empty for nothing new);
* ``next_event()`` returns the next complete event, or :data:`NEED_DATA` when more bytes are
  needed; call it until it says :data:`NEED_DATA`;
* the caller owns the I/O: whatever the object wants written comes back as ``bytes`` from its
  own ``send``-style methods.

A remote peer that sends garbage gets a :class:`protocol.errors.DecodeError` from
``next_event`` (or a typed "malformed" event where the stream can go on).

>>> NEED_DATA
NEED_DATA
>>> bool(NEED_DATA)
False
"""

from __future__ import annotations

import enum
from typing import Protocol, TypeVar

__all__ = ["NEED_DATA", "EventSource", "NeedData"]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA` (one member, so ``is`` checks narrow for mypy)."""

    NEED_DATA = "need data"

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __bool__(self) -> bool:
        return False


NEED_DATA = NeedData.NEED_DATA
"""``next_event`` has nothing complete yet: feed more bytes with ``receive_data``."""

E_co = TypeVar("E_co", covariant=True)


class EventSource(Protocol[E_co]):
    """Bytes in (``receive_data``), typed events out (``next_event`` … :data:`NEED_DATA`)."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> E_co | NeedData: ...
