"""ISO 8583 messages on pyiso8583: a typed message value and a thin, strict codec.

``encode(msg, profile) -> bytes`` and ``decode(data, profile) -> Message`` work on the frame
payload (everything after the 2-byte length header: TPDU/header, MTI, bitmap, fields). Framing
is :mod:`protocol.framing`. pyiso8583's errors are translated into :class:`DecodeError` /
:class:`EncodeError` with the field, the byte position and the raw bytes; values are checked
against the field's kind, so a BCD field holding ``A``–``F`` or a non-digit in an ``n`` field is
an error, never a silent wrong value.

**Fast path.** Each profile's spec is compiled once (:class:`_Plan`) into per-field encoders and
decoders for the forms pyiso8583 supports and posemu's profiles use (binary/BCD/ASCII data,
binary/BCD/ASCII lengths, nibble counts and pads, primary and secondary bitmaps). A message or
frame that is well formed in every respect goes through them alone; at the first thing that is
not — a value that fails a check, a length out of range, an unknown field, trailing bytes — the
plan gives up and the reference path (pyiso8583 plus the checks, :func:`_encode_checked` /
:func:`_decode_checked`) does the work, so errors are exactly the reference's. The plan accepts
nothing the reference rejects and produces the same bytes and messages (the property tests in
``tests/test_iso8583.py`` check both paths against each other). Per field set (encode) and per
bitmap (decode) the plan keeps a layout: fixed-length ASCII fields that sit back to back are checked
and sliced as one string, and a bitmap's decoder is one straight-line function generated from the
spec (bounded caches; ``tests/test_iso_layouts.py``).

>>> from protocol.specs import ISO87ASCII
>>> m = Message("0800", {11: "000001", 41: "TERM0001", 70: "001"})
>>> decode(encode(m, ISO87ASCII), ISO87ASCII) == m
True
"""

from __future__ import annotations

import binascii
import functools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
    if type(msg) is Message:
        out = _plan(profile).encode(msg)
        if out is not None:
            return out
    return _encode_checked(msg, profile)


def _encode_checked(msg: Message, profile: Profile) -> bytes:
    """The reference path: every check, then pyiso8583 — and its exact error for bad values."""
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
    if type(data) is bytes:
        msg = _plan(profile).decode(data)
        if msg is not None:
            return msg
    return _decode_checked(data, profile)


def _decode_checked(data: bytes | bytearray | memoryview, profile: Profile) -> Message:
    """The reference path: pyiso8583, then every check — and its exact error for bad bytes."""
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


# --- the compiled fast path ----------------------------------------------------------------------

_LEN_BINARY, _LEN_BCD, _LEN_ASCII = 0, 1, 2
_DECIMAL = frozenset("0123456789")


class _FieldPlan(NamedTuple):
    """One data element as pyiso8583's spec describes it, ready to use."""

    number: int
    key: str
    kind: Kind
    len_type: int            # bytes of length prefix (0: fixed)
    len_enc: int             # _LEN_*
    max_len: int
    binary: bool             # data_enc "b": raw bytes (hex/BCD text in pyiso8583's doc)
    nibbles: bool            # length counts nibbles
    left_pad: str
    right_pad: str
    prefixes: tuple[bytes | None, ...]   # variable fields: the length prefix of lengths 0 … max_len (None: unencodable)
    digits: frozenset[str]   # BCD fields: the characters a value may hold once '=' is nibble D (pad included)


def _length_prefix(length: int, len_type: int, len_enc: int) -> bytes | None:
    """What pyiso8583 writes as a length (None where it would fail)."""
    if len_enc == _LEN_BINARY:
        try:
            return length.to_bytes(len_type, "big")
        except OverflowError:
            return None
    if len_enc == _LEN_BCD:
        digits = f"{length:0{len_type * 2}d}"
        return None if len(digits) > len_type * 2 else binascii.a2b_hex(digits)
    text = f"{length:0{len_type}d}".encode("ascii")
    return None if len(text) > len_type else text


# A layout: the fields of one bitmap (decode) or one message's field set (encode), grouped into ops —
# runs of fixed-length ASCII text fields, which sit back to back on the wire and are checked and
# sliced as one string, variable-length ASCII fields, fixed binary fields, and anything else field by
# field (:meth:`_Plan._decode_field`/:meth:`_Plan._encode_field`). Each op accepts exactly what the
# field-by-field code accepts. Layouts are cached per plan (a bounded cache: bitmaps come off the wire).
_OP_RUN, _OP_VAR, _OP_FIXB, _OP_FIELD = 0, 1, 2, 3
_Op = tuple[Any, ...]
_LAYOUT_CACHE = 512
_UNSEEN: Any = object()


_Decoder = Callable[[bytes, int, int], "dict[int, Value] | None"]


def _compile_decoder(ops: Sequence[_Op], decode_field: Callable[..., Any]) -> _Decoder:
    """A decode layout as one straight-line function ``(data, pos, size) -> fields | None``: the checks
    of :meth:`_Plan._decode_field` for each op, unrolled, with the lengths, limits and slices as
    constants (``None``: take the reference path). Generated from the profile's spec only, never
    from received bytes."""
    lines = ["def decoder(data, pos, size):"]
    env: dict[str, Any] = {"TRACK": _TRACK}
    values: list[str] = []

    def emit(*code: str) -> None:
        lines.extend("    " + c for c in code)

    for i, op in enumerate(ops):
        tag = op[0]
        if tag == _OP_RUN:
            _, _, pieces, total, spans = op
            emit(f"end = pos + {total}", "if end > size: return None", "c = data[pos:end]",
                 "if not c.isascii(): return None", f"t{i} = c.decode('ascii')")
            for a, b in spans:
                emit(f"if not t{i}{'' if (a, b) == (0, total) else f'[{a}:{b}]'}.isdigit(): return None")
            emit("pos = end")
            values += [f"{n}: t{i}[{a}:{b}]" for n, a, b in pieces]
            continue
        fp: _FieldPlan = op[1]
        v = f"v{fp.number}"
        if tag == _OP_VAR:
            lt, check = fp.len_type, {_N: f"not {v}.isdigit()", _Z: f"not TRACK.issuperset({v})"}.get(fp.kind)
            emit(f"c = data[pos:pos + {lt}]", f"if len(c) != {lt} or not c.isdigit(): return None",
                 "n = int(c)", f"if n > {fp.max_len}: return None", f"pos += {lt}",
                 "if n:", "    end = pos + n", "    if end > size: return None", "    c = data[pos:end]",
                 "    if not c.isascii(): return None", f"    {v} = c.decode('ascii')",
                 *([f"    if {check}: return None"] if check else []), "    pos = end",
                 "else:", f"    {v} = ''")
        elif tag == _OP_FIXB:
            emit(f"end = pos + {fp.max_len}", "if end > size: return None", f"{v} = data[pos:end]", "pos = end")
        else:
            env[f"fp{i}"] = fp
            emit(f"got = decode_field(fp{i}, data, pos, size)", "if got is None: return None", f"{v}, pos = got")
        values.append(f"{fp.number}: {v}")
    emit("if pos != size: return None", "return {" + ", ".join(values) + "}")
    env["decode_field"] = decode_field
    exec("\n".join(lines), env)     # source made above from the spec's numbers only
    decoder: _Decoder = env["decoder"]
    return decoder


class _EncLayout(NamedTuple):
    bitmap: bytes                # the encoded bitmap(s) of this field set
    ops: tuple[_Op, ...]


def _group(fps: Sequence[_FieldPlan], joinable: Callable[[_FieldPlan], bool]) -> list[list[_FieldPlan]]:
    """Consecutive joinable fields as one group each run; every other field alone."""
    out: list[list[_FieldPlan]] = []
    for fp in fps:
        if joinable(fp) and out and joinable(out[-1][-1]):
            out[-1].append(fp)
        else:
            out.append([fp])
    return out


def _digit_spans(run: Sequence[_FieldPlan]) -> tuple[tuple[int, int], ...]:
    """Where the numeric fields of a run sit in its joined text, adjacent ones merged into one span."""
    spans: list[list[int]] = []
    at = 0
    for fp in run:
        end = at + fp.max_len
        if fp.kind is _N:
            if spans and spans[-1][1] == at:
                spans[-1][1] = end
            else:
                spans.append([at, end])
        at = end
    return tuple((a, b) for a, b in spans)


def _checked_text(kind: Kind, v: str, bcd_track: bool) -> str | None:
    """A text value as the field's kind allows it (digits for n; track characters for z, ``=`` as
    the ``D`` nibble on a BCD-track profile), or ``None`` where the reference path would refuse it."""
    if kind is _N:
        return None if v and not v.isdigit() else v
    if kind is _Z:
        if not _TRACK.issuperset(v):
            return None
        return v.replace("=", "D") if bcd_track else v
    return v


def _one(n: int) -> Callable[[Mapping[int, Value]], tuple[Value]]:
    return lambda fields: (fields[n],)


class _Plan:
    """A profile's spec compiled for the fast path; ``None`` from :meth:`encode`/:meth:`decode`
    means "take the reference path"."""

    def __init__(self, profile: Profile) -> None:
        spec = profile.spec
        self.profile = profile
        self.header_len = profile.header_len
        h, t = spec["h"], spec["t"]
        self.usable = (
            (h["max_len"] <= 0 and profile.header_len == 0)
            or (h["data_enc"] == "b" and h["len_type"] == 0 and h["max_len"] == profile.header_len)
        ) and t["data_enc"] in ("b", "ascii") and t.get("len_count", "bytes") == "bytes"
        self.mti_binary = t["data_enc"] == "b"
        self.bitmap_binary: dict[str, bool] = {}
        for key in ("p", "1"):
            enc = spec[key]["data_enc"] if key in spec else "b"
            self.usable = self.usable and enc in ("b", "ascii")
            self.bitmap_binary[key] = enc == "b"
        self.fields: dict[int, _FieldPlan] = {}
        for key, kind in profile.kinds.items():
            fp = self._field(int(key), key, kind, spec[key])
            if fp is None:
                self.usable = False
            else:
                self.fields[fp.number] = fp
        self.bcd_track = profile.bcd_track
        self._enc_layouts: dict[tuple[Any, ...], _EncLayout | None] = {}
        self._dec_layouts: dict[int, _Decoder | None] = {}
        self._heads: dict[bytes, tuple[str, int] | None] = {}
        self.head_len = (2 if self.mti_binary else 4) + (8 if self.bitmap_binary["p"] else 16)

    @staticmethod
    def _field(number: int, key: str, kind: Kind, f: Mapping[str, Any]) -> _FieldPlan | None:
        data_enc = f["data_enc"]
        len_enc = {"b": _LEN_BINARY, "bcd": _LEN_BCD, "ascii": _LEN_ASCII}.get(f["len_enc"], -1)
        pads = [f.get(k, "") for k in ("left_pad", "right_pad")]
        if not all(isinstance(x, str) and (x[:1] == "" or x[:1].isdigit()) for x in pads):
            return None                                # unusual pads: the reference path handles them
        nibbles = f.get("len_count", "bytes") == "nibbles"
        binary = data_enc == "b"
        if (len_enc < 0 or not (1 <= number <= 128) or number in (1, 65)
                or not (binary or data_enc == "ascii") or (nibbles and not binary)
                or f.get("len_count", "bytes") not in ("bytes", "nibbles")
                or (binary and kind not in (Kind.N, Kind.Z, Kind.B)) or (not binary and kind is Kind.B)):
            return None
        len_type = int(f["len_type"])
        max_len = int(f["max_len"])
        prefixes: tuple[bytes | None, ...] = ()
        if len_type:
            prefixes = tuple(_length_prefix(n, len_type, len_enc) for n in range(max_len + 1))
        left, right = pads[0][:1], pads[1][:1]
        digits = _DECIMAL | {left, right} - {""} | ({"D"} if kind is Kind.Z else set())
        return _FieldPlan(number, key, kind, len_type, len_enc, max_len, binary, nibbles, left, right, prefixes,
                          frozenset(digits))

    # -- encode ---------------------------------------------------------------------------------

    def encode(self, msg: Message) -> bytes | None:
        if not self.usable:
            return None
        mti = msg.mti
        header = msg.header
        if (type(mti) is not str or len(mti) != 4 or not mti.isdigit() or not mti.isascii()
                or type(header) is not bytes or len(header) != self.header_len):
            return None
        fields = msg.fields
        key = tuple(fields)
        layouts = self._enc_layouts
        try:
            layout = layouts[key]
        except KeyError:
            layout = self._enc_layout(key)
            if len(layouts) >= _LAYOUT_CACHE:
                layouts.clear()
            layouts[key] = layout
        if layout is None:
            return None
        parts: list[bytes] = [header, binascii.a2b_hex(mti) if self.mti_binary else mti.encode("ascii"),
                              layout.bitmap]
        append = parts.append
        for op in layout.ops:
            tag = op[0]
            if tag == _OP_RUN:                          # fixed-length ASCII text fields back to back
                vals = op[2](fields)
                if [*map(type, vals)] != op[3] or [*map(len, vals)] != op[4]:     # exact str, exact lengths
                    return None
                text = "".join(vals)
                if not text.isascii():
                    return None
                for a, b in op[5]:
                    if not text[a:b].isdigit():
                        return None
                append(text.encode("ascii"))
            elif tag == _OP_VAR:                        # variable-length ASCII text, ASCII length
                fp = op[1]
                v = fields[fp.number]
                if type(v) is not str or not v.isascii():
                    return None
                t = _checked_text(fp.kind, v, self.bcd_track)
                if t is None or len(t) > fp.max_len:
                    return None
                prefix = fp.prefixes[len(t)]
                if prefix is None:
                    return None
                append(prefix)
                append(t.encode("ascii"))
            elif tag == _OP_FIXB:                       # fixed-length binary
                v = fields[op[1].number]
                if type(v) is not bytes or len(v) != op[1].max_len:
                    return None
                append(v)
            else:
                data = self._encode_field(op[1], fields[op[1].number])
                if data is None:
                    return None
                append(data)
        return b"".join(parts)

    def _enc_layout(self, key: tuple[Any, ...]) -> _EncLayout | None:
        """How to encode a message with these fields (in this order): ``None`` if the fast path cannot."""
        plans = self.fields
        if not all(type(n) is int for n in key):
            return None
        fps: list[_FieldPlan] = []
        bitmap = 0
        for n in sorted(key):
            fp = plans.get(n)
            if fp is None:
                return None
            fps.append(fp)
            bitmap |= 1 << (128 - n)
        if bitmap & ((1 << 64) - 1):                   # fields 65–128: secondary bitmap (field 1)
            bitmap |= 1 << 127
            bm = self._bitmap(bitmap >> 64, "p") + self._bitmap(bitmap & ((1 << 64) - 1), "1")
        else:
            bm = self._bitmap(bitmap >> 64, "p")
        ops: list[_Op] = []
        for run in _group(fps, self._in_run):
            if len(run) > 1 or self._in_run(run[0]):
                numbers = tuple(fp.number for fp in run)
                get = operator.itemgetter(*numbers) if len(numbers) > 1 else _one(numbers[0])
                ops.append((_OP_RUN, numbers, get, [str] * len(run), [fp.max_len for fp in run],
                            _digit_spans(run)))
            else:
                ops.append((self._single_op(run[0]), run[0]))
        return _EncLayout(bm, tuple(ops))

    def _in_run(self, fp: _FieldPlan) -> bool:
        """Fixed-length ASCII text (not track data): what a run joins into one slice."""
        return fp.len_type == 0 and not fp.binary and fp.max_len > 0 and fp.kind is not _Z

    def _single_op(self, fp: _FieldPlan) -> int:
        if fp.len_type and not fp.binary and fp.len_enc == _LEN_ASCII:
            return _OP_VAR
        if fp.len_type == 0 and fp.binary and fp.kind is _B and not fp.nibbles and fp.max_len > 0:
            return _OP_FIXB
        return _OP_FIELD

    def _bitmap(self, bits: int, key: str) -> bytes:
        raw = bits.to_bytes(8, "big")
        return raw if self.bitmap_binary[key] else raw.hex().upper().encode("ascii")

    def _encode_field(self, fp: _FieldPlan, v: object) -> bytes | None:
        kind = fp.kind
        if kind is _B:
            if type(v) is not bytes:
                return None
            data = v
            length = len(v) * 2 if fp.nibbles else len(v)
        else:
            if type(v) is not str:
                return None
            checked = _checked_text(kind, v, self.bcd_track)
            if checked is None:
                return None
            v = checked
            if fp.binary:                              # BCD: nibbles, odd counts padded
                text = v
                if len(text) & 1:
                    if not fp.nibbles:
                        return None
                    if fp.left_pad:
                        text = fp.left_pad + text
                    elif fp.right_pad:
                        text = text + fp.right_pad
                    else:
                        return None
                if not fp.digits.issuperset(text):
                    return None
                data = binascii.a2b_hex(text)
                length = len(v) if fp.nibbles else len(data)
            else:
                if not v.isascii():
                    return None
                data = v.encode("ascii")
                length = len(data)
        if fp.len_type == 0:
            return data if length == fp.max_len else None
        if length > fp.max_len:
            return None
        prefix = fp.prefixes[length]
        return None if prefix is None else prefix + data

    # -- decode ---------------------------------------------------------------------------------

    def decode(self, data: bytes) -> Message | None:
        if not self.usable:
            return None
        size = len(data)
        pos = self.header_len
        header = data[:pos] if pos else b""
        end = pos + self.head_len
        if end > size:
            return None
        raw_head = data[pos:end]
        heads = self._heads                            # MTI and primary bitmap, read once per distinct bytes
        head = heads.get(raw_head, _UNSEEN)
        if head is _UNSEEN:
            head = self._read_head(raw_head)
            if len(heads) >= _LAYOUT_CACHE:
                heads.clear()
            heads[raw_head] = head
        if head is None:
            return None
        mti, bitmap = head
        pos = end
        bits = bitmap << 64
        if bitmap >> 63:                               # field 1: a secondary bitmap follows
            sbin = self.bitmap_binary["1"]
            end = pos + (8 if sbin else 16)
            if end > size:
                return None
            second = self._read_bitmap(data[pos:end], sbin)
            if second is None or second >> 63:        # field 65: a tertiary bitmap (not in the fast path)
                return None
            bits |= second
            pos = end
        bits &= (1 << 127) - 1                         # field 1 was the bitmap itself
        layouts = self._dec_layouts
        decoder = layouts.get(bits, _UNSEEN)
        if decoder is _UNSEEN:
            ops = self._dec_layout(bits)
            decoder = None if ops is None else _compile_decoder(ops, self._decode_field)
            if len(layouts) >= _LAYOUT_CACHE:
                layouts.clear()
            layouts[bits] = decoder
        if decoder is None:
            return None
        fields = decoder(data, pos, size)
        return None if fields is None else Message(mti, fields, header)

    def _dec_layout(self, bits: int) -> tuple[_Op, ...] | None:
        """How to decode the fields of this bitmap (fields 2–128 as bits 126…0): ``None`` if the fast
        path cannot."""
        plans = self.fields
        fps: list[_FieldPlan] = []
        while bits:
            top = bits.bit_length()
            fp = plans.get(129 - top)
            if fp is None:
                return None
            fps.append(fp)
            bits ^= 1 << (top - 1)
        ops: list[_Op] = []
        for run in _group(fps, self._in_run):
            if len(run) > 1 or self._in_run(run[0]):
                pieces, at = [], 0
                for fp in run:
                    pieces.append((fp.number, at, at + fp.max_len))
                    at += fp.max_len
                ops.append((_OP_RUN, None, tuple(pieces), at, _digit_spans(run)))
            else:
                ops.append((self._single_op(run[0]), run[0]))
        return tuple(ops)

    def _read_head(self, raw: bytes) -> tuple[str, int] | None:
        """The MTI and primary bitmap at the start of a message (``raw``: exactly :attr:`head_len` bytes)."""
        if self.mti_binary:
            mti, at = raw[:2].hex(), 2
        else:
            if not raw[:4].isascii():
                return None
            mti, at = raw[:4].decode("ascii"), 4
        if len(mti) != 4 or not mti.isdigit():
            return None
        bitmap = self._read_bitmap(raw[at:], self.bitmap_binary["p"])
        return None if bitmap is None else (mti, bitmap)

    @staticmethod
    def _read_bitmap(raw: bytes, binary: bool) -> int | None:
        if binary:
            return int.from_bytes(raw, "big")
        if len(raw) != 16 or not raw.isalnum() or not raw.isascii():
            return None
        try:
            return int(raw, 16)
        except ValueError:
            return None

    def _decode_field(self, fp: _FieldPlan, data: bytes, pos: int, size: int) -> tuple[Value, int] | None:
        lt = fp.len_type
        if lt:
            raw_len = data[pos:pos + lt]
            if len(raw_len) != lt:
                return None
            enc = fp.len_enc
            if enc == _LEN_BINARY:
                length = int.from_bytes(raw_len, "big")
            elif enc == _LEN_BCD:
                digits = raw_len.hex()
                if not digits.isdigit():
                    return None
                length = int(digits)
            else:
                if not (raw_len.isdigit() and raw_len.isascii()):
                    return None
                length = int(raw_len)
            if length > fp.max_len:
                return None
            pos += lt
        else:
            length = fp.max_len
        if length == 0:
            value: Value = b"" if fp.kind is _B else ""
            return value, pos
        nbytes = (length + 1) // 2 if fp.nibbles else length
        end = pos + nbytes
        if end > size:
            return None
        chunk = data[pos:end]
        kind = fp.kind
        if fp.binary:
            if kind is _B:
                if fp.nibbles and length & 1:
                    return None
                return chunk, end
            text = chunk.hex().upper()
            if fp.nibbles and length & 1:
                if fp.left_pad and text[:1] == fp.left_pad:
                    text = text[1:]
                elif fp.right_pad and text[-1:] == fp.right_pad:
                    text = text[:-1]
                else:
                    return None
            if kind is _N:
                if not text.isdigit():
                    return None
                return text, end
            if self.bcd_track:                          # kind Z
                text = text.replace("D", "=")
            if not _TRACK.issuperset(text):
                return None
            return text, end
        if not chunk.isascii():
            return None
        text = chunk.decode("ascii")
        if (kind is _N and not text.isdigit()) or (kind is _Z and not _TRACK.issuperset(text)):
            return None
        return text, end


_PLANS: dict[int, tuple[Profile, _Plan]] = {}


def _plan(profile: Profile) -> _Plan:
    """The compiled plan of ``profile`` (made on first use; profiles are not changed after)."""
    got = _PLANS.get(id(profile))
    if got is None or got[0] is not profile:
        got = _PLANS[id(profile)] = (profile, _Plan(profile))
    return got[1]
