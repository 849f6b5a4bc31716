"""Raw bytes on the host link, observed; and a pcap recorder built on them.

The terminal's :class:`~emulator.hostlink.HostLink` and the bundled
:class:`~emulator.host.server.HostServer` tell their ``wire_observers`` about every connection
they open, every chunk of bytes they send or receive and every close, as :class:`WireEvent`
values. Observers must not raise. :class:`PcapRecorder` is such an observer: it turns the events
into a pcap file (synthesised Ethernet/IP/TCP around the real bytes, :mod:`protocol.pcap`),
with card numbers masked (:mod:`protocol.wiremask`) unless it was asked to keep them.

Host links created while :func:`tap_terminals` is active get its observer too: that is how
``posemu inquiry --pcap`` and ``posemu regress --pcap`` reach every terminal they build,
through the regression runner, without threading an argument through each layer.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from protocol import pcap
from protocol.sansio import NEED_DATA
from protocol.specs import Profile
from protocol.wiremask import StreamMasker

Address = tuple[str, int]


class WireKind(enum.Enum):
    """What happened on a connection: it opened, bytes went out, bytes came in, it closed."""

    OPEN = "open"
    SENT = "sent"
    RECEIVED = "received"
    CLOSED = "closed"


@dataclass(frozen=True, eq=False, slots=True)
class WireConn:
    """One connection as its owner sees it. Identity, not value, tells two connections apart."""

    side: str                   # "client" (the terminal's link) or "server" (the bundled host)
    local: Address | None
    peer: Address | None
    profile: Profile


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One thing a connection did, as a :data:`WireObserver` (the pcap writer) sees it."""

    kind: WireKind
    conn: WireConn
    at: float                   # seconds since the epoch, on the owner's clock (virtual or real)
    data: bytes = b""
    by_peer: bool = False       # CLOSED: the other side closed first


WireObserver = Callable[[WireEvent], None]

_TERMINAL_TAPS: contextvars.ContextVar[tuple[WireObserver, ...]] = contextvars.ContextVar(
    "posemu_terminal_taps", default=())


def terminal_taps() -> tuple[WireObserver, ...]:
    """Observers every host link created now starts with."""
    return _TERMINAL_TAPS.get()


@contextlib.contextmanager
def tap_terminals(observer: WireObserver) -> Iterator[None]:
    """Within this block (and event loops started in it), every new host link reports to ``observer``."""
    token = _TERMINAL_TAPS.set((*_TERMINAL_TAPS.get(), observer))
    try:
        yield
    finally:
        _TERMINAL_TAPS.reset(token)


def sockname(obj: object, what: str) -> Address | None:
    """``(host, port)`` of a transport's or stream writer's socket end, when it has one."""
    get = getattr(obj, "get_extra_info", None)
    if get is None:
        return None
    try:
        name = get(what)
    except Exception:
        return None
    if isinstance(name, tuple) and len(name) >= 2 and isinstance(name[0], str) and isinstance(name[1], int):
        return (name[0], name[1])
    return None


@dataclass(slots=True)
class _Flow:
    tcp: pcap.TcpFlow
    to_server: StreamMasker | None
    to_client: StreamMasker | None
    client_side: bool           # the observed owner is the client


@dataclass(slots=True)
class PcapRecorder:
    """A :data:`WireObserver` that writes a pcap through ``write`` (the file header first).

    Each connection becomes one TCP stream between its real addresses and ports (a stand-in
    address when the owner has no socket, e.g. a test connector). Timestamps are the owner's
    clock — real time, or the virtual clock of a simulated run; they never go backwards in the
    file: a later run whose virtual clock starts again is placed one second after the last
    packet. With ``clear`` off, every frame is masked before it is written (and a frame is
    written when it is complete, as one segment burst).

    It never raises into the link or server it observes: a write error stops the recording
    (``error``), and so does anything else that goes wrong (``failed``, with the reason) — the
    transactions go on, and the command says the capture is incomplete.
    """

    write: Callable[[bytes], None]
    clear: bool = False
    mss: int = pcap.DEFAULT_MSS
    packets: int = 0
    error: OSError | None = None
    failed: str | None = None
    _flows: dict[WireConn, _Flow] = field(default_factory=dict)
    _last: float = 0.0
    _offset: float = 0.0
    _stand_in: int = 0

    def __post_init__(self) -> None:
        self._emit_raw(pcap.file_header())

    def _emit_raw(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self.write(data)
        except OSError as e:            # disk full, file gone: stop recording, report at the end
            self.error = e

    def _ts(self, at: float) -> float:
        t = at + self._offset
        if t < self._last:
            back = self._last - t
            self._offset += back + (1.0 if back > 1.0 else 0.0)
            t = at + self._offset
        self._last = t
        return t

    def _emit(self, ts: float, frames: list[bytes]) -> None:
        if frames:
            self._emit_raw(b"".join([pcap.record(ts, f) for f in frames]))      # one write per event
            self.packets += len(frames)

    def _endpoints(self, conn: WireConn) -> tuple[pcap.Endpoint, pcap.Endpoint]:
        client, server = (conn.local, conn.peer) if conn.side == "client" else (conn.peer, conn.local)
        if server is None:
            server = ("127.0.0.1", 8583)
        if client is None:
            self._stand_in += 1
            client = ("127.0.0.1", 49152 + self._stand_in % 16384)
        c_addr, s_addr = _ip(client[0]), _ip(server[0])
        if (":" in c_addr) != (":" in s_addr):      # one IP version per packet: stand-ins for both
            c_addr, s_addr = "127.0.0.1", "127.0.0.1"
        return (pcap.Endpoint(c_addr, client[1], pcap.CLIENT_MAC), pcap.Endpoint(s_addr, server[1], pcap.SERVER_MAC))

    def _flow(self, conn: WireConn, ts: float) -> _Flow:
        flow = self._flows.get(conn)
        if flow is None:
            client, server = self._endpoints(conn)
            tcp = pcap.TcpFlow(client, server, mss=self.mss)
            masker = None if self.clear else StreamMasker
            flow = _Flow(tcp, masker(conn.profile) if masker else None, masker(conn.profile) if masker else None,
                         conn.side == "client")
            self._flows[conn] = flow
            self._emit(ts, tcp.open())
        return flow

    def __call__(self, ev: WireEvent) -> None:
        if self.failed is not None or self.error is not None:
            return
        try:
            self._record(ev)
        except Exception as e:      # a capture problem must not break the link it watches
            self.failed = f"{type(e).__name__}: {e}"

    def _record(self, ev: WireEvent) -> None:
        ts = self._ts(ev.at)
        if ev.kind is WireKind.OPEN:
            self._flow(ev.conn, ts)
            return
        if ev.kind is WireKind.CLOSED:
            flow = self._flows.pop(ev.conn, None)
            if flow is None:
                return
            self._drain(flow, ts, final=True)
            closer_is_client = flow.client_side != ev.by_peer
            self._emit(ts, flow.tcp.close(closer_is_client))
            return
        flow = self._flow(ev.conn, ts)
        from_client = (ev.kind is WireKind.SENT) == flow.client_side
        masker = flow.to_server if from_client else flow.to_client
        if masker is None:
            self._emit(ts, flow.tcp.send(from_client, ev.data))
            return
        masker.receive_data(ev.data)
        self._drain_one(flow, from_client, masker, ts, final=False)

    def _drain(self, flow: _Flow, ts: float, *, final: bool) -> None:
        for from_client, masker in ((True, flow.to_server), (False, flow.to_client)):
            if masker is not None:
                self._drain_one(flow, from_client, masker, ts, final=final)

    def _drain_one(self, flow: _Flow, from_client: bool, masker: StreamMasker, ts: float, *, final: bool) -> None:
        while (chunk := masker.next_event()) is not NEED_DATA:
            assert isinstance(chunk, bytes)
            self._emit(ts, flow.tcp.send(from_client, chunk))
        if final and masker.buffered:
            self._emit(ts, flow.tcp.send(from_client, masker.flush()))

    def finish(self) -> None:
        """Write what is still held back (frames cut short); connections left open stay open."""
        if self.failed is not None:
            return
        try:
            for flow in self._flows.values():
                self._drain(flow, self._last, final=True)
        except Exception as e:
            self.failed = f"{type(e).__name__}: {e}"


def _ip(host: str) -> str:
    """An address the pcap can carry: IPv4-mapped IPv6 as IPv4, a name as a stand-in."""
    import ipaddress

    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "127.0.0.1"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def write_pcap_file(path: Path, data: bytes) -> None:
    """Write a finished capture, readable by its owner only (0600), atomically."""
    from emulator.keystore import write_private

    write_private(path, data)


class StreamingPcapFile:
    """A pcap file written as packets arrive (``posemu host`` runs until stopped): created 0600,
    every record on disk when the call returns, so a killed process leaves a readable capture."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError("capture file is closed")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
