"""MSR605/MSR206-family serial magstripe reader/writer: the ``serial://`` backend.

The wire protocol is :mod:`hardware.msr605_codec` (sans-IO, no serial port, no clock); this
module drives its host side, :class:`~hardware.msr605_codec_host.Msr605Client`, over a
:class:`~hardware.ports.ByteLink` and maps the device's answers to reader events.
:class:`SerialMsrReader` is a magstripe-only :class:`~hardware.ports.CardReader` (every wait for
a card arms an ISO read) and, for card-writing tools, also reads raw and writes (ISO and raw) and
erases cards.

The names of the codec are re-exported here, so ``from hardware.msr605 import Command`` keeps
working.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence

from hardware.clock import Clock, poll_slice
from hardware.errors import LinkError, NoReaderError, ReaderError
from hardware.msr605_codec import (
    ARG_LENGTH,
    NO_REPLY,
    STATUS_REPLY,
    SWIPE_COMMANDS,
    BpcReply,
    CoercivityReply,
    Command,
    CommTestOk,
    FirmwareReply,
    IsoReadReply,
    LeadingZerosReply,
    ModelReply,
    RawReadReply,
    Reply,
    Status,
    StatusReply,
    TrackData,
    TrackMarker,
    encode_command,
    encode_reply,
)
from hardware.msr605_codec_host import Msr605Client, parse_reply
from hardware.ports import ByteLink, ReaderEvent, ReaderEventKind, SwipeResult, TrackRead, TrackStatus
from hardware.registry import ReaderURL
from protocol.errors import ConfigError, DecodeError
from protocol.sansio import NeedData

__all__ = [
    "ARG_LENGTH",
    "NO_REPLY",
    "STATUS_REPLY",
    "BpcReply",
    "CoercivityReply",
    "CommTestOk",
    "Command",
    "FirmwareReply",
    "IsoReadReply",
    "LeadingZerosReply",
    "ModelReply",
    "Msr605Client",
    "RawReadReply",
    "Reply",
    "SerialMsrReader",
    "Status",
    "StatusReply",
    "TrackData",
    "TrackMarker",
    "encode_command",
    "encode_reply",
    "open_serial_reader",
    "parse_reply",
    "stripe_block",
    "swipe_result",
    "track_read",
]


# --- tracks → TrackRead --------------------------------------------------------------------------
_SS = {1: ord("%"), 2: ord(";"), 3: ord(";")}
_RANGE = {1: (0x20, 0x5F), 2: (0x30, 0x3F), 3: (0x30, 0x3F)}


def track_read(t: TrackData) -> TrackRead:
    """What the reader reported for one track, as a :class:`TrackRead` (data without sentinels).

    >>> track_read(TrackData(2, raw=b";12345=0000?")).data
    '12345=0000'
    >>> track_read(TrackData(2, raw=b"12345?")).status.name
    'NO_START_SENTINEL'
    >>> track_read(TrackData(1, TrackMarker.BAD)).status.name
    'PARITY_ERROR'
    """
    n = t.track
    if t.marker is TrackMarker.EMPTY:
        return TrackRead(n, TrackStatus.NO_DATA)
    if t.marker is TrackMarker.BAD:
        return TrackRead(n, TrackStatus.PARITY_ERROR,
                         detail="the reader reported the track unreadable (parity or LRC error)")
    raw = t.raw
    if not raw:
        return TrackRead(n, TrackStatus.NO_DATA)
    if raw[0] != _SS[n]:
        return TrackRead(n, TrackStatus.NO_START_SENTINEL, detail="no start sentinel at character 0")
    end = raw.find(b"?", 1)
    if end < 0:
        return TrackRead(n, TrackStatus.NO_END_SENTINEL, detail="no end sentinel")
    lo, hi = _RANGE[n]
    body = raw[1:end]
    for i, c in enumerate(body, start=1):
        if not lo <= c <= hi:
            return TrackRead(n, TrackStatus.PARITY_ERROR,
                             detail=f"character {i} is outside the track {n} character set")
    return TrackRead(n, TrackStatus.OK, body.decode("ascii"))


def swipe_result(reply: IsoReadReply | StatusReply) -> SwipeResult:
    """The :class:`SwipeResult` for an ISO read reply (a status-only reply: every track unread)."""
    if isinstance(reply, StatusReply):
        detail = f"reader status {int(reply.status):02X} ({reply.status.text})"
        return SwipeResult(tuple(TrackRead(n, TrackStatus.NO_DATA, detail=detail) for n in (1, 2, 3)))
    return SwipeResult(tuple(track_read(t) for t in reply.tracks))


def stripe_block(stripe: tuple[str | None, str | None, str | None], status: Status = Status.OK,
                 bad: frozenset[int] = frozenset()) -> IsoReadReply:
    """The ISO read block a reader sends for a card's stripe (data between sentinels, ``None`` =
    empty track); tracks in ``bad`` are reported unreadable."""
    tracks = []
    for n, data in enumerate(stripe, start=1):
        if n in bad:
            tracks.append(TrackData(n, TrackMarker.BAD))
        elif data is None:
            tracks.append(TrackData(n, TrackMarker.EMPTY))
        else:
            tracks.append(TrackData(n, TrackMarker.DATA, bytes([_SS[n]]) + data.encode("ascii") + b"?"))
    return IsoReadReply((tracks[0], tracks[1], tracks[2]), status)


# --- the serial:// reader --------------------------------------------------------------------------
class SerialMsrReader:
    """An MSR605-family reader as a magstripe-only :class:`~hardware.ports.CardReader`.

    On first use it runs the init sequence (reset, communication test, reset). ``next_event``
    arms an ISO read (once; the read stays armed across calls that time out) and returns
    ``CARD_SWIPED`` when the swipe's data block arrives. If the device stops answering or the
    port fails, one ``READER_LOST`` event is returned and later calls raise.

    The reader has no IC slot: ``power_on``/``transmit`` raise :class:`ReaderError`;
    ``card_present`` is ``False`` and ``power_off`` does nothing.
    """

    def __init__(self, link: ByteLink, clock: Clock, *, name: str = "", init_timeout: float = 2.0,
                 poll: float = 0.25) -> None:
        self._link = link
        self._clock = clock
        self._name = name or f"MSR605 on {link.name}"
        self._client = Msr605Client()
        self._init_timeout = init_timeout
        self._poll = poll
        self._ready = False
        self._armed = False
        self._lost = False
        self._lock = asyncio.Lock()
        self.model = ""
        self.firmware = ""

    @property
    def name(self) -> str:
        return self._name

    async def _send(self, cmd: Command, args: bytes = b"") -> None:
        await self._link.write(self._client.send(cmd, args))

    async def _reply(self, timeout: float | None) -> Reply | None:
        """Read until the outstanding command's reply is complete or ``timeout`` clock seconds pass."""
        deadline = None if timeout is None else self._clock.now() + timeout
        while True:                   # each pass reads once, for at most `poll` s
            ev = self._client.next_event()
            if not isinstance(ev, NeedData):
                return ev
            chunk = poll_slice(self._clock, deadline, self._poll)
            if chunk is None:
                return None
            data = await self._link.read(1024, chunk)
            if data:
                self._client.receive_data(data)

    async def open(self) -> None:
        """Run the init sequence (ESC a, ESC e → ESC y, ESC a); done implicitly on first use."""
        if self._ready:
            return
        opener = getattr(self._link, "open", None)
        if opener is not None:
            await opener()
        await self._send(Command.RESET)
        await self._send(Command.COMM_TEST)
        try:
            reply = await self._reply(self._init_timeout)
        except DecodeError as e:
            raise NoReaderError(f"{self._name}: the device's answer to the communication test is not an "
                                f"MSR605's ({e}); check the baud rate (?baud=9600) and the device model") from None
        if not isinstance(reply, CommTestOk):
            raise NoReaderError(f"{self._name}: no MSR605 answered the communication test within "
                                f"{self._init_timeout:g} s; is it powered and connected, and the baud rate right?")
        await self._send(Command.RESET)
        self._ready = True

    async def _exchange(self, request: Callable[[], bytes], what: str, timeout: float | None) -> Reply:
        """Cancel an armed read, send ``request()`` (client bytes) and wait for its answer."""
        async with self._lock:
            await self.open()
            if self._armed:
                await self._send(Command.RESET)
                self._armed = False
            try:
                await self._link.write(request())
                reply = await self._reply(timeout)
            except DecodeError:
                with contextlib.suppress(LinkError):
                    await self._send(Command.RESET)     # resynchronise: drop what the device sent
                raise
            if reply is None:
                with contextlib.suppress(LinkError):
                    await self._send(Command.RESET)     # a card swiped later must not be written
        if reply is None:
            raise ReaderError(f"{self._name}: no answer to {what} within {timeout:g} s")
        return reply

    async def query(self, cmd: Command, args: bytes = b"", timeout: float = 2.0) -> Reply:
        """Send a command that has a reply (model, firmware, tests, settings) and return the reply."""
        if cmd in NO_REPLY or (cmd in SWIPE_COMMANDS and cmd is not Command.SENSOR_TEST):
            raise ConfigError(f"query({cmd.name}): use next_event to read, read_raw, write_iso, write_raw or erase "
                              "for card operations; commands without a reply have nothing to query")
        return await self._exchange(lambda: self._client.send(cmd, args), cmd.name, timeout)

    async def read_raw(self, timeout: float | None = None) -> RawReadReply | StatusReply:
        """Raw read (``1B 6D``): wait for a swipe and return each track's bytes as the device packs
        them at its BPC setting (manual §7), or the bare status of a failed read."""
        reply = await self._exchange(lambda: self._client.send(Command.RAW_READ), "raw read", timeout)
        if not isinstance(reply, RawReadReply | StatusReply):
            raise DecodeError(f"unexpected {type(reply).__name__} to a raw read", field="reply")
        return reply

    async def write_iso(self, tracks: Sequence[str | None], timeout: float | None = None) -> Status:
        """ISO write (``1B 77``): each track's data between the sentinels (``None``/empty: leave
        the track as it is); waits for the card to be swiped and returns the device's status."""
        data = [b"" if t is None else t.encode("ascii") for t in tracks]
        return await self._status(lambda: self._client.send_iso_write(data), "ISO write", timeout)

    async def write_raw(self, tracks: Sequence[bytes | None], timeout: float | None = None) -> Status:
        """Raw write (``1B 6E``): each track's bytes in the write bit orientation (manual §7, §9)."""
        return await self._status(lambda: self._client.send_raw_write(tracks), "raw write", timeout)

    async def erase(self, tracks: Iterable[int], timeout: float | None = None) -> Status:
        """Erase (``1B 63 sel``) the given tracks of the next card swiped (§6 item 14 select byte)."""
        which = set(tracks)
        if not which or which - {1, 2, 3}:
            raise ConfigError("erase: name tracks among 1, 2 and 3")
        sel = (1 if 1 in which else 0) | (2 if 2 in which else 0) | (4 if 3 in which else 0)
        sel = 0 if sel == 1 else sel                    # track 1 alone is 00 in the manual
        return await self._status(lambda: self._client.send(Command.ERASE, bytes([sel])), "erase", timeout)

    async def _status(self, request: Callable[[], bytes], what: str, timeout: float | None) -> Status:
        reply = await self._exchange(request, what, timeout)
        if not isinstance(reply, StatusReply):
            raise DecodeError(f"unexpected {type(reply).__name__} to {what}", field="reply")
        return reply.status

    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        if self._lost:
            raise NoReaderError(f"{self._name}: the reader was lost; reopen it")
        async with self._lock:
            await self.open()           # open errors (missing, busy, mute device) propagate
            try:
                if not self._armed:
                    await self._send(Command.ISO_READ)
                    self._armed = True
                reply = await self._reply(timeout)
            except LinkError:
                self._lost = True
                return ReaderEvent(ReaderEventKind.READER_LOST)
            except DecodeError:
                self._armed = False
                with contextlib.suppress(LinkError):
                    await self._send(Command.RESET)     # resynchronise: drop what the device sent
                raise
        if reply is None:
            return None
        self._armed = False
        if not isinstance(reply, IsoReadReply | StatusReply):
            raise DecodeError(f"unexpected {type(reply).__name__} to an ISO read", field="reply")
        return ReaderEvent(ReaderEventKind.CARD_SWIPED, swipe=swipe_result(reply))

    async def card_present(self) -> bool:
        return False

    async def power_on(self) -> bytes:
        raise ReaderError(f"{self._name} is a magstripe-only reader: it has no IC slot to power")

    async def transmit(self, apdu: bytes) -> bytes:
        raise ReaderError(f"{self._name} is a magstripe-only reader: it cannot send APDUs")

    async def power_off(self) -> None:
        return None

    async def close(self) -> None:
        if self._ready and not self._lost:
            with contextlib.suppress(LinkError):
                await self._send(Command.RESET)
        self._ready = self._armed = False
        await self._link.close()


def open_serial_reader(url: ReaderURL, clock: Clock) -> SerialMsrReader:
    """Factory for ``serial://<device>?baud=9600`` (``serial:///dev/ttyUSB0``, ``serial://loop://``)."""
    from hardware.links import SerialLink

    known = {"baud", "timeout", "exclusive"}
    unknown = set(url.params) - known
    if unknown:
        raise ConfigError(f"reader URL {url.raw!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
    if not url.target:
        raise ConfigError(f"reader URL {url.raw!r} names no serial device (e.g. serial:///dev/ttyUSB0)")
    baud = url.int_param("baud", 9600)
    excl = url.params.get("exclusive", "1") != "0"
    link = SerialLink(url.target, clock=clock, baudrate=baud, exclusive=excl)
    return SerialMsrReader(link, clock, name=f"MSR605 on {url.target}",
                           init_timeout=url.float_param("timeout", 2.0))
