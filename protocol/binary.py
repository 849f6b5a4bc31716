"""Byte-input helpers shared by the codecs."""

from __future__ import annotations

__all__ = ["require_bytes"]


def require_bytes(value: object, name: str) -> bytes:
    """``value`` as ``bytes`` (bytes, bytearray and memoryview accepted); ``TypeError`` otherwise.

    >>> require_bytes(bytearray(b"ab"), "data")
    b'ab'
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
