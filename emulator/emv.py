"""The terminal's EMV contact kernel: from power-on to the first GENERATE AC (ARQC).

An ``async`` flow over a :class:`hardware.ports.CardReader` (any backend: ``sim://``,
``pcsc://``), taking dates from the :class:`hardware.clock.Clock`:

1. **Activation** — power on, parse the ATR (ISO/IEC 7816-3 §8, :mod:`hardware.atr`).
2. **Application selection** (EMV Book 1 §12) — SELECT ``1PAY.SYS.DDF01``; its FCI names the
   directory SFI, whose records list the card's applications (§12.3.2). If the PSE is
   missing (``6A82``) or anything about it fails, the terminal's AID list is tried one by one
   with SELECT first/next occurrence (§12.3.3). ``6A81`` means the card is blocked
   (:class:`CardBlockedError`, no fallback); ``6283`` marks a blocked application. Candidates
   are ordered by Application Priority Indicator (tag 87); an optional hook lets the
   cardholder choose (§12.4). The final SELECT or a GPO answered ``6985`` removes a
   candidate and selection starts again (Book 3 §10.1).
3. **Initiate application processing** (Book 3 §10.1) — GET PROCESSING OPTIONS with the PDOL
   (tag 9F38) filled from terminal data (Book 3 §5.4); response format 1 or 2.
4. **Read application data** (Book 3 §10.2) — READ RECORD over every AFL entry; each record
   must be one ``70`` template; redundant primitive objects or missing mandatory ones (5A,
   5F24, 8C) end the read with :class:`ChipReadError`.
5. **Processing restrictions** (Book 3 §10.4) — application version, usage control,
   effective and expiry dates → TVR bits. **Terminal risk management** (§10.6) — floor limit.
6. **Cardholder verification** (Book 3 §10.5, Annex C3) — the CVM list (8E) rule by rule:
   offline plaintext PIN (GET DATA 9F17, then VERIFY with the try counter: ``63Cx`` asks
   again with *x* tries left, ``6983`` or ``63C0`` → :class:`PinBlockedError`), online PIN
   (the PIN is collected and handed back for the ISO 8583 PIN block), signature, no CVM.
7. **Terminal action analysis** (§10.7) — TAC/IAC denial against the TVR → AAC request,
   otherwise ARQC; **GENERATE AC** with the CDOL1 (8C) data; an AAC answer raises
   :class:`CardDeclinedError`.

The result is a :class:`ChipRead` whose ``icc_data`` is the BER-TLV for ISO 8583 field 55.
:meth:`EmvKernel.complete` runs the second GENERATE AC with the host's answer.

Card data never reaches a message: PANs are masked, track data and PINs are never shown,
and the APDU log replaces VERIFY's PIN block.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hardware.atr import Atr, parse_atr
from hardware.cards.emv_crypto import CryptogramType
from hardware.clock import Clock
from hardware.errors import CardAbsentError, ReaderError
from hardware.ports import CardReader
from protocol.apdu import (
    SW,
    ApduExchange,
    CommandApdu,
    ExchangeComplete,
    ExchangeError,
    ResponseApdu,
    SendCommand,
    sw_meaning,
)
from protocol.errors import ConfigError, DecodeError, EncodeError, PosemuError
from protocol.masking import mask_hex, mask_pan
from protocol.tlv import PDOL_DATA_MAX, Tlv, build_dol_data, decode, encode, find, redacted, tag_hex

__all__ = [
    "DEFAULT_AIDS",
    "FIELD55_TAGS",
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
    "EmvKernel",
    "NoApplicationError",
    "PinBlockedError",
    "PinEntry",
    "TerminalAid",
    "TerminalConfig",
    "Transaction",
    "TransactionType",
    "read_chip",
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


def _bcd_n(value: int, nbytes: int) -> bytes:
    return bytes.fromhex(f"{value:0{nbytes * 2}d}")


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    """Terminal data objects (EMV Book 4 §6; Book 3 Annex A tags)."""

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

    @property
    def icc_tlv(self) -> tuple[Tlv, ...]:
        return decode(self.icc_data)


@dataclass(frozen=True, slots=True)
class Completion:
    """The second GENERATE AC's outcome (EMV Book 3 §10.11)."""

    cryptogram_type: CryptogramType
    icc_data: bytes


# --- helpers --------------------------------------------------------------------------------
def _ascii(b: bytes) -> str:
    return b.decode("ascii", "replace").strip()


def _digits(b: bytes) -> str:
    """BCD/cn digits up to the first F filler."""
    h = b.hex().upper()
    return h.split("F", 1)[0]


_TVR = {  # (byte index, bit mask) — EMV Book 3 Annex C5
    "oda_not_performed": (0, 0x80),
    "icc_data_missing": (0, 0x20),
    "version_mismatch": (1, 0x80),
    "expired": (1, 0x40),
    "not_effective": (1, 0x20),
    "service_not_allowed": (1, 0x10),
    "cv_failed": (2, 0x80),
    "unrecognised_cvm": (2, 0x40),
    "pin_limit_exceeded": (2, 0x20),
    "pin_not_entered": (2, 0x08),
    "online_pin_entered": (2, 0x04),
    "floor_limit_exceeded": (3, 0x80),
}


class EmvKernel:
    """Terminal-side EMV contact kernel for one card session (see the module docstring).

    ``unpredictable`` makes tag 9F37 (default: ``os.urandom(4)``); ``choose_application``
    is the ask-the-cardholder hook (without it the highest-priority candidate is used and
    applications requiring confirmation are excluded, Book 1 §12.4).
    """

    def __init__(
        self,
        reader: CardReader,
        clock: Clock,
        config: TerminalConfig | None = None,
        *,
        unpredictable: Callable[[], bytes] | None = None,
        choose_application: Callable[[Sequence[Candidate]], Awaitable[Candidate | None]] | None = None,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.config = config or TerminalConfig()
        self._unpredictable = unpredictable or (lambda: os.urandom(4))
        self._choose = choose_application
        self.atr: Atr | None = None
        self._log: list[ApduLogEntry] = []
        self._data: dict[int, bytes] = {}
        self._card: dict[int, bytes] = {}
        self._tvr = bytearray(5)
        self._tsi = bytearray(2)
        self._read: ChipRead | None = None

    # --- plumbing -------------------------------------------------------------------------------
    @property
    def apdu_log(self) -> tuple[ApduLogEntry, ...]:
        return tuple(self._log)

    @property
    def tvr(self) -> bytes:
        return bytes(self._tvr)

    def _set(self, flag: str) -> None:
        i, bit = _TVR[flag]
        self._tvr[i] |= bit

    async def _exchange(self, step: str, cmd: CommandApdu, *, redact: bool = False) -> ResponseApdu:
        """Send one command through :class:`protocol.apdu.ApduExchange`: GET RESPONSE on 61xx
        and the command again on 6Cxx if the reader left them to us (the TTL's job, EMV Book 1
        §9.3.1; PC/SC over T=0 may pass them through). Every command sent is logged."""
        ex = ApduExchange(cmd, max_commands=16, max_data=MAX_RESPONSE_DATA)
        while True:
            try:
                ev = ex.next_event()
            except ExchangeError:
                raise ChipReadError(f"{step}: the card kept asking for GET RESPONSE or a new Le") from None
            if isinstance(ev, ExchangeComplete):
                return ResponseApdu.decode(ev.response)
            assert isinstance(ev, SendCommand)
            if len(self._log) >= MAX_COMMANDS:
                raise ChipReadError(f"{step}: the card needed more than {MAX_COMMANDS} commands; giving up")
            try:
                raw = await self.reader.transmit(ev.apdu)
            except CardAbsentError:
                raise
            except ReaderError as e:
                raise ChipReadError(f"{step}: {e}") from e
            logged = ev.apdu[:4] + bytes([len(cmd.data)]) if redact and cmd.data and ev.apdu[5:] else ev.apdu
            self._log.append(ApduLogEntry(step, logged, raw))
            try:
                ex.receive_data(raw)
            except DecodeError as e:
                if e.field == "data":
                    raise ChipReadError(f"{step}: the card answered more than {MAX_RESPONSE_DATA} bytes "
                                        "(a short Le asks for at most 256, ISO/IEC 7816-4 §5.1)") from None
                raise ChipReadError(f"{step}: {e.msg}") from None

    def _decode(self, step: str, data: bytes) -> tuple[Tlv, ...]:
        try:
            return decode(data)
        except DecodeError as e:
            raise ChipReadError(f"{step}: malformed TLV ({e.msg}) at {e.field or '?'}"
                                f"{'' if e.pos is None else f', byte {e.pos}'}") from None

    def _terminal_values(self, txn: Transaction, now: dt.datetime, un: bytes) -> dict[int, bytes]:
        c = self.config
        return {
            0x9F02: _bcd_n(txn.amount, 6),
            0x9F03: _bcd_n(txn.amount_other, 6),
            0x9F1A: bytes.fromhex(c.country),
            0x5F2A: bytes.fromhex(c.currency),
            0x5F36: bytes([c.currency_exponent]),
            0x9A: bytes.fromhex(now.strftime("%y%m%d")),
            0x9F21: bytes.fromhex(now.strftime("%H%M%S")),
            0x9C: bytes([txn.type]),
            0x9F37: un,
            0x9F33: c.capabilities,
            0x9F35: bytes([c.terminal_type]),
            0x9F40: c.additional_capabilities,
            0x9F1E: c.ifd_serial.encode("ascii")[:8].ljust(8),
            0x9F1C: c.terminal_id.encode("ascii")[:8].ljust(8),
            0x9F09: c.app_version,
            0x9F15: bytes.fromhex(c.merchant_category),
            0x9F1B: c.floor_limit.to_bytes(4, "big"),
            0x9F41: _bcd_n(txn.sequence % 10**8, 4),
            0x9F66: c.ttq,
        }

    def _dol_values(self) -> dict[int, bytes]:
        values = dict(self._card)
        values.update(self._data)
        values[0x95] = bytes(self._tvr)
        values[0x9B] = bytes(self._tsi)
        return values

    # --- the flow ---------------------------------------------------------------------------------
    async def read(self, txn: Transaction, pin_entry: PinEntry) -> ChipRead:
        """Run the flow up to the first GENERATE AC (ARQC) and return the chip data."""
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, not {type(txn).__name__}")
        if not callable(pin_entry):
            raise TypeError("pin_entry must be an async callable")
        self._read = None
        self._log.clear()
        self._tvr = bytearray(5)
        self._tsi = bytearray(2)
        self._card = {}
        now = self.clock.wall()
        un = self._unpredictable()
        if not isinstance(un, bytes) or len(un) != 4:
            raise TypeError("unpredictable() must return 4 bytes")
        self._data = self._terminal_values(txn, now, un)

        try:
            self.atr = parse_atr(await self.reader.power_on())
        except DecodeError as e:
            raise ChipReadError(f"unreadable ATR: {e.msg} ({e.field})") from None
        except CardAbsentError:
            raise
        except ReaderError as e:
            raise ChipReadError(f"power on: {e}") from e

        candidates = await self._candidates()
        fci, aip, afl = await self._select_and_gpo(candidates)
        await self._read_records(afl)
        self._card[0x82] = aip
        self._restrictions(now, txn)
        self._risk_management(txn)
        cvm, online_pin = await self._cardholder_verification(txn, pin_entry, aip)
        kind = await self._first_generate_ac()
        self._read = self._result(fci, cvm, online_pin, kind)
        return self._read

    # --- application selection ----------------------------------------------------------------
    async def _candidates(self) -> list[Candidate]:
        found = await self._pse_candidates()
        if not found:
            found = await self._aid_list_candidates()
        if not self._choose:
            found = [c for c in found if not c.confirmation_required]
        if not found:
            raise NoApplicationError("no application supported by both card and terminal")
        return sorted(found, key=lambda c: c.sort_key)

    def _terminal_accepts(self, aid: bytes) -> bool:
        return any(aid == t.aid or (t.partial and aid.startswith(t.aid)) for t in self.config.aids)

    async def _pse_candidates(self) -> list[Candidate]:
        """Book 1 §12.3.2: PSE directory. Any failure → empty list (use the AID list)."""
        resp = await self._exchange("SELECT PSE", CommandApdu(0x00, 0xA4, 0x04, 0x00, PSE_NAME, ne=256))
        if resp.sw == SW.FUNCTION_NOT_SUPPORTED:
            raise CardBlockedError("the card is blocked (SELECT answered 6A81)")
        if resp.sw != SW.OK:
            return []
        try:
            sfi_tlv = find(decode(resp.data), "6F.A5.88")
        except DecodeError:
            return []
        if sfi_tlv is None or len(sfi_tlv.value) != 1 or not 1 <= sfi_tlv.value[0] <= 30:
            return []
        sfi = sfi_tlv.value[0]
        out: list[Candidate] = []
        for rec in range(1, 256):
            r = await self._exchange("READ RECORD (PSE directory)",
                                     CommandApdu(0x00, 0xB2, rec, (sfi << 3) | 0x04, ne=256))
            if r.sw == SW.RECORD_NOT_FOUND:
                break
            if r.sw != SW.OK:
                return []
            try:
                objs = decode(r.data)
            except DecodeError:
                return []
            if len(objs) != 1 or objs[0].tag != 0x70:
                return []
            for entry in objs[0].children:
                if entry.tag != 0x61:
                    continue  # 9D DDF entries etc. are not followed
                aid = entry.find("4F")
                if aid is None or not self._terminal_accepts(aid.value):
                    continue
                out.append(_candidate(aid.value, entry))
        return out

    async def _aid_list_candidates(self) -> list[Candidate]:
        """Book 1 §12.3.3: SELECT each terminal AID, following next occurrences when partial."""
        out: list[Candidate] = []
        seen: set[bytes] = set()
        for t in self.config.aids:
            p2 = 0x00
            for _ in range(16):
                resp = await self._exchange("SELECT AID", CommandApdu(0x00, 0xA4, 0x04, p2, t.aid, ne=256))
                if resp.sw == SW.FUNCTION_NOT_SUPPORTED:
                    raise CardBlockedError("the card is blocked (SELECT answered 6A81)")
                if resp.sw not in (SW.OK, SW.SELECTED_FILE_INVALIDATED):
                    break
                try:
                    objs = decode(resp.data)
                except DecodeError:
                    break
                df = find(objs, "6F.84")
                if df is None:
                    break
                name = df.value
                blocked = resp.sw == SW.SELECTED_FILE_INVALIDATED
                if not blocked and name not in seen and (name == t.aid or (t.partial and name.startswith(t.aid))):
                    prop = find(objs, "6F.A5")
                    out.append(_candidate(name, prop))
                    seen.add(name)
                if name == t.aid or not t.partial:
                    break
                p2 = 0x02
        return out

    async def _select_and_gpo(self, candidates: list[Candidate]) -> tuple[tuple[Tlv, ...], bytes, bytes]:
        """Final selection and GPO; 6985 or a failed SELECT drops the candidate (Book 3 §10.1)."""
        remaining = list(candidates)
        while remaining:
            if self._choose is not None:
                chosen = await self._choose(tuple(remaining))
                if chosen is None:
                    raise CardholderCancelledError("no application chosen")
                if chosen not in remaining:
                    raise TypeError("choose_application must return one of the candidates")
            else:
                chosen = remaining[0]
            remaining.remove(chosen)
            resp = await self._exchange("SELECT application",
                                        CommandApdu(0x00, 0xA4, 0x04, 0x00, chosen.aid, ne=256))
            if resp.sw == SW.FUNCTION_NOT_SUPPORTED:
                raise CardBlockedError("the card is blocked (SELECT answered 6A81)")
            if resp.sw != SW.OK:
                continue
            fci = self._decode("SELECT application", resp.data)
            df = find(fci, "6F.84")
            if df is None:
                raise ChipReadError("SELECT application: FCI without DF name (6F.84)")
            pdol_tlv = find(fci, "6F.A5.9F38")
            pdol = pdol_tlv.value if pdol_tlv is not None else b""
            self._card = {0x84: df.value, 0x4F: chosen.aid}
            for tag in (0x50, 0x87, 0x9F12, 0x5F2D, 0x9F11):
                o = find(fci, f"6F.A5.{tag:X}")
                if o is not None:
                    self._card[tag] = o.value
            try:
                pdol_data = build_dol_data(pdol, self._dol_values(), max_total=PDOL_DATA_MAX)
            except DecodeError as e:
                raise ChipReadError(f"SELECT application: malformed PDOL ({e.msg})") from None
            gpo = await self._exchange("GET PROCESSING OPTIONS",
                                       CommandApdu(0x80, 0xA8, 0x00, 0x00, Tlv(0x83, pdol_data).encode(), ne=256))
            if gpo.sw == SW.CONDITIONS_NOT_SATISFIED:
                continue
            if gpo.sw != SW.OK:
                raise ChipReadError(f"GET PROCESSING OPTIONS: {gpo.sw:04X} {sw_meaning(gpo.sw)}")
            aip, afl = self._parse_gpo(gpo.data)
            return fci, aip, afl
        raise NoApplicationError("every candidate application was refused by the card")

    def _parse_gpo(self, data: bytes) -> tuple[bytes, bytes]:
        objs = self._decode("GET PROCESSING OPTIONS", data)
        if len(objs) != 1:
            raise ChipReadError("GET PROCESSING OPTIONS: expected one response template")
        t = objs[0]
        if t.tag == 0x80:
            if len(t.value) < 2:
                raise ChipReadError("GET PROCESSING OPTIONS: format 1 shorter than the AIP")
            aip, afl = t.value[:2], t.value[2:]
        elif t.tag == 0x77:
            a, f = t.find("82"), t.find("94")
            if a is None or f is None:
                raise ChipReadError("GET PROCESSING OPTIONS: format 2 without AIP (82) or AFL (94)")
            aip, afl = a.value, f.value
        else:
            raise ChipReadError(f"GET PROCESSING OPTIONS: unexpected template {t.tag_hex}")
        if len(aip) != 2 or len(afl) % 4 or not afl:
            raise ChipReadError("GET PROCESSING OPTIONS: AIP must be 2 bytes and the AFL 4n bytes, n ≥ 1")
        return aip, afl

    # --- read application data ------------------------------------------------------------------
    async def _read_records(self, afl: bytes) -> None:
        seen: set[int] = set()
        for i in range(0, len(afl), 4):
            sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
            if afl[i] & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first or oda > last - first + 1:
                raise ChipReadError(f"AFL entry {i // 4 + 1} is invalid ({afl[i:i + 4].hex().upper()})")
            for rec in range(first, last + 1):
                step = f"READ RECORD SFI {sfi} record {rec}"
                r = await self._exchange(step, CommandApdu(0x00, 0xB2, rec, (sfi << 3) | 0x04, ne=256))
                if r.sw != SW.OK:
                    raise ChipReadError(f"{step}: {r.sw:04X} {sw_meaning(r.sw)}")
                objs = self._decode(step, r.data)
                if sfi <= 10 and (len(objs) != 1 or objs[0].tag != 0x70):
                    raise ChipReadError(f"{step}: not a 70 record template")
                for o in objs[0].children if objs and objs[0].tag == 0x70 else objs:
                    if o.is_constructed:
                        continue
                    if o.tag in seen:
                        raise ChipReadError(f"{step}: redundant data object {o.tag_hex}")
                    seen.add(o.tag)
                    self._card[o.tag] = o.value
        missing = [t for t in (0x5A, 0x5F24, 0x8C) if t not in self._card]
        if missing:
            self._set("icc_data_missing")
            raise ChipReadError(f"mandatory data missing: {', '.join(tag_hex(t) for t in missing)}")

    # --- restrictions and risk management -------------------------------------------------------
    def _restrictions(self, now: dt.datetime, txn: Transaction) -> None:
        """Book 3 §10.4 (and offline data authentication not performed, §10.3)."""
        self._set("oda_not_performed")
        card_ver = self._card.get(0x9F08)
        if card_ver is not None and card_ver != self.config.app_version:
            self._set("version_mismatch")
        today = now.strftime("%y%m%d")
        exp = self._card[0x5F24].hex()
        if exp < today:
            self._set("expired")
        eff = self._card.get(0x5F25)
        if eff is not None and eff.hex() > today:
            self._set("not_effective")
        auc = self._card.get(0x9F07)
        if auc is not None and len(auc) >= 2 and txn.type in (TransactionType.PURCHASE, TransactionType.CASHBACK):
            domestic = self._card.get(0x5F28, b"").hex() == self.config.country
            goods = 0x20 if domestic else 0x10
            if not auc[0] & goods or not auc[0] & 0x01:
                self._set("service_not_allowed")

    def _risk_management(self, txn: Transaction) -> None:
        """Book 3 §10.6: floor limit (random selection and velocity checking are not done)."""
        if txn.amount >= self.config.floor_limit:
            self._set("floor_limit_exceeded")
        self._tsi[0] |= 0x08

    # --- cardholder verification ----------------------------------------------------------------
    async def _cardholder_verification(self, txn: Transaction, pin_entry: PinEntry,
                                       aip: bytes) -> tuple[Cvm, str | None]:
        """Book 3 §10.5 and Annex C3."""
        cvm_list = self._card.get(0x8E, b"")
        if not aip[0] & 0x10:
            self._data[0x9F34] = bytes.fromhex("3F0000")
            return Cvm.NO_CVM, None
        if len(cvm_list) < 10 or len(cvm_list) % 2:
            self._set("icc_data_missing")
            self._data[0x9F34] = bytes.fromhex("3F0000")
            return Cvm.NO_CVM, None
        self._tsi[0] |= 0x40
        x = int.from_bytes(cvm_list[0:4], "big")
        y = int.from_bytes(cvm_list[4:8], "big")
        rules = [(cvm_list[i], cvm_list[i + 1]) for i in range(8, len(cvm_list), 2)]
        caps = self.config.capabilities[1]
        any_condition = False
        last = (0x3F, 0x00)
        for b1, cond in rules:
            if not self._condition(cond, txn, x, y, b1 & 0x3F):
                continue
            any_condition = True
            last = (b1, cond)
            code, next_on_fail = b1 & 0x3F, bool(b1 & 0x40)
            supported = {
                0x00: True,
                0x01: bool(caps & 0x80) and self.config.pin_pad,
                0x02: bool(caps & 0x40) and self.config.pin_pad,
                0x03: bool(caps & 0x80) and bool(caps & 0x20) and self.config.pin_pad,
                0x1E: bool(caps & 0x20),
                0x1F: bool(caps & 0x08),
            }
            if code not in supported:
                if code not in (0x04, 0x05):
                    self._set("unrecognised_cvm")
                if next_on_fail:
                    continue
                break
            if not supported[code]:
                if code in (0x01, 0x02, 0x03) and not self.config.pin_pad:
                    self._set("pin_not_entered")
                if next_on_fail:
                    continue
                break
            if code == 0x00:
                break
            if code in (0x01, 0x03):
                await self._offline_pin(pin_entry)
                self._data[0x9F34] = bytes((b1, cond, 0x00 if code == 0x03 else 0x02))
                return Cvm.OFFLINE_PIN_OK, None
            if code == 0x02:
                pin = await self._ask_pin(pin_entry, None)
                self._set("online_pin_entered")
                self._data[0x9F34] = bytes((b1, cond, 0x00))
                return Cvm.ONLINE_PIN, pin
            if code == 0x1E:
                self._data[0x9F34] = bytes((b1, cond, 0x00))
                return Cvm.SIGNATURE, None
            self._data[0x9F34] = bytes((b1, cond, 0x02))   # 1F: no CVM required
            return Cvm.NO_CVM, None
        self._set("cv_failed")
        self._data[0x9F34] = bytes((last[0], last[1], 0x01)) if any_condition else bytes.fromhex("3F0001")
        return Cvm.NO_CVM, None

    def _condition(self, cond: int, txn: Transaction, x: int, y: int, code: int) -> bool:
        """CVM condition codes, Book 3 Annex C3 Table 40."""
        t = txn.type
        same_currency = self._card.get(0x9F42, b"").hex() == self.config.currency
        caps = self.config.capabilities[1]
        if cond == 0x00:
            return True
        if cond == 0x01:
            return t is TransactionType.CASH and self.config.terminal_type in (0x14, 0x15, 0x16, 0x24, 0x25, 0x26)
        if cond == 0x02:
            return t not in (TransactionType.CASH, TransactionType.CASHBACK)
        if cond == 0x03:
            needed = {0x01: 0x80, 0x02: 0x40, 0x03: 0xA0, 0x1E: 0x20, 0x1F: 0x08}.get(code)
            return needed is not None and caps & needed == needed
        if cond == 0x04:
            return t is TransactionType.CASH
        if cond == 0x05:
            return t is TransactionType.CASHBACK
        if cond in (0x06, 0x07, 0x08, 0x09):
            if not same_currency:
                return False
            limit = x if cond in (0x06, 0x07) else y
            return txn.amount < limit if cond in (0x06, 0x08) else txn.amount > limit
        return False

    async def _ask_pin(self, pin_entry: PinEntry, tries: int | None) -> str:
        for _ in range(self.config.max_pin_prompts):
            pin = await pin_entry(tries)
            if pin is None:
                raise CardholderCancelledError("PIN entry cancelled")
            if not isinstance(pin, str):
                raise TypeError(f"pin_entry must return str or None, not {type(pin).__name__}")
            if 4 <= len(pin) <= 12 and pin.isdigit():
                return pin
        raise CardholderCancelledError("no valid PIN entered")

    async def _offline_pin(self, pin_entry: PinEntry) -> None:
        """Offline plaintext PIN (Book 3 §10.5.1): GET DATA 9F17, then VERIFY until OK or blocked."""
        tries: int | None = None
        r = await self._exchange("GET DATA PIN try counter", CommandApdu(0x80, 0xCA, 0x9F, 0x17, ne=256))
        if r.sw == SW.OK:
            try:
                t = find(decode(r.data), "9F17")
            except DecodeError:
                t = None
            if t is not None and len(t.value) == 1:
                tries = t.value[0]
        if tries == 0:
            self._set("pin_limit_exceeded")
            self._set("cv_failed")
            raise PinBlockedError("the PIN try limit is exhausted (PIN try counter 0)")
        for _ in range(MAX_VERIFY):
            pin = await self._ask_pin(pin_entry, tries)
            block = bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))
            resp = await self._exchange("VERIFY", CommandApdu(0x00, 0x20, 0x00, 0x80, block), redact=True)
            del pin, block
            if resp.sw == SW.OK:
                return
            if resp.sw1 == 0x63 and resp.sw2 & 0xF0 == 0xC0:
                tries = resp.sw2 & 0x0F
                if tries == 0:
                    break
                continue
            if resp.sw in (SW.AUTH_METHOD_BLOCKED, SW.REFERENCE_DATA_INVALIDATED):
                break
            raise ChipReadError(f"VERIFY: {resp.sw:04X} {sw_meaning(resp.sw)}")
        else:
            raise ChipReadError(f"VERIFY: still {tries} tries left after {MAX_VERIFY} wrong PINs; "
                                "the card's PIN try counter does not count down")
        self._set("pin_limit_exceeded")
        self._set("cv_failed")
        raise PinBlockedError("PIN blocked: the PIN try limit is exhausted")

    # --- terminal action analysis and GENERATE AC ---------------------------------------------------
    def _requested_cryptogram(self) -> CryptogramType:
        """Book 3 §10.7: denial codes → AAC; otherwise online (ARQC)."""
        tvr = self._tvr
        iac_denial = self._card.get(0x9F0E, bytes(5)).ljust(5, b"\x00")
        for i in range(5):
            if tvr[i] & (self.config.tac_denial[i] | iac_denial[i]):
                return CryptogramType.AAC
        return CryptogramType.ARQC

    async def _generate_ac(self, step: str, p1: int, dol: bytes) -> CryptogramType:
        try:
            data = build_dol_data(dol, self._dol_values())
        except DecodeError as e:
            raise ChipReadError(f"{step}: malformed CDOL ({e.msg})") from None
        resp = await self._exchange(step, CommandApdu(0x80, 0xAE, p1, 0x00, data, ne=256))
        if resp.sw != SW.OK:
            raise ChipReadError(f"{step}: {resp.sw:04X} {sw_meaning(resp.sw)}")
        objs = self._decode(step, resp.data)
        if len(objs) != 1:
            raise ChipReadError(f"{step}: expected one response template")
        t = objs[0]
        if t.tag == 0x80:
            v = t.value
            if not 11 <= len(v) <= 43:
                raise ChipReadError(f"{step}: format 1 response of {len(v)} bytes")
            vals = {0x9F27: v[0:1], 0x9F36: v[1:3], 0x9F26: v[3:11]}
            if len(v) > 11:
                vals[0x9F10] = v[11:]
        elif t.tag == 0x77:
            vals = {c.tag: c.value for c in t.children if not c.is_constructed}
            if not all(k in vals for k in (0x9F27, 0x9F36, 0x9F26)):
                raise ChipReadError(f"{step}: format 2 response lacks 9F27, 9F36 or 9F26")
        else:
            raise ChipReadError(f"{step}: unexpected template {t.tag_hex}")
        if len(vals[0x9F27]) != 1 or len(vals[0x9F36]) != 2 or len(vals[0x9F26]) != 8:
            raise ChipReadError(f"{step}: CID, ATC or cryptogram has the wrong length")
        try:
            kind = CryptogramType.from_cid(vals[0x9F27][0])
        except ValueError:
            raise ChipReadError(f"{step}: CID {vals[0x9F27].hex().upper()} codes an RFU cryptogram type") from None
        if kind > CryptogramType(p1 & 0xC0):
            raise ChipReadError(f"{step}: card returned {kind.name} for a {CryptogramType(p1 & 0xC0).name} request")
        self._data.update(vals)
        return kind

    async def _first_generate_ac(self) -> CryptogramType:
        requested = self._requested_cryptogram()
        kind = await self._generate_ac("GENERATE AC (first)", requested, self._card[0x8C])
        self._tsi[0] |= 0x20
        if kind is CryptogramType.AAC:
            raise CardDeclinedError("the card declined the transaction offline (AAC)")
        return kind

    def _field55(self) -> bytes:
        values = self._dol_values()
        return encode(Tlv(tag, values[tag]) for tag in FIELD55_TAGS if tag in values)

    def _result(self, fci: tuple[Tlv, ...], cvm: Cvm, online_pin: str | None, kind: CryptogramType) -> ChipRead:
        card = self._card
        pan = _digits(card[0x5A])
        t2_raw = card.get(0x57)
        expiry = card[0x5F24].hex()[:4]
        service_code = ""
        if 0x5F30 in card:
            service_code = card[0x5F30].hex()[-3:]
        if t2_raw is not None:
            t2 = _digits(t2_raw).replace("D", "=")
            t2_pan, _, rest = t2.partition("=")
            if t2_pan != pan:
                raise ChipReadError("track 2 equivalent (57) and PAN (5A) disagree")
            if len(rest) < 7 or not rest.isdigit():
                raise ChipReadError("track 2 equivalent (57) is malformed")
            service_code = rest[4:7]
            if rest[:4] != expiry:
                raise ChipReadError("track 2 equivalent (57) and expiry (5F24) disagree")
        else:
            t2 = f"{pan}={expiry}{service_code}"
        if not pan.isdigit() or not 12 <= len(pan) <= 19:
            raise ChipReadError("PAN (5A) is not 12–19 digits")
        seq = card.get(0x5F34)
        label = card.get(0x9F12) or card.get(0x50) or b""
        return ChipRead(
            pan=pan,
            pan_sequence=int(seq.hex()) if seq and seq.hex().isdigit() else None,
            expiry=expiry,
            service_code=service_code,
            track2_equivalent=t2,
            cardholder=_ascii(card.get(0x5F20, b"")),
            aid=card[0x84].hex().upper(),
            label=_ascii(label),
            cvm=cvm,
            icc_data=self._field55(),
            apdu_log=tuple(self._log),
            cryptogram_type=kind,
            atc=int.from_bytes(self._data[0x9F36], "big"),
            tvr=bytes(self._tvr),
            online_pin=online_pin,
        )

    # --- completion --------------------------------------------------------------------------------
    async def complete(self, approved: bool, arc: bytes, issuer_auth: bytes = b"") -> Completion:
        """Second GENERATE AC (Book 3 §10.11) with the host's decision.

        ``arc`` is the Authorisation Response Code (tag 8A, 2 ASCII characters such as
        ``b"00"``); ``issuer_auth`` is tag 91 if the host sent one. Asks for a TC when
        approved, an AAC otherwise; returns what the card gave.
        """
        if self._read is None:
            raise EmvError("complete() needs a successful read() first")
        if not isinstance(arc, bytes) or len(arc) != 2:
            raise TypeError("arc must be 2 bytes (tag 8A)")
        cdol2 = self._card.get(0x8D)
        if cdol2 is None:
            raise ChipReadError("the card has no CDOL2 (8D)")
        self._data[0x8A] = arc
        if issuer_auth:
            self._data[0x91] = issuer_auth
        p1 = CryptogramType.TC if approved else CryptogramType.AAC
        kind = await self._generate_ac("GENERATE AC (second)", p1, cdol2)
        return Completion(kind, self._field55())


def _candidate(aid: bytes, holder: Tlv | None) -> Candidate:
    """A candidate from a directory entry (61) or an FCI proprietary template (A5)."""
    def get(tag: str) -> bytes | None:
        o = holder.find(tag) if holder is not None else None
        return None if o is None else o.value

    prio = get("87")
    return Candidate(
        aid=aid,
        label=_ascii(get("50") or b""),
        priority=(prio[0] & 0x0F) or None if prio else None,
        confirmation_required=bool(prio and prio[0] & 0x80),
        preferred_name=_ascii(get("9F12") or b""),
    )


async def read_chip(
    reader: CardReader,
    clock: Clock,
    txn: Transaction,
    pin_entry: PinEntry,
    config: TerminalConfig | None = None,
    *,
    unpredictable: Callable[[], bytes] | None = None,
    choose_application: Callable[[Sequence[Candidate]], Awaitable[Candidate | None]] | None = None,
) -> ChipRead:
    """One-shot: an :class:`EmvKernel` on ``reader`` reads the inserted card."""
    kernel = EmvKernel(reader, clock, config, unpredictable=unpredictable,
                       choose_application=choose_application)
    return await kernel.read(txn, pin_entry)
