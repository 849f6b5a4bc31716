"""vpcd virtual-card protocol: the sans-IO codec and session, and the asyncio client over a real
loopback socket against a minimal vpcd peer (the real vpcd+pcscd path is in test_pcsc.py)."""

from __future__ import annotations

import asyncio
import contextlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.errors import CardMuteError, ServiceUnavailableError
from hardware.sim import card_for_profile
from hardware.vpcd import (
    ApduMessage,
    Control,
    ControlMessage,
    VpcdCardSession,
    VpcdClient,
    VpcdDecoder,
    encode_frame,
    encode_message,
    parse_endpoint,
    parse_message,
)
from protocol.errors import ConfigError, DecodeError, EncodeError
from protocol.sansio import NEED_DATA
from tests.pcsc_fixtures import Pcscd, require_chip_profile

messages = st.one_of(
    st.sampled_from(list(Control)).map(ControlMessage),
    st.binary(min_size=2, max_size=300).map(ApduMessage),
)


# --- codec ---------------------------------------------------------------------------------------
def test_frame_layout() -> None:
    assert encode_frame(b"\x04") == bytes.fromhex("000104")
    assert encode_message(ControlMessage(Control.POWER_ON)) == bytes.fromhex("000101")
    assert encode_message(ApduMessage(bytes.fromhex("00A40400"))) == bytes.fromhex("000400A40400")


def test_encode_rejects_misuse() -> None:
    with pytest.raises(TypeError):
        encode_frame("04")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_frame(bytes(0x10000))
    with pytest.raises(EncodeError):
        encode_message(ApduMessage(b"\x00"))


@given(st.lists(messages, max_size=8), st.integers(min_value=1, max_value=7))
def test_round_trip_survives_any_split(msgs: list[ControlMessage | ApduMessage], step: int) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    d = VpcdDecoder()
    got = []
    for i in range(0, len(stream), step):
        d.receive_data(stream[i:i + step])
        while (m := d.next_event()) is not NEED_DATA:
            got.append(m)
    assert got == msgs
    assert d.buffered == 0


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    d = VpcdDecoder()
    d.receive_data(data)
    with contextlib.suppress(DecodeError):
        for _ in range(len(data) + 1):
            if d.next_event() is NEED_DATA:
                break


def test_bad_control_byte_reports_position() -> None:
    d = VpcdDecoder()
    d.receive_data(bytes.fromhex("000104 000107"))
    assert d.next_event() == ControlMessage(Control.GET_ATR)
    with pytest.raises(DecodeError) as ei:
        d.next_event()
    assert ei.value.field == "frame.vpcd.control"
    assert ei.value.pos == 5
    assert ei.value.raw == b"\x07"
    assert pickle.loads(pickle.dumps(ei.value)).pos == 5
    with pytest.raises(DecodeError):
        parse_message(b"")
    d = VpcdDecoder()                                        # an empty frame is a framing error
    d.receive_data(bytes.fromhex("0000"))
    with pytest.raises(DecodeError, match="frame length 0"):
        d.next_event()


def feed(s: VpcdCardSession, data: bytes) -> bytes:
    """Bytes from vpcd in; every message handled; the reply bytes out."""
    s.receive_data(data)
    while s.next_event() is not NEED_DATA:
        pass
    return s.data_to_send()


def test_endpoint_parsing() -> None:
    assert parse_endpoint("127.0.0.1:35964") == ("127.0.0.1", 35964)
    assert parse_endpoint("35963") == ("127.0.0.1", 35963)
    for bad in ("host:x", "host:0", "host:70000"):
        with pytest.raises(ConfigError):
            parse_endpoint(bad)


# --- the session (card side) ----------------------------------------------------------------------
def test_session_control_messages_with_a_stripe_only_card() -> None:
    card = card_for_profile(load_profile("demo"))
    s = VpcdCardSession(card)
    # power on / reset / power off have no reply; get-ATR of a chipless card is empty.
    assert feed(s, bytes.fromhex("000101 000102 000100")) == b""
    assert (s.stats.power_ons, s.stats.resets, s.stats.power_offs) == (1, 1, 1)
    assert s.powered is False
    assert feed(s, bytes.fromhex("000104")) == bytes.fromhex("0000")
    # a card that answers nothing still gets a status word back (an empty frame = ejection)
    assert feed(s, bytes.fromhex("0004 00A40400")) == bytes.fromhex("00026F00")


def test_session_answers_like_the_card() -> None:
    name = require_chip_profile()
    served, direct = card_for_profile(load_profile(name)), card_for_profile(load_profile(name))
    s = VpcdCardSession(served)
    direct.reset()
    assert feed(s, encode_message(ControlMessage(Control.GET_ATR))) == encode_frame(direct.atr)
    feed(s, encode_message(ControlMessage(Control.POWER_ON)))
    select_pse = bytes.fromhex("00A404000E315041592E5359532E444446303100")
    out = bytearray()
    for b in encode_message(ApduMessage(select_pse)):      # one byte at a time: short reads
        out += feed(s, bytes([b]))
    assert bytes(out) == encode_frame(direct.execute(select_pse))


# --- the client over real loopback sockets -------------------------------------------------------
class MiniVpcd:
    """The vpcd side, minimal: accepts the card, asks for the ATR and sends APDUs."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.connections.put((r, w))

        self.server = await asyncio.start_server(accept, "127.0.0.1", port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @staticmethod
    async def ask(r: asyncio.StreamReader, w: asyncio.StreamWriter, payload: bytes) -> bytes:
        w.write(encode_frame(payload))
        await w.drain()
        n = int.from_bytes(await r.readexactly(2), "big")
        return await r.readexactly(n)


def inserted(client: VpcdClient) -> bool:
    return client.inserted


def active(client: VpcdClient) -> bool:
    return client.active


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_client_refuses_a_card_without_chip(vclock: VirtualClock) -> None:
    with pytest.raises(CardMuteError, match="no chip"):
        VpcdClient(card_for_profile(load_profile("demo")), clock=vclock)


def test_client_gives_up_when_vpcd_never_comes(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    card = card_for_profile(load_profile(require_chip_profile()))
    client = VpcdClient(card, clock=vclock, port=_free_port(), connect_timeout=2.0, retry_interval=0.5)
    with pytest.raises(ServiceUnavailableError, match="pcscd"):
        vrun.run(client.insert())
    assert vclock.now() >= 2.0           # retried on the clock, not in a tight loop


def test_client_insert_remove_reinsert(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    name = require_chip_profile()
    card, direct = card_for_profile(load_profile(name)), card_for_profile(load_profile(name))

    async def main() -> None:
        port = _free_port()
        client = VpcdClient(card, clock=vclock, port=port, connect_timeout=5.0, retry_interval=0.1)
        inserting = asyncio.ensure_future(client.insert())       # vpcd not up yet: client retries
        await vclock.sleep(0.35)
        vpcd = MiniVpcd()
        await vpcd.start(port)
        await inserting
        r, w = await asyncio.wait_for(vpcd.connections.get(), 5)
        assert await MiniVpcd.ask(r, w, b"\x04") == direct.atr
        w.write(encode_frame(b"\x01"))                            # power on: no reply
        direct.reset()
        select_pse = bytes.fromhex("00A404000E315041592E5359532E444446303100")
        assert await MiniVpcd.ask(r, w, select_pse) == direct.execute(select_pse)
        assert inserted(client) and client.insertions == 1
        await client.remove()                                     # card pulled: the socket closes
        assert await r.read() == b""
        w.close()
        assert not inserted(client)
        await client.insert()                                     # and back in
        r2, w2 = await asyncio.wait_for(vpcd.connections.get(), 5)
        assert await MiniVpcd.ask(r2, w2, b"\x04") == direct.atr
        w2.close()                                                # vpcd side drops: card out
        await asyncio.wait_for(client.wait_removed(), 5)
        assert not inserted(client) and client.insertions == 2
        await client.remove()
        await vpcd.close()

    vrun.run(main())


def test_card_serve_cli_reconnects_when_vpcd_drops(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    """``posemu card serve`` keeps the card in the reader across a pcscd restart (vpcd drops us)."""
    import signal
    import subprocess
    import sys

    name = require_chip_profile()
    atr = card_for_profile(load_profile(name)).atr

    async def main() -> None:
        vpcd = MiniVpcd()
        port = await vpcd.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "card", "serve", "--profile", name, "--vpcd", str(port),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            with vclock.external():                      # a real child process: real time
                r, w = await asyncio.wait_for(vpcd.connections.get(), 30)
                assert await MiniVpcd.ask(r, w, b"\x04") == atr
                w.close()                                # vpcd goes away (pcscd restarted)
                r2, w2 = await asyncio.wait_for(vpcd.connections.get(), 30)
                assert await MiniVpcd.ask(r2, w2, b"\x04") == atr
                proc.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(r2.read(), 30) == b""      # Ctrl-C pulls the card
                w2.close()
                out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await vpcd.close()
        assert proc.returncode == 0, err
        text = out.decode()
        assert "serving profile" in text and "re-inserted" in text and "card removed" in text
        assert b"reconnecting" in err
        assert load_profile(name).pan not in text

    vrun.run(main())


@pytest.mark.slow
@pytest.mark.pcsc
def test_card_serve_says_the_slot_is_busy_and_serves_only_once_vpcd_talks(
    pcscd: Pcscd, vrun: asyncio.Runner, vclock: VirtualClock
) -> None:
    """Issue 11 item 7: a second ``posemu card serve`` on a slot another card holds connects (vpcd's
    backlog completes the handshake) but is not in the reader: it says the slot is busy, and
    "serving" only once vpcd talks to it — after the first card leaves."""
    import signal
    import subprocess
    import sys

    name = require_chip_profile()
    port = pcscd.slot_port(1)

    async def main() -> None:
        with vclock.external():                      # real pcscd, a real child process: real time
            first = VpcdClient(card_for_profile(load_profile(name)), clock=vclock, port=port)
            await first.insert()
            assert await first.wait_active(20), "pcscd never polled the first card"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "emulator.cli", "card", "serve", "--profile", name, "--vpcd", str(port),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            try:
                assert proc.stdout is not None
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert "slot is busy" in line and "serving" not in line, line
                assert first.active and first.inserted            # the first card still holds the slot
                await first.remove()                               # it leaves: vpcd takes the waiting one
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert line.startswith("posemu card: serving profile"), line
                proc.send_signal(signal.SIGINT)
                rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
                assert "card removed" in rest
                assert await asyncio.wait_for(proc.wait(), 30) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await first.remove()

    vrun.run(main())


def test_wait_active_is_false_while_vpcd_keeps_silent(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    card = card_for_profile(load_profile(require_chip_profile()))

    async def main() -> None:
        vpcd = MiniVpcd()
        port = await vpcd.start()
        client = VpcdClient(card, clock=vclock, port=port)
        await client.insert()
        _r, w = await asyncio.wait_for(vpcd.connections.get(), 5)
        assert not await client.wait_active(2.0)             # connected, but vpcd says nothing
        assert not active(client) and inserted(client)
        w.write(encode_frame(b"\x01"))                       # power on: now the card is in the reader
        await w.drain()
        assert await client.wait_active(5.0) and active(client)
        w.close()
        await client.wait_removed()
        assert not active(client)                             # out of the reader again
        await client.remove()
        await vpcd.close()

    vrun.run(main())
