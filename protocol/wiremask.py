"""Card data masked inside wire bytes, keeping every length and the message decodable (sans-IO).

A capture of ISO 8583 traffic (:mod:`protocol.pcap`) must not hold full card numbers unless the
user asks for that. :func:`mask_payload` rewrites one frame payload in place:

* field 2 (PAN): the digits between the first 6 and the last 4 become ``0`` (PCI DSS 3.4 shows
  6 + 4);
* fields 35 and 36 (track 2 and 3) and 45 (track 1): the PAN before the separator is masked the
  same way, and the discretionary data after expiry and service code becomes ``0``;
* field 55 (ICC data, BER-TLV): the values of tags 5A (PAN), 57 and 9F6B (track 2 equivalent)
  likewise, nibble by nibble (EMV Book 3 Annex A: 5A is ``cn``, 57 is ``b`` with ``D`` as the
  separator and ``F`` padding), and digit runs in 56 (track 1 equivalent) and 9F1F/9F20.

Only digits are replaced, and only by digits, so every length prefix, BCD nibble and TLV
length stays valid and the message decodes as before (its MAC, which covered the PAN, no
longer verifies). A frame that does not decode is masked field by field as far as it decodes.
When the field that failed is one of those card fields (a frame cut inside the PAN), every digit
from there on becomes ``0``; otherwise every run of 13 or more digits — ASCII or BCD nibbles —
keeps only 6 + 4, and a run of 7 to 12 ASCII digits becomes ``0``.

:class:`StreamMasker` applies this to a byte stream (the profile's length header + payload, back
to back, split anywhere) with the sans-IO vocabulary of :mod:`protocol.sansio`.

>>> from protocol.iso import Message, decode, encode
>>> from protocol.specs import CUP
>>> m = Message("0200", {2: "9912345678901234", 3: "310000", 11: "000001",
...                      35: "9912345678901234=29121011234567890"}, CUP.default_header)
>>> masked = decode(mask_payload(encode(m, CUP), CUP), CUP)
>>> masked[2], masked[35], masked[3]
('9912340000001234', '9912340000001234=29121010000000000', '310000')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import iso8583
import iso8583.decoder

from protocol.errors import DecodeError
from protocol.sansio import NEED_DATA, NeedData
from protocol.specs import Profile

KEEP_HEAD, KEEP_TAIL = 6, 4
MIN_PAN = 13
MIN_FRAGMENT = 7                  # more digits than a BIN: may be the middle of a cut card number
_ASCII_RUN = re.compile(rb"[0-9]{7,}")
_NIBBLE_RUN = re.compile(r"[0-9]{13,}")
PAN_FIELDS = (2,)
TRACK_FIELDS = (35, 36, 45)
ICC_FIELD = 55
_TRACK_TAGS = (0x57, 0x9F6B)
_PAN_TAGS = (0x5A,)
_TEXT_TAGS = (0x56, 0x9F1F, 0x9F20)


def mask_digits(digits: str) -> str:
    """Mask one PAN given as digits: 6 + 4 stay, the middle becomes ``0`` (short ones: all ``0``).

    >>> mask_digits("9912345678901234"), mask_digits("123456789012")
    ('9912340000001234', '000000000000')
    """
    n = len(digits)
    if n < MIN_PAN:
        return "0" * n
    return digits[:KEEP_HEAD] + "0" * (n - KEEP_HEAD - KEEP_TAIL) + digits[-KEEP_TAIL:]


def mask_track(text: str, separators: str = "=") -> str:
    """Mask track data: the PAN (digits up to the first separator) as :func:`mask_digits`, then
    after expiry (4) and service code (3) every digit becomes ``0``. Non-digits (separators,
    sentinels, ``F`` padding, format codes) stay.

    >>> mask_track("9912345678901234=29121011234567890")
    '9912340000001234=29121010000000000'
    >>> mask_track("9912345678901234D2912101123F", "D")
    '9912340000001234D2912101000F'
    >>> mask_track("%B9912345678901234^TEST/CARD^2912101000?", "^")
    '%B9912340000001234^TEST/CARD^2912101000?'
    """
    start = 0
    while start < len(text) and not text[start].isdigit():
        start += 1                      # track 1: "%B" format code; track 3: none
    end = start
    while end < len(text) and text[end].isdigit():
        end += 1
    pan = mask_digits(text[start:end])
    rest = text[end:]
    if not rest or rest[0] not in separators:
        return text[:start] + pan + _mask_runs_text(rest)
    sep = rest[0]
    body = rest[1:]
    if sep == "^":                      # track 1: name, then ^ expiry service code discretionary
        name, caret, tail = body.partition("^")
        if not caret:
            return text[:start] + pan + sep + body
        body = tail
        sep = sep + name + caret
    kept, dd = body[:7], body[7:]
    return text[:start] + pan + sep + kept + "".join("0" if c.isdigit() else c for c in dd)


def mask_run(digits: str) -> str:
    """A digit run in bytes that did not decode: a PAN keeps 6 + 4; 7 to 12 digits (a fragment
    of one, or anything else) become ``0``; shorter runs stay.

    >>> mask_run("9912345678901234"), mask_run("99123456"), mask_run("123456")
    ('9912340000001234', '00000000', '123456')
    """
    if len(digits) >= MIN_PAN:
        return mask_digits(digits)
    if len(digits) >= MIN_FRAGMENT:
        return "0" * len(digits)
    return digits


def _mask_runs_text(text: str) -> str:
    return _NIBBLE_RUN.sub(lambda m: mask_run(m.group(0)), text)


def mask_digit_runs(data: bytes) -> bytes:
    """The fallback for bytes that do not decode: runs of ASCII digits masked by :func:`mask_run`,
    then runs of 13 or more BCD digit nibbles outside those keep 6 + 4 (shorter nibble runs are
    left). Lower-case ASCII text is mostly digit nibbles: here it cannot be told from a BCD card
    number, and is masked like one — safe, and only in bytes that did not decode anyway.

    >>> mask_digit_runs(b"x9912345678901234y")
    b'x9912340000001234y'
    >>> mask_digit_runs(bytes.fromhex("ab9912345678901234cd")).hex()
    'ab9912340000001234cd'
    """
    out = bytearray(data)
    ascii_spans = []
    for m in _ASCII_RUN.finditer(data):
        out[m.start():m.end()] = mask_run(m.group(0).decode("ascii")).encode("ascii")
        ascii_spans.append((m.start(), m.end()))
    # BCD runs, between the ASCII runs (an ASCII digit is also two digit nibbles)
    pos = 0
    for a, b in [*ascii_spans, (len(out), len(out))]:
        if a > pos:
            out[pos:a] = _mask_nibble_runs(bytes(out[pos:a]))
        pos = b
    return bytes(out)


def _mask_nibble_runs(data: bytes) -> bytes:
    h = data.hex()
    masked = _NIBBLE_RUN.sub(lambda m: mask_run(m.group(0)), h)
    return data if masked == h else bytes.fromhex(masked)


# --- one frame payload ---------------------------------------------------------------------------

def _spans(payload: bytes, spec: dict[str, Any]) -> tuple[list[tuple[str, int, int, int]], int, str | None]:
    """(key, data start, data end, encoded length) of each field decoded, where an undecoded
    tail begins (``len(payload)`` when the whole message decodes) and the field that failed."""
    try:
        _, doc_enc = iso8583.decode(payload, spec)
        failed: str | None = None
        extra = False
    except iso8583.decoder.DecodeError as e:
        doc_enc = e.doc_enc
        failed = str(e.field)
        extra = e.msg.startswith("Extra data after last field")
    except (ValueError, LookupError, TypeError):     # defensive, as protocol.iso.decode
        return [], 0, None
    spans: list[tuple[str, int, int, int]] = []
    pos = 0
    keys = list(doc_enc)
    for i, key in enumerate(keys):
        if failed is not None and not extra and i == len(keys) - 1:
            # the field that failed: mask from its data on (its length prefix, when whole, stays)
            lbytes = doc_enc[key]["len"]
            whole = len(lbytes) == int(spec.get(key, {}).get("len_type", -1))
            return spans, pos + (len(lbytes) if whole else 0), key
        enc = doc_enc[key]
        lbytes, data = enc["len"], enc["data"]
        start = pos + len(lbytes)
        pos = start + len(data)
        spans.append((key, start, pos, _encoded_len(lbytes, data, spec.get(key, {}))))
    return spans, pos, None


def _encoded_len(lbytes: bytes, data: bytes, fspec: dict[str, Any]) -> int:
    """The field's length in its own unit (nibbles for BCD digit fields), from the wire."""
    if fspec.get("len_count") != "nibbles":
        return len(data)
    if not lbytes:
        return int(fspec.get("max_len", len(data) * 2))
    enc = fspec.get("len_enc")
    if enc == "b":
        return int.from_bytes(lbytes, "big")
    if enc == "bcd":
        return int(lbytes.hex())
    return int(lbytes.decode("ascii"))


def _nibble_digits(data: bytes, nibbles: int, fspec: dict[str, Any]) -> tuple[str, int]:
    """The digits of a BCD field (pad nibble removed) and their offset in ``data.hex()``."""
    h = data.hex().upper()
    if nibbles % 2 == 0 or nibbles >= len(h):
        return h[:nibbles], 0
    if fspec.get("left_pad"):
        return h[1:], 1
    return h[:-1], 0


def _rewrite(out: bytearray, start: int, end: int, fspec: dict[str, Any], nunits: int,
             fn: Callable[[str], str]) -> None:
    data = bytes(out[start:end])
    if fspec.get("data_enc") == "b" and fspec.get("len_count") == "nibbles":
        digits, off = _nibble_digits(data, nunits, fspec)
        new = fn(digits)
        h = data.hex().upper()
        h = h[:off] + new + h[off + len(new):]
        out[start:end] = bytes.fromhex(h)
    elif fspec.get("data_enc") == "b":
        out[start:end] = mask_digit_runs(data)
    else:
        text = data.decode("latin-1")
        out[start:end] = fn(text).encode("latin-1")


def mask_payload(payload: bytes, profile: Profile) -> bytes:
    """Mask card data in one frame payload (everything after the length header)."""
    spec = profile.spec
    spans, tail, failed = _spans(payload, spec)
    out = bytearray(payload)
    for key, start, end, nunits in spans:
        if not key.isdigit() or start == end:
            continue
        n = int(key)
        fspec = spec.get(key, {})
        if n in PAN_FIELDS:
            _rewrite(out, start, end, fspec, nunits, _mask_pan_text)
        elif n in TRACK_FIELDS:
            _rewrite(out, start, end, fspec, nunits, _mask_track_any)
        elif n == ICC_FIELD:
            out[start:end] = mask_icc(bytes(out[start:end]))
    if tail < len(out):
        if failed is not None and failed.isdigit() and int(failed) in (*PAN_FIELDS, *TRACK_FIELDS, ICC_FIELD):
            out[tail:] = zero_digits(bytes(out[tail:]), binary=spec.get(failed, {}).get("data_enc") == "b")
        else:
            out[tail:] = mask_digit_runs(bytes(out[tail:]))
    return bytes(out)


def zero_digits(data: bytes, *, binary: bool) -> bytes:
    """Every digit becomes ``0``: BCD digit nibbles when ``binary``, else ASCII digits.

    >>> zero_digits(b"16991234", binary=False), zero_digits(bytes.fromhex("1699D2"), binary=True).hex()
    (b'00000000', '0000d0')
    """
    if binary:
        return bytes.fromhex(re.sub(r"[0-9]", "0", data.hex()))
    return re.sub(rb"[0-9]", b"0", data)


def _mask_pan_text(text: str) -> str:
    if text.isdigit():
        return mask_digits(text)
    return _mask_runs_text(text)         # not digits on the wire: mask what looks like a PAN


def _mask_track_any(text: str) -> str:
    return mask_track(text, "=Dd^")


# --- field 55: BER-TLV ---------------------------------------------------------------------------

def mask_icc(data: bytes) -> bytes:
    """Mask the card data objects in BER-TLV chip data (field 55), lengths unchanged.

    >>> mask_icc(bytes.fromhex("5A08" "9912345678901234" "9F2701" "80")).hex().upper()
    '5A0899123400000012349F270180'
    >>> mask_icc(bytes.fromhex("5F2A02015657" "0A" "9912345678901234D291")).hex().upper()
    '5F2A020156570A9912340000001234D291'
    """
    out = bytearray(data)
    try:
        _mask_tlv(out, 0, len(out), 0)
    except ValueError:
        return mask_digit_runs(data)    # not well-formed BER-TLV: mask what looks like a PAN
    return bytes(out)


def _mask_tlv(out: bytearray, pos: int, end: int, depth: int) -> None:
    if depth > 16:
        raise ValueError("TLV nested too deep")
    while pos < end:
        first = out[pos]
        if first in (0x00, 0xFF):        # padding between objects (EMV Book 3 Annex B)
            pos += 1
            continue
        tag = first
        pos += 1
        if first & 0x1F == 0x1F:
            while True:
                if pos >= end or tag > 0xFFFFFF:
                    raise ValueError("truncated tag")
                tag = (tag << 8) | out[pos]
                pos += 1
                if not out[pos - 1] & 0x80:
                    break
        if pos >= end:
            raise ValueError("missing length")
        length = out[pos]
        pos += 1
        if length & 0x80:
            nbytes = length & 0x7F
            if nbytes == 0 or nbytes > 3 or pos + nbytes > end:
                raise ValueError("bad length")
            length = int.from_bytes(out[pos:pos + nbytes], "big")
            pos += nbytes
        vend = pos + length
        if vend > end:
            raise ValueError("value overruns")
        if first & 0x20:
            _mask_tlv(out, pos, vend, depth + 1)
        elif tag in _PAN_TAGS:
            h = out[pos:vend].hex().upper()
            digits = h.rstrip("F")
            if digits.isdigit():
                h = mask_digits(digits) + h[len(digits):]
                out[pos:vend] = bytes.fromhex(h)
            else:
                out[pos:vend] = mask_digit_runs(bytes(out[pos:vend]))
        elif tag in _TRACK_TAGS:
            h = out[pos:vend].hex().upper()
            out[pos:vend] = bytes.fromhex(mask_track(h, "D"))
        elif tag in _TEXT_TAGS:
            out[pos:vend] = mask_digit_runs(bytes(out[pos:vend]))
        pos = vend


# --- a stream of frames ---------------------------------------------------------------------------

class StreamMasker:
    """Masks a stream of length-prefixed frames, one direction of a connection (the profile's length
    header: 2-byte binary on both bundled profiles, or what a host dialect's envelope says).

    ``receive_data(bytes)``, then ``next_event()`` until :data:`NEED_DATA`: each event is the
    masked bytes of one complete frame, length header included. After a length header that no
    frame can have (0, or over ``max_frame``) the stream is out of sync: from then on bytes are
    passed on with :func:`mask_digit_runs`, holding back a trailing digit run that may continue.
    :meth:`flush` hands over whatever is left (a frame cut short by a closed connection).

    >>> from protocol.framing import frame
    >>> from protocol.specs import ISO87ASCII
    >>> sm = StreamMasker(ISO87ASCII)
    >>> raw = frame(b"0200" + bytes.fromhex("4000000000000000") + b"169912345678901234")
    >>> sm.receive_data(raw[:9]); sm.next_event()
    NEED_DATA
    >>> sm.receive_data(raw[9:]); sm.next_event()[-16:]
    b'9912340000001234'
    """

    __slots__ = ("_broken", "_buf", "max_frame", "profile")

    def __init__(self, profile: Profile, max_frame: int | None = None) -> None:
        self.profile = profile
        self.max_frame = max_frame or profile.max_frame
        self._buf = bytearray()
        self._broken = False

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> bytes | NeedData:
        buf = self._buf
        if self._broken:
            keep = _trailing_digits(buf)
            if keep == len(buf):
                return NEED_DATA
            cut = len(buf) - keep
            out = mask_digit_runs(bytes(buf[:cut]))
            del buf[:cut]
            return out
        lh = self.profile.length_header
        if len(buf) < lh.size:
            return NEED_DATA
        head = bytes(buf[:lh.size])
        try:
            n = lh.decode(head)
        except DecodeError:
            n = 0
        if n <= 0 or n > self.max_frame:
            self._broken = True
            return self.next_event()
        if len(buf) < lh.size + n:
            return NEED_DATA
        payload = bytes(buf[lh.size:lh.size + n])
        del buf[:lh.size + n]
        return head + mask_payload(payload, self.profile)

    def flush(self) -> bytes:
        """Everything still buffered, masked as bytes that do not decode."""
        out = mask_digit_runs(bytes(self._buf))
        self._buf.clear()
        return out


def _trailing_digits(buf: bytearray) -> int:
    """How many bytes at the end look like the start of a digit run (ASCII digits or BCD bytes)."""
    i = len(buf)
    while i > 0 and (0x30 <= buf[i - 1] <= 0x39 or (buf[i - 1] >> 4 <= 9 and buf[i - 1] & 0x0F <= 9)):
        i -= 1
    return len(buf) - i
