"""MSR605/MSR206-family serial magstripe reader/writer: protocol codec and ``serial://`` backend.

Sources: MSR605 Programmer's Manual; woodruffw/libmsr (``libmsr.h``, ``msr206.c``). The link is
9600 baud 8N1; every command is ESC (``1B``) + one byte, some with arguments.

=================  ==================  =========================================
command            bytes               reply
=================  ==================  =========================================
reset              ``1B 61``           none
communication test ``1B 65``           ``1B 79``
ISO read           ``1B 72``           after a swipe: the ISO data block (below)
sensor test        ``1B 86``           after a swipe: ``1B 30``
RAM test           ``1B 87``           ``1B 30`` ok / ``1B 41`` fail
firmware version   ``1B 76``           ``1B`` + ``"REV?X.XX"`` (8 ASCII characters)
model              ``1B 74``           ``1B [model] 53``
LEDs               ``1B 81``…``1B 85`` none (all off, all on, green, yellow, red)
set BPI            ``1B 62 d``         ``1B 30`` / ``1B 41``
set leading zeros  ``1B 7A a b``       ``1B 30`` / ``1B 41``
check leading 0s   ``1B 6C``           ``1B a b``
Hi-Co / Lo-Co      ``1B 78`` / ``1B 79``  ``1B 30``
get coercivity     ``1B 64``           ``1B 68`` (high) / ``1B 6C`` (low)
=================  ==================  =========================================

ISO read data block: ``1B 73 | 1B 01 [t1] 1B 02 [t2] 1B 03 [t3] | 3F 1C | 1B [status]``. Track
data is the decoded characters *including* the sentinels (``%…?`` on track 1, ``;…?`` on 2 and
3). An empty track is ``1B 2B`` after its marker, an unreadable one ``1B 2A`` (what libmsr and
other drivers expect; the manual shows only the marker). Status: ``30`` ok, ``31`` read/write
error, ``32`` command format error, ``34`` invalid command, ``39`` invalid swipe in write mode.
A reader that fails a read before sending a block answers ``1B [status]`` alone.

Sans-IO, h11-style: :class:`Msr605Client` turns commands into bytes (:meth:`~Msr605Client.send`)
and bytes from the device into reply events (:meth:`~Msr605Client.receive_data`,
:meth:`~Msr605Client.next_event`) through a receive buffer that survives short reads. Bytes that
cannot be a reply raise :class:`protocol.errors.DecodeError` with the field, stream position and
raw hex. :class:`SerialMsrReader` drives it over a :class:`~hardware.ports.ByteLink`.

>>> c = Msr605Client()
>>> c.send(Command.COMM_TEST).hex()
'1b65'
>>> c.receive_data(b"\\x1b"); c.next_event() is None          # short read
True
>>> c.receive_data(b"y"); c.next_event()
CommTestOk()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from dataclasses import dataclass

from hardware.clock import Clock, poll_slice
from hardware.errors import LinkError, NoReaderError, ReaderError
from hardware.ports import ByteLink, ReaderEvent, ReaderEventKind, SwipeResult, TrackRead, TrackStatus
from hardware.registry import ReaderURL
from protocol.errors import ConfigError, DecodeError, EncodeError

ESC = 0x1B
FS = 0x1C
END = 0x3F              # '?' — the end delimiter of the data block
START = 0x73            # 's'
EMPTY_TRACK = 0x2B      # '+'
BAD_TRACK = 0x2A        # '*'
MAX_BLOCK = 1024        # longest data block accepted (3 tracks × ≤ 255 characters + framing)


class Command(enum.IntEnum):
    """Command bytes (sent after ESC)."""

    RESET = 0x61
    COMM_TEST = 0x65
    ISO_READ = 0x72
    ISO_WRITE = 0x77
    RAW_READ = 0x6D
    RAW_WRITE = 0x6E
    ERASE = 0x63
    SET_BPI = 0x62
    SET_LEADING_ZEROS = 0x7A
    CHECK_LEADING_ZEROS = 0x6C
    MODEL = 0x74
    FIRMWARE = 0x76
    SET_HICO = 0x78
    SET_LOCO = 0x79
    GET_COERCIVITY = 0x64
    SENSOR_TEST = 0x86
    RAM_TEST = 0x87
    LED_ALL_OFF = 0x81
    LED_ALL_ON = 0x82
    LED_GREEN = 0x83
    LED_YELLOW = 0x84
    LED_RED = 0x85


ARG_LENGTH: dict[Command, int] = {Command.SET_BPI: 1, Command.ERASE: 1, Command.SET_LEADING_ZEROS: 2}
NO_REPLY = frozenset({
    Command.RESET, Command.LED_ALL_OFF, Command.LED_ALL_ON, Command.LED_GREEN, Command.LED_YELLOW,
    Command.LED_RED,
})
STATUS_REPLY = frozenset({
    Command.SENSOR_TEST, Command.RAM_TEST, Command.SET_BPI, Command.SET_LEADING_ZEROS, Command.SET_HICO,
    Command.SET_LOCO, Command.ERASE,
})


class Status(enum.IntEnum):
    OK = 0x30
    RW_ERROR = 0x31
    FORMAT_ERROR = 0x32
    INVALID_COMMAND = 0x34
    INVALID_SWIPE = 0x39
    FAIL = 0x41             # RAM test / set BPI / leading zeros failed

    @property
    def text(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_VALUES = frozenset(int(s) for s in Status)

_STATUS_TEXT = {
    Status.OK: "ok",
    Status.RW_ERROR: "read/write error",
    Status.FORMAT_ERROR: "command format error",
    Status.INVALID_COMMAND: "invalid command",
    Status.INVALID_SWIPE: "invalid card swipe in write mode",
    Status.FAIL: "failed",
}


class TrackMarker(enum.Enum):
    DATA = "data"
    EMPTY = "empty"         # 1B 2B
    BAD = "bad"             # 1B 2A


@dataclass(frozen=True, slots=True)
class TrackData:
    """One track of an ISO read block: raw characters (with sentinels) or an empty/bad marker."""

    track: int
    marker: TrackMarker = TrackMarker.DATA
    raw: bytes = b""

    def __repr__(self) -> str:        # track data is card data: never in a repr
        return f"TrackData(track={self.track}, marker={self.marker.name}, {len(self.raw)} bytes)"


# --- reply events -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CommTestOk:
    pass


@dataclass(frozen=True, slots=True)
class StatusReply:
    status: Status


@dataclass(frozen=True, slots=True)
class ModelReply:
    model: str


@dataclass(frozen=True, slots=True)
class FirmwareReply:
    version: str


@dataclass(frozen=True, slots=True)
class CoercivityReply:
    high: bool


@dataclass(frozen=True, slots=True)
class LeadingZerosReply:
    track13: int
    track2: int


@dataclass(frozen=True, slots=True)
class IsoReadReply:
    tracks: tuple[TrackData, TrackData, TrackData]
    status: Status = Status.OK


Reply = CommTestOk | StatusReply | ModelReply | FirmwareReply | CoercivityReply | LeadingZerosReply | IsoReadReply


# --- encoding -----------------------------------------------------------------------------------
def encode_command(cmd: Command, args: bytes = b"") -> bytes:
    """``ESC cmd [args]``; the argument count is checked.

    >>> encode_command(Command.SET_LEADING_ZEROS, bytes([61, 22])).hex()
    '1b7a3d16'
    """
    if not isinstance(cmd, Command):
        raise TypeError(f"cmd must be a Command, not {type(cmd).__name__}")
    want = ARG_LENGTH.get(cmd, 0)
    if len(args) != want:
        raise EncodeError(f"{cmd.name} takes {want} argument byte(s), got {len(args)}")
    return bytes([ESC, cmd]) + bytes(args)


def _check_track_bytes(t: TrackData) -> None:
    if t.marker is TrackMarker.DATA and any(b in (ESC, FS) or b >= 0x80 for b in t.raw):
        raise EncodeError(f"track {t.track} data contains a byte that cannot be sent (ESC, FS or ≥ 0x80)")
    if len(t.raw) > 255:
        raise EncodeError(f"track {t.track} data is longer than 255 characters")


def encode_reply(reply: Reply) -> bytes:
    """The bytes a device sends for ``reply`` (the device emulator and round-trip tests use it).

    >>> encode_reply(StatusReply(Status.OK)).hex()
    '1b30'
    >>> t = (TrackData(1, raw=b"%A?"), TrackData(2, TrackMarker.EMPTY), TrackData(3, TrackMarker.BAD))
    >>> encode_reply(IsoReadReply(t)).hex(" ")
    '1b 73 1b 01 25 41 3f 1b 02 1b 2b 1b 03 1b 2a 3f 1c 1b 30'
    """
    if isinstance(reply, CommTestOk):
        return bytes([ESC, 0x79])
    if isinstance(reply, StatusReply):
        return bytes([ESC, reply.status])
    if isinstance(reply, ModelReply):
        m = reply.model.encode("ascii")
        if len(m) != 1:
            raise EncodeError("the model is one ASCII character")
        return bytes([ESC]) + m + b"S"
    if isinstance(reply, FirmwareReply):
        v = reply.version.encode("ascii")
        if len(v) != 8:
            raise EncodeError("the firmware version is 8 ASCII characters, e.g. REV03.02")
        return bytes([ESC]) + v
    if isinstance(reply, CoercivityReply):
        return bytes([ESC, 0x68 if reply.high else 0x6C])
    if isinstance(reply, LeadingZerosReply):
        return bytes([ESC, reply.track13 & 0xFF, reply.track2 & 0xFF])
    out = bytearray([ESC, START])
    for i, t in enumerate(reply.tracks, start=1):
        if t.track != i:
            raise EncodeError(f"ISO read block: track {t.track} in position {i}")
        _check_track_bytes(t)
        out += bytes([ESC, i])
        if t.marker is TrackMarker.EMPTY:
            out += bytes([ESC, EMPTY_TRACK])
        elif t.marker is TrackMarker.BAD:
            out += bytes([ESC, BAD_TRACK])
        else:
            out += t.raw
    out += bytes([END, FS, ESC, reply.status])
    return bytes(out)


# --- decoding -----------------------------------------------------------------------------------
class _NeedData(Exception):
    """Internal: the buffer ends inside a reply."""


def _status(b: int, field: str, pos: int, raw: bytes) -> Status:
    try:
        return Status(b)
    except ValueError:
        raise DecodeError(f"unknown status byte {b:02X}", field=field, pos=pos, raw=raw) from None


def _byte(buf: bytes, i: int) -> int:
    if i >= len(buf):
        raise _NeedData
    return buf[i]


def _expect(buf: bytes, i: int, want: int, field: str, what: str) -> None:
    got = _byte(buf, i)
    if got != want:
        raise DecodeError(f"expected {what} ({want:02X}), got {got:02X}", field=field, pos=i, raw=buf)


def parse_iso_block(buf: bytes) -> tuple[IsoReadReply | StatusReply, int]:
    """Parse an ISO read reply at the start of ``buf``: ``(reply, bytes used)``.

    Raises :class:`_NeedData` (internal) when ``buf`` ends inside the block.
    """
    _expect(buf, 0, ESC, "iso.esc", "ESC")
    b1 = _byte(buf, 1)
    if b1 != START:
        if b1 in _STATUS_VALUES:
            return StatusReply(Status(b1)), 2
        raise DecodeError(f"expected the start of a data block (73) or a status, got {b1:02X}",
                          field="iso.start", pos=1, raw=buf)
    pos = 2
    tracks: list[TrackData] = []
    for n in (1, 2, 3):
        _expect(buf, pos, ESC, f"track{n}.marker", "ESC before the track marker")
        _expect(buf, pos + 1, n, f"track{n}.marker", f"track marker {n:02X}")
        pos += 2
        if _byte(buf, pos) == ESC and _byte(buf, pos + 1) in (EMPTY_TRACK, BAD_TRACK):
            marker = TrackMarker.EMPTY if buf[pos + 1] == EMPTY_TRACK else TrackMarker.BAD
            tracks.append(TrackData(n, marker))
            pos += 2
            continue
        start = pos
        stop = ESC if n < 3 else FS
        while True:                          # bounded: pos grows each pass, MAX_BLOCK caps it
            b = _byte(buf, pos)
            if b == stop:
                break
            if b in (ESC, FS):
                raise DecodeError(f"track {n} data ended by {b:02X}; expected {stop:02X}",
                                  field=f"track{n}.data", pos=pos, raw=buf)
            if pos - start > 255:
                raise DecodeError(f"track {n} data is longer than 255 bytes", field=f"track{n}.data",
                                  pos=pos, raw=buf)
            pos += 1
        if n < 3:
            tracks.append(TrackData(n, TrackMarker.DATA, bytes(buf[start:pos])))
        else:
            if pos == start or buf[pos - 1] != END:
                raise DecodeError("the data block does not end with 3F 1C", field="iso.end", pos=pos,
                                  raw=buf)
            tracks.append(TrackData(n, TrackMarker.DATA, bytes(buf[start:pos - 1])))
            pos -= 1                         # re-read the 3F 1C end delimiter below
    _expect(buf, pos, END, "iso.end", "end delimiter 3F")
    _expect(buf, pos + 1, FS, "iso.end", "file separator 1C")
    _expect(buf, pos + 2, ESC, "iso.status", "ESC before the status")
    status = _status(_byte(buf, pos + 3), "iso.status", pos + 3, buf)
    return IsoReadReply((tracks[0], tracks[1], tracks[2]), status), pos + 4


def parse_reply(expected: Command, buf: bytes) -> tuple[Reply, int] | None:
    """Parse the reply to ``expected`` at the start of ``buf``; ``None`` if more bytes are needed."""
    try:
        if expected is Command.ISO_READ:
            return parse_iso_block(buf)
        _expect(buf, 0, ESC, "reply.esc", "ESC")
        if expected is Command.COMM_TEST:
            _expect(buf, 1, 0x79, "reply.comm_test", "communication test ok (79)")
            return CommTestOk(), 2
        if expected in STATUS_REPLY:
            return StatusReply(_status(_byte(buf, 1), "reply.status", 1, buf)), 2
        if expected is Command.MODEL:
            m = _byte(buf, 1)
            _expect(buf, 2, 0x53, "reply.model", "model terminator 53 ('S')")
            if not 0x20 <= m < 0x7F:
                raise DecodeError(f"model byte {m:02X} is not printable", field="reply.model", pos=1, raw=buf)
            return ModelReply(chr(m)), 3
        if expected is Command.FIRMWARE:
            _byte(buf, 8)
            v = bytes(buf[1:9])
            if not v.startswith(b"REV") or not all(0x20 <= c < 0x7F for c in v):
                raise DecodeError("firmware version is not REV?X.XX", field="reply.firmware", pos=1, raw=buf)
            return FirmwareReply(v.decode("ascii")), 9
        if expected is Command.GET_COERCIVITY:
            b = _byte(buf, 1)
            if b not in (0x68, 0x6C):
                raise DecodeError(f"coercivity {b:02X} is neither 68 (h) nor 6C (l)", field="reply.coercivity",
                                  pos=1, raw=buf)
            return CoercivityReply(b == 0x68), 2
        if expected is Command.CHECK_LEADING_ZEROS:
            _byte(buf, 2)
            return LeadingZerosReply(buf[1], buf[2]), 3
    except _NeedData:
        if len(buf) > MAX_BLOCK:
            raise DecodeError(f"reply longer than {MAX_BLOCK} bytes", field="reply", pos=MAX_BLOCK,
                              raw=buf[:MAX_BLOCK]) from None
        return None
    raise EncodeError(f"{expected.name} has no reply to parse")


class Msr605Client:
    """The host side of the protocol, sans-IO: commands out, reply events in.

    One command with a reply may be outstanding at a time; ``send`` of another replaces the
    expectation (as a real device drops a pending read when it gets a new command). ``RESET``
    also discards buffered bytes. Bytes that arrive with no reply expected are a
    :class:`DecodeError`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0                  # stream offset of _buf[0], for error positions
        self.expecting: Command | None = None

    def send(self, cmd: Command, args: bytes = b"") -> bytes:
        data = encode_command(cmd, args)
        if cmd is Command.RESET:
            self.expecting = None
            self.discard()
        elif cmd not in NO_REPLY:
            self.expecting = cmd
        return data

    def discard(self) -> None:
        """Drop buffered bytes (after a reset, or to resynchronise after a decode error)."""
        self._pos += len(self._buf)
        self._buf.clear()

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Reply | None:
        """The next complete reply, or ``None`` when more bytes are needed."""
        if not self._buf:
            return None
        if self.expecting is None:
            raw = bytes(self._buf[:64])
            raise DecodeError("bytes from the reader with no command outstanding", field="reply",
                              pos=self._pos, raw=raw)
        try:
            res = parse_reply(self.expecting, bytes(self._buf))
        except DecodeError as e:
            pos = None if e.pos is None else e.pos + self._pos
            raise DecodeError(e.msg, field=e.field, pos=pos, raw=e.raw[:64]) from None
        if res is None:
            return None
        reply, used = res
        del self._buf[:used]
        self._pos += used
        self.expecting = None
        return reply


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
            if ev is not None:
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

    async def query(self, cmd: Command, args: bytes = b"", timeout: float = 2.0) -> Reply:
        """Send a command that has a reply (model, firmware, tests, settings) and return the reply."""
        if cmd in NO_REPLY or cmd is Command.ISO_READ:
            raise ConfigError(f"query({cmd.name}): use send for commands without a reply, next_event to read")
        async with self._lock:
            await self.open()
            if self._armed:
                await self._send(Command.RESET)
                self._armed = False
            await self._send(cmd, args)
            reply = await self._reply(timeout)
        if reply is None:
            raise ReaderError(f"{self._name}: no reply to {cmd.name} within {timeout:g} s")
        return reply

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
