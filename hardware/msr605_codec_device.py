"""MSR605 wire protocol, the device's end: the host's commands in, replies out (sans-IO).

The vocabulary and the encoders are :mod:`hardware.msr605_codec` (manual §6–§9); this module
parses what a host sends. A device must survive any input, so nothing here raises on input:
:func:`parse_host_command` turns the start of a buffer into one :data:`HostEvent` (or skipped
line noise) and the bytes it used; :class:`Msr605DeviceCodec` keeps the stream.

>>> from hardware.msr605_codec_host import Msr605Client
>>> d = Msr605DeviceCodec()
>>> d.receive_data(Msr605Client().send_iso_write((b"ABC123", b"12345", b""))); d.next_event()
IsoWrite(tracks=(6, 5, 0) bytes)
"""

from __future__ import annotations

from hardware.msr605_codec import (
    ARG_LENGTH,
    END,
    ESC,
    FS,
    MAX_BLOCK,
    MAX_TRACK,
    START,
    WRITE_COMMANDS,
    Command,
    CommandEvent,
    HostEvent,
    IsoWrite,
    MalformedBlock,
    RawWrite,
    Reply,
    StrayBlock,
    UnknownCommand,
    encode_reply,
)
from protocol.sansio import NEED_DATA, NeedData

_COMMAND_VALUES = frozenset(int(c) for c in Command)


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
