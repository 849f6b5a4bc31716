"""The physical surroundings a terminal works in, and the terminal's own clock: fault points that
are not ports of the terminal but still act on it.

* :class:`Environment` — the room: ambient temperature and the electromagnetic field at the reader.
  The reader's contact physics (:mod:`faults.reader`) reads it, and so do the technician's
  thermometer and field meter (:mod:`faults.instruments`) — one truth for both.
* :class:`SkewedClock` — the terminal's real-time clock: the event loop's time is untouched, only
  the wall clock (dates in messages, the local expiry check, journal timestamps) is off by an offset,
  or reset to a fixed date when its backup battery is flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from dataclasses import dataclass

from hardware.clock import Clock

NOMINAL_TEMPERATURE_C = 25.0


@dataclass(slots=True)
class Environment:
    """Mutable: environmental faults change it and undo restores it."""

    temperature_c: float = NOMINAL_TEMPERATURE_C
    field_v: float = 0.0           # EMI coupled into the reader's contact line (V rms)

    def reset(self) -> None:
        self.temperature_c = NOMINAL_TEMPERATURE_C
        self.field_v = 0.0

    # --- what instruments read (with their own small error) ---------------------------------
    def thermometer(self, rng: random.Random) -> float:
        return round(self.temperature_c + rng.uniform(-0.5, 0.5), 1)

    def field_meter(self, rng: random.Random) -> float:
        """The field strength an oscilloscope probe near the reader shows (V rms, floor 10 mV)."""
        return round(max(0.01, self.field_v * (1.0 + rng.uniform(-0.05, 0.05))), 3)


class SkewedClock:
    """A :class:`hardware.clock.Clock` whose wall time is off (``offset_s``) or stuck at the date a
    flat RTC battery resets it to (``reset_to``). Everything else is the base clock's."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset_s = 0.0
        self.reset_to: dt.datetime | None = None
        self._reset_at = 0.0

    def now(self) -> float:
        return self.base.now()

    def wall(self) -> dt.datetime:
        if self.reset_to is not None:
            return self.reset_to + dt.timedelta(seconds=self.base.now() - self._reset_at)
        return self.base.wall() + dt.timedelta(seconds=self.offset_s)

    def set_reset(self, when: dt.datetime | None) -> None:
        self.reset_to = when
        self._reset_at = self.base.now()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)

    def external(self) -> contextlib.AbstractContextManager[None]:
        return self.base.external()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return self.base.new_event_loop()

    def reference(self) -> dt.datetime:
        """The true time (a technician's phone, NTP)."""
        return self.base.wall()
