"""MSR605 wire protocol, the host's end: commands out, the device's replies in (sans-IO).

The vocabulary and the encoders are :mod:`hardware.msr605_codec` (manual §6–§9); this module
parses the device's answers. Each parser looks at a buffer that starts with the reply and returns
``(reply, bytes used)``, or :data:`~protocol.sansio.NEED_DATA` when the buffer ends inside it, and
raises :class:`~protocol.errors.DecodeError` as soon as a byte is wrong, so garbage is reported
without waiting for an end that may never come. :class:`Msr605Client` keeps the stream.

>>> c = Msr605Client()
>>> c.send(Command.COMM_TEST).hex()
'1b65'
>>> c.receive_data(b"\\x1b"); c.next_event()          # short read
NEED_DATA
>>> c.receive_data(b"y"); c.next_event()
CommTestOk()
"""

from __future__ import annotations

from collections.abc import Sequence

from hardware.msr605_codec import (
    BAD_TRACK,
    EMPTY_TRACK,
    END,
    ESC,
    FS,
    MAX_BLOCK,
    MAX_TRACK,
    NO_REPLY,
    START,
    STATUS_REPLY,
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
    encode_iso_block,
    encode_raw_block,
)
from protocol.errors import DecodeError, EncodeError
from protocol.sansio import NEED_DATA, NeedData

_STATUS_VALUES = frozenset(int(s) for s in Status)


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
