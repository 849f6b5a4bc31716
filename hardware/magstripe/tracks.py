"""Magnetic-stripe track codecs: characters, parity, LRC and the recorded bit stream.

The three ISO tracks (ISO/IEC 7811-2 and ISO/IEC 7813 for tracks 1 and 2, ISO 4909 for
track 3)::

    track  bits/char   value         SS  FS  ES  density  max chars (SS, ES, LRC included)
    1      6 + odd P   ASCII - 0x20  %   ^   ?   210 bpi  79
    2      4 + odd P   ASCII - 0x30  ;   =   ?    75 bpi  40
    3      4 + odd P   ASCII - 0x30  ;   =   ?   210 bpi  107

Each character is recorded least significant bit first, its parity bit last (ISO/IEC 7811-2,
coded character sets). The LRC character follows the end sentinel: every data-bit column of
SS…ES XORed (even column parity), with its own odd parity bit (ISO/IEC 7811-2, longitudinal
redundancy check). Clocking zeros precede and follow the data so that the reader can lock onto
the bit rate (ISO/IEC 7811-2, location of the data: the start sentinel begins 0.293 in from the
card's edge — 61 zeros at 210 bpi, 22 at 75 bpi).

>>> "".join(map(str, encode_chars(2, "12345")[:5]))  # ';' = 0xB: bits 1101, parity 0
'11010'
>>> format(lrc(1, "%ABC123?"), "#04x"), lrc(2, ";12345?")
('0x2a', 5)

Two decoders sit on the same rules:

* :func:`parse_track` is strict: it returns the data between the sentinels or raises
  :class:`~protocol.errors.DecodeError` whose ``field`` names the track, the character and the
  check (``track2.lrc``, ``track1.char[12].parity``), ``pos`` the bit offset in the input and
  ``partial`` what was decoded before the failure.
* :func:`decode_track` is a reader ASIC's view: it never raises for any input bit sequence; it
  returns a :class:`~hardware.ports.TrackRead` whose status says which check failed.

Both try the bit stream as recorded and, failing that, reversed — a card swiped the other way
round reaches the head end sentinel first, and real readers decode both directions.
"""

from __future__ import annotations

import enum
import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from hardware.ports import TrackRead, TrackStatus
from protocol.errors import DecodeError, EncodeError, PosemuError
from protocol.masking import mask_pan


class TrackNumberError(PosemuError, ValueError):
    """A track number other than 1, 2 or 3 was asked for (local misuse)."""


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """The recording rules of one ISO track."""

    number: int
    data_bits: int            # bits per character, parity excluded
    offset: int               # ASCII code of the character with value 0
    ss: str                   # start sentinel
    fs: str                   # field separator
    es: str                   # end sentinel
    bpi: float                # recording density, bits per inch
    max_chars: int            # including SS, ES and LRC
    clock_zeros: int          # leading and trailing clocking zeros

    @property
    def char_bits(self) -> int:
        return self.data_bits + 1

    @property
    def max_data(self) -> int:
        """Longest data between the sentinels."""
        return self.max_chars - 3

    @property
    def charset(self) -> str:
        """Every character the track's code can represent (SS and ES included)."""
        return "".join(chr(self.offset + v) for v in range(1 << self.data_bits))

    @property
    def data_charset(self) -> str:
        """Characters allowed between the sentinels: the code minus SS and ES."""
        return "".join(c for c in self.charset if c not in (self.ss, self.es))

    @property
    def cell_in(self) -> float:
        """Length of one bit cell on the stripe, inches."""
        return 1.0 / self.bpi


TRACKS: dict[int, TrackSpec] = {
    1: TrackSpec(1, 6, 0x20, "%", "^", "?", 210.0, 79, 61),
    2: TrackSpec(2, 4, 0x30, ";", "=", "?", 75.0, 40, 22),
    3: TrackSpec(3, 4, 0x30, ";", "=", "?", 210.0, 107, 61),
}


def track_spec(n: int) -> TrackSpec:
    """The :class:`TrackSpec` of track ``n`` (1, 2 or 3)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"track number must be an int, not {type(n).__name__}")
    spec = TRACKS.get(n)
    if spec is None:
        raise TrackNumberError(f"there is no track {n}; ISO stripes have tracks 1, 2 and 3")
    return spec


# --- encoding ---------------------------------------------------------------------------------

def _char_bits(value: int, data_bits: int) -> list[int]:
    """One character: data bits LSB first, then the odd-parity bit (ISO/IEC 7811-2, coded character sets)."""
    bits = [(value >> i) & 1 for i in range(data_bits)]
    bits.append(1 - (sum(bits) & 1))
    return bits


def lrc(n: int, framed: str) -> int:
    """The LRC value (data bits only) over ``framed`` = SS + data + ES (ISO/IEC 7811-2, LRC)."""
    spec = track_spec(n)
    acc = 0
    for c in framed:
        acc ^= ord(c) - spec.offset
    return acc & ((1 << spec.data_bits) - 1)


def _check_data(spec: TrackSpec, data: str) -> None:
    if not isinstance(data, str):
        raise TypeError(f"track data must be str, not {type(data).__name__}")
    if len(data) > spec.max_data:
        raise EncodeError(
            f"track {spec.number} holds at most {spec.max_data} characters between the sentinels, "
            f"got {len(data)}",
            field=f"track{spec.number}.length",
        )
    for i, c in enumerate(data):
        v = ord(c) - spec.offset
        if not 0 <= v < (1 << spec.data_bits) or c in (spec.ss, spec.es):
            raise EncodeError(
                f"character {i} is not in the track {spec.number} character set",
                field=f"track{spec.number}.data[{i}]",
            )


def encode_chars(n: int, data: str) -> list[int]:
    """SS + ``data`` + ES + LRC as bits (no clocking zeros)."""
    spec = track_spec(n)
    _check_data(spec, data)
    framed = spec.ss + data + spec.es
    out: list[int] = []
    for c in framed:
        out += _char_bits(ord(c) - spec.offset, spec.data_bits)
    out += _char_bits(lrc(n, framed), spec.data_bits)
    return out


def _char_table(spec: TrackSpec) -> npt.NDArray[np.uint8]:
    """Row ``v`` = the recorded bits of value ``v`` (data bits LSB first, odd parity)."""
    return np.array([_char_bits(v, spec.data_bits) for v in range(1 << spec.data_bits)], dtype=np.uint8)


_CHAR_TABLES = {n: _char_table(spec) for n, spec in TRACKS.items()}
_DATA_CHARSETS = {n: frozenset(spec.data_charset) for n, spec in TRACKS.items()}


def encode_array(n: int, data: str) -> npt.NDArray[np.uint8]:
    """:func:`encode_track` with the track's own clocking zeros, as a ``uint8`` array (the swipe
    model's hot path: a table look-up per character instead of bit arithmetic)."""
    spec = track_spec(n)
    if type(data) is not str or len(data) > spec.max_data or not _DATA_CHARSETS[n].issuperset(data):
        _check_data(spec, data)     # raises the precise error
    codes = np.frombuffer((spec.ss + data + spec.es).encode("ascii"), dtype=np.uint8) - np.uint8(spec.offset)
    lrc_value = np.bitwise_xor.reduce(codes) & ((1 << spec.data_bits) - 1)
    body = _CHAR_TABLES[n][np.append(codes, lrc_value)].ravel()
    lead = spec.clock_zeros
    out = np.zeros(lead + body.size + lead, dtype=np.uint8)
    out[lead:lead + body.size] = body
    return out


def encode_track(n: int, data: str, *, lead: int | None = None, trail: int | None = None) -> list[int]:
    """The bit stream recorded on track ``n``: clocking zeros, SS, data, ES, LRC, clocking zeros.

    ``lead``/``trail`` override the number of clocking zeros (default: the track's, see
    :data:`TRACKS`). Raises :class:`~protocol.errors.EncodeError` for data the track cannot hold.

    >>> bits = encode_track(2, "12345", lead=2, trail=2)
    >>> "".join(map(str, bits))
    '00110101000001000110010010010101111111010100'
    >>> parse_track(2, bits)
    '12345'
    """
    spec = track_spec(n)
    lead = spec.clock_zeros if lead is None else lead
    trail = spec.clock_zeros if trail is None else trail
    if lead < 0 or trail < 0:
        raise EncodeError("clocking zero counts must not be negative", field=f"track{n}.clocking")
    return [0] * lead + encode_chars(n, data) + [0] * trail


# --- decoding ---------------------------------------------------------------------------------

# The last part of a DecodeError's field path → the status a reader reports for it.
_STATUS_BY_CHECK: dict[str, TrackStatus] = {
    "bits": TrackStatus.NO_DATA,
    "ss": TrackStatus.NO_START_SENTINEL,
    "es": TrackStatus.NO_END_SENTINEL,
    "parity": TrackStatus.PARITY_ERROR,
    "lrc": TrackStatus.LRC_ERROR,
    "lrc.parity": TrackStatus.LRC_ERROR,
}


def status_for(err: DecodeError) -> TrackStatus:
    """The :class:`TrackStatus` a reader reports for a :func:`parse_track` error."""
    path = err.field.split(".", 1)[1] if "." in err.field else err.field
    if path in _STATUS_BY_CHECK:
        return _STATUS_BY_CHECK[path]
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return _STATUS_BY_CHECK.get(last, TrackStatus.NO_DATA)


class _Direction(enum.Enum):
    FORWARD = "forward"
    REVERSE = "reverse"


class _Attempt(NamedTuple):
    """One direction's decode: the data or the error, and how far it got (characters)."""

    direction: _Direction
    outcome: str | DecodeError
    progress: int
    clean_start: bool = False   # the start sentinel was the first 1 after the clocking zeros
    end: int = 0                # bit index just past the LRC (successful decodes)

    @property
    def ok(self) -> bool:
        return isinstance(self.outcome, str)


def _as_bits(n: int, bits: Sequence[int]) -> bytes:
    """The bits as a ``bytes`` of 0/1 values (the decoder's working form), each one checked."""
    if type(bits) is bytes and not bits.translate(None, b"\x00\x01"):
        return bits
    out = list(bits)
    for i, b in enumerate(out):
        if not isinstance(b, int):
            raise TypeError(f"bit {i} is a {type(b).__name__}, not an int")
        if b not in (0, 1):
            raise DecodeError(f"bit {i} has value {int(b)}, not 0 or 1", field=f"track{n}.bits", pos=i)
    return bytes(out)


def _find_ss(bits: bytes, pattern: bytes) -> int:
    """First offset where the start-sentinel pattern (parity included) follows ≥4 zeros or the start.

    Readers frame on the start sentinel after the clocking zeros (ISO/IEC 7811-2, location of the data); demanding
    preceding zeros keeps a missed sentinel from being "found" inside the data. (Every start
    sentinel begins with a 1 bit, so the first candidate is the first 1; any later one needs four
    zeros in front of it.)
    """
    first = bits.find(1)
    if first < 0:
        return -1
    if bits.startswith(pattern, first):
        return first
    at = bits.find(b"\x00\x00\x00\x00" + pattern, first)
    return -1 if at < 0 else at + 4


def _word_values(spec: TrackSpec) -> dict[bytes, int]:
    """Recorded character (data bits + parity, as 0/1 bytes) → value, for odd-parity words only."""
    return {bytes(_char_bits(v, spec.data_bits)): v for v in range(1 << spec.data_bits)}


_WORD_VALUES = {n: _word_values(spec) for n, spec in TRACKS.items()}


def _code_values(spec: TrackSpec) -> npt.NDArray[np.int64]:
    """Recorded character read as a little-endian number (data bits, then parity as the top bit)
    → its value, or -1 when the parity is even."""
    out = np.full(1 << spec.char_bits, -1, dtype=np.int64)
    for v in range(1 << spec.data_bits):
        bits = _char_bits(v, spec.data_bits)
        out[sum(b << i for i, b in enumerate(bits))] = v
    return out


_CODE_VALUES = {n: _code_values(spec) for n, spec in TRACKS.items()}
_BIT_WEIGHTS = {spec.char_bits: (1 << np.arange(spec.char_bits)).astype(np.uint8) for spec in TRACKS.values()}
"""Little-endian bit weights of a recorded character (a word of 0/1 bytes times these is its code)."""


_TO_ASCII = {n: bytes((v + spec.offset) & 0xFF for v in range(256)) for n, spec in TRACKS.items()}


def _text(spec: TrackSpec, values: list[int]) -> str:
    """Characters from their values (all within the track's code)."""
    return bytes(values).translate(_TO_ASCII[spec.number]).decode("ascii")
_SS_PATTERNS = {n: bytes(_char_bits(ord(spec.ss) - spec.offset, spec.data_bits)) for n, spec in TRACKS.items()}
_SENTINEL_VALUES = {n: (ord(spec.ss) - spec.offset, ord(spec.es) - spec.offset) for n, spec in TRACKS.items()}
_NAMES = {n: f"track{n}" for n in TRACKS}
assert all(p[0] == 1 for p in _SS_PATTERNS.values())     # _find_ss relies on it


def _decode_direction(spec: TrackSpec, bits: bytes, direction: _Direction, total: int) -> _Attempt:
    n = spec.number
    name = _NAMES[n]

    def pos_of(i: int) -> int:
        return i if direction is _Direction.FORWARD else total - 1 - i

    cb = spec.char_bits
    first_one = bits.find(1)
    if first_one < 0:
        err = DecodeError("no data: no 1 bits on the track", field=f"{name}.bits")
        return _Attempt(direction, err, -1)
    ss_val, es_val = _SENTINEL_VALUES[n]
    values = _WORD_VALUES[n]
    start = _find_ss(bits, _SS_PATTERNS[n])
    if start < 0:
        err = DecodeError("no start sentinel after the clocking zeros", field=f"{name}.ss",
                          pos=pos_of(first_one), partial={"direction": direction.value})
        return _Attempt(direction, err, 0)
    clean = start == first_one
    # Every character after the start sentinel that the track could hold, looked up at once; then
    # the first parity error or end sentinel among them decides, as reading them in turn would.
    i0 = start + cb
    room = min((len(bits) - i0) // cb, spec.max_chars - 2)
    words = np.frombuffer(bits, dtype=np.uint8, count=room * cb, offset=i0).reshape(room, cb)
    vals = _CODE_VALUES[n][words @ _BIT_WEIGHTS[cb]].tolist()
    es_at = vals.index(es_val) if es_val in vals else room
    bad_at = vals.index(-1, 0, es_at) if -1 in vals[:es_at] else -1
    if bad_at >= 0:
        index, i = bad_at + 1, i0 + bad_at * cb
        err = DecodeError(f"parity error at character {index}", field=f"{name}.char[{index}].parity",
                          pos=pos_of(i), partial={"data": _text(spec, vals[:bad_at]), "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    if es_at == room:
        index, i = room + 1, i0 + room * cb
        why = "bits ran out" if i + cb > len(bits) else f"{spec.max_chars - 2} characters read"
        err = DecodeError(f"no end sentinel ({why})", field=f"{name}.es", pos=pos_of(min(i, total - 1)),
                          partial={"data": _text(spec, vals), "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    acc = functools.reduce(operator.xor, vals[:es_at + 1], ss_val)
    chars = vals[:es_at]
    i = i0 + (es_at + 1) * cb
    index = es_at + 2
    data = _text(spec, chars)
    if i + cb > len(bits):
        err = DecodeError("no LRC character after the end sentinel (bits ran out)", field=f"{name}.lrc",
                          pos=pos_of(min(i, total - 1)), partial={"data": data, "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    v = values.get(bits[i:i + cb], -1)
    if v < 0:
        err = DecodeError("parity error in the LRC character", field=f"{name}.lrc.parity", pos=pos_of(i),
                          partial={"data": data, "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    if v != acc:
        err = DecodeError(f"LRC mismatch (read {v:#x}, computed {acc:#x})", field=f"{name}.lrc", pos=pos_of(i),
                          partial={"data": data, "direction": direction.value})
        return _Attempt(direction, err, index, clean)
    return _Attempt(direction, data, index + 1, clean, i + cb)


def _attempts(n: int, bits: Sequence[int]) -> tuple[_Attempt, _Attempt | None]:
    spec = track_spec(n)
    seq = _as_bits(n, bits)
    fwd = _decode_direction(spec, seq, _Direction.FORWARD, len(seq))
    if fwd.ok and seq.find(1, fwd.end) < 0:
        return fwd, None            # a frame followed by nothing but clocking zeros
    rev = _decode_direction(spec, seq[::-1], _Direction.REVERSE, len(seq))
    return fwd, rev


def _pick(fwd: _Attempt, rev: _Attempt | None) -> _Attempt:
    """The successful direction — the longer frame if both decode; else the one whose start
    sentinel followed the clocking zeros (a sentinel "found" later is a misframe, however far it
    got); else the one that got further. Ties go to the forward direction.

    Both directions can decode: a character read backwards keeps its parity, track 2/3's end
    sentinel ``11111`` reads the same both ways, and an LRC of 0xA reads backwards as the start
    sentinel — so one reversed track 2 in ~256 looks like a short valid frame ``;?`` followed by
    more data. A forward frame followed by further 1 bits is therefore checked against the reverse
    reading, and the frame that spans the track wins.
    """
    if rev is None:
        return fwd
    if rev.ok and fwd.ok:
        return rev if rev.progress > fwd.progress else fwd
    if rev.ok or fwd.ok:
        return rev if rev.ok else fwd
    if rev.clean_start != fwd.clean_start:
        return rev if rev.clean_start else fwd
    return rev if rev.progress > fwd.progress else fwd


def parse_track(n: int, bits: Sequence[int]) -> str:
    """Strictly decode track ``n``'s bits (either direction) to the data between the sentinels.

    Raises :class:`~protocol.errors.DecodeError` for anything that is not a valid track; the
    ``field`` says which check failed — ``trackN.bits`` (no 1 bits, or a value that is not a bit),
    ``trackN.ss``, ``trackN.char[i].parity`` (``i`` counts from the start sentinel, which is
    character 0), ``trackN.es``, ``trackN.lrc.parity`` or ``trackN.lrc`` — and ``pos`` the bit
    offset in ``bits``. Wrong types raise :class:`TypeError`.

    >>> bits = encode_track(2, "12345", lead=3, trail=3)
    >>> bits[3 + 5 * 2] ^= 1           # flip a data bit of character 2
    >>> parse_track(2, bits)
    Traceback (most recent call last):
    ...
    protocol.errors.DecodeError: parity error at character 2: field track2.char[2].parity, position 13
    >>> parse_track(2, list(reversed(encode_track(2, "12345"))))  # swiped the other way round
    '12345'
    """
    fwd, rev = _attempts(n, bits)
    outcome = _pick(fwd, rev).outcome
    if isinstance(outcome, DecodeError):
        raise outcome
    return outcome


def decode_track(n: int, bits: Sequence[int]) -> TrackRead:
    """Decode track ``n`` like a reader ASIC: never raises for bad bits, reports a status instead.

    >>> decode_track(2, encode_track(2, "12345")).status
    <TrackStatus.OK: 'ok'>
    >>> decode_track(1, [0] * 40).status
    <TrackStatus.NO_DATA: 'no data'>
    """
    return read_track(n, bits)[0]


def read_track(n: int, bits: Sequence[int]) -> tuple[TrackRead, DecodeError | None]:
    """:func:`decode_track` together with the :class:`DecodeError` behind a non-OK status.

    Every swipe is decoded afresh: no read (card data) is kept between swipes."""
    try:
        fwd, rev = _attempts(n, bits)
    except DecodeError as e:
        return TrackRead(n, status_for(e), "", f"{e.msg} [{e.field}]"), e
    best = _pick(fwd, rev)
    err = best.outcome
    if isinstance(err, str):
        detail = "read in reverse (card swiped the other way round)" if best.direction is _Direction.REVERSE else ""
        return TrackRead(n, TrackStatus.OK, err, detail), None
    where = f" at bit {err.pos}" if err.pos is not None else ""
    rev_note = " (reversed)" if best.direction is _Direction.REVERSE else ""
    return TrackRead(n, status_for(err), "", f"{err.msg}{where}{rev_note} [{err.field}]"), err


# --- display ----------------------------------------------------------------------------------

def mask_track(n: int, data: str) -> str:
    """Track data made safe to show: PAN as first 6 + last 4, name and discretionary data hidden.

    Keeps the sentinels, the separators, expiry (YYMM) and service code, which a user exploring
    the reader needs to see (ISO/IEC 7813: track 1 format B and track 2 layouts).

    >>> mask_track(2, "9900010000000019=30121010000000000")
    ';990001******0019=3012101**********?'
    >>> mask_track(1, "B9900010000000019^TEST/DEMO^30121010000000000")
    '%B990001******0019^T***/D***^3012101**********?'
    """
    spec = track_spec(n)
    if n == 1 and data[:1] == "B" and data.count("^") >= 2:
        pan, name, rest = data[1:].split("^", 2)
        shown_name = "/".join(p[:1] + "*" * (len(p) - 1) for p in name.split("/"))
        body = f"B{mask_pan(pan)}^{shown_name}^{_mask_rest(rest)}"
    elif n in (2, 3) and "=" in data:
        pan, rest = data.split("=", 1)
        body = f"{mask_pan(pan)}={_mask_rest(rest)}"
    else:
        body = "*" * len(data)
    return f"{spec.ss}{body}{spec.es}"


def _mask_rest(rest: str) -> str:
    """Expiry (4) and service code (3) shown; discretionary data masked."""
    return rest[:7] + "*" * max(0, len(rest) - 7)
