"""MSR605/MSR206-family wire protocol: a pure sans-IO codec for both ends of the serial line.

Source: MSR605 Programmer's Manual (rev. B; the MSR606 manual is identical), §6 "Command and
Response", §7 "Data Format", §8 "Communication Sequence", §9 "Addendum"; checked against
woodruffw/libmsr (``msr206.c``) and Doridian/libMSRx05 (``libmsr.py``). The link is 9600 baud
8N1; every command is ESC (``1B``) + one byte, some followed by argument bytes or a data block.

No serial port, no clock, no I/O: both ends speak the vocabulary of :mod:`protocol.sansio` —
``receive_data(bytes)``, then ``next_event()`` until it answers :data:`~protocol.sansio.NEED_DATA`.

* :class:`Msr605Client` is the host (a POS, a card-writing tool): commands out
  (:meth:`~Msr605Client.send`, :meth:`~Msr605Client.send_iso_write`,
  :meth:`~Msr605Client.send_raw_write`), the device's replies in as :data:`Reply` events. Bytes
  that cannot be the awaited reply raise :class:`~protocol.errors.DecodeError` with field, stream
  position and raw hex.
* :class:`Msr605DeviceCodec` is the device: the host's bytes in as :data:`HostEvent` events
  (commands with their arguments, write commands with their whole data block), replies out with
  :func:`encode_reply`. A device must survive any input, so this side never raises: line noise
  between commands is skipped, an unknown command is an :class:`UnknownCommand`, a write whose
  data block is broken is a :class:`MalformedBlock` (the block is consumed), a data block with no
  command before it is a :class:`StrayBlock`.

=====================  =========================  ====================================================
command                host sends                 device answers (§6)
=====================  =========================  ====================================================
reset                  ``1B 61``                  nothing
ISO read               ``1B 72``                  after a swipe: ISO data block + ``1B [status]``
ISO write              ``1B 77 [data block]``     after a swipe: ``1B [status]``
communication test     ``1B 65``                  ``1B 79``
LEDs off/on/G/Y/R      ``1B 81``…``1B 85``        nothing
sensor test            ``1B 86``                  after a swipe: ``1B 30``
RAM test               ``1B 87``                  ``1B 30`` ok / ``1B 41`` fail
set leading zeros      ``1B 7A [t13] [t2]``       ``1B 30`` / ``1B 41``
check leading zeros    ``1B 6C``                  ``1B [t13] [t2]``
erase                  ``1B 63 [select]``         after a swipe: ``1B 30`` / ``1B 41``
set BPI                ``1B 62 [density]``        ``1B 30`` / ``1B 41``
raw read               ``1B 6D``                  after a swipe: raw data block + ``1B [status]``
raw write              ``1B 6E [raw data block]`` after a swipe: ``1B [status]``
model                  ``1B 74``                  ``1B [model] 53``
firmware               ``1B 76``                  ``1B`` + 8 characters ``REV?X.XX``
set BPC                ``1B 6F [b1] [b2] [b3]``   ``1B 30 [b1] [b2] [b3]`` (``1B 41`` if out of 5…8)
Hi-Co / Lo-Co          ``1B 78`` / ``1B 79``      ``1B 30``
get coercivity         ``1B 64``                  ``1B 68`` (h: Hi-Co) / ``1B 6C`` (l: Lo-Co)
=====================  =========================  ====================================================

Data blocks (§7, §9). Device → host, ISO read::

    1B 73 | 1B 01 [t1] 1B 02 [t2] 1B 03 [t3] | 3F 1C | 1B [status]

track data decoded, sentinels included (``%…?``, ``;…?``); an empty track is ``1B 2B`` and an
unreadable one ``1B 2A`` after its marker (what libmsr and libMSRx05 parse; the manual shows a bare
marker, which is also accepted). Host → device, ISO write: the same without the status and with
the data *between* the sentinels (§9: ``1B 77 1B 73 1B 01 41 42 43 31 32 33 1B 02 …``)::

    1B 73 | 1B 01 [t1] 1B 02 [t2] 1B 03 [t3] | 3F 1C

Raw blocks carry a length byte before each track's bytes, so the bytes are arbitrary::

    1B 73 | 1B 01 [L1] [t1] 1B 02 [L2] [t2] 1B 03 [L3] [t3] | 3F 1C [| 1B [status] on a read]

Status bytes (§7): ``30`` ok, ``31`` read/write error, ``32`` command format error, ``34``
invalid command, ``39`` invalid swipe in write mode; ``41`` ("A") is the fail answer of RAM test,
leading zeros, BPI, BPC and erase.

>>> c = Msr605Client()
>>> c.send(Command.COMM_TEST).hex()
'1b65'
>>> c.receive_data(b"\\x1b"); c.next_event()          # short read
NEED_DATA
>>> c.receive_data(b"y"); c.next_event()
CommTestOk()
>>> d = Msr605DeviceCodec()
>>> d.receive_data(c.send_iso_write((b"ABC123", b"12345", b""))); d.next_event()
IsoWrite(tracks=(6, 5, 0) bytes)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import DecodeError, EncodeError
from protocol.sansio import NEED_DATA, NeedData

ESC = 0x1B
FS = 0x1C
END = 0x3F              # '?' — the end delimiter of a data block
START = 0x73            # 's' — the start of a data block, after ESC
EMPTY_TRACK = 0x2B      # '+'
BAD_TRACK = 0x2A        # '*'
MAX_BLOCK = 1024        # longest data block accepted (3 tracks × ≤ 255 bytes + framing)
MAX_TRACK = 255         # a track's bytes in one block (the raw length byte's range)


class Command(enum.IntEnum):
    """Command bytes, sent after ESC (manual §6)."""

    RESET = 0x61
    COMM_TEST = 0x65
    ISO_READ = 0x72
    ISO_WRITE = 0x77
    RAW_READ = 0x6D
    RAW_WRITE = 0x6E
    ERASE = 0x63
    SET_BPI = 0x62
    SET_BPC = 0x6F
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


ARG_LENGTH: dict[Command, int] = {
    Command.SET_BPI: 1, Command.ERASE: 1, Command.SET_LEADING_ZEROS: 2, Command.SET_BPC: 3,
}
WRITE_COMMANDS = frozenset({Command.ISO_WRITE, Command.RAW_WRITE})
"""Commands followed by a data block (§6 items 3 and 17)."""
SWIPE_COMMANDS = frozenset({
    Command.ISO_READ, Command.RAW_READ, Command.ISO_WRITE, Command.RAW_WRITE, Command.ERASE, Command.SENSOR_TEST,
})
"""Commands the device answers only when a card passes the head (or a reset cancels them)."""
NO_REPLY = frozenset({
    Command.RESET, Command.LED_ALL_OFF, Command.LED_ALL_ON, Command.LED_GREEN, Command.LED_YELLOW,
    Command.LED_RED,
})
STATUS_REPLY = frozenset({
    Command.SENSOR_TEST, Command.RAM_TEST, Command.SET_BPI, Command.SET_LEADING_ZEROS, Command.SET_HICO,
    Command.SET_LOCO, Command.ERASE, Command.ISO_WRITE, Command.RAW_WRITE,
})
"""Commands whose whole answer is ``1B [status]``."""


class Status(enum.IntEnum):
    """The status byte of a reply (§7)."""

    OK = 0x30
    RW_ERROR = 0x31
    FORMAT_ERROR = 0x32
    INVALID_COMMAND = 0x34
    INVALID_SWIPE = 0x39
    FAIL = 0x41             # RAM test / leading zeros / BPI / BPC / erase failed

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
    """How a track appears in an ISO read block: its characters, or the empty / bad marker."""

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


Tracks3 = tuple[bytes, bytes, bytes]


def _sizes(tracks: Sequence[bytes | None]) -> str:
    return "(" + ", ".join("-" if t is None else str(len(t)) for t in tracks) + ") bytes"


# --- replies (device → host) ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CommTestOk:
    """``1B 79``: the communication test passed."""

    pass


@dataclass(frozen=True, slots=True)
class StatusReply:
    """``1B [status]``: the whole answer of the commands in :data:`STATUS_REPLY` (and of a failed read)."""

    status: Status


@dataclass(frozen=True, slots=True)
class ModelReply:
    """``1B [model] 53``: the device's model character."""

    model: str


@dataclass(frozen=True, slots=True)
class FirmwareReply:
    """``1B`` + 8 characters: the firmware version, ``REV?X.XX``."""

    version: str


@dataclass(frozen=True, slots=True)
class CoercivityReply:
    """``1B 68`` / ``1B 6C``: the head is set to Hi-Co (``high``) or Lo-Co."""

    high: bool


@dataclass(frozen=True, slots=True)
class LeadingZerosReply:
    """``1B [t13] [t2]``: the clocking zeros written before tracks 1 and 3, and before track 2."""

    track13: int
    track2: int


@dataclass(frozen=True, slots=True)
class BpcReply:
    """``1B 30 [b1] [b2] [b3]``: the BPC setting took, echoed (§6 item 20)."""

    bpc: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class IsoReadReply:
    """An ISO read's answer: the three tracks (sentinels included) and the status."""

    tracks: tuple[TrackData, TrackData, TrackData]
    status: Status = Status.OK


@dataclass(frozen=True, slots=True)
class RawReadReply:
    """A raw data block: each track's bytes as the device packed them (§7 "[Raw Data] bit orientation")."""

    tracks: Tracks3
    status: Status = Status.OK

    def __repr__(self) -> str:
        return f"RawReadReply(tracks={_sizes(self.tracks)}, status={self.status.name})"


Reply = (CommTestOk | StatusReply | ModelReply | FirmwareReply | CoercivityReply | LeadingZerosReply | BpcReply
         | IsoReadReply | RawReadReply)


# --- host events (host → device) -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CommandEvent:
    """A complete command without a data block, with its argument bytes."""

    command: Command
    args: bytes = b""


@dataclass(frozen=True, slots=True)
class IsoWrite:
    """``1B 77`` with its ISO data block: each track's characters as sent (``None``: no marker)."""

    tracks: tuple[bytes | None, bytes | None, bytes | None]

    def __repr__(self) -> str:
        return f"IsoWrite(tracks={_sizes(self.tracks)})"


@dataclass(frozen=True, slots=True)
class RawWrite:
    """``1B 6E`` with its raw data block: each track's bytes as sent (``None``: no marker)."""

    tracks: tuple[bytes | None, bytes | None, bytes | None]

    def __repr__(self) -> str:
        return f"RawWrite(tracks={_sizes(self.tracks)})"


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """ESC + a byte that is no command of the manual."""

    code: int


@dataclass(frozen=True, slots=True)
class MalformedBlock:
    """A write command whose data block broke the §7 framing; the block was consumed.

    ``pos`` is the stream offset of the first wrong byte; ``reason`` never contains card data.
    """

    command: Command
    reason: str
    pos: int


@dataclass(frozen=True, slots=True)
class StrayBlock:
    """A data block (``1B 73`` + a track marker or ``3F 1C`` … ``3F 1C``) with no write command
    before it, consumed whole up to the first ``3F 1C``. ``1B 73`` followed by anything else is an
    :class:`UnknownCommand`."""

    pos: int
    length: int


HostEvent = CommandEvent | IsoWrite | RawWrite | UnknownCommand | MalformedBlock | StrayBlock


# --- encoding -----------------------------------------------------------------------------------
def encode_command(cmd: Command, args: bytes = b"") -> bytes:
    """``ESC cmd [args]`` for a command without a data block; the argument count is checked.

    >>> encode_command(Command.SET_LEADING_ZEROS, bytes([61, 22])).hex()
    '1b7a3d16'
    >>> encode_command(Command.SET_BPC, bytes([8, 8, 8])).hex()
    '1b6f080808'
    """
    if not isinstance(cmd, Command):
        raise TypeError(f"cmd must be a Command, not {type(cmd).__name__}")
    if cmd in WRITE_COMMANDS:
        raise EncodeError(f"{cmd.name} carries a data block: use encode_iso_block / encode_raw_block")
    want = ARG_LENGTH.get(cmd, 0)
    if len(args) != want:
        raise EncodeError(f"{cmd.name} takes {want} argument byte(s), got {len(args)}")
    return bytes([ESC, cmd]) + bytes(args)


def _three(tracks: Sequence[bytes | None]) -> tuple[bytes, bytes, bytes]:
    if len(tracks) != 3:
        raise EncodeError(f"a data block has 3 tracks, got {len(tracks)}")
    out = []
    for n, t in enumerate(tracks, start=1):
        b = b"" if t is None else bytes(t)
        if len(b) > MAX_TRACK:
            raise EncodeError(f"track {n}: {len(b)} bytes; a data block holds at most {MAX_TRACK} per track")
        out.append(b)
    return out[0], out[1], out[2]


def encode_iso_block(tracks: Sequence[bytes | None]) -> bytes:
    """The ISO write data block (§9): ``1B 73 1B 01 [t1] 1B 02 [t2] 1B 03 [t3] 3F 1C``.

    ``None`` or ``b""`` leaves a track as it is. Track bytes cannot contain ESC or FS.

    >>> encode_iso_block((b"ABC123", b"12345", b"12345")).hex(" ")
    '1b 73 1b 01 41 42 43 31 32 33 1b 02 31 32 33 34 35 1b 03 31 32 33 34 35 3f 1c'
    """
    t = _three(tracks)
    out = bytearray([ESC, START])
    for n, data in enumerate(t, start=1):
        if ESC in data or FS in data:
            raise EncodeError(f"track {n} contains ESC (1B) or FS (1C), which end a track in an ISO block")
        out += bytes([ESC, n]) + data
    out += bytes([END, FS])
    return bytes(out)


def encode_raw_block(tracks: Sequence[bytes | None], status: Status | None = None) -> bytes:
    """A raw data block (§7): ``1B 73 1B 01 [L1] [t1] 1B 02 [L2] [t2] 1B 03 [L3] [t3] 3F 1C``,
    followed by ``1B [status]`` when ``status`` is given (a raw read's answer).

    >>> encode_raw_block((b"\\xc5\\xb0", b"", None)).hex(" ")
    '1b 73 1b 01 02 c5 b0 1b 02 00 1b 03 00 3f 1c'
    """
    t = _three(tracks)
    out = bytearray([ESC, START])
    for n, data in enumerate(t, start=1):
        out += bytes([ESC, n, len(data)]) + data
    out += bytes([END, FS])
    if status is not None:
        out += bytes([ESC, status])
    return bytes(out)


def _check_track_bytes(t: TrackData) -> None:
    if t.marker is TrackMarker.DATA and any(b in (ESC, FS) or b >= 0x80 for b in t.raw):
        raise EncodeError(f"track {t.track} data contains a byte that cannot be sent (ESC, FS or ≥ 0x80)")
    if len(t.raw) > MAX_TRACK:
        raise EncodeError(f"track {t.track} data is longer than {MAX_TRACK} characters")


def encode_reply(reply: Reply) -> bytes:
    """The bytes a device sends for ``reply``.

    >>> encode_reply(StatusReply(Status.OK)).hex()
    '1b30'
    >>> t = (TrackData(1, raw=b"%A?"), TrackData(2, TrackMarker.EMPTY), TrackData(3, TrackMarker.BAD))
    >>> encode_reply(IsoReadReply(t)).hex(" ")
    '1b 73 1b 01 25 41 3f 1b 02 1b 2b 1b 03 1b 2a 3f 1c 1b 30'
    >>> encode_reply(BpcReply((7, 5, 5))).hex(" ")
    '1b 30 07 05 05'
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
    if isinstance(reply, BpcReply):
        if not all(5 <= b <= 8 for b in reply.bpc):
            raise EncodeError("BPC values are 5…8")
        return bytes([ESC, Status.OK, *reply.bpc])
    if isinstance(reply, RawReadReply):
        return encode_raw_block(reply.tracks, reply.status)
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


# --- decoding the device's replies (host side) ------------------------------------------------------
# Each parser looks at a buffer that starts with the reply and returns (reply, bytes used), or
# NEED_DATA when the buffer ends inside it. It raises DecodeError as soon as a byte is wrong, so
# garbage is reported without waiting for an end that may never come.
Parsed = tuple[Reply, int]


def _status(b: int, field: str, pos: int, raw: bytes) -> Status:
    if b not in _STATUS_VALUES:
        raise DecodeError(f"unknown status byte {b:02X}", field=field, pos=pos, raw=raw)
    return Status(b)


def _expect(buf: bytes, i: int, want: int, field: str, what: str) -> None:
    """``buf[i]`` (present) must be ``want``."""
    if buf[i] != want:
        raise DecodeError(f"expected {what} ({want:02X}), got {buf[i]:02X}", field=field, pos=i, raw=buf)


def _block_start(buf: bytes, field: str) -> Parsed | NeedData | None:
    """``1B 73`` (→ ``None``: go on), a bare ``1B [status]`` (→ that reply) or an error."""
    if len(buf) < 2:
        if buf:
            _expect(buf, 0, ESC, f"{field}.esc", "ESC")
        return NEED_DATA
    _expect(buf, 0, ESC, f"{field}.esc", "ESC")
    if buf[1] == START:
        return None
    if buf[1] in _STATUS_VALUES:
        return StatusReply(Status(buf[1])), 2
    raise DecodeError(f"expected the start of a data block (73) or a status, got {buf[1]:02X}",
                      field=f"{field}.start", pos=1, raw=buf)


def _block_end(buf: bytes, pos: int, field: str) -> tuple[Status, int] | NeedData:
    """``3F 1C 1B [status]`` at ``pos``."""
    for k, (want, name, what) in enumerate(((END, "end", "end delimiter 3F"), (FS, "end", "file separator 1C"),
                                            (ESC, "status", "ESC before the status"))):
        if len(buf) <= pos + k:
            return NEED_DATA
        _expect(buf, pos + k, want, f"{field}.{name}", what)
    if len(buf) <= pos + 3:
        return NEED_DATA
    return _status(buf[pos + 3], f"{field}.status", pos + 3, buf), pos + 4


def parse_iso_block(buf: bytes) -> Parsed | NeedData:
    """An ISO read answer at the start of ``buf`` (§7 [Data Block]; empty/bad markers as libmsr)."""
    head = _block_start(buf, "iso")
    if head is not None:
        return head
    pos = 2
    tracks: list[TrackData] = []
    for n in (1, 2, 3):
        for k, (want, what) in enumerate(((ESC, "ESC before the track marker"), (n, f"track marker {n:02X}"))):
            if len(buf) <= pos + k:
                return NEED_DATA
            _expect(buf, pos + k, want, f"track{n}.marker", what)
        pos += 2
        if len(buf) <= pos + 1:
            return NEED_DATA
        if buf[pos] == ESC and buf[pos + 1] in (EMPTY_TRACK, BAD_TRACK):
            tracks.append(TrackData(n, TrackMarker.EMPTY if buf[pos + 1] == EMPTY_TRACK else TrackMarker.BAD))
            pos += 2
            continue
        start = pos
        stop = ESC if n < 3 else FS
        while True:                          # bounded: pos grows each pass, MAX_TRACK caps it
            if pos >= len(buf):
                return NEED_DATA
            b = buf[pos]
            if b == stop:
                break
            if b in (ESC, FS):
                raise DecodeError(f"track {n} data ended by {b:02X}; expected {stop:02X}",
                                  field=f"track{n}.data", pos=pos, raw=buf)
            if pos - start > MAX_TRACK:
                raise DecodeError(f"track {n} data is longer than {MAX_TRACK} bytes", field=f"track{n}.data",
                                  pos=pos, raw=buf)
            pos += 1
        if n < 3:
            tracks.append(TrackData(n, TrackMarker.DATA, bytes(buf[start:pos])))
        else:
            if pos == start or buf[pos - 1] != END:
                raise DecodeError("the data block does not end with 3F 1C", field="iso.end", pos=pos, raw=buf)
            tracks.append(TrackData(n, TrackMarker.DATA, bytes(buf[start:pos - 1])))
            pos -= 1                         # re-read the 3F 1C end delimiter below
    end = _block_end(buf, pos, "iso")
    if isinstance(end, NeedData):
        return end
    status, used = end
    return IsoReadReply((tracks[0], tracks[1], tracks[2]), status), used


def parse_raw_block(buf: bytes) -> Parsed | NeedData:
    """A raw read answer at the start of ``buf`` (§7 [Raw Data Block]: length byte, then the bytes)."""
    head = _block_start(buf, "raw")
    if head is not None:
        return head
    pos = 2
    tracks: list[bytes] = []
    for n in (1, 2, 3):
        for k, (want, what) in enumerate(((ESC, "ESC before the track marker"), (n, f"track marker {n:02X}"))):
            if len(buf) <= pos + k:
                return NEED_DATA
            _expect(buf, pos + k, want, f"track{n}.marker", what)
        if len(buf) <= pos + 2:
            return NEED_DATA
        length = buf[pos + 2]
        pos += 3
        if len(buf) < pos + length:
            return NEED_DATA
        tracks.append(bytes(buf[pos:pos + length]))
        pos += length
    end = _block_end(buf, pos, "raw")
    if isinstance(end, NeedData):
        return end
    status, used = end
    return RawReadReply((tracks[0], tracks[1], tracks[2]), status), used


def parse_reply(expected: Command, buf: bytes) -> Parsed | NeedData:
    """Parse the answer to ``expected`` at the start of ``buf``: ``(reply, bytes used)`` or
    :data:`NEED_DATA`. Raises :class:`DecodeError` for bytes that cannot be that answer."""
    if expected is Command.ISO_READ:
        return parse_iso_block(buf)
    if expected is Command.RAW_READ:
        return parse_raw_block(buf)
    if expected in NO_REPLY:
        raise EncodeError(f"{expected.name} has no reply to parse")
    if not buf:
        return NEED_DATA
    _expect(buf, 0, ESC, "reply.esc", "ESC")
    if len(buf) < 2:
        return NEED_DATA
    if expected is Command.COMM_TEST:
        _expect(buf, 1, 0x79, "reply.comm_test", "communication test ok (79)")
        return CommTestOk(), 2
    if expected in STATUS_REPLY:
        return StatusReply(_status(buf[1], "reply.status", 1, buf)), 2
    if expected is Command.SET_BPC:
        status = _status(buf[1], "reply.status", 1, buf)
        if status is not Status.OK:
            return StatusReply(status), 2
        if len(buf) < 5:
            return NEED_DATA
        bpc = (buf[2], buf[3], buf[4])
        if not all(5 <= b <= 8 for b in bpc):
            raise DecodeError("the echoed BPC is outside 5…8", field="reply.bpc", pos=2, raw=buf)
        return BpcReply(bpc), 5
    if expected is Command.MODEL:
        m = buf[1]
        if not 0x20 <= m < 0x7F:
            raise DecodeError(f"model byte {m:02X} is not printable", field="reply.model", pos=1, raw=buf)
        if len(buf) < 3:
            return NEED_DATA
        _expect(buf, 2, 0x53, "reply.model", "model terminator 53 ('S')")
        return ModelReply(chr(m)), 3
    if expected is Command.FIRMWARE:
        if len(buf) < 9:
            return NEED_DATA
        v = bytes(buf[1:9])
        if not v.startswith(b"REV") or not all(0x20 <= c < 0x7F for c in v):
            raise DecodeError("firmware version is not REV?X.XX", field="reply.firmware", pos=1, raw=buf)
        return FirmwareReply(v.decode("ascii")), 9
    if expected is Command.GET_COERCIVITY:
        b = buf[1]
        if b not in (0x68, 0x6C, 0x48, 0x4C):  # h/l as devices send; H/L as the manual prints
            raise DecodeError(f"coercivity {b:02X} is neither h (68) nor l (6C)", field="reply.coercivity",
                              pos=1, raw=buf)
        return CoercivityReply(b in (0x68, 0x48)), 2
    if expected is Command.CHECK_LEADING_ZEROS:
        if len(buf) < 3:
            return NEED_DATA
        return LeadingZerosReply(buf[1], buf[2]), 3
    raise EncodeError(f"{expected.name} has no reply to parse")     # pragma: no cover - every command is above


class Msr605Client:
    """The host side, sans-IO: commands out, reply events in.

    One command with a reply may be outstanding at a time; sending another replaces the
    expectation (as a real device drops a pending read when it gets a new command). ``RESET``
    also discards buffered bytes. Bytes that arrive with no reply expected are a
    :class:`DecodeError`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0                  # stream offset of _buf[0], for error positions
        self.expecting: Command | None = None

    def send(self, cmd: Command, args: bytes = b"") -> bytes:
        """The bytes of a command without a data block."""
        data = encode_command(cmd, args)
        self._expect(cmd)
        return data

    def send_iso_write(self, tracks: Sequence[bytes | None]) -> bytes:
        """``1B 77`` + the ISO data block (track characters between the sentinels; empty = leave)."""
        data = bytes([ESC, Command.ISO_WRITE]) + encode_iso_block(tracks)
        self._expect(Command.ISO_WRITE)
        return data

    def send_raw_write(self, tracks: Sequence[bytes | None]) -> bytes:
        """``1B 6E`` + the raw data block (bytes in the write bit orientation; empty = leave)."""
        data = bytes([ESC, Command.RAW_WRITE]) + encode_raw_block(tracks)
        self._expect(Command.RAW_WRITE)
        return data

    def _expect(self, cmd: Command) -> None:
        if cmd is Command.RESET:
            self.expecting = None
            self.discard()
        elif cmd not in NO_REPLY:
            self.expecting = cmd

    def discard(self) -> None:
        """Drop buffered bytes (after a reset, or to resynchronise after a decode error)."""
        self._pos += len(self._buf)
        self._buf.clear()

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Reply | NeedData:
        """The next complete reply, or :data:`NEED_DATA`."""
        if not self._buf:
            return NEED_DATA
        if self.expecting is None:
            raw = bytes(self._buf[:64])
            raise DecodeError("bytes from the reader with no command outstanding", field="reply",
                              pos=self._pos, raw=raw)
        try:
            res = parse_reply(self.expecting, bytes(self._buf))
        except DecodeError as e:
            pos = None if e.pos is None else e.pos + self._pos
            raise DecodeError(e.msg, field=e.field, pos=pos, raw=e.raw[:64]) from None
        if isinstance(res, NeedData):
            if len(self._buf) > MAX_BLOCK:
                raise DecodeError(f"reply longer than {MAX_BLOCK} bytes", field="reply", pos=self._pos + MAX_BLOCK,
                                  raw=bytes(self._buf[:64]))
            return res
        reply, used = res
        del self._buf[:used]
        self._pos += used
        self.expecting = None
        return reply


# --- decoding the host's commands (device side) ------------------------------------------------------
Found = tuple[HostEvent | None, int]      # (event or None for skipped noise, bytes consumed)


def _skip_to_end(buf: bytes, start: int, final: bool) -> int | NeedData:
    """Bytes to consume to get past the ``3F 1C`` ending field at or after ``start``.

    Without one: :data:`NEED_DATA`, unless ``final`` (the buffer is over :data:`MAX_BLOCK`): all of it.
    """
    i = buf.find(bytes([END, FS]), start)
    if i >= 0:
        return i + 2
    return len(buf) if final else NEED_DATA


def _malformed(cmd: Command, reason: str, buf: bytes, at: int, base: int, final: bool) -> Found | NeedData:
    used = _skip_to_end(buf, at, final)
    if isinstance(used, NeedData):
        return used
    return MalformedBlock(cmd, reason, base + at), used


def _parse_iso_write(buf: bytes, base: int, final: bool) -> Found | NeedData:
    """``1B 77 1B 73 {1B n [chars]} 3F 1C`` from the start of ``buf``; markers in rising order,
    any of them may be left out (that track is not written)."""
    cmd = Command.ISO_WRITE
    tracks: list[bytes | None] = [None, None, None]
    current = 0
    pos = start = 4
    while True:                          # bounded: pos grows each pass; MAX_BLOCK caps the buffer
        if pos >= len(buf):
            return _malformed(cmd, f"no end (3F 1C) within {MAX_BLOCK} bytes", buf, pos, base, True) \
                if final else NEED_DATA
        b = buf[pos]
        if b == ESC:
            if pos + 1 >= len(buf):
                return NEED_DATA if not final else _malformed(cmd, "block cut short", buf, pos, base, True)
            m = buf[pos + 1]
            if m not in (1, 2, 3) or m <= current:
                return _malformed(cmd, f"ESC {m:02X} where a rising track marker (01…03) or the data belongs",
                                  buf, pos, base, final)
            if current:
                tracks[current - 1] = bytes(buf[start:pos])
            current = m
            pos += 2
            start = pos
        elif b == FS:
            data = bytes(buf[start:pos])
            if not data.endswith(bytes([END])) or (not current and len(data) != 1):
                return MalformedBlock(cmd, "1C without the 3F before it", base + pos), pos + 1
            if current:
                tracks[current - 1] = data[:-1]
            return IsoWrite((tracks[0], tracks[1], tracks[2])), pos + 1
        elif not current:
            if b == END and pos + 1 < len(buf) and buf[pos + 1] == FS:
                pos += 1                 # an empty block: 1B 73 3F 1C
                continue
            if b == END and pos + 1 >= len(buf) and not final:
                return NEED_DATA
            return _malformed(cmd, f"{b:02X} before the first track marker", buf, pos, base, final)
        else:
            if pos - start >= MAX_TRACK + 1:     # the 3F of the end may follow 255 characters
                return _malformed(cmd, f"track {current} longer than {MAX_TRACK} characters", buf, pos, base,
                                  final)
            pos += 1


def _parse_raw_write(buf: bytes, base: int, final: bool) -> Found | NeedData:
    """``1B 6E 1B 73 {1B n L [L bytes]} 3F 1C`` from the start of ``buf``."""
    cmd = Command.RAW_WRITE
    tracks: list[bytes | None] = [None, None, None]
    current = 0
    pos = 4
    while True:                          # bounded: pos grows each pass
        if pos + 1 >= len(buf):
            return _malformed(cmd, "block cut short", buf, pos, base, True) if final else NEED_DATA
        b, m = buf[pos], buf[pos + 1]
        if b == END and m == FS:
            return RawWrite((tracks[0], tracks[1], tracks[2])), pos + 2
        if b != ESC or m not in (1, 2, 3) or m <= current:
            return _malformed(cmd, f"{b:02X} {m:02X} where a rising track marker (1B 01…03) or 3F 1C belongs",
                              buf, pos, base, final)
        if pos + 2 >= len(buf):
            return _malformed(cmd, "block cut short", buf, pos, base, True) if final else NEED_DATA
        length = buf[pos + 2]
        if pos + 3 + length > len(buf):
            return _malformed(cmd, "block cut short", buf, pos, base, True) if final else NEED_DATA
        tracks[m - 1] = bytes(buf[pos + 3:pos + 3 + length])
        current = m
        pos += 3 + length


def parse_host_command(buf: bytes, base: int = 0) -> Found | NeedData:
    """The next host event at the start of ``buf`` (``base`` = its stream offset). Never raises."""
    final = len(buf) > MAX_BLOCK
    if not buf:
        return NEED_DATA
    if buf[0] != ESC:
        nxt = buf.find(bytes([ESC]))
        return None, (len(buf) if nxt < 0 else nxt)      # line noise between commands
    if len(buf) < 2:
        return NEED_DATA
    code = buf[1]
    if code == START:
        if len(buf) < 4:
            return NEED_DATA
        if buf[2:4] not in (bytes([ESC, 1]), bytes([ESC, 2]), bytes([ESC, 3]), bytes([END, FS])):
            return UnknownCommand(code), 2            # not a data block after all: ESC s is no command
        used = _skip_to_end(buf, 2, final)
        if isinstance(used, NeedData):
            return used
        return StrayBlock(base, used), used
    if code not in _COMMAND_VALUES:
        return UnknownCommand(code), 2
    cmd = Command(code)
    if cmd in WRITE_COMMANDS:
        if len(buf) < 4:
            if len(buf) == 3 and buf[2] != ESC:
                return MalformedBlock(cmd, f"{buf[2]:02X} where the data block (1B 73) belongs", base + 2), 2
            return NEED_DATA
        if buf[2] != ESC or buf[3] != START:
            return MalformedBlock(cmd, f"{buf[2]:02X} {buf[3]:02X} where the data block (1B 73) belongs",
                                  base + 2), 2
        return (_parse_iso_write if cmd is Command.ISO_WRITE else _parse_raw_write)(buf, base, final)
    need = 2 + ARG_LENGTH.get(cmd, 0)
    if len(buf) < need:
        return NEED_DATA
    return CommandEvent(cmd, bytes(buf[2:need])), need


_COMMAND_VALUES = frozenset(int(c) for c in Command)


class Msr605DeviceCodec:
    """The device side, sans-IO: the host's bytes in, :data:`HostEvent` events out.

    Never raises on input: whatever the host sends ends as events (see the module docstring),
    each byte consumed exactly once. ``pos`` is the stream offset of the next unparsed byte.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.pos = 0

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> HostEvent | NeedData:
        while self._buf:                 # each pass consumes ≥ 1 byte or returns
            res = parse_host_command(bytes(self._buf), self.pos)
            if isinstance(res, NeedData):
                return res
            event, used = res
            del self._buf[:used]
            self.pos += used
            if event is not None:
                return event
        return NEED_DATA

    @staticmethod
    def send(reply: Reply) -> bytes:
        """The bytes of ``reply`` (:func:`encode_reply`)."""
        return encode_reply(reply)
