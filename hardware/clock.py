"""The one Clock port.

Everything in posemu that waits — host timeouts, PIN-entry timeouts, card-removal waits,
fault schedules — waits on the asyncio event loop, and the loop's time *is* the clock:

* :class:`RealClock` — wall time; the ordinary asyncio loop. Used by the interactive UI.
* :class:`VirtualClock` — virtual time for tests and the regression suite. Its event loop
  (:meth:`VirtualClock.new_event_loop`) jumps straight to the next timer whenever nothing is
  ready to run and no real-world work is in flight, so a 60 s host timeout costs
  milliseconds. Work done outside the loop (a pyscard call in a thread, a daemon, another
  process) is announced with :meth:`Clock.external`; while any is in flight the virtual clock
  follows real time instead of jumping, so a slow real peer is never mistaken for a timeout.

Code never sleeps on wall time (no ``time.sleep``, no asyncio sleeps with a delay); it awaits
:meth:`Clock.sleep` or uses ``asyncio.timeout``/``wait_for``, which run on the loop's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import selectors
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

EPOCH = dt.datetime(2026, 1, 1, 9, 0, 0, tzinfo=dt.UTC)
"""Default wall-clock start of a virtual clock: fixed, so traces and messages are reproducible."""


@runtime_checkable
class Clock(Protocol):
    """Time as the terminal sees it."""

    def now(self) -> float:
        """Monotonic seconds (the event loop's time)."""
        ...

    def wall(self) -> dt.datetime:
        """Wall-clock date and time (ISO 8583 fields 7, 12, 13; journal timestamps)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...

    def external(self) -> contextlib.AbstractContextManager[None]:
        """Mark real-world work in flight (threads, daemons, other processes)."""
        ...

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop that runs on this clock."""
        ...


async def loop_sleep(seconds: float) -> None:
    """Sleep on the running loop's timer (virtual or real, whichever loop this is)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    handle = loop.call_later(max(0.0, seconds), wake)
    try:
        await fut
    finally:
        handle.cancel()


def poll_slice(clock: Clock, deadline: float | None, poll: float) -> float | None:
    """How long the next poll may wait: ``poll``, cut to what is left before ``deadline``
    (clock seconds, ``None`` = no deadline); ``None`` when the deadline has passed."""
    if deadline is None:
        return poll
    remaining = deadline - clock.now()
    if remaining <= 0:
        return None
    return min(poll, remaining)


async def run_external(clock: Clock, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (pyscard, pyserial) in a thread, announced to the clock."""
    with clock.external():
        return await asyncio.to_thread(fn, *args)


class RealClock:
    """Wall time. The only place posemu waits in real time is the event loop's selector."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        await loop_sleep(seconds)  # real-time: an ordinary asyncio timer on a real loop

    @contextlib.contextmanager
    def external(self) -> Iterator[None]:
        yield

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()


class VirtualClock:
    """Virtual time that jumps to the next deadline whenever the world is idle.

    ``settle`` is how long (real seconds) the loop waits for real I/O before it decides the
    world is idle and jumps. Loopback sockets in the same process deliver synchronously and work
    in other threads or processes is announced with :meth:`external`, so the default is 0.

    >>> c = VirtualClock()
    >>> c.advance(60.0); c.now()
    60.0
    >>> c.wall().isoformat()
    '2026-01-01T09:01:00+00:00'
    """

    def __init__(self, start: dt.datetime = EPOCH, *, settle: float = 0.0) -> None:
        self._t = 0.0
        self._start = start
        self.settle = settle
        self._external = 0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._t

    def wall(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=self._t)

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (never backward)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._t += seconds

    async def sleep(self, seconds: float) -> None:
        await loop_sleep(seconds)

    @property
    def external_in_flight(self) -> int:
        return self._external

    @contextlib.contextmanager
    def external(self) -> Iterator[None]:
        with self._lock:
            self._external += 1
        try:
            yield
        finally:
            with self._lock:
                self._external -= 1

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualLoop(self)


class _VirtualSelector(selectors.BaseSelector):
    """A selector that turns an idle wait into a jump of the virtual clock."""

    def __init__(self, clock: VirtualClock) -> None:
        self._inner = selectors.DefaultSelector()
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        clock = self._clock
        if clock.external_in_flight:
            # Real work in flight: let time pass for real, and keep the virtual clock in step.
            t0 = time.monotonic()
            ready = self._inner.select(timeout)  # real-time
            clock.advance(time.monotonic() - t0)
            return ready
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if clock.settle > 0:
            wait = clock.settle if timeout is None else min(timeout, clock.settle)
            ready = self._inner.select(wait)  # real-time: settle guard before a jump
            if ready:
                return ready
        if timeout is None:
            # Nothing scheduled and nothing ready: only the outside world can wake us.
            t0 = time.monotonic()
            ready = self._inner.select(None)  # real-time
            clock.advance(time.monotonic() - t0)
            return ready
        clock.advance(timeout)
        return []


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self._vclock = clock
        super().__init__(_VirtualSelector(clock))

    def time(self) -> float:
        return self._vclock.now()
