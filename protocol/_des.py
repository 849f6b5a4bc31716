"""DES and triple-DES block operations for the protocol layer (internal helper).

Every cipher operation in posemu goes through the ``cryptography`` package; this module
only hides *where* that package keeps triple DES and how it wants its keys:

* ``cryptography`` ≥ 43 keeps ``TripleDES`` in ``cryptography.hazmat.decrepit``; older
  releases keep it in ``cryptography.hazmat.primitives.ciphers.algorithms``. We look in the
  new place first and fall back to the old one. The fallback import is the only place where
  a ``CryptographyDeprecationWarning`` is suppressed, inside ``warnings.catch_warnings`` for
  that import alone (it runs once, at import time).
* ``cryptography`` ≥ 47 deprecates 8- and 16-byte ``TripleDES`` keys. We never hand it one:
  keys are expanded here to the 24-byte K1‖K2‖K3 form it asks for. Single DES is
  triple DES with K1 = K2 = K3 (E-D-E with one key collapses to one DES encryption), and a
  double-length key K1‖K2 is K1‖K2‖K1 (ANSI X9.52 / ISO/IEC 18033-3 keying option 2). So no
  warning fires at call time and nothing is filtered there.

Keys and data are never put into exception messages.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import cast

from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, CipherContext, modes
from cryptography.utils import CryptographyDeprecationWarning

from protocol.binary import require_bytes as require_bytes  # re-exported for the crypto modules
from protocol.errors import CryptoError

BLOCK_SIZE = 8
ZERO_BLOCK = bytes(BLOCK_SIZE)
KEY_LENGTHS = (8, 16, 24)

_TripleDESFactory = Callable[[bytes], BlockCipherAlgorithm]


def _load_triple_des() -> _TripleDESFactory:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        try:
            module = importlib.import_module("cryptography.hazmat.decrepit.ciphers.algorithms")
        except ImportError:  # pragma: no cover - cryptography < 43
            module = importlib.import_module("cryptography.hazmat.primitives.ciphers.algorithms")
        return cast(_TripleDESFactory, module.TripleDES)


_TripleDES = _load_triple_des()


def check_key(key: object, name: str = "key", lengths: tuple[int, ...] = KEY_LENGTHS) -> bytes:
    """Validate a DES key: bytes-like (else ``TypeError``) of an allowed length (else ``CryptoError``).

    The message names the key and its length, never its bytes.
    """
    raw = require_bytes(key, name)
    if len(raw) not in lengths:
        allowed = ", ".join(str(n) for n in lengths)
        raise CryptoError(f"{name} must be {allowed} bytes long, got {len(raw)}")
    return raw


def expand_key(key: bytes) -> bytes:
    """The 24-byte K1‖K2‖K3 form of a single (K), double (K1‖K2) or triple-length DES key.

    >>> expand_key(bytes(range(8))) == bytes(range(8)) * 3
    True
    >>> expand_key(bytes(range(16)))[16:] == bytes(range(8))
    True
    """
    raw = check_key(key)
    if len(raw) == 8:
        return raw * 3
    if len(raw) == 16:
        return raw + raw[:8]
    return raw


def _check_blocks(data: bytes) -> bytes:
    raw = require_bytes(data, "data")
    if len(raw) % BLOCK_SIZE:
        raise CryptoError(f"data length {len(raw)} is not a multiple of the DES block size 8")
    return raw


def _ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(_TripleDES(expand_key(key)), modes.ECB())


def _cbc(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(_TripleDES(expand_key(key)), modes.CBC(_check_iv(iv)))


def ecb_encryptor(key: bytes) -> CipherContext:
    """A reusable ECB encryption context (ECB has no chaining state, so ``update`` may be
    called once per block as the next block becomes known). Call ``finalize`` when done."""
    return _ecb(key).encryptor()


def ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """Triple-DES (single DES for an 8-byte key) ECB encryption, no padding."""
    raw = _check_blocks(data)
    enc = _ecb(key).encryptor()
    return enc.update(raw) + enc.finalize()


def ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """Triple-DES (single DES for an 8-byte key) ECB decryption, no padding."""
    raw = _check_blocks(data)
    dec = _ecb(key).decryptor()
    return dec.update(raw) + dec.finalize()


def cbc_encrypt(key: bytes, data: bytes, iv: bytes = ZERO_BLOCK) -> bytes:
    """Triple-DES (single DES for an 8-byte key) CBC encryption, no padding."""
    raw = _check_blocks(data)
    enc = _cbc(key, iv).encryptor()
    return enc.update(raw) + enc.finalize()


def _check_iv(iv: bytes) -> bytes:
    raw = require_bytes(iv, "iv")
    if len(raw) != BLOCK_SIZE:
        raise CryptoError(f"iv must be 8 bytes long, got {len(raw)}")
    return raw


def xor(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two equal-length byte strings.

    >>> xor(b"\\x0f\\xf0", b"\\xff\\xff").hex()
    'f00f'
    """
    if len(a) != len(b):
        raise ValueError("xor operands differ in length")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
