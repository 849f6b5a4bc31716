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
    BpcReply,
    Command,
    FirmwareReply,
    LeadingZerosReply,
    ModelReply,
    RawReadReply,
    SerialMsrReader,
    Status,
    StatusReply,
)
from hardware.msr605_device import Mode, Msr605Device, Msr605PtyServer
from hardware.msr605_stripe import is_card_file, load_card_file
from hardware.ports import CardReader, ReaderEventKind, TrackStatus
from hardware.registry import open_reader
from hardware.sim import card_for_profile, ideal_swipe
from protocol.errors import ConfigError, DecodeError

CARD = card_for_profile(load_profile("demo"))

Body = Callable[[Msr605PtyServer, CardReader], Coroutine[Any, Any, None]]


async def until(done: Callable[[], bool], vclock: VirtualClock, limit_s: float = 5.0) -> None:
    """Wait for bytes in flight through the pty's tty layer (delivered by a kernel worker, not at
    once): real time passes while we wait, at most ``limit_s``, and the virtual clock keeps step."""
    with vclock.external():
        for _ in range(int(limit_s / 0.01)):
            if done():
                return
            await vclock.sleep(0.01)


def run_with_device(vrun: asyncio.Runner, vclock: VirtualClock, body: Body, *, auto_swipe: float | None = None,
                    write_chunk: int = 0, url_suffix: str = "?baud=9600", card_file: Any = None) -> Msr605Device:
    device = Msr605Device()

    async def main() -> None:
        server = Msr605PtyServer(device, clock=vclock, stripe=CARD.stripe, auto_swipe=auto_swipe,
                                 write_chunk=write_chunk, card_file=card_file)
        path = await server.start()
        reader = open_reader(f"serial://{path}{url_suffix}", clock=vclock)
        try:
            await body(server, reader)
        finally:
            await reader.close()
            # let the device read what the reader sent on close (its RESET) before the pty goes away
            await until(lambda: bool(device.commands) and device.commands[-1] == Command.RESET, vclock)
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


NEW_TRACK2 = "9900010000000027=3112101"        # an invented test card (BIN 99), Luhn-valid


def _reversed_bits(data: bytes) -> bytes:
    """Raw-read bytes (most significant bit first) → raw-write bytes (least significant first), 8 BPC."""
    return bytes(int(f"{b:08b}"[::-1], 2) for b in data)


def test_posemu_writes_cards_through_serial_and_reads_them_back(vrun: asyncio.Runner, vclock: VirtualClock,
                                                                tmp_path: Any) -> None:
    """posemu's serial:// backend as a card writer (ISO write, BPC, raw read, raw write, erase);
    its reader then swipes what was written, and the card file follows every write."""
    card_file = tmp_path / "card.toml"

    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert isinstance(reader, SerialMsrReader)
        assert await reader.write_iso((None, NEW_TRACK2, None), timeout=5) is Status.OK
        ev = await reader.next_event(5)
        assert ev is not None and ev.swipe is not None
        assert [t.data for t in ev.swipe.tracks] == [CARD.stripe[0], NEW_TRACK2, ""]
        assert load_card_file(card_file).iso() == (CARD.stripe[0], NEW_TRACK2, None)
        assert await reader.query(Command.SET_BPC, bytes([8, 8, 8])) == BpcReply((8, 8, 8))
        raw = await reader.read_raw(timeout=5)
        assert isinstance(raw, RawReadReply) and raw.status is Status.OK
        assert raw.tracks[0] and raw.tracks[1] and raw.tracks[2] == b""
        # written back in the write orientation, the raw dump gives the same card (a clone)
        assert await reader.write_raw([_reversed_bits(t) for t in raw.tracks], timeout=5) is Status.OK
        assert load_card_file(card_file).iso() == (CARD.stripe[0], NEW_TRACK2, None)
        assert await reader.erase({1}, timeout=5) is Status.OK
        ev = await reader.next_event(5)
        assert ev is not None and ev.swipe is not None
        assert [t.status for t in ev.swipe.tracks] == [TrackStatus.NO_DATA, TrackStatus.OK, TrackStatus.NO_DATA]
        assert load_card_file(card_file).iso() == (None, NEW_TRACK2, None)
        with pytest.raises(ConfigError):
            await reader.query(Command.ISO_WRITE)
        with pytest.raises(ConfigError):
            await reader.erase({4})

    device = run_with_device(vrun, vclock, body, auto_swipe=0.05, card_file=card_file)
    assert Command.ISO_WRITE in device.commands and Command.RAW_WRITE in device.commands
    assert device.commands.count(Command.ERASE) == 1


def test_a_write_nobody_swipes_for_is_cancelled(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(server: Msr605PtyServer, reader: CardReader) -> None:
        assert isinstance(reader, SerialMsrReader)
        with pytest.raises(ReaderError, match="no answer to ISO write"):
            await reader.write_iso(("A", None, None), timeout=0.5)
        await until(lambda: not server.device.armed, vclock)
        assert not server.device.armed                           # cancelled: a late card is not written
        assert not await server.swipe()
        assert server.card is not None and server.card.iso()[0] == CARD.stripe[0]

    run_with_device(vrun, vclock, body)


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


def test_card_file_written_by_a_pyserial_tool_is_swiped_by_posemu(tmp_path: Any) -> None:
    """`posemu device msr --pty --card-file F` in its own process; a plain pyserial client writes
    the card; `posemu swipe --card F` swipes it as written (masked), raw garbage included."""
    import serial
    from click.testing import CliRunner

    from emulator.cli import main as cli

    card_file = tmp_path / "written.toml"
    dev = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "device", "msr", "--pty", "--card-file", str(card_file),
         "--auto-swipe", "50"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert dev.stdout is not None
        path = ""
        for _ in range(20):                      # bounded: the first lines name the pty
            line = dev.stdout.readline()
            if "MSR605 emulator on " in line:
                path = line.split("MSR605 emulator on ", 1)[1].split()[0]
                break
        assert path.startswith("/dev/"), "the device did not print its pty"
        assert is_card_file(card_file)           # created from the profile at once
        port = serial.Serial(path, 9600, timeout=10)
        try:
            port.write(bytes.fromhex("1b77 1b73 1b01 1b02") + NEW_TRACK2.encode() + bytes.fromhex("1b03 3f1c"))
            assert port.read(2) == bytes.fromhex("1b30")
            res = CliRunner().invoke(cli, ["swipe", "--card", str(card_file)])
            assert res.exit_code == 0, res.output
            assert "track 2  OK                 ;990001******0027=3112101?" in res.output
            assert NEW_TRACK2 not in res.output
            port.write(bytes.fromhex("1b6e 1b73 1b03 04 0f0f0f0f 3f1c"))     # no ISO characters in there
            assert port.read(2) == bytes.fromhex("1b30")
        finally:
            port.close()
        res = CliRunner().invoke(cli, ["swipe", "--card", str(card_file)])
        assert res.exit_code == 1, res.output
        assert "track 3  NO START SENTINEL  written" in res.output and "written, but not as ISO/IEC 7811" in res.output
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=30)
    assert dev.returncode == 0, out
    assert "card written: track 2; saved to" in out and "card written (raw): track 3" in out
    assert NEW_TRACK2 not in out and load_profile("demo").pan not in out


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


# --- a third-party client: plain pyserial, nothing of posemu on the client side ----------------------
# Every byte is the MSR605 Programmer's Manual's: the ISO write block and the raw write blocks are
# its §9 examples ("%ABC123?", ";12345?", ";12345?"); the raw reads are those bits in the §7 "Read"
# orientation (most significant bit first): at 7/5/5 BPC one character per byte, at 8 BPC each
# §9 write byte with its bits reversed.
THIRD_PARTY_CLIENT = r'''
import sys
import serial

port = serial.Serial(sys.argv[1], 9600, timeout=10)


def xfer(what, send, want):
    port.write(bytes.fromhex(send))
    want = bytes.fromhex(want)
    got = port.read(len(want))
    if got != want:
        sys.exit(f"{what}: sent {send}, expected {want.hex(' ')}, got {got.hex(' ')}")


ISO_READ = "1b73 1b01 25414243313233 3f 1b02 3b3132333435 3f 1b03 3b3132333435 3f 3f1c 1b30"
port.write(bytes.fromhex("1b61"))
xfer("communication test", "1b65", "1b79")
port.write(bytes.fromhex("1b61"))
xfer("Hi-Co", "1b78", "1b30")
xfer("get coercivity", "1b64", "1b68")
xfer("set BPC 7/5/5", "1b6f 07 05 05", "1b30 07 05 05")
xfer("ISO write", "1b77 1b73 1b01 414243313233 1b02 3132333435 1b03 3132333435 3f1c", "1b30")
xfer("ISO read after the ISO write", "1b72", ISO_READ)
xfer("raw read at 7/5/5 BPC", "1b6d",
     "1b73 1b01 09 514323624525647c2a 1b02 08 1a10081904151f15 1b03 08 1a10081904151f15 3f1c 1b30")
xfer("set BPC 8/8/8", "1b6f 08 08 08", "1b30 08 08 08")
xfer("erase all tracks", "1b63 07", "1b30")
xfer("ISO read of the erased card", "1b72", "1b73 1b01 1b2b 1b02 1b2b 1b03 1b2b 3f1c 1b30")
xfer("raw write", "1b6e 1b73 1b01 08 c5b07814954e3e2a 1b02 05 2b8849eaaf 1b03 05 2b8849eaaf 3f1c", "1b30")
xfer("ISO read after the raw write", "1b72", ISO_READ)
xfer("raw read at 8 BPC", "1b6d",
     "1b73 1b01 08 a30d1e28a9727c54 1b02 05 d4119257f5 1b03 05 d4119257f5 3f1c 1b30")
xfer("set BPC 7/5/5", "1b6f 07 05 05", "1b30 07 05 05")
xfer("raw write at 7/5/5 BPC, track 2 only", "1b6e 1b73 1b01 00 1b02 08 0b01021304151f15 1b03 00 3f1c", "1b30")
xfer("unknown command with a data block: one status", "1b99 1b73 1b01 41 3f1c 1b65", "1b34 1b79")
xfer("ISO read at the end", "1b72", ISO_READ)
port.write(bytes.fromhex("1b61"))
print("ok")
'''


def test_third_party_pyserial_client_writes_and_reads_back(vrun: asyncio.Runner, vclock: VirtualClock,
                                                          tmp_path: Any) -> None:
    """A plain pyserial script drives the emulator byte for byte: ISO write, raw write, erase, then
    ISO read and raw read give back exactly what was written."""
    script = tmp_path / "msr_client.py"
    script.write_text(THIRD_PARTY_CLIENT)

    async def main() -> None:
        server = Msr605PtyServer(Msr605Device(), clock=vclock, stripe=CARD.stripe, auto_swipe=0.02)
        path = await server.start()
        try:
            proc = await asyncio.create_subprocess_exec(sys.executable, str(script), path,
                                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            with vclock.external():
                out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            await server.close()
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "ok"

    vrun.run(main())
