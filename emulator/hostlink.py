"""The terminal's link to the host: DNS, TCP connect, request → response with timeouts.

Built on :class:`protocol.session.ClientSession` (sans-IO) over asyncio streams. All waits run
on the event loop's clock: with the virtual clock a 60 s response timeout costs no wall time.
A response that matches no outstanding request (wrong STAN or terminal id, a late answer) is
recorded in the trace and ignored; the terminal keeps waiting for its own.

The resolver and the connector are parameters, so the fault injector can slow or break DNS and
put a proxy on the path without this module knowing. ``wire_observers`` see the raw bytes sent
and received (:mod:`emulator.capture`: ``--pcap``; over TLS, the bytes inside the TLS session).

What the host's dialect asks of the link (:mod:`emulator.dialect`, config ``[host]``):

* **TLS** — after the TCP connection, a TLS handshake with the standard :mod:`ssl` module (the
  context from :meth:`emulator.dialect.TlsSettings.client_context`: CA pinning, optional client
  certificate), the host name checked, and optionally the certificate's SHA-256 pinned. A failed
  handshake is a :class:`ConnectError` (``tls.verify_failed``, ``tls.handshake``, ``tls.pin_mismatch``):
  nothing was sent.
* **A backup host** — tried when the primary cannot be reached (DNS or connect failure, TLS
  included); the trace records the switch (``link.backup``).

When the link is closed is the terminal's business (``[host] connection``: per transaction or
persistent, :attr:`emulator.config.TerminalConfig.persistent_connection`); the link reconnects
whenever it finds its connection closed (or closed by the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from emulator.capture import WireConn, WireEvent, WireKind, WireObserver, sockname, terminal_taps
from emulator.errors import ConnectError, DnsError, HostTimeout, LinkLost
from emulator.trace import Kind, Trace
from hardware.clock import Clock
from protocol.errors import DecodeError
from protocol.iso import Message
from protocol.sansio import NEED_DATA
from protocol.session import ClientSession, ResponseReceived, UnmatchedResponse
from protocol.specs import Profile

Resolver = Callable[[str, int], Awaitable[list[tuple[str, int]]]]
EXTERNAL_GRACE_S = 5.0
"""On the virtual clock, how long (real seconds) to wait for a host in another process before
letting virtual time run on to the response timeout."""
_CONNECT_CODES = {errno.ECONNREFUSED: "tcp.refused", errno.EHOSTUNREACH: "tcp.unreachable",
                  errno.ENETUNREACH: "tcp.unreachable", errno.ETIMEDOUT: "tcp.connect_timeout"}
Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def system_resolver(host: str, port: int) -> list[tuple[str, int]]:
    """The operating system's resolver. An IP literal needs no lookup (and no worker thread)."""
    import ipaddress

    try:
        return [(str(ipaddress.ip_address(host)), port)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        code = {socket.EAI_NONAME: "dns.nxdomain", socket.EAI_AGAIN: "dns.timeout"}.get(e.errno or 0, "dns.failed")
        raise DnsError(f"cannot resolve {host!r}: {e.strerror}").with_code(code) from None
    return [(str(i[4][0]), int(i[4][1])) for i in infos]


async def tcp_connector(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request, the response paired with it and the response's frame payload."""

    request: Message
    response: Message
    raw: bytes


class HostLink:
    """The terminal's connection to its host: a request out, the response paired with it back.

    :meth:`exchange` connects when needed (``resolver``, then ``connector``: where the fault
    injector puts its resolver and proxy), hands the request to a sans-IO
    :class:`~protocol.session.ClientSession` (MAC, length frame), writes the bytes and feeds what
    comes back until the response paired with the request arrives; a response for another request
    is traced and ignored. All waits are ``connect_timeout`` / ``response_timeout`` clock seconds.
    Failures are :class:`~emulator.errors.HostLinkError` s with evidence codes (``dns.*``,
    ``tcp.*``, ``iso.*``); every step goes to the trace.
    """

    def __init__(self, host: str, port: int, profile: Profile, *, clock: Clock, trace: Trace,
                 connect_timeout: float = 10.0, response_timeout: float = 60.0,
                 resolver: Resolver = system_resolver, connector: Connector = tcp_connector,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None,
                 tls_pins: tuple[str, ...] = (), backup: tuple[str, int] | None = None,
                 external_peer: bool = False) -> None:
        self.host = host
        self.port = port
        self.profile = profile
        self.clock = clock
        self.trace = trace
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.resolver = resolver
        self.connector = connector
        self.tls = tls
        self.server_name = server_name
        self.tls_pins = tls_pins
        self.backup = backup
        self._heard = False          # this connection has received bytes (TLS: the host accepted us)
        self.external_peer = external_peer        # the host is another process (matters on the virtual clock)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._session = ClientSession(profile)
        self.wire_observers: list[WireObserver] = list(terminal_taps())
        self._wire: WireConn | None = None

    def _tap(self, kind: WireKind, data: bytes = b"", *, by_peer: bool = False) -> None:
        if self._wire is not None and self.wire_observers:
            ev = WireEvent(kind, self._wire, self.clock.wall().timestamp(), data, by_peer)
            for fn in self.wire_observers:
                fn(ev)

    @property
    def connected(self) -> bool:
        """A usable connection: open, and not closed by the host meanwhile (its idle timeout)."""
        if self._reader is not None and self._reader.at_eof():
            return False
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        if self.connected:
            return
        await self.close()
        self._session = ClientSession(self.profile)
        self._heard = False
        try:
            await self._connect_to(self.host, self.port)
        except (DnsError, ConnectError) as e:
            if self.backup is None:
                raise
            host, port = self.backup
            self.trace.record(Kind.TCP, "primary host unreachable: trying the backup host", code="link.backup",
                              primary=f"{self.host}:{self.port}", backup=f"{host}:{port}", error=str(e))
            await self._connect_to(host, port)

    async def _connect_to(self, host: str, port: int) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.resolver is system_resolver:
                    with self.clock.external():     # getaddrinfo runs in a worker thread
                        addrs = await self.resolver(host, port)
                else:
                    addrs = await self.resolver(host, port)
                if not addrs:
                    raise DnsError(f"{host!r} resolved to no address")
                self.trace.record(Kind.TCP, "resolved", host=host, addresses=[a for a, _ in addrs])
                last: Exception | None = None
                code = "tcp.connect_failed"
                for addr, aport in addrs:
                    try:
                        self._reader, self._writer = await self.connector(addr, aport)
                        self._wire = WireConn("client", sockname(self._writer, "sockname"), (addr, aport),
                                              self.profile)
                        self._tap(WireKind.OPEN)
                        self.trace.record(Kind.TCP, "connected", peer=f"{addr}:{aport}")
                        break
                    except OSError as e:
                        last = e
                        code = _CONNECT_CODES.get(e.errno or 0, "tcp.connect_failed")
                        self.trace.record(Kind.TCP, "connect failed", peer=f"{addr}:{aport}", error=str(e), code=code)
                else:
                    raise ConnectError(f"cannot connect to {host}:{port}: {last}").with_code(code)
                if self.tls is not None:
                    await self._start_tls(host)
        except TimeoutError:
            await self.close()
            self.trace.record(Kind.TCP, "connect timeout", seconds=self.connect_timeout, code="tcp.connect_timeout")
            raise ConnectError(f"no connection to {host}:{port} within {self.connect_timeout:g} s"
                               ).with_code("tcp.connect_timeout") from None

    async def _start_tls(self, host: str) -> None:
        """The TLS handshake on the open connection; the certificate checked (and its pin)."""
        writer = self._writer
        assert writer is not None and self.tls is not None
        name = self.server_name or host
        try:
            await writer.start_tls(self.tls, server_hostname=name)
        except ssl.SSLCertVerificationError as e:
            await self.close()
            self.trace.record(Kind.TCP, "TLS: host certificate refused", code="tls.verify_failed",
                              error=str(e.verify_message or e))
            raise ConnectError(f"TLS to {host}: the host's certificate is not trusted "
                               f"({e.verify_message or e})").with_code("tls.verify_failed") from None
        except (ssl.SSLError, ConnectionError, OSError) as e:
            await self.close()
            self.trace.record(Kind.TCP, "TLS handshake failed", code="tls.handshake", error=str(e))
            raise ConnectError(f"TLS handshake with {host} failed: {e}").with_code("tls.handshake") from None
        obj = writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        digest = hashlib.sha256(der).hexdigest() if der else ""
        if self.tls_pins and digest not in self.tls_pins:
            await self.close()
            self.trace.record(Kind.TCP, "TLS: host certificate not pinned", code="tls.pin_mismatch", sha256=digest)
            raise ConnectError(f"TLS to {host}: the host's certificate (SHA-256 {digest}) is not one of "
                               "host.tls.pin_sha256").with_code("tls.pin_mismatch")
        self.trace.record(Kind.TCP, "TLS established", version=obj.version() if obj is not None else None,
                          server_name=name, sha256=digest)

    async def exchange(self, request: Message, *, mak: bytes | None = None) -> Exchange:
        """Send a request and wait for its response (connecting first if needed)."""
        await self.connect()
        if self._writer is None or self._reader is None:
            raise LinkLost("not connected")
        data = self._session.send(request, mak=mak)
        self.trace.message(Kind.ISO_OUT, request)
        try:
            self._writer.write(data)
            self._tap(WireKind.SENT, data)
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._session.forget(request)
            await self.close()
            raise LinkLost(f"connection lost while sending: {e}").with_code("tcp.reset") from None
        try:
            async with asyncio.timeout(self.response_timeout):
                waiting = asyncio.ensure_future(self._await_response(request))
                try:
                    if self.external_peer:
                        # another process answers: on the virtual clock, wait for it in real time (a little),
                        # then let virtual time run on to the timeout
                        with self.clock.external():
                            await asyncio.wait({waiting}, timeout=min(EXTERNAL_GRACE_S, self.response_timeout))
                    return await waiting
                finally:
                    if not waiting.done():
                        waiting.cancel()
        except TimeoutError:
            self._session.forget(request)
            self.trace.record(Kind.TCP, "response timeout", seconds=self.response_timeout, code="tcp.response_timeout")
            await self.close()   # a late answer must not be taken for the next request's
            raise HostTimeout(f"no response within {self.response_timeout:g} s") from None

    async def _await_response(self, request: Message) -> Exchange:
        reader = self._reader
        if reader is None:
            raise LinkLost("not connected")
        while True:
            try:
                ev = self._session.next_event()
            except DecodeError as e:
                self.trace.record(Kind.ERROR, "undecodable response", error=str(e), code="iso.undecodable")
                await self.close()
                raise LinkLost(f"host sent an undecodable response: {e}").with_code("iso.undecodable") from None
            if isinstance(ev, ResponseReceived):
                self.trace.message(Kind.ISO_IN, ev.response)
                if ev.request is request or ev.request == request:
                    return Exchange(ev.request, ev.response, ev.raw)
                continue
            if isinstance(ev, UnmatchedResponse):
                self.trace.message(Kind.ISO_IN, ev.response)
                self.trace.record(Kind.ERROR, "unmatched response", mti=ev.response.mti, stan=ev.key[1],
                                  tid=ev.key[2], expected_stan=request.get(11), expected_tid=request.get(41),
                                  code="iso.unmatched")
                continue
            if ev is NEED_DATA:
                reset = False
                try:
                    chunk = await reader.read(65536)
                except (ConnectionError, OSError) as e:
                    chunk = b""
                    reset = True
                    self.trace.record(Kind.TCP, "read error", error=str(e), code="tcp.reset")
                if not chunk:
                    self._session.forget(request)
                    if self.tls is not None and not self._heard:
                        # TLS 1.3: the host checks our certificate after the handshake has completed
                        # for us; a refusal is a close before any answer on a fresh connection
                        await self.close()
                        self.trace.record(Kind.TCP, "TLS connection closed by the host before any answer",
                                          code="tls.closed_after_handshake")
                        raise LinkLost("the host closed the TLS connection before any answer (does it accept "
                                       "our client certificate?)").with_code("tls.closed_after_handshake")
                    if not reset:
                        self.trace.record(Kind.TCP, "connection closed by peer", code="tcp.closed")
                    await self.close()
                    raise LinkLost("the connection broke before the answer came" if reset else
                                   "the host closed the connection before answering"
                                   ).with_code("tcp.reset" if reset else "tcp.closed")
                self._heard = True
                self._tap(WireKind.RECEIVED, chunk)
                self._session.receive_data(chunk)

    async def close(self) -> None:
        w = self._writer
        if self._wire is not None:
            self._tap(WireKind.CLOSED, by_peer=self._reader is not None and self._reader.at_eof())
            self._wire = None
        self._reader = self._writer = None
        if w is not None:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
