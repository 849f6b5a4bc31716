"""BER-TLV as EMV uses it (EMV 4.4 Book 3 Annex B; ISO/IEC 8825-1 subset), and Data Object Lists.

Sans-IO codec over bytes:

* Tags are one or more bytes (Annex B1): if the low five bits of the first byte are all ones
  (``xxx11111``) further bytes follow while their bit 8 is set. A tag is held as an ``int`` of
  its bytes (``0x9F26``). Bit 6 of the first byte marks a *constructed* object, whose value is
  itself a sequence of TLV objects.
* Lengths (Annex B2) are definite: one byte ``00..7F``, or ``81..84`` followed by one to four
  length bytes. The indefinite form (``80``) is not allowed in EMV and is rejected. Decoding
  accepts non-minimal long forms; encoding always writes the shortest form.
* Before, between and after objects, ``00`` bytes may appear as padding (Annex B, note); the
  decoder skips them when ``skip_padding`` is true (the default), and the encoder never writes
  them.

Bounded by its input: a length is checked against the bytes actually present before any value
is sliced, so a claimed length (up to 4 GiB in ``84 FF FF FF FF``) never allocates anything;
DOL entries and DOL data are capped by what one short command carries (see :data:`MAX_DOL_ENTRY`).

Every decode failure is a :class:`protocol.errors.DecodeError` whose ``field`` is the tag path
(``"70.57"``, ``"77.9F26"``) and whose ``pos`` is the byte offset in the outermost buffer.

>>> objs = decode(bytes.fromhex("770F9F2701809F360200019F2603A1B2C3"))
>>> objs[0].find("9F27").value.hex()
'80'
>>> encode(objs).hex().upper()
'770F9F2701809F360200019F2603A1B2C3'

Data Object Lists (Book 3 §5.4): :func:`decode_dol` gives ``(tag, length)`` pairs and
:func:`build_dol_data` concatenates the values a DOL asks for, padding and truncating by the
§5.4 rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from protocol.binary import require_bytes as _as_bytes
from protocol.errors import DecodeError, EncodeError
from protocol.masking import mask_hex

__all__ = [
    "MAX_DOL_ENTRY",
    "NUMERIC_TAGS",
    "PDOL_DATA_MAX",
    "SENSITIVE_TAGS",
    "SHORT_LC_MAX",
    "TAG_NAMES",
    "Tlv",
    "build_dol_data",
    "decode",
    "decode_dol",
    "decode_one",
    "encode",
    "encode_dol",
    "find",
    "find_all",
    "flatten",
    "parse_tag",
    "redacted",
    "tag_bytes",
    "tag_hex",
    "tag_is_constructed",
]

MAX_DEPTH = 16
"""Deepest nesting accepted when decoding (EMV objects nest at most three or four levels)."""

TAG_NAMES: dict[int, str] = {
    0x42: "Issuer Identification Number",
    0x4F: "Application Identifier (AID) – card",
    0x50: "Application Label",
    0x57: "Track 2 Equivalent Data",
    0x5A: "Application PAN",
    0x5F20: "Cardholder Name",
    0x5F24: "Application Expiration Date",
    0x5F25: "Application Effective Date",
    0x5F28: "Issuer Country Code",
    0x5F2A: "Transaction Currency Code",
    0x5F2D: "Language Preference",
    0x5F30: "Service Code",
    0x5F34: "PAN Sequence Number",
    0x5F36: "Transaction Currency Exponent",
    0x61: "Application Template",
    0x6F: "FCI Template",
    0x70: "READ RECORD Response Message Template",
    0x77: "Response Message Template Format 2",
    0x80: "Response Message Template Format 1",
    0x82: "Application Interchange Profile",
    0x83: "Command Template",
    0x84: "Dedicated File (DF) Name",
    0x87: "Application Priority Indicator",
    0x88: "Short File Identifier (SFI)",
    0x8A: "Authorisation Response Code",
    0x8C: "CDOL1",
    0x8D: "CDOL2",
    0x8E: "CVM List",
    0x91: "Issuer Authentication Data",
    0x94: "Application File Locator (AFL)",
    0x95: "Terminal Verification Results",
    0x9A: "Transaction Date",
    0x9B: "Transaction Status Information",
    0x9C: "Transaction Type",
    0x9F02: "Amount, Authorised (Numeric)",
    0x9F03: "Amount, Other (Numeric)",
    0x9F07: "Application Usage Control",
    0x9F08: "Application Version Number – card",
    0x9F09: "Application Version Number – terminal",
    0x9F0D: "Issuer Action Code – Default",
    0x9F0E: "Issuer Action Code – Denial",
    0x9F0F: "Issuer Action Code – Online",
    0x9F10: "Issuer Application Data",
    0x9F11: "Issuer Code Table Index",
    0x9F12: "Application Preferred Name",
    0x9F13: "Last Online ATC Register",
    0x9F17: "PIN Try Counter",
    0x9F1A: "Terminal Country Code",
    0x9F1E: "Interface Device (IFD) Serial Number",
    0x9F1F: "Track 1 Discretionary Data",
    0x9F21: "Transaction Time",
    0x9F26: "Application Cryptogram",
    0x9F27: "Cryptogram Information Data",
    0x9F33: "Terminal Capabilities",
    0x9F34: "CVM Results",
    0x9F35: "Terminal Type",
    0x9F36: "Application Transaction Counter",
    0x9F37: "Unpredictable Number",
    0x9F38: "PDOL",
    0x9F40: "Additional Terminal Capabilities",
    0x9F41: "Transaction Sequence Counter",
    0x9F42: "Application Currency Code",
    0x9F44: "Application Currency Exponent",
    0x9F66: "Terminal Transaction Qualifiers",
    0xA5: "FCI Proprietary Template",
    0xBF0C: "FCI Issuer Discretionary Data",
}

SENSITIVE_TAGS: frozenset[int] = frozenset({0x56, 0x57, 0x5A, 0x5F20, 0x9F1F, 0x9F20, 0x99, 0x9F6B})
"""Tags whose values are card data that must never be shown (PAN, track data, name, PIN data)."""

NUMERIC_TAGS: frozenset[int] = frozenset({
    0x5F25, 0x5F24, 0x5F28, 0x5F2A, 0x5F34, 0x5F36, 0x9A, 0x9C, 0x9F02, 0x9F03, 0x9F1A, 0x9F21,
    0x9F41, 0x9F42, 0x9F44, 0x9F15, 0x9F35, 0x9F11,
})
"""Tags of EMV format ``n`` (BCD, right-justified): DOL padding/truncation is on the left (§5.4)."""




# --- tags -----------------------------------------------------------------------------------
def _parse_tag_at(data: bytes, pos: int, path: str, end: int | None = None) -> tuple[int, int]:
    """Read one tag at ``pos`` (not past ``end``); return (tag, next position)."""
    end = len(data) if end is None else end
    if pos >= end:
        raise DecodeError("truncated tag", field=path, pos=pos, raw=data)
    first = data[pos]
    if first == 0x00:
        raise DecodeError("00 is padding, not a tag", field=path, pos=pos, raw=data)
    tag = first
    i = pos + 1
    if first & 0x1F == 0x1F:
        while True:
            if i >= end:
                raise DecodeError("truncated multi-byte tag", field=path, pos=pos, raw=data)
            b = data[i]
            if i == pos + 1 and b == 0x80:
                raise DecodeError("tag number with a leading zero septet", field=path, pos=i, raw=data)
            tag = (tag << 8) | b
            i += 1
            if not b & 0x80:
                break
            if i - pos >= 4:
                raise DecodeError("tag longer than 4 bytes", field=path, pos=pos, raw=data)
    return tag, i


def tag_bytes(tag: int) -> bytes:
    """The bytes of a tag held as an ``int`` (``0x9F26`` → ``9F 26``); EncodeError if malformed.

    >>> tag_bytes(0x9F26).hex(), tag_bytes(0x5A).hex()
    ('9f26', '5a')
    """
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise TypeError(f"tag must be int, not {type(tag).__name__}")
    if not 0 < tag <= 0xFFFFFFFF:
        raise EncodeError(f"tag {tag:#x} out of range")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    try:
        parsed, end = _parse_tag_at(raw, 0, "")
    except DecodeError:
        raise EncodeError(f"malformed tag {raw.hex().upper()}") from None
    if end != len(raw) or parsed != tag:
        raise EncodeError(f"malformed tag {raw.hex().upper()}")
    return raw


def tag_hex(tag: int) -> str:
    """``0x9F26`` → ``"9F26"``."""
    return tag_bytes(tag).hex().upper()


def parse_tag(text: str | int) -> int:
    """A tag from hex text (``"9F26"``) or an ``int``, validated.

    >>> hex(parse_tag("9f26"))
    '0x9f26'
    """
    if isinstance(text, int) and not isinstance(text, bool):
        tag_bytes(text)
        return text
    if not isinstance(text, str):
        raise TypeError(f"tag must be str or int, not {type(text).__name__}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise EncodeError(f"tag {text!r} is not hex") from None
    if not raw:
        raise EncodeError("empty tag")
    tag = int.from_bytes(raw, "big")
    tag_bytes(tag)
    if len(raw) != len(tag_bytes(tag)):
        raise EncodeError(f"tag {text!r} has leading zero bytes")
    return tag


def tag_is_constructed(tag: int) -> bool:
    """Bit 6 of the tag's first byte (Book 3 Annex B1)."""
    return bool(tag_bytes(tag)[0] & 0x20)


# --- lengths --------------------------------------------------------------------------------
def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(raw) > 4:
        raise EncodeError(f"length {n} too large for BER-TLV")
    return bytes([0x80 | len(raw)]) + raw


def _parse_length_at(data: bytes, pos: int, path: str, end: int | None = None) -> tuple[int, int]:
    end = len(data) if end is None else end
    if pos >= end:
        raise DecodeError("truncated length", field=path, pos=pos, raw=data)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0:
        raise DecodeError("indefinite length is not allowed", field=path, pos=pos, raw=data)
    if count > 4:
        raise DecodeError(f"length of {count} bytes not supported", field=path, pos=pos, raw=data)
    if pos + 1 + count > end:
        raise DecodeError("truncated long-form length", field=path, pos=pos, raw=data)
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


# --- objects --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, repr=False)
class Tlv:
    """One BER-TLV data object.

    A primitive object has ``value``; a constructed one (tag bit 6 set) has ``children`` and
    its ``value`` is their encoding. Build with :meth:`primitive`/:meth:`constructed` or the
    constructor. ``repr`` never shows sensitive values (PAN, track 2, name).
    """

    tag: int
    value: bytes = b""
    children: tuple[Tlv, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.tag, int) or isinstance(self.tag, bool):
            raise TypeError(f"tag must be int, not {type(self.tag).__name__}")
        if not isinstance(self.value, bytes):
            raise TypeError(f"value must be bytes, not {type(self.value).__name__}")
        if not isinstance(self.children, tuple):
            raise TypeError(f"children must be a tuple, not {type(self.children).__name__}")
        for c in self.children:
            if not isinstance(c, Tlv):
                raise TypeError(f"children must be Tlv, not {type(c).__name__}")
        if tag_is_constructed(self.tag):
            if self.value:
                if self.children:
                    raise EncodeError("constructed object given both value and children",
                                      field=tag_hex(self.tag))
                # A constructed object given as raw bytes: decode them into children.
                try:
                    kids = _decode_seq(self.value, 0, len(self.value), tag_hex(self.tag), 1, True)
                except DecodeError as e:
                    raise EncodeError(f"constructed value is not BER-TLV ({e.msg})",
                                      field=e.field) from None
                object.__setattr__(self, "children", kids)
                object.__setattr__(self, "value", b"")
        elif self.children:
            raise EncodeError("primitive object cannot have children", field=tag_hex(self.tag))

    @classmethod
    def primitive(cls, tag: int | str, value: bytes) -> Tlv:
        return cls(parse_tag(tag), value)

    @classmethod
    def constructed(cls, tag: int | str, *children: Tlv) -> Tlv:
        return cls(parse_tag(tag), children=tuple(children))

    @property
    def is_constructed(self) -> bool:
        return tag_is_constructed(self.tag)

    @property
    def tag_hex(self) -> str:
        return tag_hex(self.tag)

    @property
    def content(self) -> bytes:
        """The value field as bytes (children encoded for a constructed object)."""
        if self.is_constructed:
            return b"".join(c.encode() for c in self.children)
        return self.value

    def encode(self) -> bytes:
        body = self.content
        return tag_bytes(self.tag) + _encode_length(len(body)) + body

    def find(self, path: str | Sequence[int]) -> Tlv | None:
        """The first object at ``path`` below this one (``"9F27"``, ``"A5.88"``), or ``None``."""
        return find(self.children, path)

    def walk(self) -> Iterator[tuple[str, Tlv]]:
        """Every object in this tree, depth first, with its path (``"70.57"``)."""
        yield self.tag_hex, self
        for c in self.children:
            for p, o in c.walk():
                yield f"{self.tag_hex}.{p}", o

    def __repr__(self) -> str:
        if self.is_constructed:
            return f"Tlv({self.tag_hex}, [{', '.join(repr(c) for c in self.children)}])"
        if self.tag in SENSITIVE_TAGS:
            return f"Tlv({self.tag_hex}, <{len(self.value)} bytes redacted>)"
        return f"Tlv({self.tag_hex}, {mask_hex(self.value.hex().upper())})"


def _decode_seq(data: bytes, start: int, end: int, prefix: str, depth: int, skip_padding: bool) -> tuple[Tlv, ...]:
    if depth > MAX_DEPTH:
        raise DecodeError("TLV nested too deeply", field=prefix, pos=start, raw=data)
    out: list[Tlv] = []
    pos = start
    while pos < end:
        if skip_padding and data[pos] == 0x00:
            pos += 1
            continue
        obj_start = pos
        where = prefix or "?"
        tag, pos = _parse_tag_at(data, pos, where, end)
        path = f"{prefix}.{tag:X}" if prefix else f"{tag:X}"
        length, pos = _parse_length_at(data, pos, path, end)
        if pos + length > end:
            raise DecodeError(f"value of {length} bytes runs past the end ({end - pos} left)",
                              field=path, pos=obj_start, raw=data)
        if data[obj_start] & 0x20:
            kids = _decode_seq(data, pos, pos + length, path, depth + 1, skip_padding)
            out.append(Tlv(tag, children=kids))
        else:
            out.append(Tlv(tag, bytes(data[pos : pos + length])))
        pos += length
    return tuple(out)


def decode(data: bytes, *, skip_padding: bool = True) -> tuple[Tlv, ...]:
    """Decode a sequence of BER-TLV objects (Book 3 Annex B).

    >>> [o.tag_hex for o in decode(bytes.fromhex("5A0899000100000000190000"))]
    ['5A']
    >>> decode(bytes.fromhex("700457039900"))
    Traceback (most recent call last):
    ...
    protocol.errors.DecodeError: value of 3 bytes runs past the end (2 left): field 70.57, position 2, raw 700457039900
    """
    data = _as_bytes(data, "data")
    return _decode_seq(data, 0, len(data), "", 1, skip_padding)


def redacted(data: bytes) -> str:
    """A one-line view of BER-TLV bytes for traces: sensitive values (PAN, track data, name)
    replaced by their length, everything else as masked hex; bytes that are not BER-TLV are
    shown as masked hex.

    >>> redacted(bytes.fromhex("700E5A0899000200000000185F340101"))
    '70[5A=<8 bytes redacted> 5F34=01]'
    """
    try:
        objs = decode(data)
    except DecodeError:
        return mask_hex(data.hex().upper())

    def one(o: Tlv) -> str:
        if o.is_constructed:
            return f"{o.tag_hex}[{' '.join(one(c) for c in o.children)}]"
        if o.tag in SENSITIVE_TAGS:
            return f"{o.tag_hex}=<{len(o.value)} bytes redacted>"
        return f"{o.tag_hex}={mask_hex(o.value.hex().upper())}"

    return " ".join(one(o) for o in objs)


def decode_one(data: bytes, *, skip_padding: bool = True) -> Tlv:
    """Decode exactly one object (padding aside); DecodeError otherwise."""
    objs = decode(data, skip_padding=skip_padding)
    if len(objs) != 1:
        raise DecodeError(f"expected one TLV object, found {len(objs)}", pos=0, raw=data)
    return objs[0]


def encode(objs: Iterable[Tlv] | Tlv) -> bytes:
    """Encode one object or a sequence of objects."""
    if isinstance(objs, Tlv):
        return objs.encode()
    out = bytearray()
    for o in objs:
        if not isinstance(o, Tlv):
            raise TypeError(f"expected Tlv, not {type(o).__name__}")
        out += o.encode()
    return bytes(out)


def _path_tags(path: str | Sequence[int]) -> list[int]:
    if isinstance(path, str):
        return [parse_tag(p) for p in path.split(".") if p]
    return [parse_tag(p) for p in path]


def find(objs: Iterable[Tlv], path: str | Sequence[int]) -> Tlv | None:
    """The first object at a dotted tag path (``"6F.A5.88"``) in a sequence, or ``None``."""
    tags = _path_tags(path)
    if not tags:
        return None
    level: Iterable[Tlv] = objs
    found: Tlv | None = None
    for t in tags:
        found = next((o for o in level if o.tag == t), None)
        if found is None:
            return None
        level = found.children
    return found


def find_all(objs: Iterable[Tlv], tag: int | str) -> list[Tlv]:
    """Every object with ``tag`` anywhere in the trees, depth first."""
    t = parse_tag(tag)
    out: list[Tlv] = []
    for o in objs:
        for _, x in o.walk():
            if x.tag == t:
                out.append(x)
    return out


def flatten(objs: Iterable[Tlv]) -> dict[int, bytes]:
    """Primitive values by tag, first occurrence wins (how a kernel stores card data)."""
    out: dict[int, bytes] = {}
    for o in objs:
        for _, x in o.walk():
            if not x.is_constructed and x.tag not in out:
                out[x.tag] = x.value
    return out


# --- Data Object Lists (Book 3 §5.4) -------------------------------------------------------
SHORT_LC_MAX = 255
"""Most command data a short C-APDU carries: Lc is one byte, Nc = 1..255 (ISO/IEC 7816-4 §5.1,
Table 1). EMV speaks short APDUs only, so this bounds every DOL's related data."""

PDOL_DATA_MAX = 252
"""Most PDOL related data a GET PROCESSING OPTIONS can carry: its command data is the template
``83 L data`` (EMV Book 3 §6.5.8.2), and with the two-byte length ``81 FC`` that leaves
255 − 3 = 252 bytes of :data:`SHORT_LC_MAX`."""

MAX_DOL_ENTRY = PDOL_DATA_MAX
"""Longest value one DOL entry may ask for (252 bytes). EMV Book 3 §5.4 lets a DOL name any
length, but the related data travels in one short command (GPO §6.5.8, GENERATE AC §6.5.5),
so no entry can ask for more than the GPO template holds; "a DOL entry is at most 252 bytes"
is also what EMV kernels enforce in practice. A longer entry is a malformed DOL
(:class:`DecodeError`), never an allocation."""


def decode_dol(data: bytes, *, field: str = "DOL") -> tuple[tuple[int, int], ...]:
    """A DOL's ``(tag, length)`` entries (Book 3 §5.4).

    An entry asking for more than :data:`MAX_DOL_ENTRY` (252) bytes is a :class:`DecodeError`.

    >>> [(hex(t), n) for t, n in decode_dol(bytes.fromhex("9F02069F1A02"))]
    [('0x9f02', 6), ('0x9f1a', 2)]
    >>> try:
    ...     decode_dol(bytes.fromhex("9F0284FFFFFFFF"))
    ... except DecodeError as e:
    ...     print(e.msg, e.field)
    DOL entry asks for 4294967295 bytes, more than 252 DOL.9F02
    """
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _parse_tag_at(data, pos, field)
        at = pos
        length, pos = _parse_length_at(data, pos, f"{field}.{tag:X}")
        if length > MAX_DOL_ENTRY:
            raise DecodeError(f"DOL entry asks for {length} bytes, more than {MAX_DOL_ENTRY}",
                              field=f"{field}.{tag:X}", pos=at, raw=data)
        out.append((tag, length))
    return tuple(out)


def encode_dol(entries: Iterable[tuple[int, int]]) -> bytes:
    """The DOL bytes for ``(tag, length)`` entries."""
    return b"".join(tag_bytes(t) + _encode_length(n) for t, n in entries)


def _dol_entries(dol: bytes | Sequence[tuple[int, int]], max_total: int) -> tuple[tuple[int, int], ...]:
    """Entries of a DOL, checked against the entry and total bounds before anything is allocated."""
    if isinstance(dol, bytes):
        entries = decode_dol(dol)
    else:
        entries = tuple(dol)
        for tag, n in entries:
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise TypeError(f"DOL entry length must be a non-negative int, not {n!r}")
            if n > MAX_DOL_ENTRY:
                raise DecodeError(f"DOL entry asks for {n} bytes, more than {MAX_DOL_ENTRY}",
                                  field=f"DOL.{tag:X}")
    total = sum(n for _, n in entries)
    if total > max_total:
        raise DecodeError(f"DOL asks for {total} bytes of data, more than the {max_total} "
                          "one command can carry", field="DOL",
                          raw=dol if isinstance(dol, bytes) else b"")
    return entries


def build_dol_data(dol: bytes | Sequence[tuple[int, int]], values: Mapping[int, bytes], *,
                   max_total: int = SHORT_LC_MAX) -> bytes:
    """Concatenate the values a DOL asks for (Book 3 §5.4).

    Missing or constructed objects are sent as zeros. A value longer than asked for is
    truncated — on the left for numeric (``n``) tags, on the right otherwise; a shorter value
    is padded — with leading zeros for ``n`` tags, trailing zeros otherwise.

    Bounded: an entry over :data:`MAX_DOL_ENTRY` (252) bytes, or entries adding up to more
    than ``max_total`` (default :data:`SHORT_LC_MAX`, 255: the related data must fit one
    short command; pass :data:`PDOL_DATA_MAX` for a PDOL) raise :class:`DecodeError` before
    any buffer is allocated.

    >>> build_dol_data(bytes.fromhex("9F0206" "9F1A02" "9F3704"),
    ...                {0x9F02: bytes.fromhex("0100"), 0x9F1A: bytes.fromhex("0156")}).hex()
    '000000000100015600000000'
    >>> try:
    ...     build_dol_data(bytes.fromhex("9F3781FC" "9F0206"), {})
    ... except DecodeError as e:
    ...     print(e.msg)
    DOL asks for 258 bytes of data, more than the 255 one command can carry
    """
    entries = _dol_entries(dol, max_total)
    out = bytearray()
    for tag, n in entries:
        v = values.get(tag)
        if v is None or tag_is_constructed(tag):
            out += bytes(n)
            continue
        if tag in NUMERIC_TAGS:
            v = v[-n:] if len(v) > n else bytes(n - len(v)) + v
        else:
            v = v[:n] if len(v) > n else v + bytes(n - len(v))
        out += v if n else b""
    return bytes(out)


def split_dol_data(dol: bytes | Sequence[tuple[int, int]], data: bytes) -> dict[int, bytes]:
    """The inverse of :func:`build_dol_data`: values by tag (a card reading PDOL/CDOL data)."""
    entries = _dol_entries(dol, 0xFFFF)
    need = sum(n for _, n in entries)
    if len(data) != need:
        raise DecodeError(f"DOL data is {len(data)} bytes, the DOL asks for {need}", raw=data)
    out: dict[int, bytes] = {}
    pos = 0
    for tag, n in entries:
        out.setdefault(tag, data[pos : pos + n])
        pos += n
    return out
