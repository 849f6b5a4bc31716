"""Answer to Reset (ISO/IEC 7816-3 §8): parse with construct, derive parameters, build.

Layout (§8.2): ``TS T0 {TAi TBi TCi TDi} T1…TK [TCK]``.

* TS (§8.1) — ``3B`` direct convention, ``3F`` inverse convention. Bytes reported by a
  reader (PC/SC, vpcd) are already decoded, so only TS itself tells the convention.
* T0 (§8.2.2) — Y1 in the high nibble flags TA1/TB1/TC1/TD1, K in the low nibble is the
  number of historical bytes.
* TDi (§8.2.3) — Yi+1 in the high nibble flags the next group; the low nibble is a protocol
  type T (``T=15`` announces global interface bytes, not a protocol).
* TCK (§8.2.5) — present unless only T=0 is offered; the XOR of T0 … TCK is zero.

The structure is declared once with construct (a recursive chain of interface groups, each
group's presence flags taken from the Y nibble before it) and used to parse and to build.
construct errors become :class:`protocol.errors.DecodeError` with the byte position.

Derived parameters (§8.3): Fi/fmax and Di from TA1 (Table 7/8, default FI = DI = 1 →
Fi 372, Di 1), extra guard time N from TC1 (§8.3, guard time 12 etu + N etu; N = 255 is the
minimum: 12 etu for T=0, 11 for T=1), WI from TC2 (§10.2, default 10; WT = WI × 960 × Fi/f),
specific mode from TA2, T=1 IFSC/CWI/BWI from the first TA/TB after T=1 (§11.4).

Historical bytes (ISO/IEC 7816-4 §8.1.1): :func:`parse_historical` checks the category
indicator and the COMPACT-TLV objects that follow it (see :class:`HistoricalBytes`).

>>> a = parse_atr(bytes.fromhex("3B6800000073C84000009000"))
>>> a.protocols, a.fi, a.di, a.historical.hex()
((0,), 372, 1, '0073c84000009000')
>>> parse_atr(a.encode()) == a
True
"""

from __future__ import annotations

import enum
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from construct import (
    BitStruct,
    Byte,
    Bytes,
    ConstructError,
    Flag,
    If,
    LazyBound,
    Nibble,
    Struct,
    this,
)

from protocol.binary import require_bytes as _as_bytes
from protocol.errors import DecodeError, EncodeError

__all__ = [
    "DI_TABLE",
    "FI_TABLE",
    "Atr",
    "Convention",
    "HistoricalBytes",
    "InterfaceGroup",
    "build_atr",
    "parse_atr",
    "parse_historical",
]

MAX_ATR_LENGTH = 33
"""TS plus at most 32 characters (§8.2.1)."""

FI_TABLE: dict[int, tuple[int, float]] = {
    0x0: (372, 4.0), 0x1: (372, 5.0), 0x2: (558, 6.0), 0x3: (744, 8.0), 0x4: (1116, 12.0),
    0x5: (1488, 16.0), 0x6: (1860, 20.0), 0x9: (512, 5.0), 0xA: (768, 7.5), 0xB: (1024, 10.0),
    0xC: (1536, 15.0), 0xD: (2048, 20.0),
}
"""ISO/IEC 7816-3 §8.3 Table 7: FI → (Fi clock rate conversion integer, fmax MHz). Others RFU."""

DI_TABLE: dict[int, int] = {0x1: 1, 0x2: 2, 0x3: 4, 0x4: 8, 0x5: 16, 0x6: 32, 0x7: 64, 0x8: 12, 0x9: 20}
"""ISO/IEC 7816-3 §8.3 Table 8: DI → Di baud rate adjustment integer. Others RFU."""


class Convention(enum.Enum):
    """TS (§8.1): how the card codes its characters."""

    DIRECT = 0x3B
    INVERSE = 0x3F




# --- the construct declaration -------------------------------------------------------------
_Y = BitStruct("td" / Flag, "tc" / Flag, "tb" / Flag, "ta" / Flag, "low" / Nibble)

_Group: Any = Struct(
    "y" / _Y,  # T0 for the first group (low = K); TDi-1 for later ones (low = protocol T)
    "ta" / If(this.y.ta, Byte),
    "tb" / If(this.y.tb, Byte),
    "tc" / If(this.y.tc, Byte),
    "next" / If(this.y.td, LazyBound(lambda: _Group)),
)


def _chain_protocols(chain: Any) -> list[int]:
    out = []
    node = chain.next if chain is not None else None
    while node is not None:
        out.append(node.y.low)
        node = node.next
    return out


def _tck_present(ctx: Any) -> bool:
    return any(t != 0 for t in _chain_protocols(ctx.chain))


_ATR: Any = Struct(
    "ts" / Byte,
    "chain" / _Group,
    "historical" / Bytes(this.chain.y.low),
    "tck" / If(_tck_present, Byte),
)


# --- the model -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InterfaceGroup:
    """Interface bytes of group *i*: TAi, TBi, TCi and the protocol T its TDi announces.

    ``protocol`` is ``None`` when TDi is absent (the last group).
    """

    ta: int | None = None
    tb: int | None = None
    tc: int | None = None
    protocol: int | None = None

    def __post_init__(self) -> None:
        for name in ("ta", "tb", "tc", "protocol"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be int or None, not {type(v).__name__}")
            top = 0x0F if name == "protocol" else 0xFF
            if not 0 <= v <= top:
                raise EncodeError(f"{name} {v} out of range 0..{top}", field=name)


@dataclass(frozen=True, slots=True)
class Atr:
    """A parsed Answer to Reset; :meth:`encode` builds its bytes (TCK computed)."""

    convention: Convention
    groups: tuple[InterfaceGroup, ...]
    historical: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.convention, Convention):
            raise TypeError("convention must be a Convention")
        if not isinstance(self.historical, bytes):
            raise TypeError("historical must be bytes")
        if not isinstance(self.groups, tuple) or not all(isinstance(g, InterfaceGroup) for g in self.groups):
            raise TypeError("groups must be a tuple of InterfaceGroup")
        if not self.groups:
            raise EncodeError("an ATR has at least the group that T0 announces", field="T0")
        if len(self.historical) > 15:
            raise EncodeError("at most 15 historical bytes", field="historical")
        for i, g in enumerate(self.groups):
            last = i == len(self.groups) - 1
            if last and g.protocol is not None:
                raise EncodeError(f"TD{i + 1} announces a group that is missing", field=f"TD{i + 1}")
            if not last and g.protocol is None:
                raise EncodeError(f"group {i + 2} present without TD{i + 1}", field=f"TD{i + 1}")

    # --- raw interface bytes ---------------------------------------------------------------
    def _byte(self, kind: str, i: int) -> int | None:
        if i > len(self.groups):
            return None
        value: int | None = getattr(self.groups[i - 1], kind)
        return value

    def ta(self, i: int) -> int | None:
        return self._byte("ta", i)

    def tb(self, i: int) -> int | None:
        return self._byte("tb", i)

    def tc(self, i: int) -> int | None:
        return self._byte("tc", i)

    # --- derived parameters (§8.3) ---------------------------------------------------------
    @property
    def protocols(self) -> tuple[int, ...]:
        """Transmission protocols offered, first = default (§8.2.3); T=0 when no TD1."""
        ts = [g.protocol for g in self.groups if g.protocol is not None and g.protocol != 15]
        seen: list[int] = []
        for t in ts:
            if t not in seen:
                seen.append(t)
        return tuple(seen) if seen else (0,)

    @property
    def has_tck(self) -> bool:
        return any(g.protocol not in (None, 0) for g in self.groups)

    @property
    def fi_code(self) -> int:
        ta1 = self.ta(1)
        return 1 if ta1 is None else ta1 >> 4

    @property
    def di_code(self) -> int:
        ta1 = self.ta(1)
        return 1 if ta1 is None else ta1 & 0x0F

    @property
    def fi(self) -> int:
        """Clock rate conversion integer Fi (Table 7); ``DecodeError`` if TA1 codes an RFU value."""
        try:
            return FI_TABLE[self.fi_code][0]
        except KeyError:
            raise DecodeError(f"TA1 codes RFU value FI={self.fi_code}", field="TA1", pos=2) from None

    @property
    def fmax_mhz(self) -> float:
        try:
            return FI_TABLE[self.fi_code][1]
        except KeyError:
            raise DecodeError(f"TA1 codes RFU value FI={self.fi_code}", field="TA1", pos=2) from None

    @property
    def di(self) -> int:
        """Baud rate adjustment integer Di (Table 8)."""
        try:
            return DI_TABLE[self.di_code]
        except KeyError:
            raise DecodeError(f"TA1 codes RFU value DI={self.di_code}", field="TA1", pos=2) from None

    @property
    def extra_guard_time(self) -> int:
        """N from TC1 (§8.3), default 0."""
        tc1 = self.tc(1)
        return 0 if tc1 is None else tc1

    def guard_time_etu(self, protocol: int = 0) -> int:
        """Character guard time in etu (§8.3): 12 + N; N = 255 means 12 (T=0) or 11 (T=1)."""
        n = self.extra_guard_time
        if n == 255:
            return 11 if protocol == 1 else 12
        return 12 + n

    @property
    def wi(self) -> int:
        """Waiting time integer for T=0 from TC2 (§10.2), default 10."""
        if len(self.groups) >= 2 and self.groups[0].protocol == 0:
            tc2 = self.tc(2)
            if tc2:
                return tc2
        return 10

    def work_waiting_time(self, f_hz: float = 3.57e6) -> float:
        """T=0 WT in seconds at clock ``f_hz``: WI × 960 × Fi / f (§10.2)."""
        return self.wi * 960 * self.fi / f_hz

    def etu(self, f_hz: float = 3.57e6) -> float:
        """Elementary time unit in seconds: Fi / (Di × f) (§7.1)."""
        return self.fi / (self.di * f_hz)

    @property
    def specific_mode(self) -> bool:
        """TA2 present: the card works in specific mode only (§8.3, no PPS)."""
        return self.ta(2) is not None

    def _t1_byte(self, kind: str) -> int | None:
        for i, g in enumerate(self.groups[:-1]):
            if i >= 1 and g.protocol == 1:  # TDi with i >= 2 (§11.4)
                value: int | None = getattr(self.groups[i + 1], kind)
                return value
        return None

    @property
    def ifsc(self) -> int:
        """T=1 information field size of the card (§11.4.2), default 32."""
        v = self._t1_byte("ta")
        return 32 if v is None else v

    @property
    def cwi(self) -> int:
        v = self._t1_byte("tb")
        return 13 if v is None else v & 0x0F

    @property
    def bwi(self) -> int:
        v = self._t1_byte("tb")
        return 4 if v is None else v >> 4

    # --- encoding --------------------------------------------------------------------------
    def _container(self) -> dict[str, Any]:
        def node(i: int, low: int) -> dict[str, Any]:
            g = self.groups[i]
            has_next = i + 1 < len(self.groups)
            return {
                "y": {"td": has_next, "tc": g.tc is not None, "tb": g.tb is not None,
                      "ta": g.ta is not None, "low": low},
                "ta": g.ta, "tb": g.tb, "tc": g.tc,
                "next": node(i + 1, g.protocol or 0) if has_next else None,
            }

        return {"ts": self.convention.value, "chain": node(0, len(self.historical)),
                "historical": self.historical, "tck": 0 if self.has_tck else None}

    def encode(self) -> bytes:
        """The ATR bytes, TCK included when required (§8.2.5)."""
        try:
            raw = bytes(_ATR.build(self._container()))
        except ConstructError as e:  # pragma: no cover - the model is validated above
            raise EncodeError(f"ATR does not build: {e}") from None
        if self.has_tck:
            tck = 0
            for b in raw[1:-1]:
                tck ^= b
            raw = raw[:-1] + bytes([tck])
        if len(raw) > MAX_ATR_LENGTH:
            raise EncodeError(f"ATR of {len(raw)} bytes exceeds {MAX_ATR_LENGTH}")
        return raw

    def describe(self) -> str:
        """One line for a trace or the ``readers`` command."""
        ps = "/".join(f"T={t}" for t in self.protocols)
        try:
            rate = f"Fi={self.fi} Di={self.di}"
        except DecodeError:
            rate = f"FI={self.fi_code} DI={self.di_code} (RFU)"
        return (f"{self.convention.name.lower()} convention, {ps}, {rate}, N={self.extra_guard_time}, "
                f"WI={self.wi}, {len(self.historical)} historical bytes")


def parse_atr(raw: bytes) -> Atr:
    """Parse an ATR (ISO/IEC 7816-3 §8.2); DecodeError with field and position on any fault.

    >>> parse_atr(bytes.fromhex("3B80"))
    Traceback (most recent call last):
    ...
    protocol.errors.DecodeError: ATR truncated: field TD1, position 2, raw 3B80
    """
    raw = _as_bytes(raw, "raw")
    if not raw:
        raise DecodeError("empty ATR", field="TS", pos=0, raw=raw)
    if raw[0] not in (0x3B, 0x3F):
        raise DecodeError(f"TS {raw[0]:02X} is neither 3B (direct) nor 3F (inverse)", field="TS", pos=0, raw=raw)
    if len(raw) > MAX_ATR_LENGTH:
        raise DecodeError(f"ATR of {len(raw)} bytes exceeds {MAX_ATR_LENGTH}", pos=MAX_ATR_LENGTH, raw=raw)
    stream = io.BytesIO(raw)
    try:
        obj = _ATR.parse_stream(stream)
    except ConstructError as e:
        raise DecodeError("ATR truncated", field=_field_of(e, raw), pos=stream.tell(), raw=raw) from None
    end = stream.tell()
    if end != len(raw):
        extra = "TCK present although only T=0 is offered" if end == len(raw) - 1 else "extra bytes"
        raise DecodeError(f"ATR has {len(raw) - end} byte(s) after its end ({extra})", field="TCK",
                          pos=end, raw=raw)
    groups: list[InterfaceGroup] = []
    node = obj.chain
    while node is not None:
        nxt = node.next
        groups.append(InterfaceGroup(node.ta, node.tb, node.tc, None if nxt is None else nxt.y.low))
        node = nxt
    atr = Atr(Convention(raw[0]), tuple(groups), bytes(obj.historical))
    if obj.tck is not None:
        x = 0
        for b in raw[1:]:
            x ^= b
        if x != 0:
            raise DecodeError(f"TCK check failed (XOR of T0…TCK is {x:02X}, not 00)", field="TCK",
                              pos=len(raw) - 1, raw=raw)
    return atr


def _field_of(e: ConstructError, raw: bytes) -> str:
    """Name the interface byte a construct path points at (``chain -> next -> ta`` → ``TA2``)."""
    path = str(getattr(e, "path", "") or "")
    parts = [p.strip() for p in path.split("->")]
    depth = sum(1 for p in parts if p == "next")
    leaf = parts[-1] if parts else ""
    if leaf in ("ta", "tb", "tc"):
        return f"{leaf.upper()}{depth + 1}"
    if leaf == "y" or leaf == "next":
        return "T0" if depth == 0 else f"TD{depth}"
    if leaf == "historical":
        return "historical"
    if leaf == "tck":
        return "TCK"
    return leaf or "ATR"


def build_atr(
    *,
    protocols: Sequence[int] = (0,),
    fi: int = 1,
    di: int = 1,
    extra_guard_time: int | None = 0,
    tb1_zero: bool = True,
    wi: int | None = None,
    ifsc: int | None = None,
    bwi_cwi: int | None = None,
    specific_mode: bool = False,
    historical: bytes = b"",
    convention: Convention = Convention.DIRECT,
) -> Atr:
    """An ATR from parameters (ISO/IEC 7816-3 §8; EMV Book 1 §8.3 basic ATRs).

    ``fi``/``di`` are the FI/DI *codes* of TA1 (omitted when both are 1, the default);
    ``tb1_zero`` writes TB1 = 00 as EMV requires; ``extra_guard_time`` is TC1 (``None`` omits it);
    ``wi`` is TC2 for T=0; ``ifsc``/``bwi_cwi`` are TA/TB for T=1.

    >>> build_atr(protocols=(0,), historical=b"PEMU").encode().hex().upper()
    '3B64000050454D55'
    >>> build_atr(protocols=(1,), ifsc=0xFE, bwi_cwi=0x45).encode().hex().upper()
    '3BE000008131FE45EB'
    """
    protos = list(protocols)
    if not protos:
        raise EncodeError("at least one protocol", field="TD1")
    if fi not in FI_TABLE or di not in DI_TABLE:
        raise EncodeError(f"FI={fi} DI={di} is not a defined rate", field="TA1")
    ta1 = None if (fi, di) == (1, 1) else (fi << 4) | di
    g1 = {"ta": ta1, "tb": 0 if tb1_zero else None, "tc": extra_guard_time}
    groups: list[dict[str, int | None]] = [g1]
    protos_td: list[int] = []  # protos_td[i] is the T of TD(i+1)
    implicit_t0_only = protos == [0] and wi is None and not specific_mode
    if not implicit_t0_only:
        # group 2: TA2 (specific mode), TC2 (WI, T=0 only)
        protos_td.append(protos[0])
        groups.append({"ta": protos[0] if specific_mode else None, "tb": None,
                       "tc": wi if protos[0] == 0 else None})
        for t in protos[1:]:
            protos_td.append(t)
            groups.append({"ta": None, "tb": None, "tc": None})
        if 1 in protos and (ifsc is not None or bwi_cwi is not None):
            # T=1 bytes: the group after the first TDi (i >= 2) announcing T=1 (§11.4)
            cand = [i for i in range(1, len(protos_td)) if protos_td[i] == 1]
            if cand:
                target = cand[0] + 1
            else:
                protos_td.append(1)
                groups.append({"ta": None, "tb": None, "tc": None})
                target = len(groups) - 1
            groups[target]["ta"] = ifsc
            groups[target]["tb"] = bwi_cwi
    out = []
    for i, g in enumerate(groups):
        proto = protos_td[i] if i < len(protos_td) else None
        out.append(InterfaceGroup(g["ta"], g["tb"], g["tc"], proto))
    return Atr(convention, tuple(out), bytes(historical))


# --- historical bytes (ISO/IEC 7816-4 §8.1.1) --------------------------------------------------
COMPACT_TLV_TAGS: dict[int, str] = {
    0x1: "country code",
    0x2: "issuer identification number",
    0x3: "card service data",
    0x4: "initial access data",
    0x5: "card issuer's data",
    0x6: "pre-issuing data",
    0x7: "card capabilities",
    0x8: "status indicator",
    0xF: "application identifier",
}
"""ISO/IEC 7816-4 §8.1.1.2 (Table 82 in the 2005 edition): COMPACT-TLV tags of the historical bytes."""


@dataclass(frozen=True, slots=True)
class HistoricalBytes:
    """The historical bytes of an ATR, decoded (ISO/IEC 7816-4 §8.1.1).

    ``category`` is the category indicator (first byte): ``00`` — COMPACT-TLV objects, then a
    mandatory 3-byte status indicator (LCS, SW1 SW2) outside TLV; ``80`` — COMPACT-TLV
    objects only, the status indicator (if any) being tag 8; ``10`` — a DIR data reference
    (one byte). ``81``–``8F`` are RFU and anything else is proprietary (not decodable, kept
    in ``proprietary``). ``objects`` are the ``(tag, value)`` COMPACT-TLV pairs (one byte
    ``tag << 4 | length``, then the value).
    """

    category: int | None
    objects: tuple[tuple[int, bytes], ...] = ()
    status: bytes = b""               # LCS and/or SW1 SW2, from tag 8 or category 00
    dir_reference: int | None = None
    proprietary: bytes = b""

    def get(self, tag: int) -> bytes | None:
        """The value of the first COMPACT-TLV object with ``tag``, or ``None``."""
        return next((v for t, v in self.objects if t == tag), None)


_COMPACT_LENGTHS = {0x3: (1, 1), 0x7: (1, 3), 0x8: (1, 3), 0xF: (1, 15)}


def _compact_tlv(data: bytes, start: int, end: int, raw: bytes) -> tuple[tuple[int, bytes], ...]:
    out: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        tag, n = data[pos] >> 4, data[pos] & 0x0F
        if tag == 0:
            raise DecodeError("COMPACT-TLV tag 0 is not defined", field="historical", pos=pos, raw=raw)
        if pos + 1 + n > end:
            raise DecodeError(f"COMPACT-TLV tag {tag:X} ({COMPACT_TLV_TAGS.get(tag, 'RFU')}) announces {n} "
                              f"bytes, {end - pos - 1} follow", field=f"historical.{tag:X}", pos=pos, raw=raw)
        lo, hi = _COMPACT_LENGTHS.get(tag, (0, 15))
        if not lo <= n <= hi:
            raise DecodeError(f"COMPACT-TLV tag {tag:X} ({COMPACT_TLV_TAGS[tag]}) must be {lo}..{hi} bytes, "
                              f"not {n}", field=f"historical.{tag:X}", pos=pos, raw=raw)
        out.append((tag, bytes(data[pos + 1 : pos + 1 + n])))
        pos += 1 + n
    return tuple(out)


def parse_historical(data: bytes) -> HistoricalBytes:
    """Decode historical bytes by their category indicator (ISO/IEC 7816-4 §8.1.1.1).

    >>> h = parse_historical(bytes.fromhex("80318066B0840C016E0183009000"))
    >>> hex(h.category), [t for t, _ in h.objects], h.status.hex()
    ('0x80', [3, 6, 8], '009000')
    >>> parse_historical(bytes.fromhex("80318065B0"))
    Traceback (most recent call last):
    ...
    protocol.errors.DecodeError: COMPACT-TLV tag 6 (pre-issuing data) announces 5 bytes, 1 follow: field historical.6, \
position 3, raw 80318065B0
    """
    data = _as_bytes(data, "data")
    if not data:
        return HistoricalBytes(None)
    if len(data) > 15:
        raise DecodeError(f"{len(data)} historical bytes; T0 allows at most 15", field="historical", raw=data)
    cat = data[0]
    if cat == 0x00:
        if len(data) < 4:
            raise DecodeError("category 00 needs a 3-byte status indicator at the end", field="historical",
                              pos=len(data), raw=data)
        return HistoricalBytes(cat, _compact_tlv(data, 1, len(data) - 3, data), status=bytes(data[-3:]))
    if cat == 0x10:
        if len(data) != 2:
            raise DecodeError("category 10 is followed by exactly one DIR data reference byte",
                              field="historical", pos=1, raw=data)
        return HistoricalBytes(cat, dir_reference=data[1])
    if cat == 0x80:
        objs = _compact_tlv(data, 1, len(data), data)
        status = next((v for t, v in objs if t == 0x8), b"")
        if any(t == 0x8 for t, _ in objs[:-1]):
            raise DecodeError("the status indicator (tag 8) must be the last object", field="historical.8",
                              raw=data)
        return HistoricalBytes(cat, objs, status=status)
    if 0x81 <= cat <= 0x8F:
        raise DecodeError(f"category indicator {cat:02X} is reserved for future use", field="historical",
                          pos=0, raw=data)
    return HistoricalBytes(cat, proprietary=bytes(data[1:]))
