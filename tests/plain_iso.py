"""A host and a terminal that posemu did not write: pyiso8583 and asyncio sockets only.

The proxy tests put ``posemu proxy`` between these two. Nothing here imports posemu: the host
decodes with pyiso8583's ``default`` spec (``iso87ascii``'s envelope: a 2-byte length, then the
message) or, for the ``cup`` envelope (2-byte length, 5-byte TPDU, 6-byte application header),
with a small packed-BCD spec written here from the CUP conventions — so what the proxy does to a
message is seen by a third party exactly as it would be in the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import iso8583
import iso8583.specs

DEFAULT_SPEC: dict[str, dict[str, Any]] = iso8583.specs.default


def _cup_like_spec() -> dict[str, dict[str, Any]]:
    """Packed-BCD numerics and lengths, binary bitmap, BCD MTI — the CUP conventions, for the
    fields this test host uses."""
    spec = copy.deepcopy(DEFAULT_SPEC)
    spec["t"] = {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2, "desc": "MTI (BCD)"}

    def bcd(n: int, max_len: int, len_type: int = 0) -> None:
        f: dict[str, Any] = {"data_enc": "b", "len_enc": "bcd", "len_type": len_type, "max_len": max_len,
                             "len_count": "nibbles", "desc": f"field {n}"}
        if len_type or max_len % 2:
            f["right_pad" if len_type else "left_pad"] = "0"
        spec[str(n)] = f

    bcd(2, 19, 1)
    bcd(3, 6)
    bcd(4, 12)
    bcd(11, 6)
    bcd(25, 2)
    for n, ln in ((39, 2), (41, 8), (42, 15), (49, 3)):
        spec[str(n)] = {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": ln, "desc": f"field {n}"}
    spec["54"] = {"data_enc": "ascii", "len_enc": "bcd", "len_type": 2, "max_len": 120, "desc": "balances"}
    return spec


CUP_LIKE_SPEC = _cup_like_spec()
CUP_HEADER = bytes.fromhex("6000030000" "603100311312")


@dataclass
class Envelope:
    spec: dict[str, dict[str, Any]]
    header: bytes = b""

    @property
    def header_len(self) -> int:
        return len(self.header)


ISO87 = Envelope(DEFAULT_SPEC)
CUP = Envelope(CUP_LIKE_SPEC, CUP_HEADER)


async def read_frame(r: asyncio.StreamReader) -> bytes:
    n = int.from_bytes(await r.readexactly(2), "big")
    return await r.readexactly(n)


def pack(doc: dict[str, Any], env: Envelope, header: bytes | None = None) -> bytes:
    body, _ = iso8583.encode(dict(doc), env.spec)
    payload = (env.header if header is None else header) + bytes(body)
    return len(payload).to_bytes(2, "big") + payload


def unpack(payload: bytes, env: Envelope) -> tuple[bytes, dict[str, Any]]:
    head, body = payload[:env.header_len], payload[env.header_len:]
    doc, _ = iso8583.decode(body, env.spec)
    return head, doc


@dataclass
class PlainHost:
    """An acquirer host: answers 0800 with 00, 0200 balance inquiries (processing code 31) with 00
    and a balance in field 54, purchases with 00, reversals 0400 with 00."""

    env: Envelope
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None
    connections: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        name = self.server.sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        with contextlib.suppress(asyncio.CancelledError):
            await self._answer(r, w)
        if task is not None:
            self.tasks.discard(task)

    async def _answer(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    payload = await read_frame(r)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                head, doc = unpack(payload, self.env)
                self.requests.append(doc)
                mti = str(doc["t"])
                resp: dict[str, Any] = {"t": mti[:2] + str(int(mti[2]) + 1) + mti[3], "39": "00"}
                for k in ("3", "4", "11", "41"):
                    if k in doc:
                        resp[k] = doc[k]
                if str(doc.get("3", "")).startswith("31"):
                    resp["54"] = "1001156C000000012345"
                back = head[:1] + head[3:5] + head[1:3] + head[5:] if head else b""
                w.write(pack(resp, self.env, back))
                await w.drain()
        finally:
            w.close()


@dataclass
class PlainTerminal:
    """A terminal: one connection, sends requests, waits for their answers (matched by STAN)."""

    env: Envelope
    address: tuple[str, int]
    r: asyncio.StreamReader | None = None
    w: asyncio.StreamWriter | None = None
    stan: int = 0

    async def connect(self) -> None:
        self.r, self.w = await asyncio.open_connection(*self.address)

    async def send(self, mti: str, **fields: str) -> str:
        assert self.w is not None
        self.stan += 1
        stan = f"{self.stan:06d}"
        doc = {"t": mti, "11": stan, "41": "TERM0001", **{k.removeprefix("f"): v for k, v in fields.items()}}
        self.w.write(pack(doc, self.env))
        await self.w.drain()
        return stan

    async def receive(self) -> dict[str, Any]:
        assert self.r is not None
        _, doc = unpack(await read_frame(self.r), self.env)
        return doc

    async def exchange(self, mti: str, timeout: float = 30.0, **fields: str) -> dict[str, Any]:
        await self.send(mti, **fields)
        async with asyncio.timeout(timeout):
            return await self.receive()

    async def balance(self, timeout: float = 30.0) -> dict[str, Any]:
        return await self.exchange("0200", timeout, f2="9912340000000006", f3="310000", f4="000000000000")

    async def close(self) -> None:
        if self.w is not None:
            self.w.close()
            with contextlib.suppress(Exception):
                await self.w.wait_closed()
