"""Masking of card data before anything reaches a log, trace, error message or screen.

PANs are shown as first 6 + last 4 digits (PCI DSS 3.4). Track data, PINs, PIN blocks and
keys are never shown at all; callers redact them by field. These helpers also catch PAN-like
digit runs inside free text and hex dumps, so an error message built from raw bytes cannot
leak a card number.
"""

from __future__ import annotations

import re

_DIGIT_RUN = re.compile(r"\d{13,}")   # a PAN, or a longer run that may hold one: keep 6 + 4 only
# A hex dump of BCD or ASCII-encoded digits: 13–19 digits as BCD nibbles, or as ASCII 3x pairs.
_ASCII_DIGITS_HEX = re.compile(r"(?:3[0-9]){13,}")


def mask_pan(pan: str) -> str:
    """Mask a PAN as first 6 + last 4.

    >>> mask_pan("6212345678901232")
    '621234******1232'
    >>> mask_pan("1234")
    '****'
    """
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def mask_text(text: str) -> str:
    """Mask every run of 13 or more digits in free text (first 6 + last 4 stay).

    >>> mask_text("card 6212345678901232 declined")
    'card 621234******1232 declined'
    """
    return _DIGIT_RUN.sub(lambda m: mask_pan(m.group(0)), text)


def mask_hex(hexstr: str) -> str:
    """Mask PAN-like content in an uppercase hex dump (BCD digit runs and ASCII digit runs).

    >>> mask_hex("0200" + "16" + "6212345678901232" + "FF")
    '020016************1232FF'
    >>> mask_hex("36323132333435363738393031323332")
    '363231323334************31323332'
    """
    out = _ASCII_DIGITS_HEX.sub(lambda m: m.group(0)[:12] + "*" * (len(m.group(0)) - 20) + m.group(0)[-8:],
                                hexstr)
    return _DIGIT_RUN.sub(lambda m: mask_pan(m.group(0)), out)
