"""``posemu serial-relay``: an MSR605 reader behind a pty (posemu's emulated device standing in for
``/dev/ttyUSB0``) relayed onto a second pty; a serial program on that pty talks to the reader
cleanly, then meets dropped or flipped bytes, a baud mismatch, the port held by another program
and a stalled device."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.trace import read_trace
from faults.diagnose import diagnose
from faults.serial_relay import SerialRelay, parse_line, rebaud
from hardware.clock import VirtualClock
from hardware.errors import PortBusyError
from hardware.links import SerialLink
from hardware.msr605_device import Msr605Device, Msr605PtyServer
from protocol.errors import ConfigError

COMM_TEST, COMM_OK = bytes.fromhex("1b65"), bytes.fromhex("1b79")
ISO_READ = bytes.fromhex("1b72")
STRIPE = (None, "9912345678901234=29121010000000000000", None)


@asynccontextmanager
async def rig(clock: VirtualClock) -> AsyncIterator[tuple[Msr605PtyServer, SerialRelay, SerialLink]]:
    device = Msr605PtyServer(Msr605Device(), clock=clock, stripe=STRIPE)
    path = await device.start()
    relay = SerialRelay(SerialLink(path, clock=clock), clock=clock)
    await relay.start()
    app = SerialLink(relay.slave_path, clock=clock)
    try:
        yield device, relay, app
    finally:
        await app.close()
        await relay.stop()
        await device.close()


async def ask(app: SerialLink, data: bytes, want: int, timeout: float = 1.0) -> bytes:
    """Write, then read until ``want`` bytes came or ``timeout`` (clock) seconds passed."""
    if data:
        await app.write(data)
    got = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < want and (left := deadline - loop.time()) > 0:
        got += await app.read(want - len(got), min(0.2, left))
    return got


@given(st.binary(max_size=40), st.sampled_from([1200, 9600, 19200, 115200]))
def test_rebaud_same_rate_is_identity(data: bytes, baud: int) -> None:
    assert rebaud(data, baud, baud) == data


def test_rebaud_mismatch_garbles() -> None:
    assert rebaud(COMM_OK, 9600, 19200) != COMM_OK
    assert rebaud(COMM_OK, 9600, 4800) != COMM_OK
    assert len(rebaud(b"\x00" * 10, 9600, 9700)) == 10        # a small drift still frames every byte


def test_line_grammar() -> None:
    assert parse_line("drop=0.5,baud=19200").baud == 19200
    for bad, why in [("", "line fault is"), ("drop=2", "outside"), ("colour=1", "unknown parameter"),
                     ("to=sideways", "must be one of")]:
        with pytest.raises(ConfigError, match=why):
            parse_line(bad)


def test_serial_relay_clean_then_each_fault(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (device, relay, app):
            with vclock.external():
                assert await ask(app, COMM_TEST, 2) == COMM_OK                 # clean
                await app.write(ISO_READ)
                await asyncio.sleep(0.2)
                assert await device.swipe()
                block = await ask(app, b"", 48)
                for _ in range(10):                                          # the rest of the block
                    more = await app.read(256, 0.3)
                    if not more:
                        break
                    block += more
                assert block.endswith(bytes.fromhex("3f1c1b30"))
                assert block.startswith(bytes.fromhex("1b73")) and STRIPE[1].encode() in block
                assert STRIPE[1] not in "".join(e.to_json() for e in relay.trace)     # no track data

                relay.arm("line:flip=1.0,to=app", name="noise")
                assert await ask(app, COMM_TEST, 2) != COMM_OK
                assert relay.stats["flipped"] >= 2
                relay.disarm("noise")
                relay.arm("line:baud=19200", name="baud")
                assert await ask(app, COMM_TEST, 2) != COMM_OK
                relay.disarm("baud")
                relay.arm("line:drop=1.0,to=device", name="drop")
                assert await ask(app, COMM_TEST, 2, timeout=0.6) == b""
                relay.disarm("drop")
                assert await ask(app, COMM_TEST, 2) == COMM_OK                 # clean again
                assert "serial.corrupted" in [e.data.get("code") for e in relay.trace]

                relay.arm("line:stall_after=0", name="stall")
                assert await ask(app, COMM_TEST, 2, timeout=0.6) == b""
                assert diagnose(list(relay.trace)).groups == ["reader-dead"]
                relay.disarm("stall")

                await app.close()
                relay.arm("software.port-conflict", name="held")
                held = SerialLink(relay.slave_path, clock=vclock)
                with pytest.raises(PortBusyError, match="held by another program"):
                    await held.open()
                assert "port-conflict" in diagnose(list(relay.trace)).groups
                relay.disarm("held")
                again = SerialLink(relay.slave_path, clock=vclock)
                assert await ask(again, COMM_TEST, 2) == COMM_OK
                await again.close()

    vrun.run(main())


def test_serial_relay_refuses_faults_it_cannot_apply(vclock: VirtualClock) -> None:
    relay = SerialRelay(SerialLink("loop://", clock=vclock), clock=vclock)
    with pytest.raises(ConfigError, match="serial relay does not have"):
        relay.arm("reader.dirty-contacts")
    with pytest.raises(ConfigError, match="unknown parameter"):
        relay.arm("line:speed=3")


def test_serial_relay_command(tmp_path: Path) -> None:
    """``posemu serial-relay`` in its own process: the pty it prints answers like the device; its trace
    says the device stalled; ``--for`` ends it."""
    trace = tmp_path / "serial.jsonl"

    async def main() -> None:
        clock = VirtualClock()
        device = Msr605PtyServer(Msr605Device(), clock=clock, stripe=STRIPE)
        path = await device.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "serial-relay", "--from", f"serial://{path}", "--trace",
            str(trace), "--line", "stall_after=2", "--for", "20", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line.startswith("posemu serial-relay: ") and "→ /dev/pts/" in line, line
            app = SerialLink(line.split("→ ")[1].split()[0], clock=clock)
            assert await ask(app, COMM_TEST, 2, timeout=5) == COMM_OK          # 2 bytes, then the stall
            assert await ask(app, COMM_TEST, 2, timeout=0.6) == b""
            await app.close()
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await device.close()

    asyncio.run(main())
    assert diagnose(read_trace(trace)).groups == ["reader-dead"]
