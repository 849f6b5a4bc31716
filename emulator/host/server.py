"""The host simulator's asyncio TCP server (loopback by default).

One :class:`protocol.session.ServerSession` per connection; requests are answered in the
order they complete, several may be in flight per connection. A frame that does not decode
gets a ``30`` response when its MTI can be read; a broken length header closes that
connection with a logged reason. Nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from emulator.host.logic import Decision, HostLogic, seed_demo
from emulator.host.rules import HostRules
from emulator.host.store import HostStore
from hardware.clock import Clock
from protocol.errors import DecodeError, PosemuError
from protocol.iso import Message
from protocol.session import NEED_DATA, RequestReceived, ServerSession
from protocol.specs import Profile

log = logging.getLogger("posemu.host")


@dataclass(slots=True)
class HostStats:
    connections: int = 0
    requests: int = 0
    malformed: int = 0
    closed_bad_framing: int = 0
    refused: int = 0
    by_rc: dict[str, int] = field(default_factory=dict)


class _Conn(asyncio.Protocol):
    def __init__(self, host: HostServer) -> None:
        self.host = host
        self.session = ServerSession(host.profile)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._tasks: set[asyncio.Task[None]] = set()
        self._out: list[bytes] | None = None    # responses batched during one data_received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # any loop's stream transport (asyncio, uvloop)
        self.peer = str(transport.get_extra_info("peername"))
        if self.host.rules.refuse_connection():
            self.host.stats.refused += 1
            self.transport.abort()
            return
        self.host.stats.connections += 1
        self.host.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.conns.discard(self)
        for t in self._tasks:
            t.cancel()

    def data_received(self, data: bytes) -> None:
        host = self.host
        session = self.session
        session.receive_data(data)
        host.store.begin()
        out: list[bytes] = []
        self._out = out
        try:
            while True:
                try:
                    ev = session.next_event()
                except DecodeError as e:
                    host.stats.closed_bad_framing += 1
                    log.warning("closing %s: %s", self.peer, e)
                    if self.transport:
                        self.transport.close()
                    return
                if ev is NEED_DATA:
                    return
                if isinstance(ev, RequestReceived):
                    host.stats.requests += 1
                    for fn in host.observers:
                        fn(ev.request)
                    decision = host.logic.handle(ev.request, ev.raw)
                else:
                    host.stats.malformed += 1
                    decision = host.logic.malformed(ev.mti, ev.partial, ev.error)
                self._dispatch(decision)
        except Exception:  # a bug must not take the server down: log it, drop this connection
            log.exception("internal error while serving %s; closing that connection", self.peer)
            if self.transport:
                self.transport.abort()
        finally:
            host.commit_soon()
            self._out = None
            if out and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(out))

    def _dispatch(self, d: Decision) -> None:
        if d.delay > 0:
            t = asyncio.get_running_loop().create_task(self._later(d))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
            return
        self._send(d)

    async def _later(self, d: Decision) -> None:
        await self.host.clock.sleep(d.delay)
        self._send(d)

    def _send(self, d: Decision) -> None:
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        if d.response is not None:
            rc = d.response.get(39)
            if isinstance(rc, str):
                self.host.stats.by_rc[rc] = self.host.stats.by_rc.get(rc, 0) + 1
            try:
                data = self.session.send(d.response, mak=d.mak)
            except PosemuError:
                log.exception("could not encode a response for %s", self.peer)
            else:
                if self._out is not None:
                    self._out.append(data)
                else:
                    tr.write(data)
        if d.close:
            if self._out:
                tr.write(b"".join(self._out))
                self._out.clear()
            tr.close()


class HostServer:
    """The bundled host: ``await HostServer.start(...)``, then ``.port``, ``.close()``."""

    def __init__(self, profile: Profile, store: HostStore, clock: Clock, rules: HostRules | None = None) -> None:
        self.profile = profile
        self.store = store
        self.clock = clock
        self.rules = rules or HostRules()
        self.logic = HostLogic(store, profile, clock, rules=self.rules)
        self.stats = HostStats()
        self.conns: set[_Conn] = set()
        self.observers: list[Callable[[Message], None]] = []   # called with every decoded request
        self._commit_handle: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(cls, profile: Profile, *, clock: Clock, host: str = "127.0.0.1", port: int = 0,
                    db: str | Path = ":memory:", rules: HostRules | None = None, seed: bool = True) -> HostServer:
        store = HostStore(db)
        if seed and store.empty:
            seed_demo(store)
        self = cls(profile, store, clock, rules)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), host, port)
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    @property
    def port(self) -> int:
        return self.address[1]

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

    def drop_connections(self) -> None:
        for c in list(self.conns):
            if c.transport:
                c.transport.abort()

    async def close(self) -> None:
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.store.close()
