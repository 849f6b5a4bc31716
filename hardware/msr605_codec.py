"""MSR605/MSR206-family wire protocol: a pure sans-IO codec for both ends of the serial line.

Source: MSR605 Programmer's Manual (rev. B; the MSR606 manual is identical), §6 "Command and
Response", §7 "Data Format", §8 "Communication Sequence", §9 "Addendum"; checked against
woodruffw/libmsr (``msr206.c``) and Doridian/libMSRx05 (``libmsr.py``). The link is 9600 baud
8N1; every command is ESC (``1B``) + one byte, some followed by argument bytes or a data block.

No serial port, no clock, no I/O. This module is the vocabulary both ends share — the
commands, status bytes, replies and host events as values, and their encoders; each end is a
sans-IO object in the vocabulary of :mod:`protocol.sansio` (``receive_data(bytes)``, then
``next_event()`` until it answers :data:`~protocol.sansio.NEED_DATA`):

* :class:`hardware.msr605_codec_host.Msr605Client` is the host (a POS, a card-writing tool):
  commands out, the device's replies in as :data:`Reply` events. Bytes that cannot be the awaited
  reply raise :class:`~protocol.errors.DecodeError` with field, stream position and raw hex.
  :class:`hardware.msr605.SerialMsrReader` drives it over a serial port.
* :class:`hardware.msr605_codec_device.Msr605DeviceCodec` is the device: the host's bytes in as
  :data:`HostEvent` events (commands with their arguments, write commands with their whole data
  block), replies out with :func:`encode_reply`. A device must survive any input, so this side
  never raises: line noise between commands is skipped, an unknown command is an
  :class:`UnknownCommand`, a write whose data block is broken is a :class:`MalformedBlock` (the
  block is consumed), a data block with no command before it is a :class:`StrayBlock`.
  :class:`hardware.msr605_device.Msr605Device` answers through it.

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

>>> encode_command(Command.COMM_TEST).hex()
'1b65'
>>> encode_reply(CommTestOk()).hex()
'1b79'
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import EncodeError

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
