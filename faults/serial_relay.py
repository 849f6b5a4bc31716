"""``posemu serial-relay``: a real serial reader presented on a pty, with faults on the line.

:class:`SerialRelay` opens the device (``serial:///dev/ttyUSB0?baud=9600``, any pyserial port,
through :class:`hardware.links.SerialLink`) and a pseudo-terminal (:class:`hardware.links.PtyPair`);
the application opens the pty's slave path as if it were the device. Bytes are pumped both ways,
and faults act on the way:

* **line faults** (``line:k=v,…``, typed and range-checked like catalogue parameters):
  ``drop`` — the chance a byte is lost; ``flip`` — the chance a byte arrives with one bit flipped
  (a noisy cable, EMI); ``baud`` — the application's side runs at another rate than the device,
  so every byte is re-read by a UART at the wrong rate (:func:`rebaud`: start bit, 8 data bits,
  stop bit; the sampling drifts and the bytes come out wrong, as on a real mismatched line);
  ``stall_after`` — after that many more bytes from the device it says nothing (a stalled
  device); ``to`` — ``app``, ``device`` or ``both`` directions (drop and flip);
* **the catalogue's** ``software.port-conflict`` (through the seam): another program holds the
  port — the relay holds the pty slave exclusively (``flock``, as pyserial's ``exclusive=True``,
  and ``TIOCEXCL``), so the application's open fails as it does on a held ``/dev/ttyUSB0``.

The trace (:mod:`emulator.trace`) records how many bytes went which way and what was done to
them — never their content (a magstripe reader's answers hold track data) — with evidence codes:
``serial.busy`` while the port is held (``posemu diagnose`` names *port-conflict*),
``reader.no_response`` when the device stalls on a command (*reader-dead*), ``serial.corrupted``
for bytes dropped, flipped or misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import termios
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from emulator.trace import Kind, Trace, TraceEntry
from faults.control import Toxic, ToxicKind, ToxicSet
from faults.environment import Environment, SkewedClock
from faults.grammar import split_params
from faults.injectors import Points
from faults.model import OnsetKind, ParamDef, ParamType
from hardware.clock import Clock
from hardware.links import PtyPair
from hardware.ports import ByteLink
from protocol.errors import ConfigError, PosemuError

__all__ = ["LINE_PARAMS", "LineFaults", "SerialRelay", "parse_line", "rebaud"]

LINE_PARAMS: tuple[ParamDef, ...] = (
    ParamDef("drop", ParamType.FLOAT, 0.0, "probability", 0.0, 1.0, help="chance that a byte is lost"),
    ParamDef("flip", ParamType.FLOAT, 0.0, "probability", 0.0, 1.0, help="chance that a byte has one bit flipped"),
    ParamDef("baud", ParamType.INT, 0, "bit/s", 0, 1_000_000,
             help="the application's side runs at this rate, not the device's (0: the same)"),
    ParamDef("stall_after", ParamType.INT, -1, "bytes", -1, 1_000_000,
             help="the device says nothing more after this many bytes from now (-1: never)"),
    ParamDef("to", ParamType.CHOICE, "both", choices=("both", "app", "device"),
             help="which way drop and flip act: towards the application, the device, or both"),
)


@dataclass(frozen=True, slots=True)
class LineFaults:
    drop: float = 0.0
    flip: float = 0.0
    baud: int = 0
    stall_after: int = -1
    to: str = "both"

    def describe(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != getattr(LineFaults(), f.name))


def parse_line(text: str) -> LineFaults:
    """``drop=0.01,flip=0.001,baud=19200,stall_after=40,to=app`` → :class:`LineFaults`.

    >>> parse_line("flip=0.5,to=app")
    LineFaults(drop=0.0, flip=0.5, baud=0, stall_after=-1, to='app')
    """
    declared = {p.name: p.type for p in LINE_PARAMS}
    pairs = split_params(text, declared, "line fault") if text.strip() else []
    if not pairs:
        raise ConfigError("a line fault is line:name=value,… with " + ", ".join(
            f"{p.name} ({p.describe()})" for p in LINE_PARAMS))
    values = {p.name: p.parse(v, "line fault") for p in LINE_PARAMS for n, v in pairs if n == p.name}
    return LineFaults(**values)  # type: ignore[arg-type]


def rebaud(data: bytes, tx_baud: int, rx_baud: int) -> bytes:
    """The bytes a UART at ``rx_baud`` reads from ``data`` sent back to back at ``tx_baud`` (8N1:
    a start bit 0, eight data bits least significant first, a stop bit 1; the line idles at 1).
    The receiver waits for a falling edge, samples each bit in the middle of *its* bit time, and
    delivers what it sampled (a byte with a bad stop bit too, as most UARTs do, flagged as a
    framing error). The same rate gives the bytes back.

    >>> rebaud(b"POS", 9600, 9600)
    b'POS'
    >>> rebaud(b"\\x1be", 9600, 19200) != b"\\x1be"
    True
    """
    if tx_baud <= 0 or rx_baud <= 0 or tx_baud == rx_baud or not data:
        return bytes(data)
    bits: list[int] = []
    for b in data:
        bits.append(0)
        bits.extend((b >> i) & 1 for i in range(8))
        bits.append(1)
    ta, tb = 1.0 / tx_baud, 1.0 / rx_baud

    def level(t: float) -> int:
        i = int(t / ta + 1e-9)
        return bits[i] if 0 <= i < len(bits) else 1

    out = bytearray()
    end = len(bits) * ta
    i = 0                                  # the sender bit boundary to look for an edge from
    while i < len(bits):
        if not (bits[i] == 0 and (i == 0 or bits[i - 1] == 1)):
            i += 1
            continue
        t0 = i * ta                        # a falling edge: a start bit begins
        value = 0
        for k in range(8):
            value |= level(t0 + (k + 1.5) * tb) << k
        out.append(value)
        stop_at = t0 + 9.5 * tb
        if stop_at >= end:
            break
        i = max(i + 1, int(stop_at / ta) + 1)
    return bytes(out)


SERIAL_INJECTORS = ("port-busy",)
SERIAL_ONSETS = (OnsetKind.STEP,)


class SerialRelay:
    """The serial relay; a :class:`faults.control.Controller`. ``await start()`` then the application
    opens :attr:`slave_path`."""

    kind = "serial-relay"

    def __init__(self, device: ByteLink, *, clock: Clock, device_baud: int = 9600, seed: int = 7,
                 trace: Trace | None = None, link_path: str | None = None) -> None:
        self.device = device
        self.clock = clock
        self.device_baud = device_baud
        self.link_path = link_path
        self._trace = trace or Trace(clock)
        self.rng = random.Random(seed)
        self.environment = Environment()
        self.toxic_set = ToxicSet(tool="serial relay", points=self._points, injectors=SERIAL_INJECTORS,
                                  onsets=SERIAL_ONSETS, trace=self._trace, seed=seed,
                                  own={"line": parse_line}, on_change=self._sync)
        self.stats: dict[str, int] = {"to_app": 0, "to_device": 0, "dropped": 0, "flipped": 0, "rebauded": 0,
                                      "stalled": 0}
        self._pty: PtyPair | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._holder: int | None = None
        self._stall_left: int | None = None
        self._stalled_noted = False
        self.faults = LineFaults()

    # --- Controller ----------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        return self._trace

    @property
    def slave_path(self) -> str:
        if self._pty is None:
            raise RuntimeError("the serial relay is not started")
        return self._pty.slave_path

    async def start(self) -> None:
        if self._pty is not None:
            return
        open_ = getattr(self.device, "open", None)
        if open_ is not None:
            await open_()
        self._pty = PtyPair()
        if self.link_path:
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(self.link_path):
                    os.unlink(self.link_path)
            os.symlink(self._pty.slave_path, self.link_path)
        self._trace.record(Kind.NOTE, "serial relay started", device=self.device.name, pty=self._pty.slave_path)
        self._tasks = [asyncio.ensure_future(self._to_app()), asyncio.ensure_future(self._to_device())]
        self._sync()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, PosemuError, OSError):
                await t
        self._tasks = []
        self.toxic_set.reset()
        self._release()
        if self._pty is not None:
            await self._pty.close()
            self._pty = None
        if self.link_path and os.path.islink(self.link_path):
            with contextlib.suppress(OSError):
                os.unlink(self.link_path)
        with contextlib.suppress(PosemuError, OSError):
            await self.device.close()

    def arm(self, spec: str, *, name: str | None = None, enabled: bool = True) -> Toxic:
        return self.toxic_set.add(spec, name=name, enabled=enabled)

    def disarm(self, name: str) -> None:
        self.toxic_set.remove(name)

    def enable(self, name: str, on: bool = True) -> Toxic:
        return self.toxic_set.enable(name, on)

    def toxics(self) -> list[Toxic]:
        return self.toxic_set.all()

    def reset(self) -> None:
        self.toxic_set.reset()

    def status(self) -> dict[str, Any]:
        pty = None if self._pty is None else self._pty.slave_path
        return {"kind": self.kind, "device": self.device.name, "pty": pty,
                "held": self._holder is not None, "line": self.faults.describe(), "stats": dict(self.stats),
                "toxics": [t.to_json() for t in self.toxics()]}

    def subscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._trace.subscribe(fn)

    def unsubscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._trace.unsubscribe(fn)

    def _points(self) -> Points:
        return Points(environment=self.environment, clock=SkewedClock(self.clock))

    # --- faults ----------------------------------------------------------------------------------
    def _sync(self) -> None:
        """What is armed now: the worst of each line fault; the port held or not."""
        line = [t.payload for t in self.toxic_set.active(ToxicKind.LINE) if isinstance(t.payload, LineFaults)]
        stall = min((x.stall_after for x in line if x.stall_after >= 0), default=-1)
        tos = {x.to for x in line if x.drop or x.flip}
        new = LineFaults(drop=max((x.drop for x in line), default=0.0), flip=max((x.flip for x in line), default=0.0),
                         baud=next((x.baud for x in line if x.baud), 0), stall_after=stall,
                         to="both" if len(tos) != 1 else tos.pop())
        if new.stall_after != self.faults.stall_after:
            self._stall_left = None if new.stall_after < 0 else new.stall_after
            self._stalled_noted = False
        self.faults = new
        held = any(p.hold_port for p in self.toxic_set.plans())
        if held and self._holder is None and self._pty is not None:
            self._hold()
        elif not held and self._holder is not None:
            self._release()

    def _hold(self) -> None:
        """Another program opens the port exclusively (pyserial ``exclusive=True``: ``flock``)."""
        assert self._pty is not None
        fd = os.open(self._pty.slave_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.ioctl(fd, termios.TIOCEXCL)
        except OSError:
            os.close(fd)
            raise
        self._holder = fd
        self._trace.record(Kind.ERROR, "the port is held by another program", port=self._pty.slave_path,
                           code="serial.busy")

    def _release(self) -> None:
        fd, self._holder = self._holder, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, termios.TIOCNXCL)
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._trace.record(Kind.NOTE, "the port is free again")

    def _mangle(self, data: bytes, towards: str) -> bytes:
        f = self.faults
        if (f.drop or f.flip) and f.to in ("both", towards):
            out = bytearray()
            for b in data:
                if f.drop and self.rng.random() < f.drop:
                    self.stats["dropped"] += 1
                    continue
                if f.flip and self.rng.random() < f.flip:
                    self.stats["flipped"] += 1
                    b ^= 1 << self.rng.randrange(8)
                out.append(b)
            data = bytes(out)
        if f.baud and f.baud != self.device_baud:
            tx, rx = (self.device_baud, f.baud) if towards == "app" else (f.baud, self.device_baud)
            self.stats["rebauded"] += len(data)
            data = rebaud(data, tx, rx)
        return data

    # --- pumps -----------------------------------------------------------------------------------
    async def _to_app(self) -> None:
        assert self._pty is not None
        master = self._pty.master
        while True:
            data = await self.device.read(4096, 0.5)
            if not data:
                continue
            if self._stall_left is not None:
                if self._stall_left <= 0:
                    self.stats["stalled"] += len(data)
                    continue
                data, rest = data[:self._stall_left], data[self._stall_left:]
                self._stall_left -= len(data)
                self.stats["stalled"] += len(rest)
            out = self._mangle(data, "app")
            self.stats["to_app"] += len(out)
            self._note("device → application", data, out)
            if out:
                await master.write(out)

    async def _to_device(self) -> None:
        assert self._pty is not None
        master = self._pty.master
        while True:
            data = await master.read(4096, 0.5)
            if not data:
                continue
            self.toxic_set.step()
            out = self._mangle(data, "device")
            self.stats["to_device"] += len(out)
            self._note("application → device", data, out)
            if self._stall_left is not None and self._stall_left <= 0 and not self._stalled_noted:
                self._stalled_noted = True
                self._trace.record(Kind.ERROR, "the device stopped answering", code="reader.no_response")
            if out:
                await self.device.write(out)

    def _note(self, way: str, before: bytes, after: bytes) -> None:
        changed = before != after
        self._trace.record(Kind.READER, way, bytes=len(before), delivered=len(after),
                           **({"code": "serial.corrupted"} if changed else {}))
