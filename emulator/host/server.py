"""The host simulator's asyncio TCP server (loopback by default).

One :class:`protocol.session.ServerSession` per connection; requests are answered in the
order they complete, several may be in flight per connection. A frame that does not decode
gets a ``30`` response when its MTI can be read; a broken length header closes that
connection with a logged one-line reason. Nothing a client sends can stop the server:

* PIN checks (a salted scrypt, slow on purpose) run in worker threads, so purchases with a PIN
  do not stall the inquiries of other terminals;
* a connection that completes no request for ``idle_timeout`` seconds is closed (idle terminals
  and slowloris clients alike), and at most ``max_connections`` are open at once — more are
  refused at once.

With an :class:`ssl.SSLContext` the listener speaks TLS (``posemu host --tls-cert/--tls-key``).
Every message in and out is logged as one masked line (:func:`emulator.host.logic.summary`) on the
``posemu.host.wire`` logger at INFO — ``posemu host -v`` shows them.
``wire_observers`` see every accepted connection's raw bytes (:mod:`emulator.capture`:
``posemu host --pcap``; over TLS, the bytes inside the TLS session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from emulator.capture import WireConn, WireEvent, WireKind, WireObserver, sockname
from emulator.host.logic import Decision, HostLogic, PinJob, seed_demo, summary
from emulator.host.rules import HostRules
from emulator.host.store import HostStore
from hardware.clock import Clock, run_external
from protocol.errors import DecodeError, PosemuError
from protocol.iso import Message
from protocol.session import MalformedRequest, RequestReceived, ServerSession
from protocol.specs import Profile

log = logging.getLogger("posemu.host")
wire = logging.getLogger("posemu.host.wire")
"""One masked line per message in and out (INFO)."""


@dataclass(slots=True)
class HostStats:
    """Counters of a running host: connections, requests, refusals and closes by reason, answers by code."""

    connections: int = 0
    requests: int = 0
    malformed: int = 0
    closed_bad_framing: int = 0
    refused: int = 0
    refused_full: int = 0         # over max_connections
    closed_idle: int = 0
    pin_checks: int = 0
    by_rc: dict[str, int] = field(default_factory=dict)


class _Conn(asyncio.Protocol):
    def __init__(self, host: HostServer) -> None:
        self.host = host
        self.session = ServerSession(host.profile)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._tasks: set[asyncio.Task[None]] = set()
        self._out: list[bytes] | None = None    # responses batched during one data_received
        self._idle: asyncio.TimerHandle | None = None
        self._wire: WireConn | None = None
        self._peer_eof = False
        self._active_at = 0.0

    def _tap(self, kind: WireKind, data: bytes = b"") -> None:
        if self._wire is not None:
            ev = WireEvent(kind, self._wire, self.host.clock.wall().timestamp(), data, self._peer_eof)
            for fn in self.host.wire_observers:
                fn(ev)

    def _write(self, tr: asyncio.Transport, data: bytes) -> None:
        self._tap(WireKind.SENT, data)
        tr.write(data)

    def eof_received(self) -> bool | None:
        self._peer_eof = True           # the client closed first; the transport then closes
        return None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # any loop's stream transport (asyncio, uvloop)
        self.peer = str(transport.get_extra_info("peername"))
        host = self.host
        if host.rules.refuse_connection():
            host.stats.refused += 1
            self.transport.abort()
            return
        if len(host.conns) >= host.max_connections:
            host.stats.refused_full += 1
            if host.stats.refused_full in (1, 10, 100) or host.stats.refused_full % 1000 == 0:
                log.warning("refusing %s: %d connections open (max_connections); %d refused so far",
                            self.peer, len(host.conns), host.stats.refused_full)
            self.transport.abort()
            return
        host.stats.connections += 1
        host.conns.add(self)
        if host.wire_observers:
            self._wire = WireConn("server", sockname(transport, "sockname"), sockname(transport, "peername"),
                                  host.profile)
            self._tap(WireKind.OPEN)
        self._arm_idle()

    def _arm_idle(self) -> None:
        """A request was received: the idle deadline moves. One timer per connection, re-armed lazily
        when it fires early (no timer cancelled and created per request)."""
        timeout = self.host.idle_timeout
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        self._active_at = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        loop = asyncio.get_running_loop()
        left = self._active_at + self.host.idle_timeout - loop.time()
        if left > 0:             # a request came in since the timer was set
            self._idle = loop.call_later(left, self._idle_expired)
            return
        if self._tasks:          # answers still being worked on: wait for them
            self._arm_idle()
            return
        self.host.stats.closed_idle += 1
        log.info("closing %s: no request completed in %g s", self.peer, self.host.idle_timeout)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.conns.discard(self)
        self._tap(WireKind.CLOSED)
        self._wire = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        for t in self._tasks:
            t.cancel()

    def data_received(self, data: bytes) -> None:
        host = self.host
        session = self.session
        self._tap(WireKind.RECEIVED, data)
        session.receive_data(data)
        events: list[RequestReceived | MalformedRequest] = []
        broken: DecodeError | None = None
        while True:
            try:
                ev = session.next_event()
            except DecodeError as e:
                broken = e
                break
            if not isinstance(ev, (RequestReceived, MalformedRequest)):     # NEED_DATA
                break
            events.append(ev)
        if broken is not None:
            host.stats.closed_bad_framing += 1
            log.warning("closing %s: %s", self.peer, broken)
        if events:
            self._arm_idle()
            self._serve(events, broken is not None)
        if broken is not None and self.transport:
            self.transport.close()

    def _serve(self, events: list[RequestReceived | MalformedRequest], closing: bool) -> None:
        """Decide the requests that arrived together and write their answers in one go.

        A shared store (``--workers``) decides them under its write lock (:meth:`HostStore.hold`), held
        for everything decided in this turn of the event loop (every connection's batch) and committed
        at its end, before any of those answers is encoded and written (:meth:`HostServer.hold_for_tick`);
        a private store commits money moves at once and the rest within :attr:`HostServer.COMMIT_EVERY`."""
        host = self.host
        store = host.store
        shared = store.shared
        logic = host.logic
        stats = host.stats
        logged = wire.isEnabledFor(logging.INFO)     # once per batch, not per message
        out: list[bytes] = []
        self._out = out
        decided: list[Decision] = []
        try:
            if shared:
                host.hold_for_tick()
            else:
                store.begin()
            for ev in events:
                if isinstance(ev, RequestReceived):
                    req = ev.request
                    stats.requests += 1
                    if logged:
                        wire.info("%s <- %s", self.peer, summary(req))
                    for fn in host.observers:
                        fn(req)
                    job = logic.pin_job(req, ev.raw)
                    if job is not None:
                        self._spawn(self._check_pin_then_answer(ev, job))
                        continue
                    decision = logic.handle(req, ev.raw)
                    if host.decided:
                        host.notify_decided(req, decision)
                else:
                    stats.malformed += 1
                    if logged:
                        wire.info("%s <- malformed %s (%s)", self.peer, ev.mti or "frame", ev.error.msg)
                    decision = logic.malformed(ev.mti, ev.partial, ev.error)
                if shared:
                    decided.append(decision)
                elif decision.delay > 0:
                    self._dispatch(decision)
                else:
                    self._send(decision, logged)
            if shared:
                host.answer_after_commit(self, decided, closing)
        except Exception:  # a bug must not take the server down: log it, drop this connection
            log.exception("internal error while serving %s; closing that connection", self.peer)
            if self.transport:
                self.transport.abort()
        finally:
            if not shared:
                host.commit_soon()
            self._out = None
            if out and not closing and self.transport is not None and not self.transport.is_closing():
                self._write(self.transport, b"".join(out))

    def _answer(self, decisions: list[Decision], closing: bool) -> None:
        """Send decisions taken (and committed) earlier, in one write."""
        out: list[bytes] = []
        self._out = out
        try:
            for decision in decisions:
                self._dispatch(decision)
        finally:
            self._out = None
            if out and not closing and self.transport is not None and not self.transport.is_closing():
                self._write(self.transport, b"".join(out))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _check_pin_then_answer(self, ev: RequestReceived, job: PinJob) -> None:
        host = self.host
        host.stats.pin_checks += 1
        ok = await run_external(host.clock, job.run)       # scrypt in a worker thread
        store = host.store
        try:
            if store.shared:
                store.hold()
            decision = host.logic.handle(ev.request, ev.raw, pin_ok=ok)
        except Exception:  # a bug must not take the server down
            log.exception("internal error while serving %s; closing that connection", self.peer)
            if self.transport:
                self.transport.abort()
            return
        finally:
            if store.held:
                store.release()
        host.commit_soon()
        host.notify_decided(ev.request, decision)
        self._dispatch(decision)

    def _dispatch(self, d: Decision) -> None:
        if d.delay > 0:
            self._spawn(self._later(d))
            return
        self._send(d)

    async def _later(self, d: Decision) -> None:
        await self.host.clock.sleep(d.delay)
        self._send(d)

    def _send(self, d: Decision, logged: bool | None = None) -> None:
        """Encode and write (or add to the batch being answered) one decision's response; ``logged``:
        whether the wire logger is on, when the caller knows."""
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        resp = d.response
        if resp is not None:
            rc = resp.fields.get(39)
            if isinstance(rc, str):
                by_rc = self.host.stats.by_rc
                by_rc[rc] = by_rc.get(rc, 0) + 1
            if logged if logged is not None else wire.isEnabledFor(logging.INFO):
                wire.info("%s -> %s", self.peer, summary(resp))
            try:
                data = self.session.send(resp, mak=d.mak)
                if d.mangle:
                    data = mangle(data, d.mangle, self.host.profile)
            except (PosemuError, TypeError) as e:
                log.warning("closing %s: cannot encode the %s answer (%s)", self.peer, resp.mti, e)
                if self._out:
                    self._write(tr, b"".join(self._out))
                    self._out.clear()
                tr.close()
                return
            else:
                if self._out is not None:
                    self._out.append(data)
                else:
                    self._write(tr, data)
        if d.close:
            if self._out:
                self._write(tr, b"".join(self._out))
                self._out.clear()
            tr.close()


def mangle(frame_bytes: bytes, mode: str, profile: Profile) -> bytes:
    """Spoil an encoded, framed answer the way a broken host or middlebox does (a GARBAGE rule):
    ``garbage`` — a frame of the right length holding noise; ``truncated`` — the length header says
    less than the message holds; ``bad-bitmap`` — the bitmap's bits flipped. The frame is the
    profile's (its length header, TPDU/application header, MTI and bitmap widths: any dialect)."""
    lh = profile.length_header
    head, body = frame_bytes[:lh.size], frame_bytes[lh.size:]
    if mode == "truncated":
        cut = max(1, len(body) // 2)
        return lh.encode(cut) + body[:cut]
    if mode == "bad-bitmap":
        at = profile.header_len + int(profile.spec["t"].get("max_len", 4))   # after the MTI (BCD or ASCII)
        width = int(profile.spec["p"].get("max_len", 8))
        flipped = bytes(b ^ 0xA5 for b in body[at:at + width])
        return head + body[:at] + flipped + body[at + width:]
    noise = bytes((i * 37 + 11) & 0xFF for i in range(len(body)))
    return head + noise


class HostServer:
    """The bundled host: ``await HostServer.start(...)``, then ``.port``, ``.close()``."""

    DEFAULT_IDLE_TIMEOUT = 120.0
    DEFAULT_MAX_CONNECTIONS = 2048

    def __init__(self, profile: Profile, store: HostStore, clock: Clock, rules: HostRules | None = None, *,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 lane: tuple[int, int] = (0, 1)) -> None:
        self.profile = profile
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.store = store
        self.clock = clock
        self.rules = rules or HostRules()
        self.logic = HostLogic(store, profile, clock, rules=self.rules, lane=lane)
        self.stats = HostStats()
        self.conns: set[_Conn] = set()
        self.observers: list[Callable[[Message], None]] = []   # called with every decoded request
        self.decided: list[Callable[[Message, Decision], None]] = []   # … and with its decision, once taken
        self.wire_observers: list[WireObserver] = []   # raw bytes of every accepted connection
        self._commit_handle: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._tick: asyncio.Handle | None = None
        self._after_commit: list[tuple[_Conn, list[Decision], bool]] = []

    @classmethod
    async def start(cls, profile: Profile, *, clock: Clock, host: str = "127.0.0.1", port: int = 0,
                    db: str | Path = ":memory:", rules: HostRules | None = None, seed: bool = True,
                    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                    max_connections: int = DEFAULT_MAX_CONNECTIONS, tls: ssl.SSLContext | None = None,
                    worker: tuple[int, int] | None = None) -> HostServer:
        """Open the database (seeded when empty and ``seed``) and listen.

        ``worker=(k, n)``: this is worker ``k`` of ``n`` host processes listening on one port
        (``SO_REUSEPORT``: the kernel spreads connections over them) and sharing ``db``: the store is
        shared (:class:`HostStore` ``shared``) and RRNs are taken from lane ``k``."""
        store = HostStore(db, shared=worker is not None)
        if seed and store.empty:
            seed_demo(store)
        store.prepare()
        self = cls(profile, store, clock, rules, idle_timeout=idle_timeout, max_connections=max_connections,
                   lane=worker or (0, 1))
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Conn(self), host, port, ssl=tls,
                                                    reuse_port=True if worker is not None else None)
        except BaseException:
            store.close()
            raise
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    @property
    def port(self) -> int:
        return self.address[1]

    def notify_decided(self, req: Message, decision: Decision) -> None:
        for fn in self.decided:
            fn(req, decision)

    COMMIT_EVERY = 0.02
    """Seconds a batch of log rows (balance inquiries, declines) may wait before it is committed.
    Money-moving changes (purchase, reversal) are committed before their response is sent."""

    def commit_soon(self) -> None:
        """Group commits: one SQLite commit for everything served in the next few milliseconds."""
        if self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_later(self.COMMIT_EVERY, self._commit_now)

    def _commit_now(self) -> None:
        self._commit_handle = None
        self.store.commit()

    def hold_for_tick(self) -> None:
        """A shared store: hold its write lock until the end of this turn of the event loop, so the
        batches of every connection that turn are decided in one transaction (one lock, one commit)."""
        if not self.store.held:
            self.store.hold()
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_soon(self._end_tick)

    def answer_after_commit(self, conn: _Conn, decisions: list[Decision], closing: bool) -> None:
        """Send ``decisions`` to ``conn`` once this turn's transaction is committed."""
        self._after_commit.append((conn, decisions, closing))

    def _end_tick(self) -> None:
        self._tick = None
        waiting, self._after_commit = self._after_commit, []
        try:
            if self.store.held:
                self.store.release()
        except Exception:   # not committed: nothing of it is answered
            log.exception("cannot commit the decisions of %d connections; closing them", len(waiting))
            for conn, _, _ in waiting:
                if conn.transport is not None:
                    conn.transport.abort()
            return
        for conn, decisions, closing in waiting:
            try:
                conn._answer(decisions, closing)
            except Exception:  # a bug must not take the server down
                log.exception("internal error while answering %s; closing that connection", conn.peer)
                if conn.transport is not None:
                    conn.transport.abort()

    def drop_connections(self) -> None:
        for c in list(self.conns):
            if c.transport:
                c.transport.abort()

    async def close(self) -> None:
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        if self._tick is not None:
            self._tick.cancel()
            self._end_tick()
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.store.close()
