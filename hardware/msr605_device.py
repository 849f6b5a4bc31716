"""An MSR605-family reader/writer, emulated: a pure device core and an asyncio pty pump.

:class:`Msr605Device` is the device as a pure state machine on top of
:class:`~hardware.msr605_codec_device.Msr605DeviceCodec`: ``receive_data(bytes) -> bytes``
answers the host's commands, ``swipe(card) -> CardPass`` is a card passing the head — it answers an armed read,
write, erase or sensor test and returns the card as it is afterwards. Every command of the
MSR605 Programmer's Manual §6 is emulated and acts on a :class:`~hardware.msr605_stripe.MagStripe`:

* ISO read (``1B 72``) / raw read (``1B 6D``): the card's tracks decoded / packed at the BPC
  setting; the block's status is ``30``, or ``31`` when a recorded track does not decode.
* ISO write (``1B 77``) / raw write (``1B 6E``): the data block is checked on arrival — a block
  that breaks the §7 framing, characters outside the track's ISO/IEC 7811 set, or more bits than
  fit on a card at the track's density answer ``1B 32`` (command format error) at once; a good one
  arms the write, and the next card swiped gets the tracks given (an empty or missing track is
  left as it is; ISO data may be sent with or without its sentinels). ``1B 30`` after the swipe,
  or ``1B 31`` if the writer is in Lo-Co mode and the card is Hi-Co (nothing is written).
* erase (``1B 63 sel``): select ``00``/``01`` track 1, bit 1 track 2, bit 2 track 3 (§6 item 14);
  ``1B 30`` after the swipe, ``1B 41`` for a select byte over ``07`` (at once) or a Hi-Co card in
  Lo-Co mode.
* set BPI (``1B 62 d``): the density the next writes use (``A1``/``A0`` track 1, ``D2``/``4B``
  track 2, ``C1``/``C0`` track 3: 210/75 bpi); anything else ``1B 41``.
* set BPC (``1B 6F b1 b2 b3``): bits per raw byte, 5…8 → ``1B 30 b1 b2 b3``; otherwise ``1B 41``.
  ISO reads and writes always use each track's ISO character format (7 bits on track 1, 5 on 2/3).
* Hi-Co / Lo-Co (``1B 78`` / ``1B 79``) → ``1B 30``; get coercivity (``1B 64``) → ``1B 68`` / ``1B 6C``.
* set / check leading zeros (``1B 7A a b`` / ``1B 6C``): the clocking zeros writes put before
  the data (tracks 1 and 3 / track 2; default 61 and 22).
* reset, communication test, sensor and RAM tests, model, firmware, LEDs: as §6.

A command byte that is no command answers ``1B 34``; a data block with no write command before it
is consumed silently (its command was already answered) — one status per command, never more.
Settings survive a reset, which only cancels an armed operation.

:class:`Msr605PtyServer` puts the device behind the master end of a pty, so any serial program —
posemu's ``serial://`` backend, libmsr, a pyserial script — can open the slave path as if it were
``/dev/ttyUSB0``. A swipe happens when :meth:`Msr605PtyServer.swipe` is called (the CLI does so for
a line on stdin or SIGUSR1) or, with ``auto_swipe``, that many clock seconds after the host arms
any operation that waits for a card. With ``card_file`` every write is saved there.

>>> d = Msr605Device()
>>> d.receive_data(bytes.fromhex("1b61 1b65")).hex()
'1b79'
>>> d.receive_data(bytes.fromhex("1b72")), d.armed
(b'', True)
>>> d.swipe((None, "12=34", None)).sent.hex(" ")
'1b 73 1b 01 1b 2b 1b 02 3b 31 32 3d 33 34 3f 1b 03 1b 2b 3f 1c 1b 30'
>>> d.receive_data(bytes.fromhex("1b77 1b73 1b01 1b02 3132 1b03 3f1c")), d.mode.name
(b'', 'ISO_WRITE')
>>> p = d.swipe(MagStripe()); p.sent.hex(), p.card.iso(), p.written
('1b30', (None, '12', None), (2,))
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hardware.clock import Clock
from hardware.links import PtyPair
from hardware.magstripe.tracks import track_spec
from hardware.msr605_codec import (
    BpcReply,
    CoercivityReply,
    Command,
    CommandEvent,
    CommTestOk,
    FirmwareReply,
    HostEvent,
    IsoReadReply,
    IsoWrite,
    LeadingZerosReply,
    MalformedBlock,
    ModelReply,
    RawReadReply,
    RawWrite,
    Reply,
    Status,
    StatusReply,
    StrayBlock,
    TrackData,
    TrackMarker,
    UnknownCommand,
    encode_reply,
)
from hardware.msr605_codec_device import Msr605DeviceCodec
from hardware.msr605_stripe import (
    Coercivity,
    MagStripe,
    RecordedTrack,
    iso_track,
    save_card_file,
    standard_bpi,
    unpack_raw,
)
from hardware.ports import TrackStatus
from protocol.errors import EncodeError, PosemuError
from protocol.sansio import NeedData

Stripe = tuple[str | None, str | None, str | None]

BPI_CODES: dict[int, tuple[int, int]] = {         # §6 item 15: density byte → (track, bpi)
    0xA1: (1, 210), 0xA0: (1, 75), 0xD2: (2, 210), 0x4B: (2, 75), 0xC1: (3, 210), 0xC0: (3, 75),
}
_SS = {1: ord("%"), 2: ord(";"), 3: ord(";")}


def erase_select(sel: int) -> frozenset[int] | None:
    """The tracks an erase select byte names (§6 item 14: ``00`` track 1 only, bit 1 track 2,
    bit 2 track 3; ``01`` also means track 1, as libMSRx05 notes), ``None`` for a bad byte.

    >>> sorted(erase_select(0x00)), sorted(erase_select(0x06)), erase_select(0x08)
    ([1], [2, 3], None)
    """
    if sel > 0x07:
        return None
    tracks = {n for n, bit in ((1, 1), (2, 2), (3, 4)) if sel & bit}
    if sel & 0x06 == 0:
        tracks.add(1)
    return frozenset(tracks)


class Mode(enum.Enum):
    """What the emulated device is waiting for: nothing, or a card through the head for an armed command."""

    IDLE = "idle"
    ISO_READ = "waiting for a swipe to read"
    RAW_READ = "waiting for a swipe to read raw"
    ISO_WRITE = "waiting for a card to write"
    RAW_WRITE = "waiting for a card to write raw"
    ERASE = "waiting for a card to erase"
    SENSOR_TEST = "waiting for a swipe (sensor test)"


@dataclass(frozen=True, slots=True)
class CardPass:
    """One card through the head: the bytes the device sent, the card afterwards, and the
    tracks the pass changed (written or erased)."""

    sent: bytes
    card: MagStripe
    written: tuple[int, ...] = ()


class Msr605Device:
    """The device core: bytes from the host in, bytes to the host out. No I/O, no clock."""

    def __init__(self, *, model: str = "3", firmware: str = "REV03.02") -> None:
        self.model = model
        self.firmware = firmware
        self.mode = Mode.IDLE
        self.leds: set[str] = set()
        self.hi_co = True
        self.leading_zeros = (61, 22)
        self.bpi: dict[int, int] = {n: standard_bpi(n) for n in (1, 2, 3)}
        self.bpc: tuple[int, int, int] = (7, 5, 5)
        self.commands: list[Command | int] = []      # every command received, in order
        self.rejected: list[str] = []                # why blocks were refused (no card data)
        self._codec = Msr605DeviceCodec()
        self._pending: dict[int, RecordedTrack | None] = {}

    @property
    def armed(self) -> bool:
        """Is the device waiting for a card (read, write, erase or sensor test)?"""
        return self.mode is not Mode.IDLE

    def receive_data(self, data: bytes) -> bytes:
        """Consume bytes from the host; return the device's immediate replies."""
        self._codec.receive_data(data)
        out = bytearray()
        while True:                                  # each event consumed bytes; ends at NEED_DATA
            ev = self._codec.next_event()
            if isinstance(ev, NeedData):
                return bytes(out)
            reply = self._handle(ev)
            if reply is not None:
                out += encode_reply(reply)

    def _lead(self, n: int) -> int:
        return self.leading_zeros[1] if n == 2 else self.leading_zeros[0]

    def _arm(self, mode: Mode, pending: dict[int, RecordedTrack | None] | None = None) -> None:
        self.mode = mode
        self._pending = pending or {}

    def _reject(self, why: str) -> StatusReply:
        self.rejected.append(why)
        return StatusReply(Status.FORMAT_ERROR)

    def _handle(self, ev: HostEvent) -> Reply | None:
        if isinstance(ev, CommandEvent):
            self.commands.append(ev.command)
            return self._execute(ev.command, ev.args)
        if isinstance(ev, IsoWrite | RawWrite):
            self.commands.append(Command.ISO_WRITE if isinstance(ev, IsoWrite) else Command.RAW_WRITE)
            try:
                tracks = self._iso_tracks(ev) if isinstance(ev, IsoWrite) else self._raw_tracks(ev)
            except EncodeError as e:
                return self._reject(str(e))
            self._arm(Mode.ISO_WRITE if isinstance(ev, IsoWrite) else Mode.RAW_WRITE, dict(tracks))
            return None
        if isinstance(ev, MalformedBlock):
            self.commands.append(ev.command)
            return self._reject(f"{ev.command.name}: {ev.reason} (stream offset {ev.pos})")
        if isinstance(ev, UnknownCommand):
            self.commands.append(ev.code)
            return StatusReply(Status.INVALID_COMMAND)
        if isinstance(ev, StrayBlock):
            self.rejected.append(f"a {ev.length}-byte data block with no write command (stream offset {ev.pos})")
            return None
        raise TypeError(f"unexpected host event {type(ev).__name__}")   # pragma: no cover

    def _iso_tracks(self, ev: IsoWrite) -> list[tuple[int, RecordedTrack]]:
        out = []
        for n, raw in enumerate(ev.tracks, start=1):
            if not raw:
                continue                             # empty or absent: the track is left as it is
            body = raw
            if body[:1] == bytes([_SS[n]]) and body.endswith(b"?"):
                body = body[1:-1]                    # sentinels sent along (as the read shows them)
            if any(b >= 0x80 for b in body):
                raise EncodeError(f"track {n}: a byte ≥ 80 is no ISO/IEC 7811 character")
            track = iso_track(n, body.decode("ascii"), bpi=self.bpi[n], lead_zeros=self._lead(n))
            if not track.fits():
                raise EncodeError(f"track {n}: {len(body)} characters do not fit on a card at {self.bpi[n]} bpi")
            out.append((n, track))
        return out

    def _raw_tracks(self, ev: RawWrite) -> list[tuple[int, RecordedTrack]]:
        out = []
        for n, raw in enumerate(ev.tracks, start=1):
            if not raw:
                continue
            track = RecordedTrack(unpack_raw(raw, self.bpc[n - 1]), self.bpi[n], self._lead(n))
            if not track.fits():
                raise EncodeError(f"track {n}: {len(raw)} bytes at {self.bpc[n - 1]} BPC do not fit on a card "
                                  f"at {self.bpi[n]} bpi")
            out.append((n, track))
        return out

    def _execute(self, cmd: Command, args: bytes) -> Reply | None:
        if cmd is Command.RESET:
            self._arm(Mode.IDLE)
            return None
        if cmd is Command.COMM_TEST:
            return CommTestOk()
        if cmd is Command.ISO_READ:
            self._arm(Mode.ISO_READ)
            return None
        if cmd is Command.RAW_READ:
            self._arm(Mode.RAW_READ)
            return None
        if cmd is Command.SENSOR_TEST:
            self._arm(Mode.SENSOR_TEST)
            return None
        if cmd is Command.ERASE:
            tracks = erase_select(args[0])
            if tracks is None:
                return StatusReply(Status.FAIL)
            self._arm(Mode.ERASE, dict.fromkeys(sorted(tracks)))
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
            choice = BPI_CODES.get(args[0])
            if choice is None:
                return StatusReply(Status.FAIL)
            self.bpi[choice[0]] = choice[1]
            return StatusReply(Status.OK)
        if cmd is Command.SET_BPC:
            if not all(5 <= b <= 8 for b in args):
                return StatusReply(Status.FAIL)
            self.bpc = (args[0], args[1], args[2])
            return BpcReply(self.bpc)
        if cmd in (Command.LED_ALL_OFF, Command.LED_ALL_ON, Command.LED_GREEN, Command.LED_YELLOW,
                   Command.LED_RED):
            self.leds = {
                Command.LED_ALL_OFF: set(), Command.LED_ALL_ON: {"green", "yellow", "red"},
                Command.LED_GREEN: {"green"}, Command.LED_YELLOW: {"yellow"}, Command.LED_RED: {"red"},
            }[cmd]
            return None
        raise TypeError(f"{cmd.name} is not a command without a data block")   # pragma: no cover

    def swipe(self, card: MagStripe | Sequence[str | None], *, status: Status | None = None,
              bad: frozenset[int] = frozenset()) -> CardPass:
        """A card passes the head: what the device sends (``b""`` if nothing was armed) and the
        card afterwards.

        ``card`` is a :class:`MagStripe`, or a stripe as :attr:`hardware.ports.VirtualCard.stripe`
        (data between the sentinels, ``None`` = no track). ``bad`` tracks read as unreadable and
        ``status`` replaces the status the device would send — on a write or erase a status other
        than ``30`` means nothing was written.
        """
        stripe = card if isinstance(card, MagStripe) else MagStripe.from_iso(card)
        mode, self.mode = self.mode, Mode.IDLE
        pending, self._pending = self._pending, {}
        if mode is Mode.ISO_READ:
            return CardPass(encode_reply(self._iso_block(stripe, status, bad)), stripe)
        if mode is Mode.RAW_READ:
            raw = tuple(stripe.raw(n, self.bpc[n - 1]) for n in (1, 2, 3))
            return CardPass(encode_reply(RawReadReply((raw[0], raw[1], raw[2]), status or Status.OK)), stripe)
        if mode is Mode.SENSOR_TEST:
            return CardPass(encode_reply(StatusReply(status or Status.OK)), stripe)
        if mode in (Mode.ISO_WRITE, Mode.RAW_WRITE, Mode.ERASE):
            weak = not self.hi_co and stripe.coercivity is Coercivity.HIGH   # Lo-Co current, Hi-Co card
            fail = Status.FAIL if mode is Mode.ERASE else Status.RW_ERROR
            if status is not None and status is not Status.OK:
                return CardPass(encode_reply(StatusReply(status)), stripe)
            if weak:
                return CardPass(encode_reply(StatusReply(fail)), stripe)
            for n, track in pending.items():
                stripe = stripe.with_track(n, track)
            return CardPass(encode_reply(StatusReply(Status.OK)), stripe, tuple(sorted(pending)))
        return CardPass(b"", stripe)

    @staticmethod
    def _iso_block(stripe: MagStripe, status: Status | None, bad: frozenset[int]) -> IsoReadReply:
        tracks = []
        unreadable = False
        for n in (1, 2, 3):
            r = stripe.read(n)
            if n in bad or (not r.ok and r.status is not TrackStatus.NO_DATA):
                tracks.append(TrackData(n, TrackMarker.BAD))
                unreadable = True
            elif not r.ok:
                tracks.append(TrackData(n, TrackMarker.EMPTY))
            else:
                spec = track_spec(n)
                tracks.append(TrackData(n, TrackMarker.DATA, f"{spec.ss}{r.data}{spec.es}".encode("ascii")))
        if status is None:
            status = Status.RW_ERROR if unreadable else Status.OK
        return IsoReadReply((tracks[0], tracks[1], tracks[2]), status)


class Msr605PtyServer:
    """Serve an :class:`Msr605Device` behind a pty on the running event loop.

    ``await start()`` creates the pty and returns the slave path; the pump then runs until
    ``await close()``. The card in the reader is ``card`` (or a card recorded from ``stripe``);
    writes change it and, with ``card_file``, are saved there after each pass. ``write_chunk`` > 0
    sends replies in pieces of that many bytes (a slow UART, for short-read tests). ``on_event``
    receives a short text for each thing that happens (the CLI prints it; never card data).
    """

    def __init__(
        self,
        device: Msr605Device,
        *,
        clock: Clock,
        stripe: Stripe | None = None,
        card: MagStripe | None = None,
        card_file: str | os.PathLike[str] | None = None,
        auto_swipe: float | None = None,
        write_chunk: int = 0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        if card is None and stripe is not None:
            card = MagStripe.from_iso(stripe)
        self.card = card
        self.card_file = card_file
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
            seen = len(self.device.rejected)
            out = self.device.receive_data(data)
            await self._send(out)
            for why in self.device.rejected[seen:]:
                self._note(f"refused: {why}")
            if self.device.armed and not was_armed:
                self._note(f"host armed: {self.device.mode.value}")
                if self.auto_swipe is not None and self.card is not None:
                    self._schedule_auto_swipe()
            elif was_armed and not self.device.armed:
                self._note("host cancelled the operation")

    def _schedule_auto_swipe(self) -> None:
        if self._auto is not None and not self._auto.done():
            return

        async def later() -> None:
            await self._clock.sleep(self.auto_swipe or 0.0)
            if self.device.armed:
                await self.swipe()

        self._auto = asyncio.get_running_loop().create_task(later(), name="msr605-auto-swipe")

    async def swipe(self, stripe: Stripe | None = None, *, status: Status | None = None,
                    bad: frozenset[int] = frozenset()) -> bool:
        """Swipe the card in the reader (or, once, a card with ``stripe``). ``False`` if the
        device was not armed. A write to the reader's card is kept (and saved to ``card_file``)."""
        own = stripe is None
        card = self.card if own else MagStripe.from_iso(stripe or (None, None, None))
        if card is None:
            raise ValueError("no card to swipe: pass a stripe or start the server with one")
        mode = self.device.mode
        res = self.device.swipe(card, status=status, bad=bad)
        if not res.sent:
            self._note("swipe ignored: the host has not armed a read or write")
            return False
        self.swipes += 1
        if own:
            self.card = res.card
        saved = ""
        if res.written and own and self.card_file is not None:
            try:
                save_card_file(self.card_file, res.card)
                saved = f"; saved to {os.fspath(self.card_file)}"
            except PosemuError as e:
                saved = f"; NOT saved ({e})"
        await self._send(res.sent)
        what = {Mode.ISO_WRITE: "written", Mode.RAW_WRITE: "written (raw)", Mode.ERASE: "erased"}.get(mode)
        if what and res.written:
            tracks = ", ".join(map(str, res.written))
            self._note(f"card {what}: track {tracks}{saved}")
        else:
            self._note(f"card swiped ({len(res.sent)} bytes sent)")
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
