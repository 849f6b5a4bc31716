"""A load client for an ISO 8583 host: many connections, many requests in flight.

Requests are built and encoded before the clock starts; each connection keeps a window of
outstanding requests and matches responses by STAN. Latency is measured per request from
write to response. With ``purchase_share`` > 0 each connection first signs on (a MAC under the
terminal master key), then mixes PIN'd purchases (PIN block under the PIK) into its balance
inquiries, everything MACed under the MAK — the path where the host verifies PINs.
Used by ``make bench`` and the concurrency tests; it talks to the address
it is given (loopback in everything posemu ships).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.errors import DecodeError, ProtocolError
from protocol.framing import Framer, frame
from protocol.iso import decode
from protocol.keys import KeyScheme, WorkingKeys, parse_field62
from protocol.pinblock import encrypt_pinblock
from protocol.session import seal
from protocol.specs import Profile
from protocol.txn import CardData, EntryMode, TerminalIds, TxnType, financial_request, key_block, sign_on_request


@dataclass(slots=True)
class LoadResult:
    """What a load run measured: requests sent and answered, errors, response codes, latencies, time taken."""

    sent: int = 0
    received: int = 0
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


class _Conn(asyncio.Protocol):
    def __init__(self, frames: list[tuple[str, bytes]], window: int, profile: Profile, result: LoadResult,
                 done: asyncio.Future[None]) -> None:
        self.frames = frames
        self.window = window
        self.profile = profile
        self.result = result
        self.done = done
        self.framer = Framer(profile.max_frame)
        self.sent_at: dict[str, float] = {}
        self.next = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._fill()

    def _fill(self) -> None:
        tr = self.transport
        if tr is None:
            return
        out = []
        while self.next < len(self.frames) and len(self.sent_at) < self.window:
            stan, data = self.frames[self.next]
            self.next += 1
            self.sent_at[stan] = time.perf_counter()
            out.append(data)
        if out:
            self.result.sent += len(out)
            tr.write(b"".join(out))
        if not self.sent_at and self.next >= len(self.frames) and not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.framer.receive_data(data)
        now = time.perf_counter()
        res = self.result
        try:
            for payload in self.framer.frames():
                msg = decode(payload, self.profile)
                stan = msg.get(11)
                t0 = self.sent_at.pop(stan, None) if isinstance(stan, str) else None
                if t0 is None:
                    res.errors += 1
                    continue
                res.received += 1
                res.latencies.append(now - t0)
                rc = str(msg.get(39, ""))
                res.codes[rc] = res.codes.get(rc, 0) + 1
        except DecodeError:
            res.errors += 1
            if self.transport:
                self.transport.close()
            return
        self._fill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.sent_at or self.next < len(self.frames):
                self.result.errors += len(self.sent_at) + len(self.frames) - self.next
            self.done.set_result(None)


@dataclass(frozen=True, slots=True)
class PinCard:
    """The card PIN'd purchases are made with (its PIN is typed by the load client)."""

    pan: str
    expiry: str
    pin: str

    def __repr__(self) -> str:
        return "PinCard(…)"


def build_frames(profile: Profile, tid: str, mid: str, pan: str, expiry: str, count: int,
                 start_stan: int = 1, *, keys: WorkingKeys | None = None, purchase_share: float = 0.0,
                 pin_card: PinCard | None = None) -> list[tuple[str, bytes]]:
    """``count`` encoded requests for one terminal: balance inquiries (no PIN; MACed when ``keys``
    are given) and, every ``1/purchase_share``-th, a 0.01 purchase with a PIN on ``pin_card``."""
    ids = TerminalIds(tid, mid, profile.default_header)
    card = CardData(pan, EntryMode.SWIPE, expiry, f"{pan}={expiry}1010000000000")
    pcard = None if pin_card is None else CardData(pin_card.pan, EntryMode.SWIPE, pin_card.expiry,
                                                   f"{pin_card.pan}={pin_card.expiry}1010000000000")
    now = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
    every = round(1 / purchase_share) if purchase_share > 0 else 0
    out = []
    for i in range(count):
        stan = f"{(start_stan + i) % 1_000_000:06d}"
        if every and i % every == every - 1 and pcard is not None and pin_card is not None and keys is not None:
            block = encrypt_pinblock(pin_card.pin, pin_card.pan, keys.pik)
            msg = financial_request(profile, ids, TxnType.PURCHASE, pcard, stan=stan, now=now, amount=1,
                                    pin_block=block)
        else:
            msg = financial_request(profile, ids, TxnType.BALANCE, card, stan=stan, now=now)
        out.append((stan, frame(seal(msg, profile, keys.mak if keys else None))))
    return out


async def sign_on(host: str, port: int, profile: Profile, *, tid: str, mid: str, tmk: bytes,
                  stan: str = "999999") -> WorkingKeys:
    """Sign a load terminal on (MAC under its master key) and return its working keys."""
    ids = TerminalIds(tid, mid, profile.default_header)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(frame(seal(sign_on_request(profile, ids, stan=stan), profile, tmk)))
        n = int.from_bytes(await reader.readexactly(2), "big")
        resp = decode(await reader.readexactly(n), profile)
    finally:
        writer.close()
    if resp.get(39) != "00":
        raise ProtocolError(f"sign-on of {tid} refused: {resp.get(39)!r}")
    return parse_field62(tmk, key_block(resp), KeyScheme.DOUBLE)


async def run_load(host: str, port: int, profile: Profile, *, tids: Sequence[str], mid: str, pan: str,
                   expiry: str, total: int, concurrency: int, purchase_share: float = 0.0,
                   pin_card: PinCard | None = None, tmk: bytes | None = None) -> LoadResult:
    """Send ``total`` requests over ``len(tids)`` connections with ``concurrency`` in flight: balance
    inquiries, and with ``purchase_share`` that share of PIN'd purchases (signed on with ``tmk``)."""
    n = len(tids)
    per = [total // n + (1 if i < total % n else 0) for i in range(n)]
    window = max(1, concurrency // n)
    result = LoadResult()
    loop = asyncio.get_running_loop()
    keys: list[WorkingKeys | None] = [None] * n
    if purchase_share > 0:
        if tmk is None or pin_card is None:
            raise ProtocolError("PIN'd purchases need the terminals' master key and a card with its PIN")
        keys = list(await asyncio.gather(*(sign_on(host, port, profile, tid=t, mid=mid, tmk=tmk) for t in tids)))
    frames = [build_frames(profile, tid, mid, pan, expiry, k, keys=ks, purchase_share=purchase_share,
                           pin_card=pin_card) for tid, k, ks in zip(tids, per, keys, strict=True)]
    conns = []
    dones: list[asyncio.Future[None]] = []
    for fr in frames:
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        conns.append((fr, done))
    t0 = time.perf_counter()
    for fr, done in conns:
        await loop.create_connection(lambda fr=fr, done=done: _Conn(fr, window, profile, result, done),  # type: ignore[misc]
                                     host, port)
    await asyncio.gather(*dones)
    result.elapsed = time.perf_counter() - t0
    return result
