"""Serial end to end: the ``serial://`` backend opens a real pty slave with pyserial, and the
emulated MSR605 answers from behind the master end — all in one event loop, on a virtual clock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.errors import LinkError, NoReaderError, PortBusyError, ReaderError
from hardware.links import PtyPair, SerialLink, translate_serial_error
from hardware.msr605 import (
    Command,
    FirmwareReply,
    LeadingZerosReply,
    ModelReply,
    SerialMsrReader,
    Status,
    StatusReply,
)
from hardware.msr605_device import Mode, Msr605Device, Msr605PtyServer
from hardware.ports import CardReader, ReaderEventKind, TrackStatus
from hardware.registry import open_reader
from hardware.sim import card_for_profile, ideal_swipe
from protocol.errors import ConfigError, DecodeError

CARD = card_for_profile(load_profile("demo"))

Body = Callable[[Msr605PtyServer, CardReader], Coroutine[Any, Any, None]]


def run_with_device(vrun: asyncio.Runner, vclock: VirtualClock, body: Body, *, auto_swipe: float | None = None,
                    write_chunk: int = 0, url_suffix: str = "?baud=9600") -> Msr605Device:
    device = Msr605Device()

    async def main() -> None:
        server = Msr605PtyServer(device, clock=vclock, stripe=CARD.stripe, auto_swipe=auto_swipe,
                                 write_chunk=write_chunk)
        path = await server.start()
        reader = open_reader(f"serial://{path}{url_suffix}", clock=vclock)
        try:
            await body(server, reader)
        finally:
            await reader.close()
            # let the device read what the reader sent on close (its RESET) before the pty goes away
            for _ in range(100):
                if device.commands and device.commands[-1] == Command.RESET:
                    break
                await vclock.sleep(0.01)
            await server.close()

    vrun.run(main())
    return device


def test_swipe_through_a_real_tty(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert isinstance(reader, SerialMsrReader) and isinstance(reader, CardReader)
        assert await reader.next_event(0.3) is None          # init ran, read armed, nobody swiped
        assert server.device.armed
        assert await server.swipe()
        ev = await reader.next_event(5)
        assert ev is not None and ev.kind is ReaderEventKind.CARD_SWIPED
        assert ev.swipe == ideal_swipe(CARD)                  # exactly the card's tracks
        assert ev.swipe.track(2) is not None and ev.swipe.track(2).data == CARD.stripe[1]  # type: ignore[union-attr]

    device = run_with_device(vrun, vclock, body)
    # the init sequence of the manual: ESC a, ESC e (→ ESC y), ESC a; then the read; reset on close
    assert device.commands[:4] == [Command.RESET, Command.COMM_TEST, Command.RESET, Command.ISO_READ]
    assert device.commands[-1] == Command.RESET


def test_auto_swipe_and_byte_by_byte_replies(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    """Every reply arrives one byte per write (a slow UART): the receive buffer copes."""
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        for _ in range(3):
            ev = await reader.next_event(10)
            assert ev is not None and ev.swipe == ideal_swipe(CARD)
        assert server.swipes == 3
        assert isinstance(reader, SerialMsrReader)
        assert await reader.query(Command.FIRMWARE) == FirmwareReply("REV03.02")
        assert await reader.query(Command.MODEL) == ModelReply("3")
        assert await reader.query(Command.SET_LEADING_ZEROS, bytes([61, 22])) == StatusReply(Status.OK)
        assert await reader.query(Command.CHECK_LEADING_ZEROS) == LeadingZerosReply(61, 22)
        assert await reader.query(Command.RAM_TEST) == StatusReply(Status.OK)

    run_with_device(vrun, vclock, body, auto_swipe=0.05, write_chunk=1)


def test_bad_empty_tracks_and_status_errors(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert await reader.next_event(0.2) is None
        await server.swipe(bad=frozenset({1}))
        ev = await reader.next_event(5)
        assert ev is not None and ev.swipe is not None
        assert [t.status for t in ev.swipe.tracks] == [TrackStatus.PARITY_ERROR, TrackStatus.OK,
                                                       TrackStatus.NO_DATA]
        assert await reader.next_event(0.2) is None
        await server.swipe((None, None, None), status=Status.RW_ERROR)
        ev = await reader.next_event(5)
        assert ev is not None and ev.swipe is not None
        assert [t.status for t in ev.swipe.tracks] == [TrackStatus.NO_DATA] * 3
        # a reader that answers a read with a bare status (no data block)
        assert await reader.next_event(0.2) is None
        server.device.mode = Mode.IDLE
        await server._send(b"\x1b\x31")
        ev = await reader.next_event(5)
        assert ev is not None and ev.swipe is not None
        assert all(t.status is TrackStatus.NO_DATA and "read/write error" in t.detail for t in ev.swipe.tracks)

    run_with_device(vrun, vclock, body)


def test_garbage_from_the_device_is_a_decode_error(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert await reader.next_event(0.2) is None
        await server._send(b"\x1b\x73\x1b\x02")              # block starts with the wrong track
        with pytest.raises(DecodeError) as ei:
            await reader.next_event(5)
        assert ei.value.field == "track1.marker"
        # the reader resynchronised (reset) and re-arms on the next call
        assert await reader.next_event(0.2) is None
        assert server.device.commands[-2:] == [Command.RESET, Command.ISO_READ]
        assert await server.swipe()
        ev = await reader.next_event(5)
        assert ev is not None and ev.swipe == ideal_swipe(CARD)

    run_with_device(vrun, vclock, body)


def test_ic_methods_on_a_magstripe_reader(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert await reader.card_present() is False
        with pytest.raises(ReaderError, match="magstripe-only"):
            await reader.power_on()
        with pytest.raises(ReaderError, match="magstripe-only"):
            await reader.transmit(b"\x00\xa4\x04\x00\x00")
        await reader.power_off()

    run_with_device(vrun, vclock, body)


def test_second_opener_is_port_busy(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert await reader.next_event(0.1) is None           # first opener holds the port
        second = open_reader(f"serial://{server.slave_path}", clock=vclock)
        with pytest.raises(PortBusyError, match="held by another program"):
            await second.next_event(0.1)
        await second.close()

    run_with_device(vrun, vclock, body)


def test_second_opener_in_another_process_is_refused(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert await reader.next_event(0.1) is None
        code = (
            "import serial, sys\n"
            "try:\n"
            f"    serial.serial_for_url({server.slave_path!r}, exclusive=True)\n"
            "except serial.SerialException as e:\n"
            "    print('busy', e.errno); sys.exit(0)\n"
            "print('opened'); sys.exit(1)\n"
        )
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=subprocess.PIPE)
        with vclock.external():
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out
        assert out.startswith(b"busy")

    run_with_device(vrun, vclock, body)


def test_missing_port_and_mute_device(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Any) -> None:
    reader = open_reader(f"serial://{tmp_path}/ttyUSB9", clock=vclock)
    with pytest.raises(NoReaderError, match="does not exist"):
        vrun.run(reader.next_event(0.1))

    async def mute() -> None:                               # a tty with nothing behind it
        pty = PtyPair()
        r = open_reader(f"serial://{pty.slave_path}?timeout=0.3", clock=vclock)
        try:
            with pytest.raises(NoReaderError, match="no MSR605 answered"):
                await r.next_event(1)
        finally:
            await r.close()
            await pty.close()

    vrun.run(mute())


def test_reader_lost_when_the_device_goes_away(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert await reader.next_event(0.1) is None
        await server.close()                                # the emulator (cable) is gone
        ev = await reader.next_event(2)
        assert ev is not None and ev.kind is ReaderEventKind.READER_LOST
        with pytest.raises(NoReaderError, match="lost"):
            await reader.next_event(0.1)

    run_with_device(vrun, vclock, body)


def test_url_and_error_translation(vclock: VirtualClock) -> None:
    for bad in ("serial://", "serial:///dev/ttyUSB0?parity=E"):
        with pytest.raises(ConfigError):
            open_reader(bad, clock=vclock)
    import errno

    class Err(OSError):
        pass

    assert isinstance(translate_serial_error(Err(errno.ENOENT, "x"), "/dev/x", "open"), NoReaderError)
    assert isinstance(translate_serial_error(Err(errno.EAGAIN, "x"), "/dev/x", "open"), PortBusyError)
    denied = translate_serial_error(Err(errno.EACCES, "x"), "/dev/x", "open")
    assert isinstance(denied, PortBusyError) and "dialout" in str(denied)
    assert isinstance(translate_serial_error(Err(errno.EIO, "x"), "/dev/x", "read"), LinkError)
    assert isinstance(translate_serial_error(ValueError("baud"), "/dev/x", "open"), ConfigError)


def test_serial_link_over_pyserial_loop_url(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    """pyserial's loop:// (what you write comes back) through the same ByteLink."""
    async def main() -> None:
        link = SerialLink("loop://", clock=vclock)
        await link.write(b"\x1b\x65abc")
        got = b""
        for _ in range(10):
            got += await link.read(16, 0.2)
            if len(got) >= 5:
                break
        assert got == b"\x1b\x65abc"
        assert await link.read(16, 0.05) == b""
        await link.close()
        with pytest.raises(NoReaderError):
            await SerialLink("/nonexistent/tty", clock=vclock).open()

    vrun.run(main())


# --- the CLI: posemu device msr --pty, driven from another process ---------------------------------
async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    for _ in range(50):
        line = await stream.readline()
        if not line:
            return
        yield line.decode()


def test_device_msr_cli(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "device", "msr", "--pty", "--profile", "demo",
            "--auto-swipe", "100", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            with vclock.external():
                path = ""
                async with asyncio.timeout(30):
                    async for line in _lines(proc.stdout):
                        if "MSR605 emulator on " in line:
                            path = line.split("MSR605 emulator on ", 1)[1].split()[0]
                            break
            assert path.startswith("/dev/")
            reader = open_reader(f"serial://{path}", clock=vclock)
            ev = await reader.next_event(10)
            assert ev is not None and ev.swipe == ideal_swipe(CARD)
            await reader.close()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            with vclock.external():
                out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        text = out.decode()
        assert "card swiped" in text and "stopped" in text
        assert load_profile("demo").pan not in text                 # never card data

    vrun.run(main())


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs POSIX ptys")
def test_pty_pair_is_raw() -> None:
    import termios

    async def main() -> None:
        pty = PtyPair()
        fd = os.open(pty.slave_path, os.O_RDWR | os.O_NOCTTY)
        try:
            lflag = termios.tcgetattr(fd)[3]
            assert not lflag & termios.ECHO and not lflag & termios.ICANON
            await pty.master.write(b"\x1b\r\n")
            assert os.read(fd, 16) == b"\x1b\r\n"            # no CR/LF translation
        finally:
            os.close(fd)
            await pty.close()

    asyncio.run(main())
