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
* ``refuse`` — connections are accepted and closed at once (a broken link / refused service);
* ``corrupt`` / ``corrupt_reply`` — probability that a chunk towards the host (or back) has one
  byte flipped after its 2-byte length (a noisy line, a broken middlebox): the message no longer
  MACs, or no longer decodes;
* ``duplicate`` — the first chunk towards the host is delivered twice (a retransmitting middlebox);
* ``drop_replies`` — on the first connection after the fault is armed, nothing comes back;
* ``half_open_after`` — a connection idle this long is silently dropped by the path (a NAT or
  firewall timeout): what is sent after that goes nowhere and nothing comes back.

Faults are armed and disarmed on a running proxy (:meth:`FaultProxy.arm`); with nothing armed it
is a plain relay. :meth:`FaultProxy.ping` is the technician's ping over the same link model.

DNS faults wrap the terminal's resolver: :class:`FaultyResolver` (``fail``, ``timeout``, ``slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, fields
from typing import Any

from emulator.errors import DnsError
from emulator.hostlink import EXTERNAL_GRACE_S, Resolver
from hardware.clock import Clock
from protocol.errors import ConfigError

NOTICEABLE_DELAY_S = 2.0
"""A message held up this long on the link is slower than a cardholder waits without noticing."""


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Impairments of the TCP path as the fault proxy plays them: latency, jitter, bandwidth, loss,
    stalls and resets."""

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
    corrupt: float = 0.0
    corrupt_reply: float = 0.0
    duplicate: bool = False
    drop_replies: bool = False
    half_open_after: float = 0.0
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
                values[k] = (v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")) \
                    if t == "bool" else int(v) if t == "int" else float(v)
            except ValueError:
                raise ConfigError(f"link fault {k}={v!r} is not a number") from None
        return cls(**values)


class _Reset(Exception):
    pass


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), as a broken path does, not an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def combine_links(armed: list[LinkFaults]) -> LinkFaults:
    """Several armed link faults at once: the worst of each quantity."""
    if not armed:
        return LinkFaults()
    out: dict[str, Any] = {}
    for f in fields(LinkFaults):
        vals = [getattr(a, f.name) for a in armed]
        if f.name in ("stall_after", "stall_reply_after", "reset_after", "reset_reply_after"):
            set_ = [v for v in vals if v >= 0]
            out[f.name] = min(set_) if set_ else -1
        elif f.name == "seed":
            out[f.name] = vals[0]
        elif f.name == "max_retries":
            out[f.name] = min(vals)
        elif isinstance(vals[0], bool):
            out[f.name] = any(vals)
        else:
            out[f.name] = max(vals)
    return LinkFaults(**out)


PING_TIMEOUT_S = 120.0


class FaultProxy:
    """``await FaultProxy.start(target_host, target_port, faults, clock)``; ``.port``; ``.close()``."""

    def __init__(self, target: tuple[str, int], faults: LinkFaults, clock: Clock, *, external: bool = False) -> None:
        self.target = target
        self.clock = clock
        # The target is another process: on the virtual clock, real time passes from a request's
        # delivery until its first answer bytes (at most EXTERNAL_GRACE_S), never while the path
        # itself holds bytes — so a congested path costs virtual time only.
        self.external = external
        self._armed: list[LinkFaults] = []
        self.faults = LinkFaults()
        self.rng = random.Random(faults.seed)
        if faults != LinkFaults(seed=faults.seed):
            self.arm(faults)
        self.stats: dict[str, int] = {"connections": 0, "bytes_up": 0, "bytes_down": 0, "retransmissions": 0,
                                      "resets": 0, "stalled": 0, "refused": 0, "corrupted": 0, "duplicated": 0,
                                      "half_open": 0, "dropped": 0}
        self.struck = 0
        self._drop_next_connection = False
        self._server: asyncio.Server | None = None
        self._port = 0
        self._down = False
        self._restart: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def arm(self, faults: LinkFaults) -> None:
        if not self._armed:
            self.rng = random.Random(faults.seed)
        self._armed.append(faults)
        self.faults = combine_links(self._armed)
        self._drop_next_connection = faults.drop_replies
        if faults.refuse:
            self.drop_connections()           # a link going down breaks what is open on it
            if self._server is not None:      # …and nothing gets through: connecting is refused
                self._server.close()
                self._down = True

    def disarm(self, faults: LinkFaults) -> None:
        if faults in self._armed:
            self._armed.remove(faults)
        self.faults = combine_links(self._armed)
        if self._down and not self.faults.refuse:
            self._down = False
            self._restart = asyncio.ensure_future(self._listen(self._port))

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)

    async def ping(self, count: int = 4, timeout: float = PING_TIMEOUT_S) -> tuple[int, float | None]:
        """A technician's patient ping across the link: (replies received of ``count``, mean round trip
        in s). Each echo takes the path's latency both ways, its jitter and its loss, on the clock."""
        f = self.faults
        got: list[float] = []
        for _ in range(count):
            if f.refuse:
                continue
            lost = f.loss and (self.rng.random() < f.loss or self.rng.random() < f.loss)
            rtt = 2 * f.latency + (self.rng.uniform(0, 2 * f.jitter) if f.jitter else 0.0) + 0.0005
            if f.bandwidth > 0:
                rtt += 2 * 64 / f.bandwidth
            await self.clock.sleep(min(rtt, timeout) if not lost else timeout)
            if not lost and rtt < timeout:
                got.append(rtt)
        return len(got), (sum(got) / len(got) if got else None)

    def drop_connections(self) -> None:
        """The path breaks: every open connection through it is reset."""
        for writer in list(self._writers):
            _rst(writer)

    @classmethod
    async def start(cls, target: tuple[str, int], faults: LinkFaults, clock: Clock, *,
                    external: bool = False) -> FaultProxy:
        self = cls(target, faults, clock, external=external)
        await self._listen(0)
        assert self._server is not None
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def port(self) -> int:
        return self._port

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(r, w)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        if self.faults.refuse:
            self.stats["refused"] += 1
            self.struck += 1
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.transport.abort()
            return
        self._writers.update((w, uw))
        drop_here = self._drop_next_connection and self.faults.drop_replies
        self._drop_next_connection = False
        answered = asyncio.Event()
        up = asyncio.ensure_future(self._pump(r, uw, "up", answered=answered))
        down = asyncio.ensure_future(self._pump(ur, w, "down", drop_here, answered=answered))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        reset = any(isinstance(t.exception(), _Reset) for t in done if not t.cancelled())
        for t in pending:
            t.cancel()
        for writer in (w, uw):
            if reset:
                _rst(writer)
            else:
                writer.close()
            self._writers.discard(writer)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, direction: str,
                    drop_here: bool = False, *, answered: asyncio.Event | None = None) -> None:
        sent = 0
        first = True
        last = self.clock.now()
        window: asyncio.Task[None] | None = None
        try:
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    return
                if answered is not None:
                    if direction == "down":
                        answered.set()
                    else:
                        answered.clear()            # a request on its way: its answer is awaited
                f = self.faults                 # what is armed now (faults can be armed mid-connection)
                stall = f.stall_after if direction == "up" else f.stall_reply_after
                reset = f.reset_after if direction == "up" else f.reset_reply_after
                now = self.clock.now()
                if f.half_open_after > 0 and now - last >= f.half_open_after:
                    self.stats["half_open"] += 1          # the path forgot this connection while it was idle
                    self.struck += 1
                    await asyncio.get_running_loop().create_future()
                last = now
                corrupt = f.corrupt if direction == "up" else f.corrupt_reply
                if corrupt and len(chunk) > 2 and self.rng.random() < corrupt:
                    pos = self.rng.randrange(2, len(chunk))
                    chunk = chunk[:pos] + bytes([chunk[pos] ^ (1 << self.rng.randrange(8))]) + chunk[pos + 1:]
                    self.stats["corrupted"] += 1
                    self.struck += 1
                if direction == "down" and drop_here:
                    self.stats["dropped"] += 1
                    self.struck += 1
                    continue
                if direction == "up" and first and f.duplicate:
                    self.stats["duplicated"] += 1
                    self.struck += 1
                    await self._deliver(w, chunk)
                first = False
                if stall >= 0 and sent + len(chunk) > stall:
                    chunk = chunk[: max(0, stall - sent)]
                    await self._deliver(w, chunk)
                    sent += len(chunk)
                    self.stats["stalled"] += 1
                    self.struck += 1
                    await asyncio.get_running_loop().create_future()   # silent forever (until closed)
                if reset >= 0 and sent + len(chunk) > reset:
                    await self._deliver(w, chunk[: max(0, reset - sent)])
                    self.stats["resets"] += 1
                    self.struck += 1
                    raise _Reset()
                await self._deliver(w, chunk)
                sent += len(chunk)
                self.stats["bytes_" + direction] += len(chunk)
                # delivered to an external peer: real time for it to answer
                if self.external and answered is not None and direction == "up" and (window is None or window.done()):
                    window = asyncio.ensure_future(self._peer_window(answered))
        finally:
            if window is not None:
                window.cancel()

    async def _peer_window(self, answered: asyncio.Event) -> None:
        """Real time for the external peer to answer what was just delivered to it."""
        with self.clock.external(), contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXTERNAL_GRACE_S):
                await answered.wait()

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
                self.struck += 1
                raise _Reset()
            delay += rto
            rto *= 2
        if delay > 0:
            if delay >= NOTICEABLE_DELAY_S:     # scoring: a delay nobody notices changes nothing
                self.struck += 1
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


class FaultyResolver:
    """The terminal's resolver with DNS faults armed: ``fail`` (NXDOMAIN), ``timeout`` (no answer: the
    lookup hangs until the terminal gives up), ``slow`` (answers after ``delay`` clock seconds)."""

    def __init__(self, inner: Resolver, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.mode = ""
        self.delay = 0.0
        self.struck = 0

    def arm(self, mode: str, delay: float = 0.0) -> None:
        if mode not in ("fail", "timeout", "slow"):
            raise ConfigError(f"DNS fault mode must be fail, timeout or slow, not {mode!r}")
        self.mode, self.delay = mode, delay

    def disarm(self) -> None:
        self.mode, self.delay = "", 0.0

    async def __call__(self, host: str, port: int) -> list[tuple[str, int]]:
        if self.mode == "fail":
            self.struck += 1
            raise DnsError(f"cannot resolve {host!r}: no such host (NXDOMAIN)").with_code("dns.nxdomain")
        if self.mode == "timeout":
            self.struck += 1
            await self.clock.sleep(3600.0)
            raise DnsError(f"cannot resolve {host!r}: the name server did not answer").with_code("dns.timeout")
        if self.mode == "slow":
            self.struck += 1
            await self.clock.sleep(self.delay)
        return await self.inner(host, port)
