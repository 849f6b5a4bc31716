"""ISO 8583 message profiles as data.

A profile is a pyiso8583 spec (a plain dict, see :mod:`iso8583.specs`) plus what the codec
needs around it: the envelope inside the frame, the field kinds, the MAC algorithm.

``cup`` — a China UnionPay-style POS terminal profile (CUP POS terminal ISO 8583 usage, as
in open-source CUP POS code, see shared protocol facts §6): packed-BCD numerics and lengths
(LLVAR = 1 BCD length byte, LLLVAR = 2), binary primary bitmap, 64 fields; the frame is a
2-byte binary length, a 5-byte TPDU and a 6-byte application header (12 BCD digits), then MTI
(2 bytes BCD). Field 22 is left-aligned BCD ("051" → ``05 10``); track 2 (field 35) is BCD with
the separator ``=`` as nibble ``D``. MAC in field 64: the CUP "ECB" MAC.

``iso87ascii`` — ISO 8583:1987 with ASCII numerics and lengths and a binary bitmap (pyiso8583's
``default`` spec), 2-byte binary length header and no TPDU: what third-party clients and load
generators speak. MAC in field 64 (and 128): ANSI X9.19 retail MAC.

Field kinds (:class:`Kind`) decide the Python type of a value in a :class:`protocol.iso.Message`:
``n`` digits, ``an``/``ans`` text, ``z`` track data (digits and ``=``), all ``str``; ``b`` binary,
``bytes``.

>>> CUP.spec["22"]["max_len"], CUP.spec["22"]["right_pad"]
(3, '0')
>>> ISO87ASCII.kind("4"), ISO87ASCII.kind("52")
(<Kind.N: 'n'>, <Kind.B: 'b'>)
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
from typing import Any

import iso8583.specs

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
    spec: Spec = copy.deepcopy(iso8583.specs.default)
    spec["h"]["max_len"] = 0
    spec["62"] = {"data_enc": "b", "len_enc": "ascii", "len_type": 3, "max_len": 512,
                  "desc": "Reserved private (working keys in 0810)"}
    return spec


def _iso87_kinds(spec: Spec) -> dict[str, Kind]:
    kinds: dict[str, Kind] = {}
    text_numeric = {2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                    25, 26, 29, 30, 31, 32, 33, 50, 51, 53, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
                    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90}
    for key, f in spec.items():
        if not key.isdigit() or key in ("1", "65"):  # bitmaps, not data
            continue
        n = int(key)
        if f["data_enc"] == "b":
            kinds[key] = Kind.B
        elif n in (35, 36, 45):
            kinds[key] = Kind.Z
        elif n in text_numeric:
            kinds[key] = Kind.N
        else:
            kinds[key] = Kind.ANS
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
)

ISO87ASCII = Profile(
    name="iso87ascii",
    spec=(_s := _iso87_spec()),
    kinds=_iso87_kinds(_s),
    header_len=0,
    default_header=b"",
    mac_alg=MacAlgorithm.X9_19,
    description="ISO 8583:1987, ASCII numerics and lengths, binary bitmap, X9.19 MAC",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (CUP, ISO87ASCII)}


def get_profile(name: str) -> Profile:
    from protocol.errors import ConfigError

    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown ISO 8583 profile {name!r}; known: {', '.join(PROFILES)}") from None
