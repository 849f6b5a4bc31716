"""Readers for the desktop emulator: what is attached (for the reader list) and the UI's wrapper.

* :func:`discover_blocking` lists the readers a user can pick: PC/SC readers (by name, so the
  choice survives re-plugging), serial ports (``serial://``) and the virtual reader. The UI calls
  it off the event loop every few seconds, so the list follows hot-plug.
* :class:`UiReader` wraps the configured reader so a keyboard-wedge swipe typed into the app
  (:mod:`hardware.wedge`) reaches the terminal as a reader event, whatever the reader is.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import quote

from hardware.clock import Clock
from hardware.ports import CardReader, ReaderEvent, ReaderEventKind, SwipeResult
from hardware.sim import SimReader
from protocol.errors import PosemuError

SIM_URL = "sim://"


@dataclass(frozen=True, slots=True)
class ReaderChoice:
    """One entry of the reader list: the URL to open and what to show."""

    url: str
    label: str
    kind: str  # "sim" | "pcsc" | "serial"


def pcsc_url(name: str) -> str:
    """``pcsc://<name>`` with the name percent-encoded (reader names hold spaces)."""
    return "pcsc://" + quote(name, safe="")


def discover_blocking() -> tuple[list[ReaderChoice], str]:
    """The attached readers and a note on PC/SC (why none are listed, or ``""``).

    Blocks (pyscard, the serial port scan): run it in a thread.
    """
    choices: list[ReaderChoice] = []
    note = ""
    try:
        from hardware.pcsc import list_readers_blocking

        for r in list_readers_blocking():
            state = r.state.value
            choices.append(ReaderChoice(pcsc_url(r.name), f"PC/SC {r.name} ({state})", "pcsc"))
    except ImportError:
        note = "PC/SC: pyscard is not installed"
    except PosemuError as e:
        note = f"PC/SC: {e}"
    try:
        from serial.tools import list_ports

        for p in sorted(list_ports.comports(), key=lambda p: p.device):
            desc = p.description if p.description and p.description != "n/a" else ""
            choices.append(ReaderChoice(f"serial://{p.device}", f"serial {p.device} {desc}".rstrip(), "serial"))
    except ImportError:
        pass
    return choices, note


def find_sim(reader: object) -> SimReader | None:
    """The :class:`SimReader` at the bottom of a chain of wrappers (``.inner``), if any."""
    r: object | None = reader
    for _ in range(16):
        if isinstance(r, SimReader):
            return r
        r = getattr(r, "inner", None)
        if r is None:
            return None
    return None


class UiReader:
    """The configured reader plus swipes injected by the UI (a keyboard-wedge magstripe reader).

    ``next_event`` waits on the inner reader in short slices and returns an injected swipe as
    soon as a slice ends, so an inner reader whose wait runs in a thread (PC/SC) is never
    cancelled mid-call. Everything else is delegated.
    """

    def __init__(self, inner: CardReader, clock: Clock, *, slice_s: float = 0.1) -> None:
        self.inner = inner
        self._clock = clock
        self._slice = slice_s
        self._injected: asyncio.Queue[ReaderEvent] = asyncio.Queue()
        self._wake = asyncio.Event()

    @property
    def name(self) -> str:
        return self.inner.name

    def inject_swipe(self, swipe: SwipeResult) -> None:
        """A swipe read by a keyboard-wedge reader: the terminal sees it as a reader event."""
        self._injected.put_nowait(ReaderEvent(ReaderEventKind.CARD_SWIPED, swipe=swipe))
        self._wake.set()

    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        # Waiting runs on the loop's time (the clock port's own rule: the loop's time is the clock).
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if not self._injected.empty():
                return self._injected.get_nowait()
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            step = self._slice if left is None else min(self._slice, left)
            if isinstance(self.inner, SimReader):
                ev = await self._sim_wait(self.inner, step)
            else:
                ev = await self.inner.next_event(step)
            if ev is not None:
                return ev

    async def _sim_wait(self, sim: SimReader, step: float) -> ReaderEvent | None:
        """For the in-process reader waiting is cancel-safe: wake at once on an injected swipe."""
        self._wake.clear()
        reader_wait = asyncio.ensure_future(sim.next_event(step))
        wake_wait = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({reader_wait, wake_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake_wait.cancel()
            if not reader_wait.done():
                reader_wait.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader_wait
        return reader_wait.result() if not reader_wait.cancelled() else None

    async def card_present(self) -> bool:
        return await self.inner.card_present()

    async def power_on(self) -> bytes:
        return await self.inner.power_on()

    async def transmit(self, apdu: bytes) -> bytes:
        return await self.inner.transmit(apdu)

    async def power_off(self) -> None:
        await self.inner.power_off()

    async def close(self) -> None:
        await self.inner.close()
