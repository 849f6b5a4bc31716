"""ISO 8583 message profiles as data.

A profile is a pyiso8583 spec (a plain dict, see :mod:`iso8583.specs`) plus what the codec
needs around it: the envelope inside the frame, the field kinds, the MAC algorithm.

``cup`` — a China UnionPay-style POS terminal profile (CUP POS terminal ISO 8583 usage, as
in open-source CUP POS code, see shared protocol facts §6): packed-BCD numerics and lengths
(LLVAR = 1 BCD length byte, LLLVAR = 2), binary primary bitmap, 64 fields; the frame is a
2-byte binary length, a 5-byte TPDU and a 6-byte application header (12 BCD digits), then MTI
(2 bytes BCD). Field 22 is left-aligned BCD ("051" → ``05 10``); track 2 (field 35) is BCD with
the separator ``=`` as nibble ``D``. MAC in field 64: the CUP "ECB" MAC.

``iso87ascii`` — ISO 8583:1987 with ASCII numerics and lengths and a binary bitmap: pyiso8583's
``default`` spec unchanged, so any tool built on it decodes every message (field 62 of the 0810,
the working keys, travels as hex text in that ``ans`` field), 2-byte binary length header and no
TPDU: what third-party clients and load generators speak. MAC in field 64 (and 128): ANSI X9.19
retail MAC.

Other hosts' dialects are data too: :func:`build_profile` makes a profile from a base (``cup``,
``iso87ascii``, or none for a complete spec), pyiso8583 field definitions that override or add
fields, the envelope (TPDU, application header, :class:`protocol.framing.LengthHeader`) and the
MAC algorithm — what a ``[host]`` table of the terminal's TOML config describes.

Field kinds (:class:`Kind`) decide the Python type of a value in a :class:`protocol.iso.Message`:
``n`` digits, ``an``/``ans`` text, ``z`` track data (digits and ``=``), all ``str``; ``b`` binary,
``bytes``.

>>> CUP.spec["22"]["max_len"], CUP.spec["22"]["right_pad"]
(3, '0')
>>> ISO87ASCII.kind("4"), ISO87ASCII.kind("52")
(<Kind.N: 'n'>, <Kind.B: 'b'>)
"""

from __future__ import annotations

import codecs
import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import iso8583.specs

from protocol.errors import ConfigError
from protocol.framing import DEFAULT_LENGTH, LengthHeader
from protocol.mac import MacAlgorithm


class Kind(enum.Enum):
    """A field's kind: ``n`` digits, ``an``/``ans`` text, ``z`` track data, ``b`` binary (see the module notes)."""

    N = "n"
    AN = "an"
    ANS = "ans"
    Z = "z"
    B = "b"


Spec = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Profile:
    """One wire format: the pyiso8583 spec and the envelope around it."""

    name: str
    spec: Spec
    kinds: dict[str, Kind]
    header_len: int            # bytes between the length header and the MTI (TPDU + app header)
    default_header: bytes
    mac_alg: MacAlgorithm
    max_frame: int = 8192
    description: str = ""
    table: dict[int, tuple[str, Kind]] = field(default_factory=dict, compare=False, repr=False)
    """Field number → (pyiso8583 key, kind): the codec's hot-path lookup table."""
    bcd_track: bool = False
    """Track data (kind ``z``) travels as BCD with ``=`` as nibble ``D``."""

    rtable: dict[str, tuple[int, Kind]] = field(default_factory=dict, compare=False, repr=False)
    """pyiso8583 key → (field number, kind), for decoding."""
    length_header: LengthHeader = DEFAULT_LENGTH
    """The length in front of every message (2-byte binary for both bundled profiles)."""
    tpdu_len: int = 0
    """How many bytes of the header are a TPDU (ID, destination, source: a host swaps the addresses
    in its answer); the rest is the application header."""
    base: str = ""
    """The bundled profile this one was built on (:func:`build_profile`); its own name for those."""

    def __post_init__(self) -> None:
        self.table.update({int(k): (k, kind) for k, kind in self.kinds.items()})
        self.rtable.update({k: (int(k), kind) for k, kind in self.kinds.items()})

    def kind(self, field: str) -> Kind:
        return self.kinds[field]

    def has_field(self, field: int) -> bool:
        return str(field) in self.kinds


# (field, kind, len_type 0/2/3 for fixed/LL/LLL, max length in characters/digits/bytes, description)
_CUP_FIELDS: tuple[tuple[int, Kind, int, int, str], ...] = (
    (2, Kind.N, 2, 19, "Primary account number"),
    (3, Kind.N, 0, 6, "Processing code"),
    (4, Kind.N, 0, 12, "Amount, transaction"),
    (11, Kind.N, 0, 6, "System trace audit number"),
    (12, Kind.N, 0, 6, "Time, local transaction (hhmmss)"),
    (13, Kind.N, 0, 4, "Date, local transaction (MMDD)"),
    (14, Kind.N, 0, 4, "Date, expiration (YYMM)"),
    (15, Kind.N, 0, 4, "Date, settlement (MMDD)"),
    (22, Kind.N, 0, 3, "POS entry mode (left-aligned BCD)"),
    (23, Kind.N, 0, 3, "Card sequence number"),
    (25, Kind.N, 0, 2, "POS condition code"),
    (26, Kind.N, 0, 2, "POS PIN capture code"),
    (32, Kind.N, 2, 11, "Acquiring institution identification code"),
    (35, Kind.Z, 2, 37, "Track 2 data"),
    (36, Kind.Z, 3, 104, "Track 3 data"),
    (37, Kind.AN, 0, 12, "Retrieval reference number"),
    (38, Kind.AN, 0, 6, "Authorization identification response"),
    (39, Kind.AN, 0, 2, "Response code"),
    (41, Kind.ANS, 0, 8, "Card acceptor terminal identification"),
    (42, Kind.ANS, 0, 15, "Card acceptor identification code"),
    (44, Kind.ANS, 2, 25, "Additional response data"),
    (48, Kind.ANS, 3, 322, "Additional data, private"),
    (49, Kind.AN, 0, 3, "Currency code, transaction"),
    (52, Kind.B, 0, 8, "PIN data (ISO 9564 format 0, encrypted)"),
    (53, Kind.N, 0, 16, "Security related control information"),
    (54, Kind.ANS, 3, 120, "Additional amounts (balance)"),
    (55, Kind.B, 3, 255, "ICC system related data (BER-TLV)"),
    (60, Kind.N, 3, 17, "Reserved private: 60.1 type, 60.2 batch, 60.3 network management code"),
    (61, Kind.N, 3, 29, "Original message: 61.1 batch, 61.2 STAN, 61.3 date"),
    (62, Kind.B, 3, 512, "Reserved private (working keys in 0810)"),
    (63, Kind.ANS, 3, 63, "Reserved private (operator)"),
    (64, Kind.B, 0, 8, "Message authentication code"),
)
_LEFT_ALIGNED = {22}   # CUP: "051" → 05 10


def _cup_spec() -> Spec:
    spec: Spec = {
        "h": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 11, "desc": "TPDU + header"},
        "t": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 2, "desc": "Message type (BCD)"},
        "p": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8, "desc": "Bitmap, primary"},
        "1": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8, "desc": "Bitmap, secondary"},
    }
    for num, kind, ltype, maxlen, desc in _CUP_FIELDS:
        f: dict[str, Any] = {"desc": desc, "len_enc": "bcd", "len_type": {0: 0, 2: 1, 3: 2}[ltype]}
        if kind in (Kind.N, Kind.Z):
            f.update(data_enc="b", len_count="nibbles", max_len=maxlen)
            if ltype or maxlen % 2:
                f["right_pad" if (ltype or num in _LEFT_ALIGNED) else "left_pad"] = "0"
        elif kind is Kind.B:
            f.update(data_enc="b", max_len=maxlen)
        else:
            f.update(data_enc="ascii", max_len=maxlen)
        spec[str(num)] = f
    return spec


def _iso87_spec() -> Spec:
    """pyiso8583's default spec as it is (ISO 8583:1987): field 62 stays ``ans`` LLLVAR, so the
    working keys of an 0810 travel as hex text there and any tool on the default spec decodes them."""
    spec: Spec = copy.deepcopy(iso8583.specs.default)
    spec["h"]["max_len"] = 0
    return spec


# ISO 8583:1987 fields whose values are numeric (n), whatever their encoding
_NUMERIC = frozenset({2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                      25, 26, 29, 30, 31, 32, 33, 50, 51, 53, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
                      80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90})
_TRACK_FIELDS = frozenset({35, 36, 45})


def _derive_kind(n: int, f: Mapping[str, Any]) -> Kind:
    """The kind of a field from its pyiso8583 definition: binary data is ``b`` unless counted in
    nibbles (packed BCD digits: ``n``, or ``z`` for track data); text is ``n`` for the numeric fields
    of ISO 8583:1987, ``z`` for track data, ``ans`` otherwise."""
    if f.get("data_enc") == "b":
        if f.get("len_count") == "nibbles":
            return Kind.Z if n in _TRACK_FIELDS else Kind.N
        return Kind.B
    if n in _TRACK_FIELDS:
        return Kind.Z
    return Kind.N if n in _NUMERIC else Kind.ANS


def _iso87_kinds(spec: Spec) -> dict[str, Kind]:
    kinds: dict[str, Kind] = {}
    for key, f in spec.items():
        if not key.isdigit() or key in ("1", "65"):  # bitmaps, not data
            continue
        n = int(key)
        kinds[key] = Kind.B if f["data_enc"] == "b" else _derive_kind(n, f)
    return kinds


CUP_DEFAULT_HEADER = bytes.fromhex("6000030000" "603100311312")
"""TPDU ``60 0003 0000`` (ID 60, destination 0003, source 0000) + application header
``60 31 00 31 13 12`` (application type 60, software version 31, terminal status 0 …)."""

CUP = Profile(
    name="cup",
    spec=_cup_spec(),
    kinds={str(n): k for n, k, *_ in _CUP_FIELDS},
    header_len=11,
    default_header=CUP_DEFAULT_HEADER,
    mac_alg=MacAlgorithm.CUP_ECB,
    description="China UnionPay-style POS: BCD, TPDU + 6-byte header, CUP ECB MAC",
    bcd_track=True,
    tpdu_len=5,
    base="cup",
)

ISO87ASCII = Profile(
    name="iso87ascii",
    spec=(_s := _iso87_spec()),
    kinds=_iso87_kinds(_s),
    header_len=0,
    default_header=b"",
    mac_alg=MacAlgorithm.X9_19,
    description="ISO 8583:1987, ASCII numerics and lengths, binary bitmap, X9.19 MAC",
    base="iso87ascii",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (CUP, ISO87ASCII)}


def get_profile(name: str) -> Profile:
    from protocol.errors import ConfigError

    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown ISO 8583 profile {name!r}; known: {', '.join(PROFILES)}") from None


# --- profiles as data ------------------------------------------------------------------------------
FIELD_KEYS = frozenset({"data_enc", "len_enc", "len_type", "max_len", "desc", "len_count", "left_pad",
                        "right_pad", "kind"})
"""What a field definition may hold: pyiso8583's spec keys, and ``kind`` (posemu's value type)."""
_KINDS = {k.value: k for k in Kind}


def _check_field(key: str, f: object, where: str) -> dict[str, Any]:
    """A pyiso8583 field definition from data, checked: a :class:`ConfigError` names what is wrong."""
    at = f"{where}.{key}"
    if not isinstance(f, Mapping):
        raise ConfigError(f"{at} must be a table of pyiso8583 spec keys (data_enc, len_enc, len_type, max_len…)")
    unknown = sorted(set(f) - FIELD_KEYS)
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; known: {', '.join(sorted(FIELD_KEYS))}")
    out = dict(f)
    for name in ("data_enc", "len_enc"):
        v = out.get(name)
        if v is None:
            continue
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{at}.{name} must be a string")
        if v not in ("b", "bcd") or (name == "data_enc" and v == "bcd"):
            try:
                codecs.lookup(v)
            except LookupError:
                raise ConfigError(f"{at}.{name}: {v!r} is not 'b'" + (", 'bcd'" if name == "len_enc" else "")
                                  + " or a text encoding such as 'ascii' or 'cp500'") from None
    for name, lo, hi in (("len_type", 0, 9), ("max_len", 0, 99_999)):
        v = out.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise ConfigError(f"{at}.{name} must be a whole number from {lo} to {hi}")
    if out.get("len_count", "bytes") not in ("bytes", "nibbles"):
        raise ConfigError(f"{at}.len_count must be 'bytes' or 'nibbles'")
    for name in ("left_pad", "right_pad"):
        v = out.get(name)
        if v is not None and not (isinstance(v, str) and len(v) == 1):
            raise ConfigError(f"{at}.{name} must be one character")
    if "left_pad" in out and "right_pad" in out:
        raise ConfigError(f"{at}: give left_pad or right_pad, not both")
    if "kind" in out and (not isinstance(out["kind"], str) or out["kind"] not in _KINDS):
        raise ConfigError(f"{at}.kind must be one of {', '.join(_KINDS)}")
    if "desc" in out and not isinstance(out["desc"], str):
        raise ConfigError(f"{at}.desc must be a string")
    return out


def build_profile(base: str | None, *, name: str | None = None,
                  fields: Mapping[str, Mapping[str, Any]] | None = None,
                  tpdu: bytes | None = None, app_header: bytes | None = None,
                  length_header: LengthHeader | None = None, mac_alg: MacAlgorithm | None = None,
                  where: str = "host.spec") -> Profile:
    """A profile from data: ``base`` (``cup``, ``iso87ascii``; ``None`` for a complete spec in
    ``fields``), pyiso8583 field definitions that add fields or change those of the base (a partial
    definition such as ``{"62": {"data_enc": "b"}}`` changes only the keys it names), the envelope
    (``tpdu``/``app_header``: ``None`` keeps the base's, ``b""`` drops it; the length header) and the
    MAC algorithm. With nothing changed, the base profile itself.

    >>> p = build_profile("iso87ascii", fields={"62": {"data_enc": "b"}}, name="acme")
    >>> p.name, p.kind("62"), p.kind("2"), p.header_len
    ('acme', <Kind.B: 'b'>, <Kind.N: 'n'>, 0)
    >>> build_profile("cup", tpdu=bytes.fromhex("6000010000"), app_header=b"").header_len
    5
    >>> build_profile("cup") is CUP
    True
    """
    fields = fields or {}
    if base is not None and base not in PROFILES:
        raise ConfigError(f"{where}: base must be one of {', '.join(PROFILES)} (or none with a complete spec)")
    parent = PROFILES[base] if base is not None else None
    if parent is not None and not fields and tpdu is None and app_header is None \
            and (length_header is None or length_header == parent.length_header) \
            and (mac_alg is None or mac_alg is parent.mac_alg) and name in (None, parent.name):
        return parent
    spec: Spec = copy.deepcopy(parent.spec) if parent is not None else {}
    kinds: dict[str, Kind] = dict(parent.kinds) if parent is not None else {}
    for key, f in fields.items():
        if not isinstance(key, str) or not ((key.isdigit() and 1 <= int(key) <= 128) or key in ("h", "t", "p")):
            raise ConfigError(f"{where}: {key!r} is not a field: 1 to 128, h (header), t (MTI) or p (bitmap)")
        checked = _check_field(key, f, where)
        kind = checked.pop("kind", None)
        old = spec.get(key, {})
        merged = {**old, **checked}
        if not old:
            for need in ("data_enc", "len_enc", "len_type", "max_len"):
                if need not in merged:
                    raise ConfigError(f"{where}.{key}: a new field needs {need}")
        merged.setdefault("desc", f"Field {key}")
        if "left_pad" in checked:
            merged.pop("right_pad", None)
        if "right_pad" in checked:
            merged.pop("left_pad", None)
        spec[key] = merged
        if key.isdigit() and key not in ("1", "65"):
            if kind is not None:
                kinds[key] = _KINDS[kind]
            elif not old or {"data_enc", "len_count"} & checked.keys() or key not in kinds:
                kinds[key] = _derive_kind(int(key), merged)
    for need in ("t", "p"):
        if need not in spec:
            raise ConfigError(f"{where}: a complete spec needs field {need!r} (the MTI and the primary bitmap)")
    if "1" not in spec:
        spec["1"] = {**spec["p"], "desc": "Bitmap, secondary"}
    if parent is not None:
        default_tpdu = parent.default_header[:parent.tpdu_len]
        default_app = parent.default_header[parent.tpdu_len:]
    else:
        default_tpdu = default_app = b""
    tp = default_tpdu if tpdu is None else tpdu
    app = default_app if app_header is None else app_header
    header = tp + app
    spec["h"] = ({"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": len(header),
                  "desc": "TPDU + application header"} if header
                 else {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "No header"})
    alg = mac_alg or (parent.mac_alg if parent is not None else MacAlgorithm.X9_19)
    track = spec.get("35", {})
    return Profile(
        name=name or (f"{parent.name}+" if parent is not None else "custom"),
        spec=spec, kinds=kinds, header_len=len(header), default_header=header, mac_alg=alg,
        max_frame=parent.max_frame if parent is not None else 8192,
        description=f"built on {parent.name}" if parent is not None else "a complete spec from data",
        bcd_track=track.get("data_enc") == "b",
        length_header=length_header or (parent.length_header if parent is not None else DEFAULT_LENGTH),
        tpdu_len=len(tp), base=parent.name if parent is not None else "",
    )
