"""Application cryptogram types (EMV Book 3 §6.5.5.4): what a GENERATE AC asks for and what
the card's Cryptogram Information Data (tag 9F27) announces.

Shared by the terminal's EMV kernel, the virtual card and the issuer host, so it lives here,
below all of them.

>>> CryptogramType.from_cid(0x80).name, CryptogramType.TC > CryptogramType.AAC
('ARQC', True)
"""

from __future__ import annotations

import enum

__all__ = ["CryptogramType"]


class CryptogramType(enum.IntEnum):
    """Cryptogram Information Data b8-b7 (EMV Book 3 §6.5.5.4, Table 14); also GENERATE AC's P1
    b8-b7. Ordered by how far the card goes: AAC (decline) < TC (approve offline) < ARQC (go
    online)."""

    AAC = 0x00   # application authentication cryptogram: declined
    TC = 0x40    # transaction certificate: approved
    ARQC = 0x80  # authorisation request cryptogram: go online

    @classmethod
    def from_cid(cls, cid: int) -> CryptogramType:
        """The type a CID byte announces (b8-b7; ``11`` is RFU → ``ValueError``)."""
        return cls(cid & 0xC0)
