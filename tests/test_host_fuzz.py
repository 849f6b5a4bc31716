"""No input crashes the host: arbitrary frames get a 30, a close, or an answer — never an exception."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.host.logic import HostLogic, seed_demo
from emulator.host.server import HostServer
from emulator.host.store import HostStore
from hardware.clock import RealClock, VirtualClock
from protocol.errors import DecodeError
from protocol.framing import frame
from protocol.iso import encode
from protocol.session import MalformedRequest, RequestReceived, ServerSession
from protocol.specs import ISO87ASCII, PROFILES
from tests.strategies import messages

STORE = HostStore(":memory:")
seed_demo(STORE, profiles=["demo"])
LOGIC = {name: HostLogic(STORE, p, RealClock()) for name, p in PROFILES.items()}


@settings(max_examples=300)
@given(data=st.data(), raw=st.binary(max_size=300), profile=st.sampled_from(sorted(PROFILES)))
def test_any_bytes_get_a_decision(data: st.DataObject, raw: bytes, profile: str) -> None:
    prof = PROFILES[profile]
    # half the time: a valid message of the profile (third-party requests of any MTI and fields)
    if data.draw(st.booleans()):
        raw = encode(data.draw(messages(prof)), prof)
    session = ServerSession(prof)
    session.receive_data(frame(raw) if raw else b"\x00\x00")
    try:
        ev = session.next_event()
    except DecodeError:
        return                               # broken framing: the server closes that connection
    logic = LOGIC[profile]
    if isinstance(ev, RequestReceived):
        d = logic.handle(ev.request, ev.raw)
        if d.response is not None:
            session.send(d.response, mak=d.mak)      # the answer encodes
    elif isinstance(ev, MalformedRequest):
        d = logic.malformed(ev.mti, ev.partial, ev.error)
        if d.response is not None:
            assert d.response.get(39) == "30"
            session.send(d.response)


def test_garbage_on_many_connections_does_not_stop_the_server(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    import random

    rng = random.Random(3)

    async def main() -> int:
        host = await HostServer.start(ISO87ASCII, clock=vclock)
        try:
            for _ in range(20):                  # bounded: 20 connections of garbage
                _, w = await asyncio.open_connection("127.0.0.1", host.port)
                w.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
                await w.drain()
                w.close()
            # and the server still answers a well-formed request
            from emulator.demo import DEMO_MID, LOAD_TIDS
            from emulator.host.loadgen import run_load

            res = await run_load("127.0.0.1", host.port, ISO87ASCII, tids=LOAD_TIDS[:1], mid=DEMO_MID,
                                 pan="9900990000000012", expiry="3912", total=5, concurrency=5)
            return res.codes.get("00", 0)
        finally:
            await host.close()

    assert vrun.run(main()) == 5

