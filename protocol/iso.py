"""ISO 8583 messages on pyiso8583: a typed message value and a thin, strict codec.

``encode(msg, profile) -> bytes`` and ``decode(data, profile) -> Message`` work on the frame
payload (everything after the 2-byte length header: TPDU/header, MTI, bitmap, fields). Framing
is :mod:`protocol.framing`. pyiso8583's errors are translated into :class:`DecodeError` /
:class:`EncodeError` with the field, the byte position and the raw bytes; values are checked
against the field's kind, so a BCD field holding ``A``–``F`` or a non-digit in an ``n`` field is
an error, never a silent wrong value.

>>> from protocol.specs import ISO87ASCII
>>> m = Message("0800", {11: "000001", 41: "TERM0001", 70: "001"})
>>> decode(encode(m, ISO87ASCII), ISO87ASCII) == m
True
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import iso8583
import iso8583.decoder
import iso8583.encoder

from protocol.errors import DecodeError, EncodeError
from protocol.masking import mask_hex, mask_pan, mask_text
from protocol.specs import Kind, Profile

Value = str | bytes
_DIGITS = frozenset("0123456789")
_TRACK = frozenset("0123456789=")
# Fields never shown in a trace, log or screen (track data, PIN block, keys, MAC is harmless
# but noise); PAN fields are masked 6 + 4.
SECRET_FIELDS = frozenset({35, 36, 45, 52, 62})
PAN_FIELDS = frozenset({2})
# Numeric/coded fields that never hold a PAN: shown as they are (amounts, balances, codes, ids).
PLAIN_FIELDS = frozenset({3, 4, 7, 11, 12, 13, 14, 15, 22, 23, 25, 26, 32, 37, 38, 39, 41, 42, 49, 53, 54, 60, 61,
                          70, 90})


@dataclass(frozen=True, slots=True)
class Message:
    """An ISO 8583 message: MTI, fields by number, and the profile's header bytes (TPDU…)."""

    mti: str
    fields: dict[int, Value] = field(default_factory=dict)
    header: bytes = b""

    def __getitem__(self, n: int) -> Value:
        return self.fields[n]

    def __contains__(self, n: object) -> bool:
        return n in self.fields

    def get(self, n: int, default: Value | None = None) -> Value | None:
        return self.fields.get(n, default)

    def text(self, n: int) -> str:
        """A text/numeric field's value; ``KeyError`` when absent, ``TypeError`` when binary."""
        v = self.fields[n]
        if not isinstance(v, str):
            raise TypeError(f"field {n} is binary")
        return v

    def binary(self, n: int) -> bytes:
        v = self.fields[n]
        if not isinstance(v, bytes):
            raise TypeError(f"field {n} is not binary")
        return v

    def replace(
        self, mti: str | None = None, header: bytes | None = None, **changes: Value | None
    ) -> Message:
        """A copy with fields changed (``f39="00"``) or removed (``f52=None``)."""
        fields = dict(self.fields)
        for key, v in changes.items():
            if not key.startswith("f") or not key[1:].isdigit():
                raise TypeError(f"field keywords look like f39=…, got {key!r}")
            n = int(key[1:])
            if v is None:
                fields.pop(n, None)
            else:
                fields[n] = v
        return Message(mti or self.mti, fields, self.header if header is None else header)

    def response_mti(self) -> str:
        """The MTI of the response to this request (0200 → 0210, 0400 → 0410, 0800 → 0810)."""
        if len(self.mti) != 4 or not self.mti.isdigit() or self.mti[2] not in "02468":
            raise TypeError(f"MTI {self.mti} is not a request")
        return self.mti[:2] + str(int(self.mti[2]) + 1) + self.mti[3]

    def redacted(self) -> dict[int, str]:
        """Fields as text safe for a trace or log: PAN 6+4, secrets replaced by their length."""
        out: dict[int, str] = {}
        for n in sorted(self.fields):
            v = self.fields[n]
            if n in PAN_FIELDS and isinstance(v, str):
                out[n] = mask_pan(v)
            elif n in SECRET_FIELDS:
                out[n] = f"<{len(v)} {'bytes' if isinstance(v, bytes) else 'chars'} hidden>"
            elif isinstance(v, bytes):
                out[n] = mask_hex(v.hex().upper())     # chip data (55) carries the PAN in 5A/57
            elif n in PLAIN_FIELDS:
                out[n] = v
            else:
                out[n] = mask_text(v)                   # free text: mask anything PAN-like
        return out

    def __repr__(self) -> str:  # never leak card data through repr
        return f"Message(mti={self.mti!r}, fields={self.redacted()!r}, header={self.header.hex()!r})"

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.fields))


def encode(msg: Message, profile: Profile) -> bytes:
    """Encode a message into its frame payload (header, MTI, bitmap, fields)."""
    if type(msg) is not Message:
        raise TypeError(f"expected Message, got {type(msg).__name__}")
    mti = msg.mti
    if len(mti) != 4 or not (mti.isascii() and mti.isdigit()):
        raise EncodeError(f"MTI must be 4 digits, got {mti!r}", field="t")
    header = msg.header
    if len(header) != profile.header_len:
        raise EncodeError(f"{profile.name} needs a {profile.header_len}-byte header, got {len(header)}",
                          field="h")
    table = profile.table
    doc: dict[str, Any] = {"t": mti}
    if header:
        doc["h"] = _header_hex(header)
    for n, v in msg.fields.items():
        entry = table.get(n)
        if entry is None:
            raise EncodeError(f"field {n} is not in the {profile.name} profile", field=str(n))
        key, kind = entry
        if kind is _B:
            if type(v) is not bytes:
                if not isinstance(v, bytes | bytearray):
                    raise TypeError(f"field {n} is binary: expected bytes, got {type(v).__name__}")
                v = bytes(v)
            doc[key] = v.hex()
            continue
        if type(v) is not str:
            raise TypeError(f"field {n} is text: expected str, got {type(v).__name__}")
        if kind is _N:
            # isdigit() also admits non-ASCII digits; pyiso8583 then refuses them (ASCII/hex only)
            if not v.isdigit() and v:
                raise EncodeError("numeric field holds a non-digit", field=key)
        elif kind is _Z:
            if not _TRACK.issuperset(v):
                raise EncodeError("track field holds a character other than digits and '='", field=key)
            if profile.bcd_track:
                v = v.replace("=", "D")
        doc[key] = v
    try:
        out, _ = iso8583.encode(doc, profile.spec)
    except iso8583.encoder.EncodeError as e:
        raise EncodeError(_strip_pan(e.msg), field=str(e.field)) from None
    return bytes(out)


def _strip_pan(text: str) -> str:
    return mask_text(text)


def decode(data: bytes | bytearray | memoryview, profile: Profile) -> Message:
    """Decode a frame payload. Raises only :class:`DecodeError` for bad bytes."""
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    try:
        doc, _ = iso8583.decode(data, profile.spec)
    except iso8583.decoder.DecodeError as e:
        raise DecodeError(e.msg, field=str(e.field), pos=e.pos, raw=data,
                          partial=_partial(e.doc_dec)) from None
    except (ValueError, LookupError, TypeError) as e:  # defensive: any other codec failure
        raise DecodeError(f"undecodable message ({type(e).__name__})", raw=data) from None
    return _from_doc(doc, data, profile)


def _partial(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A partial decode safe to carry in an error: MTI and non-secret fields only."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k.isdigit() and (int(k) in SECRET_FIELDS or int(k) in PAN_FIELDS):
            continue
        out[k] = v
    return out


def _from_doc(doc: dict[str, Any], raw: bytes, profile: Profile) -> Message:
    mti = doc.pop("t")
    header_hex = doc.pop("h", "")
    del doc["p"]
    doc.pop("1", None)
    if not (len(mti) == 4 and mti.isdigit()):
        raise DecodeError("MTI is not 4 digits", field="t", pos=profile.header_len, raw=raw)
    rtable = profile.rtable
    fields: dict[int, Value] = {}
    # pyiso8583 hands back ASCII text (decoded with "ascii", or hex of BCD), so isdigit() is exact here.
    for key, text in doc.items():
        entry = rtable.get(key)
        if entry is None:
            raise DecodeError(f"field {key} is not in the {profile.name} profile", field=key, raw=raw)
        n, kind = entry
        if kind is _N:
            if not text.isdigit() and text:
                raise DecodeError("numeric field holds a non-digit", field=key, raw=raw)
            fields[n] = text
        elif kind is _B:
            try:
                fields[n] = binascii.a2b_hex(text)
            except (binascii.Error, ValueError):
                raise DecodeError("binary field is not hex", field=key, raw=raw) from None
        elif kind is _Z:
            if profile.bcd_track:
                text = text.replace("D", "=").replace("d", "=")
            if not _TRACK.issuperset(text):
                raise DecodeError("track data holds an invalid character", field=key, raw=raw)
            fields[n] = text
        else:
            fields[n] = text
    return Message(mti, fields, _header_bytes(header_hex) if header_hex else b"")


_N, _B, _Z = Kind.N, Kind.B, Kind.Z


@functools.lru_cache(maxsize=64)
def _header_hex(header: bytes) -> str:
    """Envelope headers (TPDU + application header) repeat on every message of a terminal."""
    return header.hex()


@functools.lru_cache(maxsize=64)
def _header_bytes(header_hex: str) -> bytes:
    return bytes.fromhex(header_hex)
