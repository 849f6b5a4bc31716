"""PIN blocks: ISO 9564-1 formats 0 (ANSI X9.8), 1 and 3, clear and under a PIN key.

ISO 9564-1 format 0 (the ISO 8583 field 52 PIN block of CUP and most POS hosts): two
16-nibble fields XORed together:

* PIN field ``C N P P P P P/F … F`` — control nibble ``C`` = 0, ``N`` = PIN length (4–12),
  the PIN digits, then fill nibbles ``F``.
* PAN field ``0 0 0 0 A1 … A12`` — the 12 rightmost PAN digits excluding the check digit
  (right-justified and zero-padded on the left when there are fewer, ISO 9564-1).

Format 3 is the same with control nibble 3 and fill nibbles drawn at random from A–F.
Format 1 (ISO 9564-1 §9.3.3, for hosts that do not bind the PIN to the PAN) is the PIN field alone:
control nibble 1, length, PIN, then a "transaction field" of random nibbles 0–F; no PAN field.
:func:`detect_format` tells the three apart from a clear block (the bundled host accepts all).

The encrypted block is the clear block under the PIN key (PIK/TPK/ZPK): triple-DES ECB, or
single DES for an 8-byte key (the CUP ``001`` single-length key scheme).

Known vector (knovichikhin/psec; protocol-facts §7)::

    >>> encode_pinblock("1234", "5544332211009966").hex().upper()
    '041277CDDEEFF669'
    >>> decode_pinblock(bytes.fromhex("041277CDDEEFF669"), "5544332211009966")
    '1234'

No PIN, PIN block or full PAN ever appears in an exception message or a repr.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from protocol import _des
from protocol.errors import DecodeError, EncodeError

__all__ = [
    "PIN_BLOCK_FIELD",
    "Pin",
    "PinBlockFormat",
    "decode_pinblock",
    "decrypt_pinblock",
    "decrypt_pinblock_any",
    "detect_format",
    "encode_pinblock",
    "encrypt_pinblock",
    "pan_field",
    "pin_field",
]

PIN_BLOCK_FIELD = "52"
"""ISO 8583 data element that carries the PIN block; used as the error field."""
_PAN_FIELD = "2"

MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 12
MIN_PAN_LENGTH = 12
MAX_PAN_LENGTH = 19


class PinBlockFormat(Enum):
    """ISO 9564-1 PIN block formats supported here; the value is the control nibble."""

    ISO_0 = 0
    """Format 0 (ANSI X9.8): PIN field XOR PAN field, fill ``F``."""
    ISO_1 = 1
    """Format 1: the PIN field alone, fill random nibbles ``0``–``F`` (no PAN)."""
    ISO_3 = 3
    """Format 3: as format 0, fill nibbles random in ``A``–``F``."""


@dataclass(frozen=True, slots=True, repr=False)
class Pin:
    """A cardholder PIN (4–12 ASCII digits) whose repr and str never show the digits.

    >>> pin = Pin("1234")
    >>> pin
    Pin(<redacted>)
    >>> f"entered {pin}"
    'entered Pin(<redacted>)'
    >>> pin.digits
    '1234'
    """

    digits: str

    def __post_init__(self) -> None:
        _check_pin_digits(self.digits)

    def __repr__(self) -> str:
        return "Pin(<redacted>)"

    __str__ = __repr__


def _check_pin_digits(pin: object) -> str:
    if not isinstance(pin, str):
        raise TypeError(f"PIN must be str or Pin, not {type(pin).__name__}")
    if not (pin.isascii() and pin.isdigit() and MIN_PIN_LENGTH <= len(pin) <= MAX_PIN_LENGTH):
        raise EncodeError("PIN must be 4 to 12 decimal digits", field=PIN_BLOCK_FIELD)
    return pin


def _pin_digits(pin: str | Pin) -> str:
    if isinstance(pin, Pin):
        return pin.digits
    return _check_pin_digits(pin)


def _check_pan(pan: object) -> str:
    if not isinstance(pan, str):
        raise TypeError(f"PAN must be str, not {type(pan).__name__}")
    if not (pan.isascii() and pan.isdigit() and MIN_PAN_LENGTH <= len(pan) <= MAX_PAN_LENGTH):
        raise EncodeError("PAN must be 12 to 19 decimal digits", field=_PAN_FIELD)
    return pan


def _check_format(fmt: object) -> PinBlockFormat:
    if not isinstance(fmt, PinBlockFormat):
        raise TypeError(f"fmt must be PinBlockFormat, not {type(fmt).__name__}")
    return fmt


def _random_nibbles(count: int, token_bytes: Callable[[int], bytes]) -> str:
    """``count`` nibbles drawn uniformly from 0–F (format 1's transaction field)."""
    chunk = _des.require_bytes(token_bytes((count + 1) // 2), "token_bytes() result")
    if len(chunk) * 2 < count:
        raise EncodeError("token_bytes() returned too few bytes", field=PIN_BLOCK_FIELD)
    return chunk.hex().upper()[:count]


def _random_fill(count: int, token_bytes: Callable[[int], bytes]) -> str:
    """``count`` nibbles drawn uniformly from A–F (rejection sampling, no modulo bias)."""
    out: list[str] = []
    while len(out) < count:
        chunk = _des.require_bytes(token_bytes(count), "token_bytes() result")
        if not chunk:
            raise EncodeError("token_bytes() returned no bytes", field=PIN_BLOCK_FIELD)
        for byte in chunk:
            if byte < 252:  # 252 = 6 * 42: keep the draw uniform over six values
                out.append("ABCDEF"[byte % 6])
                if len(out) == count:
                    break
    return "".join(out)


def pin_field(
    pin: str | Pin,
    fmt: PinBlockFormat = PinBlockFormat.ISO_0,
    *,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> bytes:
    """The 8-byte ISO 9564-1 PIN field: control nibble, length nibble, PIN, fill.

    ``token_bytes`` supplies the random fill of formats 1 and 3 (unused for format 0).

    >>> pin_field("1234").hex().upper()
    '041234FFFFFFFFFF'
    >>> pin_field("1234", PinBlockFormat.ISO_1, token_bytes=lambda n: bytes(range(n))).hex().upper()
    '1412340001020304'
    """
    digits = _pin_digits(pin)
    fmt = _check_format(fmt)
    fill_len = 14 - len(digits)
    if fmt is PinBlockFormat.ISO_0:
        fill = "F" * fill_len
    elif fmt is PinBlockFormat.ISO_1:
        fill = _random_nibbles(fill_len, token_bytes)
    else:
        fill = _random_fill(fill_len, token_bytes)
    return bytes.fromhex(f"{fmt.value:X}{len(digits):X}{digits}{fill}")


def pan_field(pan: str) -> bytes:
    """The 8-byte ISO 9564-1 PAN field: ``0000`` + 12 rightmost PAN digits excluding the check digit.

    >>> pan_field("5544332211009966").hex().upper()
    '0000433221100996'
    """
    digits = _check_pan(pan)[:-1][-12:]
    return bytes.fromhex(digits.rjust(16, "0"))


def encode_pinblock(
    pin: str | Pin,
    pan: str,
    fmt: PinBlockFormat = PinBlockFormat.ISO_0,
    *,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> bytes:
    """The clear 8-byte ISO 9564-1 PIN block (format 0 by default): PIN field XOR PAN field (format
    1: the PIN field alone; the PAN is still checked).

    Raises ``EncodeError`` (field ``52`` for the PIN, ``2`` for the PAN) on invalid input.

    >>> encode_pinblock("1234", "5555555551234567").hex().upper()
    '041261AAAAEDCBA9'
    """
    field = pin_field(pin, fmt, token_bytes=token_bytes)
    if fmt is PinBlockFormat.ISO_1:
        _check_pan(pan)
        return field
    return _des.xor(field, pan_field(pan))


def _fail(msg: str, pos: int | None = None) -> DecodeError:
    # Never pass the block as ``raw``: it is (a function of) the PIN.
    return DecodeError(msg, field=PIN_BLOCK_FIELD, pos=pos)


def decode_pinblock(block: bytes, pan: str, fmt: PinBlockFormat = PinBlockFormat.ISO_0) -> str:
    """The PIN digits from a clear ISO 9564-1 PIN block (format 0 by default).

    Checks the control nibble, the PIN length (4–12), that the PIN nibbles are decimal
    digits and the fill (``F`` for format 0, ``A``–``F`` for format 3). Every failure is a
    ``DecodeError`` for field ``52`` whose message shows neither the PIN, the block nor the
    PAN. An invalid ``pan`` argument is local misuse: ``EncodeError`` (field ``2``).
    """
    raw = _des.require_bytes(block, "PIN block")
    fmt = _check_format(fmt)
    pan_block = pan_field(pan)
    if len(raw) != 8:
        raise _fail(f"PIN block must be 8 bytes long, got {len(raw)}")
    nibbles = (raw if fmt is PinBlockFormat.ISO_1 else _des.xor(raw, pan_block)).hex().upper()
    if nibbles[0] != f"{fmt.value:X}":
        raise _fail(f"PIN block control field is not ISO 9564 format {fmt.value}", pos=0)
    length = int(nibbles[1], 16)
    if not MIN_PIN_LENGTH <= length <= MAX_PIN_LENGTH:
        raise _fail("PIN length in the PIN block is not between 4 and 12", pos=0)
    digits = nibbles[2 : 2 + length]
    fill = nibbles[2 + length :]
    if not digits.isdigit():
        raise _fail("PIN block holds a non-decimal PIN digit")
    allowed_fill = {PinBlockFormat.ISO_0: "F", PinBlockFormat.ISO_1: "0123456789ABCDEF"}.get(fmt, "ABCDEF")
    if any(nibble not in allowed_fill for nibble in fill):
        raise _fail(f"PIN block fill is not valid for ISO 9564 format {fmt.value}")
    return digits


def encrypt_pinblock(
    pin: str | Pin,
    pan: str,
    pik: bytes,
    fmt: PinBlockFormat = PinBlockFormat.ISO_0,
    *,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> bytes:
    """The ISO 9564-1 PIN block encrypted under the PIN key ``pik`` (field 52 contents).

    Triple-DES ECB for a 16- or 24-byte ``pik``, single DES for an 8-byte one. A key of
    another length raises ``CryptoError``; a non-bytes key ``TypeError``.
    """
    key = _des.check_key(pik, "PIN key")
    return _des.ecb_encrypt(key, encode_pinblock(pin, pan, fmt, token_bytes=token_bytes))


def decrypt_pinblock(
    block: bytes, pan: str, pik: bytes, fmt: PinBlockFormat = PinBlockFormat.ISO_0
) -> str:
    """The PIN digits from an ISO 9564-1 PIN block encrypted under ``pik``.

    A block that does not decrypt to a valid PIN block raises ``DecodeError`` (field ``52``).
    """
    key = _des.check_key(pik, "PIN key")
    raw = _des.require_bytes(block, "PIN block")
    _check_pan(pan)
    if len(raw) != 8:
        raise _fail(f"PIN block must be 8 bytes long, got {len(raw)}")
    return decode_pinblock(_des.ecb_decrypt(key, raw), pan, fmt)


def detect_format(block: bytes, pan: str) -> PinBlockFormat:
    """Which ISO 9564-1 format a *clear* PIN block is in: control nibble 1 (the PIN field is not
    XORed with the PAN), else 0 or 3 after removing the PAN field. ``DecodeError`` for none of them.

    >>> detect_format(encode_pinblock("1234", "5544332211009966", PinBlockFormat.ISO_3), "5544332211009966")
    <PinBlockFormat.ISO_3: 3>
    """
    raw = _des.require_bytes(block, "PIN block")
    if len(raw) != 8:
        raise _fail(f"PIN block must be 8 bytes long, got {len(raw)}")
    if raw[0] >> 4 == 1:
        return PinBlockFormat.ISO_1
    control = _des.xor(raw, pan_field(pan))[0] >> 4
    for fmt in (PinBlockFormat.ISO_0, PinBlockFormat.ISO_3):
        if control == fmt.value:
            return fmt
    raise _fail("PIN block is not in ISO 9564 format 0, 1 or 3", pos=0)


def decrypt_pinblock_any(block: bytes, pan: str, pik: bytes) -> str:
    """The PIN digits from a PIN block under ``pik`` in whichever of formats 0, 1 and 3 it is."""
    key = _des.check_key(pik, "PIN key")
    raw = _des.require_bytes(block, "PIN block")
    _check_pan(pan)
    if len(raw) != 8:
        raise _fail(f"PIN block must be 8 bytes long, got {len(raw)}")
    clear = _des.ecb_decrypt(key, raw)
    return decode_pinblock(clear, pan, detect_format(clear, pan))
