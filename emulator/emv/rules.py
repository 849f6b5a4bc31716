"""Pure EMV rules of the kernel: no I/O, no state beyond their arguments.

Each function is one rule of the specifications, used by the flow in :mod:`emulator.emv.kernel`:
terminal data (Book 4 §6), candidate applications (Book 1 §12.3), the GPO and GENERATE AC
response formats (Book 3 §6.5.8.4, §6.5.5.4), the AFL (Book 3 §10.2), processing restrictions
(§10.4), terminal risk management (§10.6), the CVM list (§10.5, Annex C3), terminal action
analysis (§10.7), the TVR (Annex C5) and field 55.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from emulator.emv.model import (
    FIELD55_TAGS,
    ApduLogEntry,
    Candidate,
    ChipRead,
    ChipReadError,
    Cvm,
    KernelConfig,
    TerminalAid,
    Transaction,
    TransactionType,
)
from protocol.cryptogram import CryptogramType
from protocol.errors import DecodeError
from protocol.tlv import Tlv, decode, encode

__all__ = [
    "TVR_BITS",
    "CvmDecision",
    "Tvr",
    "afl_records",
    "bcd_n",
    "candidate",
    "chip_read",
    "choose_cvm",
    "cvm_condition",
    "decode_tlv",
    "field55",
    "parse_generate_ac",
    "parse_gpo",
    "processing_restrictions",
    "requested_cryptogram",
    "risk_management",
    "terminal_accepts",
    "terminal_values",
]

TVR_BITS: dict[str, tuple[int, int]] = {  # (byte index, bit mask) — EMV Book 3 Annex C5
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


class Tvr:
    """Terminal Verification Results (tag 95, Book 3 Annex C5), set flag by flag."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray(5)

    def set(self, *flags: str) -> None:
        for flag in flags:
            i, bit = TVR_BITS[flag]
            self._bits[i] |= bit

    def __bytes__(self) -> bytes:
        return bytes(self._bits)

    def __getitem__(self, i: int) -> int:
        return self._bits[i]


# --- small codecs ---------------------------------------------------------------------------
def bcd_n(value: int, nbytes: int) -> bytes:
    """EMV format ``n``: BCD, right-justified, zero-padded (``bcd_n(1000, 6)`` → 000000001000)."""
    return bytes.fromhex(f"{value:0{nbytes * 2}d}")


def _ascii(b: bytes) -> str:
    return b.decode("ascii", "replace").strip()


def _digits(b: bytes) -> str:
    """BCD/cn digits up to the first F filler."""
    return b.hex().upper().split("F", 1)[0]


def decode_tlv(step: str, data: bytes) -> tuple[Tlv, ...]:
    """BER-TLV from the card; a :class:`ChipReadError` naming the step and TLV path otherwise."""
    try:
        return decode(data)
    except DecodeError as e:
        raise ChipReadError(f"{step}: malformed TLV ({e.msg}) at {e.field or '?'}"
                            f"{'' if e.pos is None else f', byte {e.pos}'}") from None


# --- terminal data (Book 4 §6) ----------------------------------------------------------------
def terminal_values(config: KernelConfig, txn: Transaction, now: dt.datetime, un: bytes) -> dict[int, bytes]:
    """The terminal's data objects for DOLs and field 55."""
    c = config
    return {
        0x9F02: bcd_n(txn.amount, 6),
        0x9F03: bcd_n(txn.amount_other, 6),
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
        0x9F41: bcd_n(txn.sequence % 10**8, 4),
        0x9F66: c.ttq,
    }


# --- application selection (Book 1 §12.3) -------------------------------------------------------
def terminal_accepts(aids: Iterable[TerminalAid], aid: bytes) -> bool:
    """An AID matches a terminal AID exactly, or by prefix when partial selection is allowed."""
    return any(aid == t.aid or (t.partial and aid.startswith(t.aid)) for t in aids)


def candidate(aid: bytes, holder: Tlv | None) -> Candidate:
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


# --- GPO and the AFL (Book 3 §6.5.8.4, §10.2) ---------------------------------------------------
def parse_gpo(data: bytes) -> tuple[bytes, bytes]:
    """AIP and AFL from a GPO response, format 1 (80) or 2 (77)."""
    objs = decode_tlv("GET PROCESSING OPTIONS", data)
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


def afl_records(afl: bytes) -> list[tuple[int, int]]:
    """The ``(sfi, record)`` pairs an AFL names, in order; a malformed entry is a ChipReadError."""
    out: list[tuple[int, int]] = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if afl[i] & 0x07 or not 1 <= sfi <= 30 or first == 0 or last < first or oda > last - first + 1:
            raise ChipReadError(f"AFL entry {i // 4 + 1} is invalid ({afl[i:i + 4].hex().upper()})")
        out.extend((sfi, rec) for rec in range(first, last + 1))
    return out


# --- restrictions and risk management (Book 3 §10.4, §10.6) -------------------------------------
def processing_restrictions(card: Mapping[int, bytes], config: KernelConfig, now: dt.datetime,
                            txn: Transaction) -> list[str]:
    """TVR flags from §10.4 (and offline data authentication not performed, §10.3)."""
    flags = ["oda_not_performed"]
    card_ver = card.get(0x9F08)
    if card_ver is not None and card_ver != config.app_version:
        flags.append("version_mismatch")
    today = now.strftime("%y%m%d")
    if card[0x5F24].hex() < today:
        flags.append("expired")
    eff = card.get(0x5F25)
    if eff is not None and eff.hex() > today:
        flags.append("not_effective")
    auc = card.get(0x9F07)
    if auc is not None and len(auc) >= 2 and txn.type in (TransactionType.PURCHASE, TransactionType.CASHBACK):
        domestic = card.get(0x5F28, b"").hex() == config.country
        goods = 0x20 if domestic else 0x10
        if not auc[0] & goods or not auc[0] & 0x01:
            flags.append("service_not_allowed")
    return flags


def risk_management(config: KernelConfig, txn: Transaction) -> list[str]:
    """TVR flags from §10.6: floor limit (random selection and velocity checking are not done)."""
    return ["floor_limit_exceeded"] if txn.amount >= config.floor_limit else []


# --- cardholder verification (Book 3 §10.5, Annex C3) -------------------------------------------
@dataclass(frozen=True, slots=True)
class CvmDecision:
    """What the CVM list asks for: ``cvm`` to perform (``None``: verification failed or not
    performed), the CVM code of the rule, TVR ``flags`` to set, the CVM Results (9F34) once
    performed, and whether cardholder verification counts as performed (TSI b7)."""

    cvm: Cvm | None
    code: int
    results: bytes
    flags: tuple[str, ...] = ()
    performed: bool = True


def cvm_condition(cond: int, txn: Transaction, x: int, y: int, code: int, card: Mapping[int, bytes],
                  config: KernelConfig) -> bool:
    """CVM condition codes, Book 3 Annex C3 Table 40."""
    t = txn.type
    same_currency = card.get(0x9F42, b"").hex() == config.currency
    caps = config.capabilities[1]
    if cond == 0x00:
        return True
    if cond == 0x01:
        return t is TransactionType.CASH and config.terminal_type in (0x14, 0x15, 0x16, 0x24, 0x25, 0x26)
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


def choose_cvm(card: Mapping[int, bytes], aip: bytes, txn: Transaction, config: KernelConfig) -> CvmDecision:
    """Walk the CVM list (8E) rule by rule to the first applicable, supported method."""
    cvm_list = card.get(0x8E, b"")
    if not aip[0] & 0x10:
        return CvmDecision(Cvm.NO_CVM, -1, bytes.fromhex("3F0000"), performed=False)
    if len(cvm_list) < 10 or len(cvm_list) % 2:
        return CvmDecision(Cvm.NO_CVM, -1, bytes.fromhex("3F0000"), ("icc_data_missing",), performed=False)
    x = int.from_bytes(cvm_list[0:4], "big")
    y = int.from_bytes(cvm_list[4:8], "big")
    rules = [(cvm_list[i], cvm_list[i + 1]) for i in range(8, len(cvm_list), 2)]
    caps = config.capabilities[1]
    flags: list[str] = []
    any_condition = False
    last = (0x3F, 0x00)
    for b1, cond in rules:
        if not cvm_condition(cond, txn, x, y, b1 & 0x3F, card, config):
            continue
        any_condition = True
        last = (b1, cond)
        code, next_on_fail = b1 & 0x3F, bool(b1 & 0x40)
        supported = {
            0x00: True,
            0x01: bool(caps & 0x80) and config.pin_pad,
            0x02: bool(caps & 0x40) and config.pin_pad,
            0x03: bool(caps & 0x80) and bool(caps & 0x20) and config.pin_pad,
            0x1E: bool(caps & 0x20),
            0x1F: bool(caps & 0x08),
        }
        if code not in supported:
            if code not in (0x04, 0x05):
                flags.append("unrecognised_cvm")
            if next_on_fail:
                continue
            break
        if not supported[code]:
            if code in (0x01, 0x02, 0x03) and not config.pin_pad:
                flags.append("pin_not_entered")
            if next_on_fail:
                continue
            break
        if code == 0x00:
            break
        if code in (0x01, 0x03):
            return CvmDecision(Cvm.OFFLINE_PIN_OK, code, bytes((b1, cond, 0x00 if code == 0x03 else 0x02)),
                               tuple(flags))
        if code == 0x02:
            return CvmDecision(Cvm.ONLINE_PIN, code, bytes((b1, cond, 0x00)), (*flags, "online_pin_entered"))
        if code == 0x1E:
            return CvmDecision(Cvm.SIGNATURE, code, bytes((b1, cond, 0x00)), tuple(flags))
        return CvmDecision(Cvm.NO_CVM, code, bytes((b1, cond, 0x02)), tuple(flags))   # 1F: no CVM required
    results = bytes((last[0], last[1], 0x01)) if any_condition else bytes.fromhex("3F0001")
    return CvmDecision(None, -1, results, (*flags, "cv_failed"))


# --- terminal action analysis and GENERATE AC (Book 3 §10.7, §6.5.5.4) --------------------------
def requested_cryptogram(tvr: bytes, card: Mapping[int, bytes], config: KernelConfig) -> CryptogramType:
    """§10.7: denial codes (TAC or IAC) against the TVR → AAC; otherwise online (ARQC)."""
    iac_denial = card.get(0x9F0E, bytes(5)).ljust(5, b"\x00")
    for i in range(5):
        if tvr[i] & (config.tac_denial[i] | iac_denial[i]):
            return CryptogramType.AAC
    return CryptogramType.ARQC


def parse_generate_ac(step: str, data: bytes, p1: int) -> tuple[CryptogramType, dict[int, bytes]]:
    """The cryptogram type and 9F27/9F36/9F26 (and 9F10) from a GENERATE AC response,
    format 1 (80) or 2 (77); a card answering more than was asked for is a ChipReadError."""
    objs = decode_tlv(step, data)
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
    return kind, vals


def field55(values: Mapping[int, bytes]) -> bytes:
    """ISO 8583 field 55: the :data:`FIELD55_TAGS` known, in that order."""
    return encode(Tlv(tag, values[tag]) for tag in FIELD55_TAGS if tag in values)


# --- the result ---------------------------------------------------------------------------------
def chip_read(card: Mapping[int, bytes], values: Mapping[int, bytes], *, tvr: bytes,
              log: tuple[ApduLogEntry, ...], cvm: Cvm, online_pin: str | None, kind: CryptogramType) -> ChipRead:
    """The :class:`ChipRead` from the card's data: PAN, expiry and track 2 equivalent checked
    against each other (a disagreement is a ChipReadError)."""
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
        icc_data=field55(values),
        apdu_log=log,
        cryptogram_type=kind,
        atc=int.from_bytes(values[0x9F36], "big"),
        tvr=tvr,
        online_pin=online_pin,
    )
