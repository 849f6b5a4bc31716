"""Working-key management for the CUP-style sign-on (0800/0810, field 62).

On sign-on the host returns the terminal's working keys — PIN key (PIK), MAC key (MAK) and,
for scheme ``004``, track-data key (TDK) — each encrypted under the terminal master key
(TMK) and followed by its check value (protocol-facts §6). The key scheme is the one the
terminal asked for in field 60.3:

==========  ======  =========================================================
scheme      bytes   field 62 layout
==========  ======  =========================================================
``001``     24      PIK(8) CV(4) MAK(8) CV(4) — single DES
``003``     40      PIK(16) CV(4) MAK(8) 00×8 CV(4) — double-length PIK
``004``     60      as ``003``, then TDK(16) CV(4)
==========  ======  =========================================================

The MAK is single-length in every scheme (the CUP ECB MAC runs single DES); in ``003`` and
``004`` its 8 bytes are followed by 8 zero bytes. Keys are wrapped with triple-DES ECB under
the TMK (single DES for an 8-byte TMK). A check value (KCV) is the leftmost bytes of the key
encrypting a zero block: ``E(key, 00×8)[:4]`` (3 bytes is the other common convention).

Nothing here ever puts a key — clear or wrapped — into an exception message or a repr;
:class:`WorkingKeys` shows check values only.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from protocol import _des
from protocol.errors import CryptoError, DecodeError, EncodeError

__all__ = [
    "KCV_LENGTH",
    "KeyScheme",
    "WorkingKeys",
    "build_field62",
    "check_parity",
    "generate_key",
    "generate_working_keys",
    "has_odd_parity",
    "kcv",
    "parse_field62",
    "unwrap_key",
    "with_odd_parity",
    "wrap_key",
]

KCV_LENGTH = 4
"""Check-value bytes in field 62 (CUP): the first 4 bytes of ``E(key, 00×8)``."""
_FIELD = "62"

TokenBytes = Callable[[int], bytes]

# DES weak and semi-weak keys (FIPS 74 §3.6), in odd-parity form.
_WEAK_KEYS = frozenset(
    bytes.fromhex(h)
    for h in (
        "0101010101010101", "FEFEFEFEFEFEFEFE", "E0E0E0E0F1F1F1F1", "1F1F1F1F0E0E0E0E",
        "01FE01FE01FE01FE", "FE01FE01FE01FE01", "1FE01FE00EF10EF1", "E01FE01FF10EF10E",
        "01E001E001F101F1", "E001E001F101F101", "1FFE1FFE0EFE0EFE", "FE1FFE1FFE0EFE0E",
        "011F011F010E010E", "1F011F010E010E01", "E0FEE0FEF1FEF1FE", "FEE0FEE0FEF1FEF1",
    )
)
_MAX_GENERATION_TRIES = 64


# --- check values and parity -------------------------------------------------------------


def kcv(key: bytes, length: int = KCV_LENGTH) -> bytes:
    """Key check value: the leftmost ``length`` (3–8) bytes of ``E(key, 00×8)``.

    >>> kcv(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")).hex().upper()
    '08D7B4FB'
    >>> kcv(bytes.fromhex("0123456789ABCDEF"), 3).hex().upper()
    'D5D44F'
    """
    raw = _des.check_key(key)
    if not isinstance(length, int) or isinstance(length, bool):
        raise TypeError(f"length must be int, not {type(length).__name__}")
    if not 3 <= length <= 8:
        raise CryptoError(f"check value length must be 3 to 8 bytes, got {length}")
    return _des.ecb_encrypt(raw, _des.ZERO_BLOCK)[:length]


def _odd(byte: int) -> int:
    """``byte`` with its least significant bit set so that it has an odd number of 1 bits."""
    high = byte & 0xFE
    return high | ((high.bit_count() & 1) ^ 1)


def with_odd_parity(key: bytes) -> bytes:
    """``key`` with every byte's low bit adjusted to odd parity (DES key parity, FIPS 46-3).

    >>> with_odd_parity(bytes.fromhex("0000FFFE")).hex().upper()
    '0101FEFE'
    """
    raw = _des.require_bytes(key, "key")
    return bytes(_odd(b) for b in raw)


def has_odd_parity(key: bytes) -> bool:
    """True when every byte of ``key`` has an odd number of 1 bits."""
    raw = _des.require_bytes(key, "key")
    return all(b.bit_count() & 1 for b in raw)


def check_parity(key: bytes, name: str = "key") -> None:
    """``CryptoError`` unless ``key`` is a DES key (8/16/24 bytes) with odd parity throughout."""
    raw = _des.check_key(key, name)
    if not has_odd_parity(raw):
        raise CryptoError(f"{name} does not have odd parity")


# --- wrapping under the TMK --------------------------------------------------------------


def wrap_key(tmk: bytes, key: bytes) -> bytes:
    """``key`` (8/16/24 bytes) encrypted under the terminal master key: triple-DES ECB.

    An 8-byte TMK means single DES. Wrong lengths raise ``CryptoError``, non-bytes ``TypeError``.
    """
    raw_tmk = _des.check_key(tmk, "TMK")
    raw_key = _des.check_key(key, "working key")
    return _des.ecb_encrypt(raw_tmk, raw_key)


def unwrap_key(
    tmk: bytes, blob: bytes, *, check_value: bytes | None = None, name: str = "working key"
) -> bytes:
    """The clear key from ``blob`` (8/16/24 bytes) encrypted under ``tmk``.

    With ``check_value`` (3–8 bytes) the clear key's KCV must match it, else ``CryptoError``
    naming ``name`` — never the key bytes.

    Vector (TMK ``70F2…B923``, TAK ``96D605EA176B7E9E`` → ``C24A8FB57AA20123``; CSDN post
    zhu244912654/80005341 and JokerZhu/PythonLearn)::

    >>> tmk = bytes.fromhex("70F2A84CCBC2AE8625CBB0F2C22AB923")
    >>> unwrap_key(tmk, bytes.fromhex("96D605EA176B7E9E")).hex().upper()
    'C24A8FB57AA20123'
    """
    raw_tmk = _des.check_key(tmk, "TMK")
    raw_blob = _des.check_key(blob, f"encrypted {name}")
    clear = _des.ecb_decrypt(raw_tmk, raw_blob)
    if check_value is not None:
        expected = _des.require_bytes(check_value, "check_value")
        if not 3 <= len(expected) <= 8:
            raise CryptoError(f"check value for {name} must be 3 to 8 bytes, got {len(expected)}")
        if not hmac.compare_digest(kcv(clear, len(expected)), expected):
            raise CryptoError(f"check value mismatch for {name}")
    return clear


# --- key generation ----------------------------------------------------------------------


def _is_degenerate(key: bytes) -> bool:
    parts = [key[i : i + 8] for i in range(0, len(key), 8)]
    if any(part in _WEAK_KEYS for part in parts):
        return True
    # K1 = K2 (or K2 = K3) collapses triple DES to single DES.
    return any(parts[i] == parts[i + 1] for i in range(len(parts) - 1))


def generate_key(length: int = 16, *, token_bytes: TokenBytes = secrets.token_bytes) -> bytes:
    """A fresh DES key of ``length`` (8/16/24) bytes with odd parity.

    ``token_bytes`` is the random source (``secrets.token_bytes`` by default; tests pass a
    seeded one such as ``random.Random(7).randbytes``). Weak and semi-weak DES keys and
    keys whose consecutive 8-byte parts are equal are drawn again.
    """
    if not isinstance(length, int) or isinstance(length, bool):
        raise TypeError(f"length must be int, not {type(length).__name__}")
    if length not in _des.KEY_LENGTHS:
        raise CryptoError(f"key length must be 8, 16 or 24 bytes, got {length}")
    for _ in range(_MAX_GENERATION_TRIES):
        drawn = _des.require_bytes(token_bytes(length), "token_bytes() result")
        if len(drawn) != length:
            raise CryptoError(f"token_bytes({length}) returned {len(drawn)} bytes")
        key = with_odd_parity(drawn)
        if not _is_degenerate(key):
            return key
    raise CryptoError(f"no usable key from the random source in {_MAX_GENERATION_TRIES} draws")


# --- working keys and field 62 -----------------------------------------------------------


class KeyScheme(Enum):
    """Working-key scheme requested in field 60.3 of the sign-on (value = the 60.3 code)."""

    SINGLE = "001"
    """Single-length DES PIK and MAK; field 62 is 24 bytes."""
    DOUBLE = "003"
    """Double-length PIK, single-length MAK; field 62 is 40 bytes."""
    DOUBLE_TDK = "004"
    """As :attr:`DOUBLE` plus a double-length track-data key; field 62 is 60 bytes."""

    @property
    def pik_length(self) -> int:
        return 8 if self is KeyScheme.SINGLE else 16

    @property
    def has_tdk(self) -> bool:
        return self is KeyScheme.DOUBLE_TDK

    @property
    def field62_length(self) -> int:
        """Bytes in field 62 for this scheme: 24, 40 or 60."""
        return {KeyScheme.SINGLE: 24, KeyScheme.DOUBLE: 40, KeyScheme.DOUBLE_TDK: 60}[self]

    @classmethod
    def for_field62_length(cls, length: int) -> KeyScheme | None:
        """The scheme whose field 62 has ``length`` bytes, or None."""
        return next((s for s in cls if s.field62_length == length), None)


def _key_repr(key: bytes | None) -> str:
    return "None" if key is None else f"<kcv {kcv(key).hex().upper()}>"


@dataclass(frozen=True, slots=True, repr=False)
class WorkingKeys:
    """The clear working keys of a signed-on terminal. The repr shows check values only.

    >>> keys = WorkingKeys(pik=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    ...                    mak=bytes.fromhex("0123456789ABCDEF"))
    >>> keys
    WorkingKeys(pik=<kcv 08D7B4FB>, mak=<kcv D5D44FF7>, tdk=None)
    """

    pik: bytes
    mak: bytes
    tdk: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("pik", "mak", "tdk"):
            value = getattr(self, name)
            if value is None and name == "tdk":
                continue
            if not isinstance(value, bytes):
                raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
            _des.check_key(value, name.upper())

    def __repr__(self) -> str:
        return f"WorkingKeys(pik={_key_repr(self.pik)}, mak={_key_repr(self.mak)}, tdk={_key_repr(self.tdk)})"

    __str__ = __repr__


def generate_working_keys(
    scheme: KeyScheme = KeyScheme.DOUBLE, *, token_bytes: TokenBytes = secrets.token_bytes
) -> WorkingKeys:
    """Fresh working keys shaped for ``scheme`` (what a host generates at sign-on)."""
    if not isinstance(scheme, KeyScheme):
        raise TypeError(f"scheme must be KeyScheme, not {type(scheme).__name__}")
    pik = generate_key(scheme.pik_length, token_bytes=token_bytes)
    mak = generate_key(8, token_bytes=token_bytes)
    tdk = generate_key(16, token_bytes=token_bytes) if scheme.has_tdk else None
    return WorkingKeys(pik=pik, mak=mak, tdk=tdk)


def build_field62(tmk: bytes, keys: WorkingKeys, scheme: KeyScheme) -> bytes:
    """Field 62 of the 0810 sign-on response: the working keys under ``tmk`` with check values.

    The keys must fit the scheme (PIK 8 bytes for ``001``, 16 otherwise; MAK 8 bytes; a
    16-byte TDK exactly for ``004``), else ``EncodeError`` for field 62.
    """
    if not isinstance(keys, WorkingKeys):
        raise TypeError(f"keys must be WorkingKeys, not {type(keys).__name__}")
    if not isinstance(scheme, KeyScheme):
        raise TypeError(f"scheme must be KeyScheme, not {type(scheme).__name__}")
    raw_tmk = _des.check_key(tmk, "TMK")
    if len(keys.pik) != scheme.pik_length:
        raise EncodeError(f"key scheme {scheme.value} needs a {scheme.pik_length}-byte PIK", field=_FIELD)
    if len(keys.mak) != 8:
        raise EncodeError(f"key scheme {scheme.value} needs an 8-byte MAK", field=_FIELD)
    if scheme.has_tdk != (keys.tdk is not None) or (keys.tdk is not None and len(keys.tdk) != 16):
        need = "a 16-byte TDK" if scheme.has_tdk else "no TDK"
        raise EncodeError(f"key scheme {scheme.value} needs {need}", field=_FIELD)

    def entry(key: bytes) -> bytes:
        return wrap_key(raw_tmk, key)

    out = entry(keys.pik) + kcv(keys.pik)
    if scheme is KeyScheme.SINGLE:
        out += entry(keys.mak) + kcv(keys.mak)
    else:
        out += entry(keys.mak) + _des.ZERO_BLOCK + kcv(keys.mak)
    if keys.tdk is not None:
        out += entry(keys.tdk) + kcv(keys.tdk)
    return out


def parse_field62(tmk: bytes, data: bytes, scheme: KeyScheme | None = None) -> WorkingKeys:
    """The clear working keys from field 62 of an 0810, each check value verified.

    ``scheme`` is the one requested in field 60.3; None infers it from the length (24, 40
    or 60 bytes). A length that does not fit, or non-zero MAK padding, is a ``DecodeError``
    for field 62 (without the raw bytes, which are key material); a check value that does
    not match is a ``CryptoError`` naming the key (PIK, MAK or TDK).
    """
    raw = _des.require_bytes(data, "field 62")
    raw_tmk = _des.check_key(tmk, "TMK")
    if scheme is None:
        scheme = KeyScheme.for_field62_length(len(raw))
        if scheme is None:
            raise DecodeError(
                f"working-key block length {len(raw)} matches no key scheme (24, 40 or 60 bytes)",
                field=_FIELD,
            )
    elif not isinstance(scheme, KeyScheme):
        raise TypeError(f"scheme must be KeyScheme, not {type(scheme).__name__}")
    if len(raw) != scheme.field62_length:
        raise DecodeError(
            f"working-key block length {len(raw)}, key scheme {scheme.value} needs {scheme.field62_length}",
            field=_FIELD,
        )

    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = raw[pos : pos + n]
        pos += n
        return chunk

    def key_entry(n: int, name: str) -> bytes:
        blob = take(n)
        return unwrap_key(raw_tmk, blob, check_value=take(KCV_LENGTH), name=f"{name} (field 62)")

    pik = key_entry(scheme.pik_length, "PIK")
    mak_blob = take(8)
    if scheme is not KeyScheme.SINGLE:
        pad_pos = pos
        if take(8) != _des.ZERO_BLOCK:
            raise DecodeError("MAK padding is not 8 zero bytes", field=_FIELD, pos=pad_pos)
    mak = unwrap_key(raw_tmk, mak_blob, check_value=take(KCV_LENGTH), name="MAK (field 62)")
    tdk = key_entry(16, "TDK") if scheme.has_tdk else None
    return WorkingKeys(pik=pik, mak=mak, tdk=tdk)
