"""A canned-answer ISO 8583 server: the load client's ceiling in ``bench_host``.

It decodes nothing after the first request of a connection: the answer is a template (the first
request's ``00`` response, encoded once) into which each request's STAN (field 11, at the offset the
first request showed) is copied, so the load client can pair it. What is left is asyncio, the socket
and the length frame — what any Python host pays before doing any work.

``python -m tests.bench.canned_host PORT`` (iso87ascii; prints ``listening on 127.0.0.1:PORT``).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

from protocol.framing import Framer, frame
from protocol.iso import Message, decode, encode
from protocol.specs import ISO87ASCII, Profile
from protocol.txn import RC, response_to


def _stan_offset(msg: Message, profile: Profile) -> int:
    """Where field 11 sits in ``msg`` encoded: the first byte that differs between two STANs."""
    a = encode(replace(msg, fields={**msg.fields, 11: "000000"}), profile)
    b = encode(replace(msg, fields={**msg.fields, 11: "111111"}), profile)
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


class Canned(asyncio.Protocol):
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.framer = Framer(profile.max_frame)
        self.transport: asyncio.Transport | None = None
        self.req_at = -1
        self.template = b""
        self.resp_at = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.framer.receive_data(data)
        out = []
        for payload in self.framer.frames():
            if self.req_at < 0:
                req = decode(payload, self.profile)
                resp = response_to(req, RC.APPROVED)
                self.req_at = _stan_offset(req, self.profile)
                self.resp_at = _stan_offset(resp, self.profile)
                self.template = encode(resp, self.profile)
            t, at = self.template, self.resp_at
            out.append(frame(t[:at] + payload[self.req_at:self.req_at + 6] + t[at + 6:]))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Canned(ISO87ASCII), "127.0.0.1", port)
    name = server.sockets[0].getsockname()
    print(f"canned host listening on {name[0]}:{name[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
