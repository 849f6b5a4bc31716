"""An MSR605-family reader, emulated: a pure device core and an asyncio pty pump.

:class:`Msr605Device` is the device as a pure state machine — ``receive_data(bytes) -> bytes``
answers commands, ``swipe(stripe) -> bytes`` is a card passing the head. It answers everything a
POS host sends a reader (reset, communication test, ISO read, sensor and RAM tests, model,
firmware, LEDs, BPI, leading zeros, coercivity). Write commands (ISO/raw write, erase, raw read)
are not emulated: they answer ``1B 34`` (invalid command).

:class:`Msr605PtyServer` puts the device behind the master end of a pty, so any serial program —
posemu's ``serial://`` backend, libmsr, a terminal — can open the slave path as if it were
``/dev/ttyUSB0``. A swipe happens when :meth:`Msr605PtyServer.swipe` is called (the CLI does so
for a line on stdin or SIGUSR1) or, with ``auto_swipe``, that many clock seconds after each ISO
read command — the user "swipes" the profile's card shortly after the host arms the read.

>>> d = Msr605Device()
>>> d.receive_data(bytes.fromhex("1b61 1b65")).hex()
'1b79'
>>> d.receive_data(bytes.fromhex("1b72")), d.armed
(b'', True)
>>> d.swipe((None, "12=34", None)).hex(" ")
'1b 73 1b 01 1b 2b 1b 02 3b 31 32 3d 33 34 3f 1b 03 1b 2b 3f 1c 1b 30'
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable

from hardware.clock import Clock
from hardware.links import PtyPair
from hardware.msr605 import stripe_block
from hardware.msr605_codec import (
    ARG_LENGTH,
    ESC,
    CoercivityReply,
    Command,
    CommTestOk,
    FirmwareReply,
    LeadingZerosReply,
    ModelReply,
    Reply,
    Status,
    StatusReply,
    encode_reply,
)

Stripe = tuple[str | None, str | None, str | None]


class Mode(enum.Enum):
    IDLE = "idle"
    ISO_READ = "waiting for a swipe to read"
    SENSOR_TEST = "waiting for a swipe (sensor test)"


class Msr605Device:
    """The device core: bytes from the host in, bytes to the host out. No I/O, no clock."""

    def __init__(self, *, model: str = "3", firmware: str = "REV03.02") -> None:
        self.model = model
        self.firmware = firmware
        self.mode = Mode.IDLE
        self.leds: set[str] = set()
        self.hi_co = True
        self.leading_zeros = (61, 22)
        self.bpi: dict[int, int] = {}
        self.commands: list[Command | int] = []      # every command byte received, in order
        self._buf = bytearray()

    @property
    def armed(self) -> bool:
        """Is the device waiting for a swipe (ISO read or sensor test)?"""
        return self.mode is not Mode.IDLE

    def receive_data(self, data: bytes) -> bytes:
        """Consume bytes from the host; return the device's immediate replies."""
        self._buf += data
        out = bytearray()
        for _ in range(len(self._buf) + 1):          # each pass consumes ≥ 1 byte or stops
            if not self._buf:
                break
            if self._buf[0] != ESC:
                del self._buf[0]                     # line noise between commands: ignored
                continue
            if len(self._buf) < 2:
                break
            code = self._buf[1]
            try:
                cmd: Command | None = Command(code)
            except ValueError:
                cmd = None
            need = 2 + (ARG_LENGTH.get(cmd, 0) if cmd is not None else 0)
            if len(self._buf) < need:
                break
            args = bytes(self._buf[2:need])
            del self._buf[:need]
            self.commands.append(cmd if cmd is not None else code)
            reply = self._execute(cmd, args)
            if reply is not None:
                out += encode_reply(reply)
        return bytes(out)

    def _execute(self, cmd: Command | None, args: bytes) -> Reply | None:
        if cmd is None:
            return StatusReply(Status.INVALID_COMMAND)
        if cmd is Command.RESET:
            self.mode = Mode.IDLE
            return None
        if cmd is Command.COMM_TEST:
            return CommTestOk()
        if cmd is Command.ISO_READ:
            self.mode = Mode.ISO_READ
            return None
        if cmd is Command.SENSOR_TEST:
            self.mode = Mode.SENSOR_TEST
            return None
        if cmd is Command.RAM_TEST:
            return StatusReply(Status.OK)
        if cmd is Command.MODEL:
            return ModelReply(self.model)
        if cmd is Command.FIRMWARE:
            return FirmwareReply(self.firmware)
        if cmd is Command.GET_COERCIVITY:
            return CoercivityReply(self.hi_co)
        if cmd in (Command.SET_HICO, Command.SET_LOCO):
            self.hi_co = cmd is Command.SET_HICO
            return StatusReply(Status.OK)
        if cmd is Command.SET_LEADING_ZEROS:
            self.leading_zeros = (args[0], args[1])
            return StatusReply(Status.OK)
        if cmd is Command.CHECK_LEADING_ZEROS:
            return LeadingZerosReply(*self.leading_zeros)
        if cmd is Command.SET_BPI:
            track = {0xA0: 1, 0xA1: 1, 0xD2: 2, 0x4B: 2, 0xC0: 3, 0xC1: 3}.get(args[0])
            if track is None:
                return StatusReply(Status.FAIL)
            self.bpi[track] = args[0]
            return StatusReply(Status.OK)
        if cmd in (Command.LED_ALL_OFF, Command.LED_ALL_ON, Command.LED_GREEN, Command.LED_YELLOW,
                   Command.LED_RED):
            self.leds = {
                Command.LED_ALL_OFF: set(), Command.LED_ALL_ON: {"green", "yellow", "red"},
                Command.LED_GREEN: {"green"}, Command.LED_YELLOW: {"yellow"}, Command.LED_RED: {"red"},
            }[cmd]
            return None
        return StatusReply(Status.INVALID_COMMAND)   # write, erase, raw modes: not emulated

    def swipe(self, stripe: Stripe, *, status: Status = Status.OK,
              bad: frozenset[int] = frozenset()) -> bytes:
        """A card passes the head: the bytes the device sends (``b""`` if nothing was armed).

        ``stripe`` holds each track's data between the sentinels (``None`` = no track), as
        :attr:`hardware.ports.VirtualCard.stripe`; ``bad`` tracks read as unreadable and
        ``status`` is the block's final status byte.
        """
        mode, self.mode = self.mode, Mode.IDLE
        if mode is Mode.ISO_READ:
            return encode_reply(stripe_block(stripe, status, bad))
        if mode is Mode.SENSOR_TEST:
            return encode_reply(StatusReply(Status.OK))
        return b""


class Msr605PtyServer:
    """Serve an :class:`Msr605Device` behind a pty on the running event loop.

    ``await start()`` creates the pty and returns the slave path; the pump then runs until
    ``await close()``. ``write_chunk`` > 0 sends replies in pieces of that many bytes (a slow
    UART, for short-read tests). ``on_event`` receives a short text for each thing that happens
    (the CLI prints it; it never contains card data).
    """

    def __init__(
        self,
        device: Msr605Device,
        *,
        clock: Clock,
        stripe: Stripe | None = None,
        auto_swipe: float | None = None,
        write_chunk: int = 0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        self.stripe = stripe
        self.auto_swipe = auto_swipe
        self.write_chunk = write_chunk
        self._clock = clock
        self._on_event = on_event
        self._pty: PtyPair | None = None
        self._pump: asyncio.Task[None] | None = None
        self._auto: asyncio.Task[None] | None = None
        self._wlock = asyncio.Lock()
        self.swipes = 0

    @property
    def slave_path(self) -> str:
        if self._pty is None:
            raise RuntimeError("the server is not started")
        return self._pty.slave_path

    def _note(self, text: str) -> None:
        if self._on_event is not None:
            self._on_event(text)

    async def start(self) -> str:
        if self._pty is None:
            self._pty = PtyPair()
            self._pump = asyncio.get_running_loop().create_task(self._run(), name="msr605-pty")
        return self._pty.slave_path

    async def _send(self, data: bytes) -> None:
        if not data or self._pty is None:
            return
        async with self._wlock:
            step = self.write_chunk if self.write_chunk > 0 else len(data)
            for i in range(0, len(data), step):
                await self._pty.master.write(data[i:i + step])

    async def _run(self) -> None:
        pty = self._pty
        if pty is None:
            return
        while True:                      # one read per pass; ends when close() cancels the task
            data = await pty.master.read(4096, 1.0)
            if not data:
                continue
            was_armed = self.device.armed
            out = self.device.receive_data(data)
            await self._send(out)
            if self.device.armed and not was_armed:
                self._note(f"host armed: {self.device.mode.value}")
                if self.auto_swipe is not None and self.stripe is not None:
                    self._schedule_auto_swipe()
            elif was_armed and not self.device.armed:
                self._note("host cancelled the read")

    def _schedule_auto_swipe(self) -> None:
        if self._auto is not None and not self._auto.done():
            return

        async def later() -> None:
            await self._clock.sleep(self.auto_swipe or 0.0)
            if self.device.armed:
                await self.swipe()

        self._auto = asyncio.get_running_loop().create_task(later(), name="msr605-auto-swipe")

    async def swipe(self, stripe: Stripe | None = None, *, status: Status = Status.OK,
                    bad: frozenset[int] = frozenset()) -> bool:
        """Swipe a card (default: the server's ``stripe``). ``False`` if the device was not armed."""
        card = stripe if stripe is not None else self.stripe
        if card is None:
            raise ValueError("no card to swipe: pass a stripe or start the server with one")
        out = self.device.swipe(card, status=status, bad=bad)
        if not out:
            self._note("swipe ignored: the host has not armed a read")
            return False
        self.swipes += 1
        await self._send(out)
        self._note(f"card swiped ({len(out)} bytes sent)")
        return True

    async def close(self) -> None:
        for task in (self._auto, self._pump):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._auto = self._pump = None
        if self._pty is not None:
            await self._pty.close()
            self._pty = None
