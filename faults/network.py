"""Network faults: a real TCP proxy on the path between terminal and host, and DNS injection.

:class:`FaultProxy` listens on 127.0.0.1 and forwards to the host, shaping each direction
on the Clock (so with the virtual clock a 30 s stall costs no wall time):

* ``latency`` / ``jitter`` — one-way delay per chunk (s), jitter uniform ±;
* ``bandwidth`` — bytes per second (0 = unlimited);
* ``loss`` — per-transmission loss probability: a lost segment is resent after TCP's
  retransmission timeout (200 ms, doubling); after ``max_retries`` the connection resets —
  this is how weak WiFi looks from the application;
* ``stall_after`` — after this many bytes towards the host (or ``stall_reply_after`` towards the
  terminal) nothing more is forwarded: a silent drop;
* ``reset_after`` / ``reset_reply_after`` — after this many bytes the connection is reset;
* ``refuse`` — connections are accepted and closed at once (a broken link / refused service).

DNS faults wrap the terminal's resolver: :func:`failing_resolver`, :func:`slow_resolver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, fields
from typing import Any

from emulator.errors import DnsError
from emulator.hostlink import Resolver
from hardware.clock import Clock
from protocol.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LinkFaults:
    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float = 0.0
    loss: float = 0.0
    max_retries: int = 6
    stall_after: int = -1
    stall_reply_after: int = -1
    reset_after: int = -1
    reset_reply_after: int = -1
    refuse: bool = False
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LinkFaults:
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for k, v in params.items():
            t = known.get(k)
            if t is None:
                raise ConfigError(f"unknown link fault parameter {k!r}; known: {', '.join(sorted(known))}")
            try:
                values[k] = (str(v).lower() in ("1", "true", "yes") if t == "bool" else
                             int(v) if t == "int" else float(v))
            except ValueError:
                raise ConfigError(f"link fault {k}={v!r} is not a number") from None
        return cls(**values)


class _Reset(Exception):
    pass


class FaultProxy:
    """``await FaultProxy.start(target_host, target_port, faults, clock)``; ``.port``; ``.close()``."""

    def __init__(self, target: tuple[str, int], faults: LinkFaults, clock: Clock) -> None:
        self.target = target
        self.faults = faults
        self.clock = clock
        self.rng = random.Random(faults.seed)
        self.stats: dict[str, int] = {"connections": 0, "bytes_up": 0, "bytes_down": 0, "retransmissions": 0,
                                      "resets": 0, "stalled": 0, "refused": 0}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, target: tuple[str, int], faults: LinkFaults, clock: Clock) -> FaultProxy:
        self = cls(target, faults, clock)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(r, w)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        if self.faults.refuse:
            self.stats["refused"] += 1
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.transport.abort()
            return
        self._writers.update((w, uw))
        up = asyncio.ensure_future(self._pump(r, uw, "up"))
        down = asyncio.ensure_future(self._pump(ur, w, "down"))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        reset = any(isinstance(t.exception(), _Reset) for t in done if not t.cancelled())
        for t in pending:
            t.cancel()
        for writer in (w, uw):
            if reset:
                writer.transport.abort()
            else:
                writer.close()
            self._writers.discard(writer)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, direction: str) -> None:
        f = self.faults
        stall = f.stall_after if direction == "up" else f.stall_reply_after
        reset = f.reset_after if direction == "up" else f.reset_reply_after
        sent = 0
        while True:
            chunk = await r.read(65536)
            if not chunk:
                return
            if stall >= 0 and sent + len(chunk) > stall:
                chunk = chunk[: max(0, stall - sent)]
                await self._deliver(w, chunk)
                sent += len(chunk)
                self.stats["stalled"] += 1
                await asyncio.get_running_loop().create_future()   # silent forever (until closed)
            if reset >= 0 and sent + len(chunk) > reset:
                await self._deliver(w, chunk[: max(0, reset - sent)])
                self.stats["resets"] += 1
                raise _Reset()
            await self._deliver(w, chunk)
            sent += len(chunk)
            self.stats["bytes_" + direction] += len(chunk)

    async def _deliver(self, w: asyncio.StreamWriter, chunk: bytes) -> None:
        if not chunk:
            return
        f = self.faults
        delay = f.latency + (self.rng.uniform(-f.jitter, f.jitter) if f.jitter else 0.0)
        if f.bandwidth > 0:
            delay += len(chunk) / f.bandwidth
        rto = 0.2
        tries = 0
        while f.loss and self.rng.random() < f.loss:
            tries += 1
            self.stats["retransmissions"] += 1
            if tries > f.max_retries:
                self.stats["resets"] += 1
                raise _Reset()
            delay += rto
            rto *= 2
        if delay > 0:
            await self.clock.sleep(max(0.0, delay))
        w.write(chunk)
        await w.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None


def failing_resolver(reason: str = "no such host (NXDOMAIN)") -> Resolver:
    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        raise DnsError(f"cannot resolve {host!r}: {reason}")

    return resolve


def slow_resolver(inner: Resolver, delay: float, clock: Clock, answer: tuple[str, int] | None = None) -> Resolver:
    """A resolver that answers after ``delay`` clock seconds (with ``answer`` if given)."""

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        await clock.sleep(delay)
        if answer is not None:
            return [answer]
        return await inner(host, port)

    return resolve


def static_resolver(answer: tuple[str, int]) -> Resolver:
    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        return [answer]

    return resolve
