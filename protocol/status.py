"""Card status words (ISO/IEC 7816-4 §5.6; EMV Book 3 §6.3.5 and Annex A): the names posemu
uses (:class:`SW`), what each means (:data:`SW_MEANINGS`, :func:`sw_meaning`) and a card's
non-success status as an exception (:class:`CardStatusError` and its subclasses,
:func:`status_error`) — raised by a virtual card's command handlers and turned into SW1 SW2
by its dispatcher, and raised on the terminal side by
:meth:`protocol.apdu.ResponseApdu.check`. Re-exported by :mod:`protocol.apdu`.

>>> sw_meaning(0x6A82)
'file or application not found'
"""

from __future__ import annotations

import enum
from typing import Any

from protocol.errors import ProtocolError

__all__ = [
    "SW",
    "SW_MEANINGS",
    "AuthMethodBlockedError",
    "CardStatusError",
    "ClaNotSupportedError",
    "ConditionsNotSatisfiedError",
    "FileNotFoundStatusError",
    "FunctionNotSupportedError",
    "InsNotSupportedError",
    "MoreDataStatus",
    "RecordNotFoundError",
    "ReferencedDataNotFoundError",
    "SecurityStatusError",
    "WarningStatusError",
    "WrongDataError",
    "WrongLeError",
    "WrongLengthError",
    "WrongP1P2Error",
    "WrongPinError",
    "status_error",
    "sw_meaning",
]


class SW(enum.IntEnum):
    """Status words a card or terminal names in code (ISO/IEC 7816-4 §5.6; EMV Book 3 §6.3.5)."""

    OK = 0x9000
    SELECTED_FILE_INVALIDATED = 0x6283       # EMV: application blocked (SELECT)
    END_OF_FILE = 0x6282
    VERIFY_FAILED = 0x6300
    WRONG_LENGTH = 0x6700
    CLA_FUNCTION_NOT_SUPPORTED = 0x6800
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    COMMAND_INCOMPATIBLE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_INVALIDATED = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81          # EMV: card blocked (SELECT)
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    LC_INCONSISTENT_WITH_P1P2 = 0x6A87
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


SW_MEANINGS: dict[int, str] = {
    0x9000: "normal processing",
    0x6200: "warning, state of non-volatile memory unchanged",
    0x6281: "part of returned data may be corrupted",
    0x6282: "end of file or record reached before reading Ne bytes",
    0x6283: "selected file invalidated (application blocked)",
    0x6284: "FCI not formatted according to ISO 7816-4",
    0x6300: "verification failed",
    0x6381: "file filled up by the last write",
    0x6400: "execution error, state of non-volatile memory unchanged",
    0x6500: "execution error, state of non-volatile memory changed",
    0x6581: "memory failure",
    0x6700: "wrong length",
    0x6800: "functions in CLA not supported",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6900: "command not allowed",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked (PIN blocked)",
    0x6984: "reference data invalidated",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed (no current EF)",
    0x6A80: "incorrect parameters in the data field",
    0x6A81: "function not supported (card blocked)",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A86: "incorrect parameters P1-P2",
    0x6A87: "Lc inconsistent with P1-P2",
    0x6A88: "referenced data not found",
    0x6B00: "wrong parameters P1-P2",
    0x6D00: "instruction code not supported or invalid",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
}


def sw_meaning(sw: int) -> str:
    """What a status word means (ISO/IEC 7816-4 §5.6, Tables 5–6).

    >>> sw_meaning(0x6A82), sw_meaning(0x61_10), sw_meaning(0x6C_08), sw_meaning(0x63C0)
    ('file or application not found', '16 more response bytes available (GET RESPONSE)', \
'wrong Le; exact length is 8', 'verification failed, 0 tries left')
    """
    if not isinstance(sw, int) or isinstance(sw, bool):
        raise TypeError(f"sw must be int, not {type(sw).__name__}")
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw in SW_MEANINGS:
        return SW_MEANINGS[sw]
    if sw1 == 0x61:
        return f"{sw2 or 256} more response bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le; exact length is {sw2 or 256}"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} tries left"
    if sw1 == 0x67:
        return "wrong length"
    if sw1 == 0x6B:
        return "wrong parameters P1-P2"
    if sw1 == 0x6D:
        return "instruction code not supported or invalid"
    if sw1 == 0x6E:
        return "class not supported"
    if sw1 == 0x6F:
        return "no precise diagnosis"
    if sw1 in (0x62, 0x63):
        return f"warning {sw:04X}"
    if sw1 in (0x64, 0x65, 0x66):
        return f"execution error {sw:04X}"
    if sw1 in (0x68, 0x69, 0x6A):
        return f"checking error {sw:04X}"
    if sw1 & 0xF0 == 0x90:
        return f"application-specific status {sw:04X}"
    return f"unknown status word {sw:04X}"


# --- card status as exceptions ---------------------------------------------------------------
class CardStatusError(ProtocolError):
    """A card answered with a non-success status word.

    On the card side a command handler raises it and the dispatcher answers with
    :attr:`sw`; on the terminal side :meth:`ResponseApdu.check` raises it.
    """

    default_sw: int = SW.NO_PRECISE_DIAGNOSIS

    def __init__(self, sw: int | None = None, msg: str = "") -> None:
        self.sw = int(self.default_sw if sw is None else sw)
        self.msg = msg
        text = f"card status {self.sw:04X}: {sw_meaning(self.sw)}"
        super().__init__(text + (f" ({msg})" if msg else ""))

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    def response(self) -> bytes:
        """The status word as response bytes (no data)."""
        return bytes((self.sw1, self.sw2))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.sw, self.msg))


class WarningStatusError(CardStatusError):
    """``62xx``/``63xx``: processed with a warning (e.g. ``6283`` application blocked)."""

    default_sw: int = SW.SELECTED_FILE_INVALIDATED


class WrongPinError(WarningStatusError):
    """``63Cx``: VERIFY failed, ``x`` tries left (ISO/IEC 7816-4 §11.5.6; EMV Book 3 §6.5.12)."""

    default_sw = 0x63C0

    @property
    def tries_left(self) -> int:
        return self.sw2 & 0x0F

    @classmethod
    def with_tries(cls, tries: int) -> WrongPinError:
        return cls(0x63C0 | max(0, min(15, tries)))


class WrongLengthError(CardStatusError):
    """``6700``: Lc or Le wrong."""

    default_sw = SW.WRONG_LENGTH


class WrongLeError(CardStatusError):
    """``6Cxx``: wrong Le field; ``xx`` is the exact length (T=0, ISO/IEC 7816-3 §10.3.4)."""

    default_sw = 0x6C00

    @property
    def exact_length(self) -> int:
        return self.sw2 or 256


class MoreDataStatus(CardStatusError):
    """``61xx``: ``xx`` more bytes available with GET RESPONSE (T=0, ISO/IEC 7816-3 §10.3.4)."""

    default_sw = 0x6100

    @property
    def available(self) -> int:
        return self.sw2 or 256


class SecurityStatusError(CardStatusError):
    """``6982``: security status not satisfied."""

    default_sw = SW.SECURITY_STATUS_NOT_SATISFIED


class AuthMethodBlockedError(CardStatusError):
    """``6983``: authentication method blocked — the PIN try counter is zero."""

    default_sw = SW.AUTH_METHOD_BLOCKED


class ConditionsNotSatisfiedError(CardStatusError):
    """``6985``: conditions of use not satisfied (e.g. GENERATE AC before GPO)."""

    default_sw = SW.CONDITIONS_NOT_SATISFIED


class WrongDataError(CardStatusError):
    """``6A80``: incorrect parameters in the data field."""

    default_sw = SW.WRONG_DATA


class FunctionNotSupportedError(CardStatusError):
    """``6A81``: function not supported — on SELECT, EMV reads it as *card blocked*."""

    default_sw = SW.FUNCTION_NOT_SUPPORTED


class FileNotFoundStatusError(CardStatusError):
    """``6A82``: file or application not found."""

    default_sw = SW.FILE_NOT_FOUND


class RecordNotFoundError(CardStatusError):
    """``6A83``: record not found (end of a READ RECORD loop)."""

    default_sw = SW.RECORD_NOT_FOUND


class WrongP1P2Error(CardStatusError):
    """``6A86``/``6B00``: incorrect P1 P2."""

    default_sw = SW.INCORRECT_P1P2


class ReferencedDataNotFoundError(CardStatusError):
    """``6A88``: referenced data (e.g. a GET DATA tag) not found."""

    default_sw = SW.REFERENCED_DATA_NOT_FOUND


class InsNotSupportedError(CardStatusError):
    """``6D00``: instruction not supported."""

    default_sw = SW.INS_NOT_SUPPORTED


class ClaNotSupportedError(CardStatusError):
    """``6E00``: class not supported."""

    default_sw = SW.CLA_NOT_SUPPORTED


_EXACT: dict[int, type[CardStatusError]] = {
    SW.WRONG_LENGTH: WrongLengthError,
    SW.SECURITY_STATUS_NOT_SATISFIED: SecurityStatusError,
    SW.AUTH_METHOD_BLOCKED: AuthMethodBlockedError,
    SW.CONDITIONS_NOT_SATISFIED: ConditionsNotSatisfiedError,
    SW.WRONG_DATA: WrongDataError,
    SW.FUNCTION_NOT_SUPPORTED: FunctionNotSupportedError,
    SW.FILE_NOT_FOUND: FileNotFoundStatusError,
    SW.RECORD_NOT_FOUND: RecordNotFoundError,
    SW.INCORRECT_P1P2: WrongP1P2Error,
    SW.WRONG_P1P2: WrongP1P2Error,
    SW.REFERENCED_DATA_NOT_FOUND: ReferencedDataNotFoundError,
    SW.INS_NOT_SUPPORTED: InsNotSupportedError,
    SW.CLA_NOT_SUPPORTED: ClaNotSupportedError,
}


def status_error(sw: int) -> CardStatusError:
    """The exception for a non-success status word.

    >>> type(status_error(0x63C1)).__name__, status_error(0x63C1).tries_left  # type: ignore[attr-defined]
    ('WrongPinError', 1)
    >>> type(status_error(0x6983)).__name__
    'AuthMethodBlockedError'
    """
    if not isinstance(sw, int) or isinstance(sw, bool):
        raise TypeError(f"sw must be int, not {type(sw).__name__}")
    cls = _EXACT.get(sw)
    if cls is not None:
        return cls(sw)
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return WrongPinError(sw)
    if sw1 in (0x62, 0x63):
        return WarningStatusError(sw)
    if sw1 == 0x6C:
        return WrongLeError(sw)
    if sw1 == 0x61:
        return MoreDataStatus(sw)
    if sw1 == 0x67:
        return WrongLengthError(sw)
    return CardStatusError(sw)
