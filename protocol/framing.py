"""Length-prefixed framing with a receive buffer (sans-IO).

Both bundled profiles put a 2-byte big-endian binary length (excluding itself) in front of every
message. :class:`Framer` turns a byte stream — split anywhere, frames back to back — into
frame payloads; :func:`frame` does the reverse. A zero or oversized length is a
:class:`DecodeError`; after one, the stream is unusable (the caller closes the connection).

Other hosts use other length headers (a host dialect, :mod:`emulator.dialect`): a
:class:`LengthHeader` names the size and encoding — 2 or 4 bytes binary, 4 ASCII decimal digits
("0123"), 2 bytes packed BCD — and whether the length counts its own bytes.

>>> h = LengthHeader(4, "ascii")
>>> h.encode(300), frame(b"abc", header=h)
(b'0300', b'0003abc')

It speaks the sans-IO vocabulary of :mod:`protocol.sansio`:

>>> f = Framer()
>>> f.receive_data(frame(b"abc") + frame(b"de")[:2]); f.next_event()
b'abc'
>>> f.next_event()
NEED_DATA
>>> f.receive_data(b"de"); f.next_event()
b'de'
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import DecodeError, EncodeError
from protocol.sansio import NEED_DATA, NeedData

HEADER_LEN = 2
MAX_FRAME = 8192

LENGTH_ENCODINGS = ("binary", "ascii", "bcd")


@dataclass(frozen=True, slots=True)
class LengthHeader:
    """The length in front of every message: ``size`` bytes, ``encoding`` ``binary`` (big-endian),
    ``ascii`` (decimal digits) or ``bcd`` (packed decimal); ``inclusive`` when the value counts the
    header's own bytes too (some hosts do). The default is the 2-byte binary length of both bundled
    profiles.

    >>> LengthHeader(2, "bcd").encode(1234).hex(), LengthHeader(2, "bcd").decode(b"\\x12\\x34")
    ('1234', 1234)
    """

    size: int = 2
    encoding: str = "binary"
    inclusive: bool = False

    def __post_init__(self) -> None:
        if self.encoding not in LENGTH_ENCODINGS:
            raise EncodeError(f"length header encoding must be one of {', '.join(LENGTH_ENCODINGS)}",
                              field="length")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= 6 \
                or (self.encoding == "binary" and self.size not in (2, 4)):
            raise EncodeError("length header size must be 2 or 4 bytes (binary) or 1 to 6 (ascii, bcd)",
                              field="length")

    @property
    def default(self) -> bool:
        return self.size == 2 and self.encoding == "binary" and not self.inclusive

    @property
    def max_value(self) -> int:
        """The largest length the header can express (before ``inclusive`` is applied)."""
        if self.encoding == "binary":
            return (1 << (8 * self.size)) - 1
        digits = self.size if self.encoding == "ascii" else 2 * self.size
        return int(10 ** digits) - 1

    def max_payload(self, max_frame: int) -> int:
        return min(max_frame, self.max_value - (self.size if self.inclusive else 0))

    def encode(self, n: int) -> bytes:
        """The header for a payload of ``n`` bytes."""
        v = n + self.size if self.inclusive else n
        if self.encoding == "binary":
            return v.to_bytes(self.size, "big")
        if self.encoding == "ascii":
            return str(v).zfill(self.size).encode("ascii")
        return bytes.fromhex(str(v).zfill(2 * self.size))

    def decode(self, raw: bytes) -> int:
        """The payload length a header announces; :class:`DecodeError` if it is not a number."""
        if self.encoding == "binary":
            v = int.from_bytes(raw, "big")
        else:
            text = raw.decode("ascii", "replace") if self.encoding == "ascii" else raw.hex()
            if not (text.isascii() and text.isdigit()):
                raise DecodeError(f"{self.encoding} length header is not decimal digits", field="length",
                                  raw=bytes(raw))
            v = int(text)
        return v - self.size if self.inclusive else v


DEFAULT_LENGTH = LengthHeader()


def frame(payload: bytes, max_frame: int = MAX_FRAME, header: LengthHeader = DEFAULT_LENGTH) -> bytes:
    """Prefix a payload with its length (2-byte big-endian unless ``header`` says otherwise)."""
    n = len(payload)
    if header is DEFAULT_LENGTH or header.default:
        if not 0 < n <= min(max_frame, 0xFFFF):
            raise EncodeError(f"frame payload of {n} bytes is outside 1..{min(max_frame, 0xFFFF)}")
        return n.to_bytes(2, "big") + payload
    limit = header.max_payload(max_frame)
    if not 0 < n <= limit:
        raise EncodeError(f"frame payload of {n} bytes is outside 1..{limit}")
    return header.encode(n) + payload


class Framer:
    """Receive buffer that survives short reads and back-to-back frames."""

    __slots__ = ("_broken", "_buf", "_consumed", "header", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME, header: LengthHeader = DEFAULT_LENGTH) -> None:
        self._buf = bytearray()
        self._consumed = 0          # bytes of the stream already returned as frames
        self._broken = False
        self.max_frame = max_frame
        self.header = header

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the stream."""
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> bytes | NeedData:
        """The next complete payload, or :data:`NEED_DATA` when more bytes are needed."""
        if self._broken:
            raise DecodeError("stream is out of sync after a framing error", field="length")
        buf = self._buf
        header = self.header
        if header is DEFAULT_LENGTH or header.default:
            size = HEADER_LEN
            if len(buf) < HEADER_LEN:
                return NEED_DATA
            n = (buf[0] << 8) | buf[1]
        else:
            size = header.size
            if len(buf) < size:
                return NEED_DATA
            try:
                n = header.decode(bytes(buf[:size]))
            except DecodeError:
                self._broken = True
                raise DecodeError(f"{header.encoding} length header is not a number", field="length",
                                  pos=self._consumed, raw=bytes(buf[:size])) from None
        if n <= 0 or n > self.max_frame:
            self._broken = True
            raise DecodeError(f"frame length {n} is outside 1..{self.max_frame}", field="length",
                              pos=self._consumed, raw=bytes(buf[:size]))
        end = size + n
        if len(buf) < end:
            return NEED_DATA
        payload = bytes(buf[size:end])
        del buf[:end]
        self._consumed += end
        return payload

    def frames(self) -> list[bytes]:
        """Every complete payload buffered now."""
        out = []
        while (p := self.next_event()) is not NEED_DATA:
            out.append(p)
        return out
