"""Message authentication codes for ISO 8583 field 64 (and 128).

Two algorithms, both over DES through the ``cryptography`` package:

* :attr:`MacAlgorithm.X9_19` — the **ANSI X9.19 retail MAC**, which is ISO/IEC 9797-1
  MAC algorithm 3 with padding method 1 and DES as the block cipher. The key is
  double-length, K = K1‖K2. The padded data is CBC-encrypted with single DES under K1
  (IV zero); the last CBC block is then decrypted under K2 and encrypted under K1. The
  X9.19 MAC is the leftmost 4 bytes of that 8-byte result (:func:`retail_mac` with
  ``length=4``); field 64 is 8 bytes, so :func:`compute_mac` returns all 8.
  Padding method 1 appends as few zero bytes as make a positive multiple of 8 (an empty
  message becomes one zero block).
  A single-length (8-byte) key selects X9.19's basic single-key procedure, i.e. the
  ANSI X9.9 CBC-MAC (ISO/IEC 9797-1 algorithm 1, the above with K2 = K1). That is what a
  single-length MAK from the field 62 key block gives; it is only 56-bit strong, so hand
  this algorithm a double-length MAK where the key exchange can carry one.
* :attr:`MacAlgorithm.CUP_ECB` — the **China UnionPay POS "ECB" MAC** of the CUP direct-
  connect POS terminal specification (中国银联直联POS终端规范; protocol-facts §6). The MAC
  element block (MAB) is the message from the MTI through the last field before 64, as
  sent; the caller passes exactly those bytes. All 8-byte blocks of the MAB (the last one
  zero-padded) are XORed together; the 8-byte result is expanded to 16 upper-case hex
  ASCII characters; the first 8 characters are encrypted under the MAK, the result XORed
  with the last 8 characters and encrypted under the MAK again; that block is expanded to
  16 hex characters and the first 8 characters (as ASCII bytes) are the MAC. A single-length
  MAK (8 bytes) means single DES; a double- or triple-length MAK means triple-DES EDE.
  Note its weakness: the XOR fold makes it blind to reordered 8-byte blocks and to the same
  bit flipped in two blocks, and only 32 bits of the final block survive the hex expansion.
  It is here for compatibility with CUP-style hosts; prefer X9.19 where the peer allows it.

:func:`verify_mac` compares in constant time (``hmac.compare_digest``) and raises
:class:`~protocol.errors.CryptoError` on mismatch. Keys and MAC values never appear in
exception messages.
"""

from __future__ import annotations

import hmac
from enum import Enum

from protocol import _des
from protocol.errors import CryptoError

__all__ = ["MAC_SIZE", "MacAlgorithm", "compute_mac", "cup_ecb_mac", "retail_mac", "verify_mac"]

MAC_SIZE = 8
"""Bytes in an ISO 8583 field 64 MAC."""


class MacAlgorithm(Enum):
    """The MAC algorithms posemu speaks."""

    X9_19 = "ansi-x9.19"
    """ANSI X9.19 retail MAC = ISO/IEC 9797-1 MAC algorithm 3, padding method 1, DES."""
    CUP_ECB = "cup-ecb"
    """China UnionPay POS terminal "ECB" MAC (XOR, hex-expand, DES under the MAK)."""


def _pad_method_1(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 1: zero bytes up to a positive multiple of 8."""
    if not data:
        return _des.ZERO_BLOCK
    return data + bytes(-len(data) % _des.BLOCK_SIZE)


def retail_mac(key: bytes, data: bytes, *, length: int = 4) -> bytes:
    """ANSI X9.19 retail MAC (ISO/IEC 9797-1 MAC algorithm 3, padding method 1, DES).

    ``key`` is the double-length MAC key K1‖K2 (16 bytes), or a single-length key K (8 bytes)
    for the single-key procedure (K1 = K2 = K: the X9.9 CBC-MAC). ``length`` is the number
    of leftmost bytes returned: 4 for the X9.19 MAC proper, up to 8 for the whole block.

    Vector from knovichikhin/psec ``tests/test_mac.py`` (K1 = ``AAAAAAAA``, K2 = ``BBBBBBBB``):

    >>> retail_mac(b"AAAAAAAABBBBBBBB", b"hello world").hex().upper()
    '3DDE5C55'
    >>> retail_mac(b"AAAAAAAABBBBBBBB", b"hello world", length=8).hex().upper()
    '3DDE5C5511661CBF'
    """
    raw_key = _des.check_key(key, "X9.19 MAC key", lengths=(8, 16))
    raw = _des.require_bytes(data, "data")
    if not isinstance(length, int) or isinstance(length, bool):
        raise TypeError(f"length must be int, not {type(length).__name__}")
    if not 4 <= length <= MAC_SIZE:
        raise CryptoError(f"X9.19 MAC length must be 4 to 8 bytes, got {length}")
    k1, k2 = raw_key[:8], raw_key[-8:]
    padded = _pad_method_1(raw)
    head, last = padded[: -_des.BLOCK_SIZE], padded[-_des.BLOCK_SIZE :]
    # CBC with K1 over all blocks but the last; the last block's E_K1 followed by the output
    # transformation E_K1(D_K2(·)) is one two-key triple-DES EDE with K1‖K2 (K1, K2, K1).
    chained = _des.cbc_encrypt(k1, head)[-_des.BLOCK_SIZE :] if head else _des.ZERO_BLOCK
    return _des.ecb_encrypt(k1 + k2, _des.xor(chained, last))[:length]


def _hex_ascii(block: bytes) -> bytes:
    return block.hex().upper().encode("ascii")


def cup_ecb_mac(key: bytes, data: bytes) -> bytes:
    """China UnionPay POS "ECB" MAC of the MAB ``data`` under the MAK ``key``: 8 ASCII bytes.

    ``key`` is 8 bytes (single DES, the CUP MAK) or 16/24 bytes (triple-DES EDE).

    Vector (CUP POS 0200, TAK ``C24A8FB57AA20123``; published in JokerZhu/PythonLearn
    ``myTest/8583/my8583/pyScript/Security.py`` and the CSDN post zhu244912654/80005341),
    the MAB is 0200 … field 63 of a purchase request:

    >>> mab = bytes.fromhex(
    ...     "0200302004C020C0981100000000000000005100183402100006324392260009942820D1312101"
    ...     "120084393136363838303134303030303030303030303030303031313536ACF46E73838A82F926"
    ...     "00000000000000000822000001")
    >>> cup_ecb_mac(bytes.fromhex("C24A8FB57AA20123"), mab)
    b'8A9E91B8'
    """
    raw_key = _des.check_key(key, "CUP MAC key")
    raw = _des.require_bytes(data, "data")
    padded = raw + bytes(-len(raw) % _des.BLOCK_SIZE)
    acc = 0
    for offset in range(0, len(padded), _des.BLOCK_SIZE):
        acc ^= int.from_bytes(padded[offset : offset + _des.BLOCK_SIZE], "big")
    expanded = _hex_ascii(acc.to_bytes(_des.BLOCK_SIZE, "big"))
    enc = _des.ecb_encryptor(raw_key)
    first = enc.update(expanded[:8])
    second = enc.update(_des.xor(first, expanded[8:]))
    enc.finalize()
    return _hex_ascii(second)[:MAC_SIZE]


def _check_algorithm(alg: object) -> MacAlgorithm:
    if not isinstance(alg, MacAlgorithm):
        raise TypeError(f"alg must be MacAlgorithm, not {type(alg).__name__}")
    return alg


def compute_mac(alg: MacAlgorithm, key: bytes, data: bytes) -> bytes:
    """The 8-byte field-64 MAC of ``data`` under ``key`` with algorithm ``alg``.

    For :attr:`MacAlgorithm.X9_19` this is the whole final block of ISO/IEC 9797-1
    algorithm 3 (its leftmost 4 bytes are the X9.19 MAC); for
    :attr:`MacAlgorithm.CUP_ECB` the 8 ASCII hex characters.
    """
    if _check_algorithm(alg) is MacAlgorithm.X9_19:
        return retail_mac(key, data, length=MAC_SIZE)
    return cup_ecb_mac(key, data)


def verify_mac(alg: MacAlgorithm, key: bytes, data: bytes, mac: bytes) -> None:
    """Check a received 8-byte MAC; ``CryptoError`` if it is wrong (constant-time compare).

    A MAC of the wrong length is also a ``CryptoError`` (no truncated MACs are accepted).
    """
    received = _des.require_bytes(mac, "mac")
    expected = compute_mac(alg, key, data)
    if len(received) != MAC_SIZE:
        raise CryptoError(f"{alg.value} MAC must be {MAC_SIZE} bytes long, got {len(received)}")
    if not hmac.compare_digest(expected, received):
        raise CryptoError(f"{alg.value} MAC mismatch")
