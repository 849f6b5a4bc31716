"""Length-prefixed framing with a receive buffer (sans-IO).

Both profiles put a 2-byte big-endian binary length (excluding itself) in front of every
message. :class:`Framer` turns a byte stream — split anywhere, frames back to back — into
frame payloads; :func:`frame` does the reverse. A zero or oversized length is a
:class:`DecodeError`; after one, the stream is unusable (the caller closes the connection).

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

from protocol.errors import DecodeError
from protocol.sansio import NEED_DATA, NeedData

HEADER_LEN = 2
MAX_FRAME = 8192


def frame(payload: bytes, max_frame: int = MAX_FRAME) -> bytes:
    """Prefix a payload with its 2-byte big-endian length."""
    n = len(payload)
    if not 0 < n <= min(max_frame, 0xFFFF):
        from protocol.errors import EncodeError

        raise EncodeError(f"frame payload of {n} bytes is outside 1..{min(max_frame, 0xFFFF)}")
    return n.to_bytes(2, "big") + payload


class Framer:
    """Receive buffer that survives short reads and back-to-back frames."""

    __slots__ = ("_broken", "_buf", "_consumed", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._consumed = 0          # bytes of the stream already returned as frames
        self._broken = False
        self.max_frame = max_frame

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
        if len(buf) < HEADER_LEN:
            return NEED_DATA
        n = (buf[0] << 8) | buf[1]
        if n == 0 or n > self.max_frame:
            self._broken = True
            raise DecodeError(f"frame length {n} is outside 1..{self.max_frame}", field="length",
                              pos=self._consumed, raw=bytes(buf[:HEADER_LEN]))
        end = HEADER_LEN + n
        if len(buf) < end:
            return NEED_DATA
        payload = bytes(buf[HEADER_LEN:end])
        del buf[:end]
        self._consumed += end
        return payload

    def frames(self) -> list[bytes]:
        """Every complete payload buffered now."""
        out = []
        while (p := self.next_event()) is not NEED_DATA:
            out.append(p)
        return out
