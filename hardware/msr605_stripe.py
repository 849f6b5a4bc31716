"""The magnetic stripe an emulated MSR605 reads and writes, and the card file that keeps it.

A :class:`MagStripe` is what is magnetised on a card: per track, the bits written (the data area,
first bit first), the density they were written at and the clocking zeros before them — or
nothing (a blank or erased track) — plus the card's coercivity. Reading decodes those bits the
way a reader ASIC does (:func:`hardware.magstripe.decode_track`), so whatever a raw write put
there reads back as it would on a real card: a valid ISO encoding as its characters, anything
else as an unreadable track.

Raw data bytes (MSR605 Programmer's Manual §7 "[Raw Data] bit orientation" and §9 "Write Raw
Data to Magnetic Card"): each byte carries ``bpc`` bits of the track (the BPC setting, 5…8). A
raw *write* takes each byte's low ``bpc`` bits least significant first (§9: ``%`` at 7 BPC is
``45``, at 8 BPC the track ``%ABC123?`` is ``C5 B0 78 14 95 4E 3E 2A``); a raw *read* sends them
most significant first (§7, the "Read" rows: bit 1B0 is the byte's MSB), so a byte read back is
the written byte with its ``bpc`` low bits reversed. A read starts at the first 1 bit (a reader
cannot see where zeros were written) and ends with the recorded data area, the last byte padded
with zeros.

The card file (TOML, written atomically by :func:`save_card_file`)::

    format = "posemu-magstripe/1"
    coercivity = "hi"                 # hi | lo
    [track2]
    bits = "11010100001000011001…"    # the recorded data area, first bit first (wins over data)
    data = "9900010000000019=3012…"   # ISO/IEC 7811 reading, between the sentinels
    bpi = 75
    leading_zeros = 22

A missing ``[trackN]`` table is a blank track; a table with only ``data`` is encoded as an ISO
write would (so a card file can be written by hand).

>>> s = MagStripe.from_iso(("A", "12345", None))
>>> s.iso()
('A', '12345', None)
>>> pack_raw(unpack_raw(bytes.fromhex("c5b0"), 8), 8).hex()    # write → read orientation
'a30d'
"""

from __future__ import annotations

import enum
import os
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from hardware.magstripe.f2f import CARD_LENGTH_IN
from hardware.magstripe.tracks import decode_track, encode_chars, track_spec
from hardware.ports import TrackRead, TrackStatus
from protocol.errors import ConfigError, EncodeError

FORMAT = "posemu-magstripe/1"
BPI_CHOICES = (75, 210)


class Coercivity(enum.Enum):
    """The stripe's coercivity: a Lo-Co write current cannot change a Hi-Co card."""

    HIGH = "hi"
    LOW = "lo"


def standard_bpi(n: int) -> int:
    """ISO/IEC 7811: 210 bpi on tracks 1 and 3, 75 on track 2."""
    return int(track_spec(n).bpi)


@dataclass(frozen=True, slots=True)
class RecordedTrack:
    """One track as written: the data area's bits (first bit first), density and clocking zeros."""

    bits: tuple[int, ...]
    bpi: int
    lead_zeros: int

    def __post_init__(self) -> None:
        if any(b not in (0, 1) for b in self.bits):
            raise EncodeError("a recorded track holds bits 0 and 1 only")
        if self.bpi not in BPI_CHOICES:
            raise EncodeError(f"density {self.bpi} bpi: the MSR605 writes {' or '.join(map(str, BPI_CHOICES))}")
        if not 0 <= self.lead_zeros <= 255:
            raise EncodeError("leading zeros are 0…255")

    def __repr__(self) -> str:          # the bits are card data: never in a repr
        return f"RecordedTrack({len(self.bits)} bits, {self.bpi} bpi, {self.lead_zeros} leading zeros)"

    @property
    def blank(self) -> bool:
        return 1 not in self.bits

    def stream(self) -> list[int]:
        """What passes the read head: clocking zeros, the data area, clocking zeros."""
        return [0] * self.lead_zeros + list(self.bits) + [0] * max(self.lead_zeros, 8)

    def fits(self) -> bool:
        """Do the clocking zeros and the data fit on a card at this density (ISO/IEC 7810 ID-1)?"""
        return self.lead_zeros + len(self.bits) <= int(CARD_LENGTH_IN * self.bpi)


def iso_track(n: int, data: str, *, bpi: int | None = None, lead_zeros: int | None = None) -> RecordedTrack:
    """Track ``n`` as an ISO write records ``data`` (between the sentinels): SS, data, ES, LRC,
    each character LSB first with odd parity (ISO/IEC 7811-2). Raises :class:`EncodeError` for
    characters outside the track's set or data longer than the track holds."""
    spec = track_spec(n)
    return RecordedTrack(tuple(encode_chars(n, data)), bpi or standard_bpi(n),
                         spec.clock_zeros if lead_zeros is None else lead_zeros)


@dataclass(frozen=True, slots=True)
class MagStripe:
    """A card's magnetic stripe: three tracks (``None`` = blank) and its coercivity."""

    tracks: tuple[RecordedTrack | None, RecordedTrack | None, RecordedTrack | None] = (None, None, None)
    coercivity: Coercivity = Coercivity.HIGH

    @classmethod
    def from_iso(cls, stripe: Sequence[str | None], coercivity: Coercivity = Coercivity.HIGH) -> MagStripe:
        """The stripe of a card whose tracks hold ``stripe`` (data between the sentinels, as
        :attr:`hardware.ports.VirtualCard.stripe`), recorded to ISO/IEC 7811."""
        if len(stripe) != 3:
            raise TypeError("stripe must give tracks 1, 2 and 3 (None for an absent track)")
        t = [None if d is None else iso_track(n, d) for n, d in enumerate(stripe, start=1)]
        return cls((t[0], t[1], t[2]), coercivity)

    def track(self, n: int) -> RecordedTrack | None:
        track_spec(n)
        return self.tracks[n - 1]

    def with_track(self, n: int, track: RecordedTrack | None) -> MagStripe:
        t = list(self.tracks)
        track_spec(n)
        t[n - 1] = track
        return replace(self, tracks=(t[0], t[1], t[2]))

    def read(self, n: int) -> TrackRead:
        """What a reader decodes from track ``n`` (an ideal swipe: no noise, no damage)."""
        t = self.track(n)
        if t is None or t.blank:
            return TrackRead(n, TrackStatus.NO_DATA, "", "blank track")
        return decode_track(n, t.stream())

    def iso(self) -> tuple[str | None, str | None, str | None]:
        """Each track's ISO content (between the sentinels), ``None`` where it does not decode."""
        out = []
        for n in (1, 2, 3):
            r = self.read(n)
            out.append(r.data if r.ok else None)
        return out[0], out[1], out[2]

    def raw(self, n: int, bpc: int) -> bytes:
        """Track ``n`` as a raw read sends it at ``bpc`` bits per byte: from the first 1 bit to the
        end of the data area, most significant bit first (manual §7)."""
        t = self.track(n)
        if t is None or t.blank:
            return b""
        return pack_raw(t.bits[t.bits.index(1):], bpc)


def _check_bpc(bpc: int) -> None:
    if not 5 <= bpc <= 8:
        raise EncodeError(f"BPC {bpc}: the MSR605 packs 5…8 bits per character")


def pack_raw(bits: Sequence[int], bpc: int) -> bytes:
    """Bits → raw-read bytes: ``bpc`` bits per byte, the first in bit ``bpc - 1`` (§7 "Read").

    >>> pack_raw([1, 1, 0, 1, 0], 5).hex()      # ';' on track 2: 1A
    '1a'
    """
    _check_bpc(bpc)
    out = bytearray()
    for i in range(0, len(bits), bpc):
        chunk = list(bits[i:i + bpc]) + [0] * max(0, i + bpc - len(bits))
        v = 0
        for b in chunk:
            v = (v << 1) | b
        out.append(v)
    return bytes(out)


def unpack_raw(data: bytes, bpc: int) -> tuple[int, ...]:
    """Raw-write bytes → bits: each byte's low ``bpc`` bits, least significant first (§7 "Write", §9).

    >>> unpack_raw(bytes([0x45]), 7)            # '%' with its parity bit
    (1, 0, 1, 0, 0, 0, 1)
    """
    _check_bpc(bpc)
    return tuple((byte >> k) & 1 for byte in data for k in range(bpc))


# --- the card file -------------------------------------------------------------------------------------
_HEADER = """\
# posemu magnetic-stripe card: what an emulated MSR605 wrote (`posemu device msr --card-file`).
# Swipe it with `posemu swipe --card THIS_FILE`. It holds track data: keep it like a card.
"""


def card_file_data(stripe: MagStripe) -> dict[str, Any]:
    """The TOML document of a card file."""
    doc: dict[str, Any] = {"format": FORMAT, "coercivity": stripe.coercivity.value}
    for n, t in enumerate(stripe.tracks, start=1):
        if t is None:
            continue
        table: dict[str, Any] = {"bits": "".join(map(str, t.bits)), "bpi": t.bpi, "leading_zeros": t.lead_zeros}
        r = stripe.read(n)
        if r.ok:
            table["data"] = r.data
        doc[f"track{n}"] = table
    return doc


def parse_card_file(doc: dict[str, Any], where: str) -> MagStripe:
    """Validate a card-file document into a :class:`MagStripe`; errors are :class:`ConfigError`."""
    if doc.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a posemu magstripe card (format = {FORMAT!r} missing)")
    try:
        coercivity = Coercivity(str(doc.get("coercivity", "hi")))
    except ValueError:
        raise ConfigError(f"{where}: coercivity must be hi or lo") from None
    unknown = set(doc) - {"format", "coercivity", "track1", "track2", "track3"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    tracks: list[RecordedTrack | None] = []
    for n in (1, 2, 3):
        table = doc.get(f"track{n}")
        if table is None:
            tracks.append(None)
            continue
        tw = f"{where} [track{n}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{tw}: must be a table")
        try:
            bpi = int(table.get("bpi", standard_bpi(n)))
            lead = int(table.get("leading_zeros", track_spec(n).clock_zeros))
            bits_text = table.get("bits")
            if bits_text is not None:
                if not isinstance(bits_text, str) or set(bits_text) - {"0", "1"}:
                    raise ConfigError(f"{tw}: bits must be a string of 0 and 1")
                track = RecordedTrack(tuple(int(c) for c in bits_text), bpi, lead)
            elif "data" in table:
                track = iso_track(n, str(table["data"]), bpi=bpi, lead_zeros=lead)
            else:
                raise ConfigError(f"{tw}: needs bits or data")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{tw}: {e}") from None
        except EncodeError as e:
            raise ConfigError(f"{tw}: {e.args[0] if e.args else e}") from None
        if not track.fits():
            raise ConfigError(f"{tw}: {track.lead_zeros + len(track.bits)} bits do not fit on a card at {bpi} bpi")
        tracks.append(track)
    return MagStripe((tracks[0], tracks[1], tracks[2]), coercivity)


def is_card_file(path: str | os.PathLike[str]) -> bool:
    """Is ``path`` an existing posemu magstripe card file (and not, say, a card profile)?"""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return doc.get("format") == FORMAT


def load_card_file(path: str | os.PathLike[str]) -> MagStripe:
    """Read a card file; a missing, unreadable or invalid file is a :class:`ConfigError`."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"card file {p}: {e}") from None
    return parse_card_file(doc, f"card file {p}")


def save_card_file(path: str | os.PathLike[str], stripe: MagStripe) -> None:
    """Write ``stripe`` to ``path`` atomically (a reader never sees half a file)."""
    p = Path(path)
    text = _HEADER + tomli_w.dumps(card_file_data(stripe))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent or Path("."))
    except OSError as e:
        raise ConfigError(f"card file {p}: {e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"card file {p}: {e}") from None
