"""EMV kernel types: errors, configuration, transaction, candidates, the chip read and its
completion (EMV Book 1 §12, Book 3 §10). No I/O and no EMV rules here: see
:mod:`emulator.emv.rules` (pure rules) and :mod:`emulator.emv.kernel` (the flow)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from protocol.cryptogram import CryptogramType
from protocol.errors import ConfigError, EncodeError, PosemuError
from protocol.masking import mask_hex, mask_pan
from protocol.tlv import redacted

__all__ = [
    "DEFAULT_AIDS",
    "FIELD55_TAGS",
    "MAX_COMMANDS",
    "MAX_RESPONSE_DATA",
    "MAX_VERIFY",
    "PSE_NAME",
    "ApduLogEntry",
    "Candidate",
    "CardBlockedError",
    "CardDeclinedError",
    "CardholderCancelledError",
    "ChipRead",
    "ChipReadError",
    "Completion",
    "CryptogramType",
    "Cvm",
    "EmvError",
    "KernelConfig",
    "NoApplicationError",
    "PinBlockedError",
    "PinEntry",
    "TerminalAid",
    "Transaction",
    "TransactionType",
]

PSE_NAME = b"1PAY.SYS.DDF01"

MAX_RESPONSE_DATA = 256
"""Most response data one command may return, GET RESPONSE chains included: EMV uses short
APDUs only, and a short Le (``00``) asks for at most 256 bytes (ISO/IEC 7816-4 §5.1, Table 1).
Every record, FCI and template the kernel decodes is therefore at most 256 bytes."""

MAX_COMMANDS = 512
"""Most commands one card session may take (this kernel's bound, not a standard's): a real
contact transaction needs 10–40, the longest legitimate path here (PSE directory of 255
records, then the AID list) well under 512. A card that keeps the kernel busy beyond it is
broken, and the read ends with :class:`ChipReadError` instead of running on."""

MAX_VERIFY = 15
"""Most VERIFY commands in one offline PIN check: the try counter in ``63Cx`` is 4 bits
(ISO/IEC 7816-4 §5.1.3), so a card that still answers ``63Cx`` after 15 wrong PINs is not
counting down."""



# --- errors ---------------------------------------------------------------------------------
class EmvError(PosemuError):
    """The EMV kernel could not complete a chip read."""


class ChipReadError(EmvError):
    """Talking to the chip failed (mute card, bad ATR, malformed data, unexpected status).

    These count toward the fallback to magstripe (a terminal falls back after repeated chip
    failures). The message names the step and, for decode errors, the TLV path.
    """


class NoApplicationError(EmvError):
    """No application both the card and the terminal support (EMV Book 1 §12.4)."""


class CardBlockedError(EmvError):
    """SELECT answered ``6A81``: the card is blocked (Book 1 §12.3.2). No fallback."""


class PinBlockedError(EmvError):
    """The offline PIN try limit is exhausted (``6983``, or ``63C0`` after a wrong PIN)."""


class CardholderCancelledError(EmvError):
    """The cardholder cancelled (PIN entry or application choice)."""


class CardDeclinedError(EmvError):
    """The card answered GENERATE AC with an AAC: declined offline by the card."""



# --- configuration --------------------------------------------------------------------------
class TransactionType(enum.IntEnum):
    """Transaction Type, tag 9C (first two digits of ISO 8583 processing code)."""

    PURCHASE = 0x00
    CASH = 0x01
    CASHBACK = 0x09
    REFUND = 0x20
    BALANCE_INQUIRY = 0x31


class Cvm(enum.Enum):
    """The cardholder verification the kernel performed."""

    OFFLINE_PIN_OK = "offline PIN verified by the card"
    ONLINE_PIN = "online PIN (to be verified by the issuer)"
    SIGNATURE = "signature"
    NO_CVM = "no CVM"


@dataclass(frozen=True, slots=True)
class TerminalAid:
    """One entry of the terminal's AID list; ``partial`` = Application Selection Indicator."""

    aid: bytes
    partial: bool = True
    label: str = ""


DEFAULT_AIDS: tuple[TerminalAid, ...] = (
    TerminalAid(bytes.fromhex("A000000333010101"), label="UnionPay debit"),
    TerminalAid(bytes.fromhex("A000000333010102"), label="UnionPay credit"),
    TerminalAid(bytes.fromhex("A000000333010103"), label="UnionPay quasi-credit"),
    TerminalAid(bytes.fromhex("A0000000031010"), label="international A000000003 credit/debit"),
    TerminalAid(bytes.fromhex("A0000000032010"), label="international A000000003 electron"),
    TerminalAid(bytes.fromhex("A0000000041010"), label="international A000000004 credit/debit"),
    TerminalAid(bytes.fromhex("A0000000043060"), label="international A000000004 maestro"),
)



@dataclass(frozen=True, slots=True)
class KernelConfig:
    """The EMV kernel's terminal data objects (EMV Book 4 §6; Book 3 Annex A tags).

    Not :class:`emulator.config.TerminalConfig` (the whole terminal's settings, from TOML):
    the terminal derives one of these from its own configuration for each chip read.
    """

    aids: tuple[TerminalAid, ...] = DEFAULT_AIDS
    country: str = "0156"                                 # 9F1A
    currency: str = "0156"                                # 5F2A
    currency_exponent: int = 2                            # 5F36
    terminal_type: int = 0x22                             # 9F35: attended, offline with online capability
    capabilities: bytes = bytes.fromhex("E0E808")         # 9F33: IC/MSR/manual; PIN offline+online, sig, no-CVM
    additional_capabilities: bytes = bytes.fromhex("6000F0A001")   # 9F40
    app_version: bytes = bytes.fromhex("0030")            # 9F09
    ifd_serial: str = "POSEMU01"                          # 9F1E (8 an)
    terminal_id: str = "00000001"                         # 9F1C
    merchant_category: str = "5999"                       # 9F15
    floor_limit: int = 0                                  # 9F1B, minor units
    ttq: bytes = bytes.fromhex("36000000")                # 9F66 (contact kernels fill it if a PDOL asks)
    tac_default: bytes = bytes.fromhex("0000000000")
    tac_denial: bytes = bytes.fromhex("0010000000")
    tac_online: bytes = bytes.fromhex("0000000000")
    pin_pad: bool = True
    max_pin_prompts: int = 3                              # malformed entries tolerated per try

    def __post_init__(self) -> None:
        for name in ("country", "currency", "merchant_category"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise TypeError(f"{name} must be str")
            if len(v) != 4 or not v.isdigit():
                raise ConfigError(f"terminal {name} must be 4 digits, got {v!r}")
        for name, n in (("capabilities", 3), ("additional_capabilities", 5), ("app_version", 2),
                        ("ttq", 4), ("tac_default", 5), ("tac_denial", 5), ("tac_online", 5)):
            v = getattr(self, name)
            if not isinstance(v, bytes):
                raise TypeError(f"{name} must be bytes")
            if len(v) != n:
                raise ConfigError(f"terminal {name} must be {n} bytes")
        if not all(isinstance(a, TerminalAid) for a in self.aids):
            raise TypeError("aids must be TerminalAid entries")


@dataclass(frozen=True, slots=True)
class Transaction:
    """What is being done: amount (minor units), type, sequence counter (9F41)."""

    amount: int = 0
    type: TransactionType = TransactionType.PURCHASE
    amount_other: int = 0
    sequence: int = 1

    def __post_init__(self) -> None:
        for name in ("amount", "amount_other", "sequence"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be int")
            if v < 0:
                raise EncodeError(f"{name} must not be negative", field=name)
        if not isinstance(self.type, TransactionType):
            raise TypeError("type must be a TransactionType")


PinEntry = Callable[[int | None], Awaitable[str | None]]
"""The PIN pad: called with the offline PIN tries left (``None``: unknown, or online PIN);
returns the digits, or ``None`` if the cardholder cancels."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A mutually supported application (EMV Book 1 §12.3)."""

    aid: bytes
    label: str
    priority: int | None = None          # 87 b4-b1, 1 = highest; None = no priority
    confirmation_required: bool = False  # 87 b8
    preferred_name: str = ""

    @property
    def sort_key(self) -> int:
        return self.priority if self.priority else 16


@dataclass(frozen=True, slots=True)
class ApduLogEntry:
    """One command/response pair as the kernel saw it. VERIFY's PIN block is never stored."""

    step: str
    command: bytes
    response: bytes

    def __repr__(self) -> str:
        body, sw = self.response[:-2], self.response[-2:]
        shown = (redacted(body) + " " if body else "") + sw.hex().upper()
        return f"ApduLogEntry({self.step}, {mask_hex(self.command.hex().upper())} -> {shown})"


FIELD55_TAGS: tuple[int, ...] = (
    0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x5F2A, 0x82, 0x9F1A, 0x9F03,
    0x9F33, 0x9F34, 0x9F35, 0x9F1E, 0x84, 0x9F09, 0x9F41,
)
"""Tags sent in ISO 8583 field 55 of the authorisation request, in this order (when known)."""


@dataclass(frozen=True, slots=True, repr=False)
class ChipRead:
    """What the chip yielded: account data, the CVM done, field 55 and the APDU log."""

    pan: str
    pan_sequence: int | None
    expiry: str                      # YYMM
    service_code: str
    track2_equivalent: str           # PAN=YYMMSSS… (no F padding)
    cardholder: str
    aid: str                         # hex of the selected DF name (84)
    label: str
    cvm: Cvm
    icc_data: bytes                  # BER-TLV for ISO 8583 field 55
    apdu_log: tuple[ApduLogEntry, ...]
    cryptogram_type: CryptogramType = CryptogramType.ARQC
    atc: int = 0
    tvr: bytes = bytes(5)
    online_pin: str | None = field(default=None, compare=False)   # collected for CVM ONLINE_PIN

    def __repr__(self) -> str:
        return (f"ChipRead(pan={mask_pan(self.pan)}, aid={self.aid}, label={self.label!r}, "
                f"cvm={self.cvm.name}, {self.cryptogram_type.name}, atc={self.atc}, "
                f"icc_data={len(self.icc_data)} bytes)")


@dataclass(frozen=True, slots=True)
class Completion:
    """The second GENERATE AC's outcome (EMV Book 3 §10.11).

    ``cryptogram_type`` is what the card gave: TC — the card approves; AAC — the card declines
    (after a host approval the terminal must then reverse the authorisation). ``icc_data`` is
    the BER-TLV for ISO 8583 field 55 of a reversal or advice, with the second cryptogram
    (9F26, 9F27, 9F36) in place of the first.
    """

    cryptogram_type: CryptogramType
    icc_data: bytes

    @property
    def approved(self) -> bool:
        """The card accepted the transaction (TC)."""
        return self.cryptogram_type is CryptogramType.TC

    @property
    def declined(self) -> bool:
        """The card refused it (AAC) — after a host approval, a reversal is due."""
        return self.cryptogram_type is CryptogramType.AAC


