"""Application cryptogram for the virtual EMV cards (EMV 4.4 Book 2 §8.1, Annex A1.2–A1.3).

The algorithm, documented so the bundled host (or anyone) can verify an ARQC:

1. Session key (Book 2 A1.3.1, common session key derivation): with the card's 16-byte
   master key MK_AC and the 2-byte ATC,
   ``SK = 3DES(MK, ATC ‖ F0 ‖ 00×5) ‖ 3DES(MK, ATC ‖ 0F ‖ 00×5)``.
2. Input data: the CDOL1 (or CDOL2) data exactly as the terminal sent it in GENERATE AC,
   then AIP (2), ATC (2) and the Issuer Application Data (tag 9F10) the card returns.
3. MAC (Book 2 A1.2.1 = ISO/IEC 9797-1 MAC algorithm 3 with DES, padding method 2): pad with
   ``80`` then zeros to a multiple of 8; single-DES CBC with K_L over all blocks, IV zero;
   the last block is then decrypted with K_R and encrypted with K_L. The 8-byte result is
   the Application Cryptogram (tag 9F26).

Triple DES comes from ``cryptography`` (``hazmat.decrepit`` since release 43); keys are
expanded to the 24-byte K1‖K2‖K1 form so no deprecation warning fires. Test keys only;
keys never appear in messages.

>>> key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> ac = application_cryptogram(key, 1, bytes(29), bytes.fromhex("1800"), bytes.fromhex("06010A03A00000"))
>>> len(ac), verify_cryptogram(key, 1, bytes(29), bytes.fromhex("1800"), bytes.fromhex("06010A03A00000"), ac)
(8, True)
"""

from __future__ import annotations

import hmac

from protocol import _des
from protocol.cryptogram import CryptogramType
from protocol.errors import CryptoError

__all__ = [
    "CryptogramType",
    "application_cryptogram",
    "cryptogram_input",
    "iso9797_mac3",
    "session_key",
    "verify_cryptogram",
    "verify_icc_data",
]


def _key16(key: object) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    if len(key) != 16:
        raise CryptoError(f"a double-length DES key has 16 bytes, got {len(key)}")
    return key


def _ecb(key24: bytes, data: bytes) -> bytes:
    return _des.ecb_encrypt(key24, data)


def _cbc(key24: bytes, data: bytes) -> bytes:
    return _des.cbc_encrypt(key24, data)


def session_key(master_key: bytes, atc: int) -> bytes:
    """EMV common session key derivation (Book 2 A1.3.1) for ``atc``."""
    mk = _key16(master_key)
    if not isinstance(atc, int) or not 0 <= atc <= 0xFFFF:
        raise TypeError("atc must be an int 0..65535")
    r = atc.to_bytes(2, "big")
    k24 = mk + mk[:8]
    return _ecb(k24, r + b"\xF0" + bytes(5)) + _ecb(k24, r + b"\x0F" + bytes(5))


def iso9797_mac3(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, DES, padding method 2, full 8-byte MAC (Book 2 A1.2.1)."""
    k = _key16(key)
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    padded = data + b"\x80" + bytes((-(len(data) + 1)) % 8)
    kl, kr = k[:8], k[8:]
    head, last = padded[:-8], padded[-8:]
    chain = _cbc(kl * 3, head)[-8:] if head else bytes(8)
    block = bytes(a ^ b for a, b in zip(last, chain, strict=True))
    return _ecb(kl + kr + kl, block)  # E_KL(D_KR(E_KL(x))): the final transformation


def cryptogram_input(dol_data: bytes, aip: bytes, atc: int, iad: bytes) -> bytes:
    """The bytes the cryptogram covers: CDOL data ‖ AIP ‖ ATC ‖ IAD (see module docstring)."""
    return dol_data + aip + atc.to_bytes(2, "big") + iad


def application_cryptogram(master_key: bytes, atc: int, dol_data: bytes, aip: bytes, iad: bytes) -> bytes:
    """The 8-byte Application Cryptogram (tag 9F26) for one GENERATE AC."""
    return iso9797_mac3(session_key(master_key, atc), cryptogram_input(dol_data, aip, atc, iad))


def verify_cryptogram(master_key: bytes, atc: int, dol_data: bytes, aip: bytes, iad: bytes,
                      cryptogram: bytes) -> bool:
    """Recompute and compare in constant time (what an issuer host does with an ARQC)."""
    return hmac.compare_digest(application_cryptogram(master_key, atc, dol_data, aip, iad), cryptogram)


def verify_icc_data(master_key: bytes, cdol: bytes, icc_data: bytes) -> bool:
    """Verify the cryptogram in ISO 8583 field 55 the way an issuer host does.

    ``cdol`` is the card's CDOL1 (tag 8C, known to the issuer from personalisation: the
    profile); the CDOL data is rebuilt from the field's own tags (Book 3 §5.4), then AIP (82),
    ATC (9F36), IAD (9F10) and AC (9F26) are taken from the field. Missing tags → ``False``.
    """
    from protocol.errors import DecodeError
    from protocol.tlv import build_dol_data, decode, flatten

    try:
        values = flatten(decode(icc_data))
        dol_data = build_dol_data(cdol, values)
    except DecodeError:
        return False
    try:
        aip, atc, iad, ac = values[0x82], values[0x9F36], values[0x9F10], values[0x9F26]
    except KeyError:
        return False
    if len(atc) != 2 or len(ac) != 8:
        return False
    return verify_cryptogram(master_key, int.from_bytes(atc, "big"), dol_data, aip, iad, ac)
