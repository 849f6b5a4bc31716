"""``posemu proxy``: an ISO 8583-aware fault proxy in front of anyone's host.

:class:`MessageProxy` listens (loopback by default) and forwards every connection to the host
(``upstream``), frame by frame: it cuts the byte stream into messages with the profile's framing
(:func:`framer_for`, the one place the envelope is read — the length header, the TPDU and
application header of ``cup``), decodes each with the profile (:mod:`protocol.iso`) and pairs
each answer with its request (fields 11 and 41). Two kinds of fault act on the way:

* **catalogue faults**, by name through the seam (:mod:`faults.control`, :mod:`faults.seam`):
  every network fault — the link faults run on a :class:`faults.network.FaultProxy` between this
  proxy and the host (latency, jitter, loss with TCP retransmission timing, corruption,
  duplication, stalls, resets, half-open connections, a link that is down), DNS faults on the
  resolver of the upstream name, and the host-rule faults (``host.overload``, ``host.peak-hours``,
  ``host.wrong-stan``, ``host.garbage-answer``, ``network.drop-after-send``) played here on the
  host's behalf;
* **message rules** (:class:`MessageRule`, ``rule:ACTION[:k=v,…]``) in the bundled host's rule
  vocabulary (:class:`emulator.host.rules.HostRule`: ``respond``, ``delay``, ``no-response``,
  ``drop-response``, ``close``, ``wrong-stan``, ``garbage``, ``refuse``; ``mti``, ``first``,
  ``count``, ``every``, ``probability``) and a few a proxy adds: ``drop``, ``duplicate``,
  ``corrupt`` and ``rewrite`` (``set39=96``, ``unset=54``); messages picked by MTI
  (``mti=0200+0400``), processing code (``pc=31``, a prefix of field 3), any field's value
  (``f41=TERM0001``) or the nth occurrence (``nth=3``).

Everything the proxy sees goes into its trace (:mod:`emulator.trace`, masked: PAN 6+4, no track
data, PIN block or keys) as a terminal's own trace would hold it — each request a transaction
(``txn begin`` … ``txn end``), the request ``iso-out``, the answer ``iso-in``, and the evidence
codes of what went wrong (``tcp.reset``, ``tcp.closed``, ``tcp.refused``, ``tcp.response_timeout``
when the client gave up waiting, ``iso.undecodable``, ``iso.unmatched``, ``iso.no_rc``,
``dns.nxdomain`` …) — so ``posemu diagnose --trace`` names the cause group of a failure in the
user's own system. ``wire_observers`` see the raw bytes of both legs (``--pcap``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from emulator.capture import WireConn, WireEvent, WireKind, WireObserver, sockname
from emulator.errors import DnsError
from emulator.host.server import mangle
from emulator.hostlink import Resolver, system_resolver
from emulator.trace import Kind, Trace, TraceEntry
from faults.control import Toxic, ToxicKind, ToxicSet
from faults.environment import Environment, SkewedClock
from faults.injectors import Points
from faults.model import OnsetKind
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.wire_rules import MessageRule, ProxyRules, Verb
from hardware.clock import Clock
from protocol.errors import ConfigError, DecodeError, EncodeError
from protocol.framing import Framer, frame
from protocol.iso import Message, decode, encode
from protocol.sansio import NEED_DATA
from protocol.specs import Kind as FieldKind
from protocol.specs import Profile

__all__ = ["MessageProxy", "MessageRule", "ProxyRules", "Verb", "frame_for", "framer_for"]


# --- the envelope: the one place the framing is read ---------------------------------------------
def framer_for(profile: Profile) -> Framer:
    """The receive buffer that cuts this profile's byte stream into frames (its dialect's length
    header: size and encoding)."""
    return Framer(profile.max_frame, profile.length_header)


def frame_for(profile: Profile, payload: bytes) -> bytes:
    """``payload`` with this profile's length header in front."""
    return frame(payload, profile.max_frame, profile.length_header)


# --- the proxy --------------------------------------------------------------------------------------
_NET_MGMT = ("0800", "0820")


def _txn_kind(msg: Message) -> str:
    """What a request is, for the trace (``sign_on`` for network management)."""
    if msg.mti in _NET_MGMT:
        return "sign_on"
    if msg.mti.startswith("04"):
        return "reversal"
    pc = msg.get(3)
    if isinstance(pc, str) and pc.startswith("31"):
        return "balance"
    if isinstance(pc, str) and pc.startswith("00"):
        return "purchase"
    return "request"


def _key(msg: Message) -> tuple[str, str]:
    stan, tid = msg.get(11), msg.get(41)
    return (stan if isinstance(stan, str) else "", tid if isinstance(tid, str) else "")


_ECHO = (2, 3, 4, 7, 11, 12, 13, 25, 32, 37, 41, 42, 49, 60, 70)


def answer_for(req: Message, rc: str, profile: Profile) -> Message:
    """The answer a host gives with response code ``rc`` (ISO 8583 field 39): the request's keys
    echoed, no card data, no MAC; a CUP TPDU with source and destination swapped."""
    fields: dict[int, str | bytes] = {n: v for n, v in req.fields.items() if n in _ECHO and profile.has_field(n)}
    fields[39] = rc
    header = req.header
    if len(header) >= 5 and header[0] == 0x60:
        header = header[:1] + header[3:5] + header[1:3] + header[5:]
    return Message(req.response_mti(), fields, header)


@dataclass(slots=True)
class _Pending:
    request: Message
    txn: str
    sent_at: float
    drop: bool = False
    wrong_stan: bool = False
    garbage: str = ""


@dataclass(slots=True, eq=False)
class _Conn:
    n: int
    peer: str
    client_w: asyncio.StreamWriter
    up_w: asyncio.StreamWriter | None = None
    pending: list[_Pending] = field(default_factory=list)
    client_wire: WireConn | None = None
    up_wire: WireConn | None = None
    closing: bool = False
    reset: bool = False
    wlock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Reset(Exception):
    pass


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


PROXY_INJECTORS = ("link", "dns", "host-rule")
PROXY_ONSETS = (OnsetKind.SIGN_ON, OnsetKind.TRANSACTION, OnsetKind.ONLINE, OnsetKind.STEP)


class MessageProxy:
    """The ISO 8583 fault proxy; a :class:`faults.control.Controller`.

    ``await start()``, then clients connect to :attr:`address`; ``arm("network.weak-wifi")``,
    ``arm("rule:respond:rc=96,mti=0200")``, ``disarm(name)``; ``await stop()``."""

    kind = "proxy"

    def __init__(self, upstream: tuple[str, int], profile: Profile, *, clock: Clock,
                 listen: tuple[str, int] = ("127.0.0.1", 0), seed: int = 7, trace: Trace | None = None,
                 resolver: Resolver = system_resolver) -> None:
        self.upstream = upstream
        self.profile = profile
        self.clock = clock
        self.listen = listen
        self.seed = seed
        self._trace = trace or Trace(clock)
        self.rng = random.Random(seed)
        self.rules = ProxyRules(seed)
        self.resolver = FaultyResolver(resolver, clock)
        self.environment = Environment()
        self.link: FaultProxy | None = None
        self.wire_observers: list[WireObserver] = []
        self.stats: dict[str, int] = {"connections": 0, "requests": 0, "responses": 0, "answered_by_proxy": 0,
                                      "dropped": 0, "rewritten": 0, "refused": 0, "unanswered": 0}
        self.toxic_set = ToxicSet(tool="proxy", points=self._points, injectors=PROXY_INJECTORS,
                                  onsets=PROXY_ONSETS, trace=self._trace, seed=seed,
                                  own={"rule": self._parse_rule}, on_change=self._sync_rules)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._n = 0
        self.enabled = True

    # --- Controller ----------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        return self._trace

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        name = self._server.sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    async def start(self) -> None:
        if self._server is not None:
            return
        self.link = await FaultProxy.start(self.upstream, LinkFaults(seed=self.seed), self.clock)
        self._server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
        h, p = self.address
        self._trace.record(Kind.NOTE, "proxy started", listen=f"{h}:{p}",
                           upstream=f"{self.upstream[0]}:{self.upstream[1]}", profile=self.profile.name)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.client_w.transport.abort()
            if c.up_w is not None:
                c.up_w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self.link is not None:
            await self.link.close()
            self.link = None
        self.toxic_set.reset()

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
        listen = "{}:{}".format(*self.address) if self._server is not None else None
        return {"kind": self.kind, "listen": listen, "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
                "profile": self.profile.name, "enabled": self.enabled, "stats": dict(self.stats),
                "link": {} if self.link is None else dict(self.link.stats),
                "toxics": [t.to_json() for t in self.toxics()]}

    def subscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._trace.subscribe(fn)

    def unsubscribe(self, fn: Callable[[TraceEntry], None]) -> None:
        self._trace.unsubscribe(fn)

    def set_enabled(self, on: bool) -> None:
        """Toxiproxy's ``enabled``: off, every connection is dropped and new ones are refused."""
        self.enabled = on
        if not on:
            for c in list(self._conns):
                _rst(c.client_w)
        self._trace.record(Kind.NOTE, "proxy enabled" if on else "proxy disabled")

    # --- toxics ----------------------------------------------------------------------------------
    def _parse_rule(self, text: str) -> MessageRule:
        return MessageRule.parse(text)

    def _points(self) -> Points:
        return Points(environment=self.environment, clock=SkewedClock(self.clock), link=self.link,
                      resolver=self.resolver, messages=self.rules)

    def _sync_rules(self) -> None:
        """Message-rule toxics armed or not: the rule list follows (catalogue host rules come and go
        through the seam)."""
        own = [t.payload for t in self.toxic_set.active(ToxicKind.RULE) if isinstance(t.payload, MessageRule)]
        for r in [r for r in self.rules.rules if r not in self.rules._host.values()]:
            if r not in own:
                self.rules.remove(r)
        for r in own:
            if r not in self.rules.rules:
                self.rules.add(r)

    # --- serving ---------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _tap(self, wire: WireConn | None, kind: WireKind, data: bytes = b"", by_peer: bool = False) -> None:
        if wire is not None and self.wire_observers:
            ev = WireEvent(kind, wire, self.clock.wall().timestamp(), data, by_peer)
            for fn in self.wire_observers:
                fn(ev)

    def _refused(self, peer: str, why: str) -> None:
        self.stats["refused"] += 1
        self._trace.record(Kind.TXN, "begin", txn="connect", peer=peer)
        self._trace.record(Kind.TCP, f"connection refused ({why})", peer=peer, code="tcp.refused")
        self._trace.record(Kind.TXN, "end", txn="connect", approved=False)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(r, w)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._n += 1
        self.stats["connections"] += 1
        peer_addr = sockname(w, "peername")
        peer = f"{peer_addr[0]}:{peer_addr[1]}" if peer_addr else "?"
        link = self.link
        if not self.enabled or self.rules.refuse() or (link is not None and link.faults.refuse):
            why = "proxy disabled" if not self.enabled else "link down" if link and link.faults.refuse \
                else "refuse rule"
            self._refused(peer, why)
            _rst(w)
            return
        conn = _Conn(self._n, peer, w)
        self._conns.add(conn)
        if self.wire_observers:
            conn.client_wire = WireConn("server", sockname(w, "sockname"), peer_addr, self.profile)
            self._tap(conn.client_wire, WireKind.OPEN)
        self._trace.record(Kind.TCP, "client connected", conn=conn.n, peer=peer)
        try:
            await self._resolve_and_pump(conn, r, w)
        finally:
            self._conns.discard(conn)
            self._tap(conn.client_wire, WireKind.CLOSED)
            self._tap(conn.up_wire, WireKind.CLOSED, by_peer=True)

    async def _resolve_and_pump(self, conn: _Conn, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await self.resolver(*self.upstream)
        except DnsError as e:
            self._trace.record(Kind.TXN, "begin", txn="connect", peer=conn.peer)
            self._trace.record(Kind.TCP, "cannot resolve the host", host=self.upstream[0], code=e.code)
            self._trace.record(Kind.TXN, "end", txn="connect", approved=False)
            _rst(w)
            return
        link = self.link
        assert link is not None
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", link.port)
        except OSError:
            self._refused(conn.peer, "the host's address")
            _rst(w)
            return
        conn.up_w = uw
        if self.wire_observers:
            conn.up_wire = WireConn("client", sockname(uw, "sockname"), self.upstream, self.profile)
            self._tap(conn.up_wire, WireKind.OPEN)
        up = self._spawn(self._pump_up(conn, r))
        down = self._spawn(self._pump_down(conn, ur))
        done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        reset = conn.reset or any(not t.cancelled() and isinstance(t.exception(), _Reset | ConnectionError)
                                  for t in done)
        if up in done and not reset and not up.cancelled() and up.exception() is None:
            # the client closed: what it still waited for stays unanswered
            self._unanswered(conn, "the client closed the connection", "tcp.response_timeout")
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for writer in (w, uw):
            if reset:
                _rst(writer)
            else:
                with contextlib.suppress(Exception):
                    writer.close()
        self._trace.record(Kind.TCP, "connection closed", conn=conn.n, reset=reset)

    def _unanswered(self, conn: _Conn, why: str, code: str) -> None:
        for p in conn.pending:
            self.stats["unanswered"] += 1
            self._trace.record(Kind.TCP, f"no answer: {why}", mti=p.request.mti, stan=_key(p.request)[0],
                               seconds=round(self.clock.now() - p.sent_at, 3), code=code)
            self._trace.record(Kind.TXN, "end", txn=p.txn, approved=False)
        conn.pending.clear()

    # client → host
    async def _pump_up(self, conn: _Conn, r: asyncio.StreamReader) -> None:
        framer = framer_for(self.profile)
        while True:
            try:
                data = await r.read(65536)
            except ConnectionError:
                conn.reset = True
                self._trace.record(Kind.TCP, "client reset the connection", conn=conn.n)
                return
            if not data:
                return
            self._tap(conn.client_wire, WireKind.RECEIVED, data)
            framer.receive_data(data)
            while True:
                try:
                    payload = framer.next_event()
                except DecodeError as e:         # as a host does: a broken length header ends the connection
                    self._trace.record(Kind.ERROR, "the client's framing broke; connection closed", error=str(e),
                                       code="iso.framing")
                    return
                if payload is NEED_DATA:
                    break
                assert isinstance(payload, bytes)
                await self._request(conn, payload)
                if conn.closing:
                    return

    async def _send_up(self, conn: _Conn, data: bytes) -> None:
        w = conn.up_w
        if w is None or w.is_closing():
            return
        self._tap(conn.up_wire, WireKind.SENT, data)
        w.write(data)
        await w.drain()

    async def _send_down(self, conn: _Conn, data: bytes) -> None:
        w = conn.client_w
        if w.is_closing():
            return
        async with conn.wlock:
            self._tap(conn.client_wire, WireKind.SENT, data)
            w.write(data)
            with contextlib.suppress(ConnectionError):
                await w.drain()

    async def _request(self, conn: _Conn, payload: bytes) -> None:
        self.stats["requests"] += 1
        self.toxic_set.step()
        try:
            msg = decode(payload, self.profile)
        except DecodeError as e:
            self._trace.record(Kind.ERROR, "a request that does not decode", error=str(e), code="iso.undecodable")
            await self._send_up(conn, frame_for(self.profile, payload))
            return
        txn = _txn_kind(msg)
        if txn == "sign_on":
            self.toxic_set.reached(OnsetKind.SIGN_ON, f"{msg.mti} sign-on")
        else:
            self.toxic_set.reached(OnsetKind.TRANSACTION, f"{msg.mti} {txn}")
            self.toxic_set.reached(OnsetKind.ONLINE, f"{msg.mti} to the host")
        self._trace.record(Kind.TXN, "begin", txn=txn, conn=conn.n)
        self._trace.message(Kind.ISO_OUT, msg)
        pend = _Pending(msg, txn, self.clock.now())
        rule = self.rules.first(msg, response=False)
        act = rule.action if rule is not None else None
        if rule is not None:
            self._trace.record(Kind.NOTE, f"rule {rule.action.value}", rule=rule.text, mti=msg.mti)
        if act is Verb.RESPOND:
            assert rule is not None
            self.stats["answered_by_proxy"] += 1
            answer = answer_for(msg, rule.rc, self.profile)
            self._trace.message(Kind.ISO_IN, answer)
            self._trace.record(Kind.TXN, "end", txn=txn, approved=rule.rc == "00")
            await self._send_down(conn, frame_for(self.profile, encode(answer, self.profile)))
            return
        if act in (Verb.NO_RESPONSE, Verb.DROP):
            self.stats["dropped"] += 1
            conn.pending.append(pend)          # the client waits for it in vain
            return
        if act is Verb.CLOSE:
            conn.pending.append(pend)
            self._unanswered(conn, "the proxy closed the connection (rule)", "tcp.closed")
            conn.closing = True
            return
        if rule is not None and act is Verb.DELAY:
            await self.clock.sleep(rule.delay)
        pend.drop = act is Verb.DROP_RESPONSE
        pend.wrong_stan = act is Verb.WRONG_STAN
        pend.garbage = rule.mode if rule is not None and act is Verb.GARBAGE else ""
        out = payload
        if rule is not None and act is Verb.REWRITE:
            out = self._rewrite(msg, rule, payload)
        if rule is not None and act is Verb.CORRUPT:
            out = self._corrupt(out)
        conn.pending.append(pend)
        data = frame_for(self.profile, out)
        await self._send_up(conn, data)
        if act is Verb.DUPLICATE:
            await self._send_up(conn, data)

    def _rewrite(self, msg: Message, rule: MessageRule, payload: bytes) -> bytes:
        changes: dict[str, str | bytes | None] = {f"f{n}": None for n in rule.unset_fields}
        for n, v in rule.set_fields.items():
            changes[f"f{n}"] = bytes.fromhex(v) if isinstance(msg.get(n), bytes) or \
                (self.profile.has_field(n) and self.profile.kind(str(n)) is FieldKind.B) else v
        try:
            out = encode(msg.replace(**cast(dict[str, Any], changes)), self.profile)
        except (EncodeError, DecodeError, ValueError, TypeError) as e:
            self._trace.record(Kind.ERROR, "rewrite failed: message passed unchanged", rule=rule.text, error=str(e))
            return payload
        self.stats["rewritten"] += 1
        return out

    def _corrupt(self, payload: bytes) -> bytes:
        start = min(len(payload) - 1, self.profile.header_len)
        pos = self.rng.randrange(start, len(payload))
        return payload[:pos] + bytes([payload[pos] ^ (1 << self.rng.randrange(8))]) + payload[pos + 1:]

    # host → client
    async def _pump_down(self, conn: _Conn, r: asyncio.StreamReader) -> None:
        framer = framer_for(self.profile)
        while True:
            try:
                data = await r.read(65536)
            except ConnectionError:
                self._trace.record(Kind.TCP, "the connection to the host was reset", conn=conn.n, code="tcp.reset")
                self._unanswered(conn, "the connection was reset", "tcp.reset")
                conn.reset = True
                raise _Reset() from None
            if not data:
                if conn.pending:
                    self._trace.record(Kind.TCP, "the host closed the connection", conn=conn.n, code="tcp.closed")
                    self._unanswered(conn, "the host closed the connection", "tcp.closed")
                return
            self._tap(conn.up_wire, WireKind.RECEIVED, data)
            framer.receive_data(data)
            while True:
                try:
                    payload = framer.next_event()
                except DecodeError as e:
                    self._trace.record(Kind.ERROR, "the host's framing broke", error=str(e), code="iso.undecodable")
                    self._unanswered(conn, "the answer's framing broke", "iso.undecodable")
                    await self._send_down(conn, data)
                    return
                if payload is NEED_DATA:
                    break
                assert isinstance(payload, bytes)
                await self._response(conn, payload)

    async def _response(self, conn: _Conn, payload: bytes) -> None:
        self.stats["responses"] += 1
        try:
            msg = decode(payload, self.profile)
        except DecodeError as e:
            self._trace.record(Kind.ERROR, "an answer that does not decode", error=str(e), code="iso.undecodable")
            if conn.pending:
                p = conn.pending.pop(0)
                self._trace.record(Kind.TXN, "end", txn=p.txn, approved=False)
            await self._send_down(conn, frame_for(self.profile, payload))
            return
        pend = next((p for p in conn.pending if _key(p.request) == _key(msg)
                     and _safe_response_mti(p.request) == msg.mti), None)
        if pend is None:
            self._trace.message(Kind.ISO_IN, msg)
            self._trace.record(Kind.ERROR, "unmatched response", mti=msg.mti, stan=_key(msg)[0], tid=_key(msg)[1],
                               code="iso.unmatched")
            await self._send_down(conn, frame_for(self.profile, payload))
            return
        conn.pending.remove(pend)
        if pend.drop:
            self.stats["dropped"] += 1
            self._trace.record(Kind.NOTE, "answer dropped (rule)", mti=msg.mti, stan=_key(msg)[0])
            conn.pending.append(pend)          # still waited for by the client
            return
        out = payload
        if pend.wrong_stan and 11 in msg:
            stan = f"{(int(msg.text(11)) + 1) % 1_000_000:06d}" if msg.text(11).isdigit() else "000000"
            msg = msg.replace(f11=stan)
            out = encode(msg, self.profile)
        rule = self.rules.first(msg, response=True)
        if rule is not None:
            self._trace.record(Kind.NOTE, f"rule {rule.action.value}", rule=rule.text, mti=msg.mti)
            if rule.action is Verb.DELAY:
                await self.clock.sleep(rule.delay)
            elif rule.action is Verb.REWRITE:
                out = self._rewrite(msg, rule, out)
                with contextlib.suppress(DecodeError):
                    msg = decode(out, self.profile)
            elif rule.action is Verb.CORRUPT:
                out = self._corrupt(out)
        data = frame_for(self.profile, out)
        if pend.garbage:
            if pend.garbage == "no-rc":
                msg = msg.replace(f39=None)
                data = frame_for(self.profile, encode(msg, self.profile))
            else:
                data = mangle(data, pend.garbage, self.profile)
            self._trace.record(Kind.ERROR, "the answer is spoilt (rule)", mode=pend.garbage,
                               code="iso.no_rc" if pend.garbage == "no-rc" else "iso.undecodable")
        if pend.wrong_stan:
            self._trace.message(Kind.ISO_IN, msg)
            self._trace.record(Kind.ERROR, "unmatched response", mti=msg.mti, stan=_key(msg)[0], tid=_key(msg)[1],
                               expected_stan=_key(pend.request)[0], expected_tid=_key(pend.request)[1],
                               code="iso.unmatched")
            self._trace.record(Kind.TXN, "end", txn=pend.txn, approved=False)
        elif not pend.garbage:
            self._trace.message(Kind.ISO_IN, msg)
            rc = msg.get(39)
            if rc is None:
                self._trace.record(Kind.ERROR, "an answer without a response code", code="iso.no_rc")
            self._trace.record(Kind.TXN, "end", txn=pend.txn, approved=rc == "00",
                               seconds=round(self.clock.now() - pend.sent_at, 3))
        else:
            self._trace.record(Kind.TXN, "end", txn=pend.txn, approved=False)
        await self._send_down(conn, data)
        if rule is not None and rule.action is Verb.DUPLICATE:
            await self._send_down(conn, data)


def _safe_response_mti(req: Message) -> str:
    try:
        return req.response_mti()
    except TypeError:
        return ""


def parse_upstream(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → ``(host, port)``; a :class:`ConfigError` otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{text!r} must be HOST:PORT")
    host = host.strip("[]")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{text!r}: the port must be 1…65535")
    return host, int(port)


__all__ += ["PROXY_INJECTORS", "Verb", "answer_for", "parse_upstream"]
