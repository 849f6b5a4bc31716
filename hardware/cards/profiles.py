"""Card profiles: TOML files describing a test card (stripe, chip, PIN, host-side account).

Every PAN here is an invented test number (BINs 99xxxx, Luhn-valid); no real card data.

A profile file (``hardware/cards/profiles/<name>.toml``)::

    name = "demo"
    description = "…"
    pan = "9900010000000019"
    expiry = "3012"            # YYMM
    service_code = "101"
    cardholder = "TEST/CARD"
    discretionary = "000000000"
    pin = "123456"            # the cardholder's PIN (the host stores only a salted hash)
    pin_tries = 3
    [account]                 # seeds the bundled host's database
    status = "active"         # active | blocked | restricted
    balance = 1234567         # minor units
    currency = "156"
    permissions = ["balance", "purchase", "reversal"]
    [stripe]                  # optional: physical condition of the magnetic stripe
    damage = [{ start_in = 1.2, end_in = 1.4, severity = 0.8 }]   # inches from the leading edge
    [chip]                    # optional (a 2xx/6xx service code without it gets a default chip)
    status = "active"         # active | blocked (SELECT answers 6A81)
    protocols = [0]           # offered in the ATR (ISO/IEC 7816-3 §8.2.3)
    t0_wire = false           # true: the sim reader talks to the chip through the T=0 character adapter
    pse = true                # the card has a Payment System Environment (1PAY.SYS.DDF01)
    read_before_gpo = true    # READ RECORD of the application answers before GET PROCESSING OPTIONS
                              # (as most real EMV cards do); false: 6985 until GPO has run
    historical = "80318066B0840C016E0183009000"   # ATR historical bytes (ISO/IEC 7816-4 §8.1.1)
    atc = 0                   # Application Transaction Counter at issue
    pin_tries_left = 3        # PIN try counter at issue (default pin_tries)
    [[chip.applications]]     # one table per EMV application (see EmvApplication)
    aid = "A000000333010101"
    label = "DEBIT"
    priority = 1
    pdol = "9F66049F02069F03069F1A0295055F2A029A039C019F3704"
    cdol1 = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403"
    aip = "1800"
    cvm = ["offline_pin"]     # offline_pin | online_pin | signature | no_cvm, in CVM-list order
    ac_key = "…32 hex digits…" # the card's application-cryptogram master key (test keys only)
    response_format = 2       # GPO / GENERATE AC response template 80 (1) or 77 (2)
    decline_after_online = false   # true: the second GENERATE AC answers AAC although the host
                                   # approved (card risk management declines late → reversal)
    # optional: the application's files record by record instead of the generated ones
    # (the AFL then lists every record given); see hardware.cards.emv_card.build_records
    # records = [{ sfi = 1, record = 1, tlv = "7007…" }]
"""

from __future__ import annotations

import enum
import functools
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hardware.atr import parse_historical
from protocol.errors import ConfigError, DecodeError, PosemuError

PROFILE_DIR = "profiles"

DEFAULT_HISTORICAL = "80318066B0840C016E0183009000"
"""ATR historical bytes of every chip profile unless it names its own (ISO/IEC 7816-4 §8.1.1):
category indicator ``80``, then COMPACT-TLV objects — ``31 80`` card service data (selection by
full DF name), ``66 B0 84 0C 01 6E 01`` six bytes of pre-issuing data, ``83 00 90 00`` status
indicator (LCS 00, SW 9000). The layout of a common real EMV card's ATR
(``3B 6E 00 00 80 31 80 66 B0 84 0C 01 6E 01 83 00 90 00``)."""


def luhn_ok(pan: str) -> bool:
    """ISO/IEC 7812-1 Luhn check.

    >>> luhn_ok("9900010000000019"), luhn_ok("9900010000000018"), luhn_ok("99000100000000²9")
    (True, False, False)
    """
    if not (pan.isascii() and pan.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


DEFAULT_PERMISSIONS = ("balance", "purchase", "reversal")


@dataclass(frozen=True, slots=True)
class AccountSeed:
    """The ``[account]`` table: the account the bundled host opens for the card (balance in minor units)."""

    status: str = "active"
    balance: int = 0
    currency: str = "156"
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS


class CvmMethod(enum.Enum):
    """A cardholder verification method a card's CVM list asks for (EMV Book 3 Annex C3)."""

    OFFLINE_PIN = "offline_pin"   # plaintext PIN verified by the ICC (CVM code 01)
    ONLINE_PIN = "online_pin"     # enciphered PIN verified online (CVM code 02)
    SIGNATURE = "signature"       # paper signature (CVM code 1E)
    NO_CVM = "no_cvm"             # no CVM required (CVM code 1F)

    @property
    def code(self) -> int:
        return {"offline_pin": 0x01, "online_pin": 0x02, "signature": 0x1E, "no_cvm": 0x1F}[self.value]


class ChipStatus(enum.Enum):
    """Life-cycle state of the chip as a whole."""

    ACTIVE = "active"
    BLOCKED = "blocked"           # every SELECT answers 6A81 (EMV Book 1 §12.3.2)


DEFAULT_PDOL = "9F66049F02069F03069F1A0295055F2A029A039C019F3704"
DEFAULT_CDOL1 = "9F02069F03069F1A0295055F2A029A039C019F37049F35019F3403"
DEFAULT_CDOL2 = "8A029F02069F03069F1A0295055F2A029A039C019F3704"
DEFAULT_AC_KEY = "0123456789ABCDEFFEDCBA9876543210"   # public test key: never a real card's


@dataclass(frozen=True, slots=True)
class EmvApplication:
    """One EMV application on a chip (EMV Book 3 §5 data objects, §10 functions).

    ``pdol``/``cdol1``/``cdol2`` are Data Object Lists (Book 3 §5.4); ``aip`` is the
    Application Interchange Profile (tag 82); ``cvm`` lists the CVM rules in order (each but
    the last says "apply succeeding rule if unsuccessful"); ``ac_key`` is the master key
    MK_AC from which session keys for the application cryptogram are derived.
    """

    aid: bytes
    label: str
    priority: int = 1
    preferred_name: str = ""
    pdol: bytes = bytes.fromhex(DEFAULT_PDOL)
    cdol1: bytes = bytes.fromhex(DEFAULT_CDOL1)
    cdol2: bytes = bytes.fromhex(DEFAULT_CDOL2)
    aip: bytes = bytes.fromhex("1800")
    cvm: tuple[CvmMethod, ...] = (CvmMethod.OFFLINE_PIN,)
    ac_key: bytes = field(default=bytes.fromhex(DEFAULT_AC_KEY), repr=False)
    response_format: int = 2
    app_version: bytes = bytes.fromhex("0030")
    usage_control: bytes = bytes.fromhex("FF00")
    iac_default: bytes = bytes.fromhex("0000000000")
    iac_denial: bytes = bytes.fromhex("0000000000")
    iac_online: bytes = bytes.fromhex("0000000000")
    currency: str = "0156"
    country: str = "0156"
    effective: str = ""            # YYMMDD, tag 5F25 (omitted when empty)
    blocked: bool = False          # application blocked: SELECT answers 6283, GPO 6985
    offline_approve: bool = False  # the card may answer a TC request with a TC
    decline_after_online: bool = False  # second GENERATE AC: AAC even when the host approved
    extra: tuple[tuple[int, bytes], ...] = ()   # more primitive tags for the last record
    records: tuple[tuple[int, int, bytes], ...] = ()   # (sfi, record, 70-template): replaces the generated files

    @property
    def aid_hex(self) -> str:
        return self.aid.hex().upper()


@dataclass(frozen=True, slots=True)
class ChipSpec:
    """The chip of a profile: applications and card-level state (ISO/IEC 7816, EMV Book 1/3)."""

    applications: tuple[EmvApplication, ...]
    status: ChipStatus = ChipStatus.ACTIVE
    protocols: tuple[int, ...] = (0,)
    t0_wire: bool = False
    pse: bool = True
    atc: int = 0
    pin_tries_left: int | None = None
    language: str = "zhen"
    read_before_gpo: bool = True   # READ RECORD before GPO allowed (else 6985)
    historical: bytes = bytes.fromhex(DEFAULT_HISTORICAL)


@dataclass(frozen=True, slots=True)
class DamageRegion:
    """A damaged or demagnetised stretch of the stripe, in inches from the leading edge."""

    start_in: float
    end_in: float
    severity: float = 1.0    # 0 = intact … 1 = fully erased


DEFAULT_AID = "A000000333010101"


@dataclass(frozen=True, slots=True)
class CardProfile:
    """One test card as its profile file describes it: stripe data, PIN, the host's account, chip, damage."""

    name: str
    pan: str
    expiry: str
    service_code: str
    cardholder: str = "TEST/CARD"
    discretionary: str = ""
    pin: str = "123456"
    pin_tries: int = 3
    description: str = ""
    account: AccountSeed = field(default_factory=AccountSeed)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    emv: ChipSpec | None = None
    stripe_damage: tuple[DamageRegion, ...] = ()

    @property
    def track1(self) -> str:
        """Track 1 data between the sentinels (ISO/IEC 7813 format B)."""
        return f"B{self.pan}^{self.cardholder}^{self.expiry}{self.service_code}{self.discretionary}"

    @property
    def track2(self) -> str:
        """Track 2 data between the sentinels (ISO/IEC 7813)."""
        return f"{self.pan}={self.expiry}{self.service_code}{self.discretionary}"

    @property
    def chip(self) -> bool:
        """Service code 2xx/6xx: the card has a chip and must be inserted."""
        return self.service_code[:1] in ("2", "6")


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing key {key!r}")
    return d[key]


_MISSING: Any = object()


def _typed(value: Any, kind: type | tuple[type, ...], where: str, key: str, what: str) -> Any:
    """``value`` if it is of ``kind`` (a TOML bool is never taken for a number), else a ConfigError."""
    if (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))) \
            or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {what}, got {type(value).__name__} {value!r:.40}")
    return value


def _str(d: dict[str, Any], key: str, where: str, default: Any = _MISSING) -> str:
    value = _req(d, key, where) if default is _MISSING else d.get(key, default)
    return str(_typed(value, str, where, key, "a string (in quotes)"))


def _int(d: dict[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = _typed(d.get(key, default), int, where, key, "a whole number")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be {lo}..{hi}, got {value}")
    return int(value)


def _flag(d: dict[str, Any], key: str, where: str, default: bool) -> bool:
    return bool(_typed(d.get(key, default), bool, where, key, "true or false"))


def _strs(d: dict[str, Any], key: str, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = d.get(key, list(default))
    if isinstance(value, str):
        value = [value]
    _typed(value, list, where, key, "a list of strings")
    return tuple(_typed(v, str, where, key, "a list of strings") for v in value)


def _table(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = d.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``"²".isdigit()`` and ``"١".isdigit()`` are true in Python."""
    return text.isascii() and text.isdigit()


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


def _hex(value: Any, where: str, key: str, *, lengths: tuple[int, ...] | None = None,
         min_len: int = 0, max_len: int = 255) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{where}: {key} is not hex") from None
    if lengths is not None and len(raw) not in lengths:
        raise ConfigError(f"{where}: {key} must be {' or '.join(str(n) for n in lengths)} bytes")
    if not min_len <= len(raw) <= max_len:
        raise ConfigError(f"{where}: {key} must be {min_len}..{max_len} bytes")
    return raw


def _num4(value: Any, where: str, key: str) -> str:
    v = str(_typed(value, str, where, key, "4 digits in quotes"))
    if len(v) != 4 or not _is_digits(v):
        raise ConfigError(f"{where}: {key} must be 4 digits (ISO 4217 / ISO 3166 numeric, zero-padded)")
    return v


def _parse_app(d: dict[str, Any], where: str) -> EmvApplication:
    from protocol.errors import DecodeError
    from protocol.tlv import decode, decode_dol, parse_tag

    aid = _hex(_req(d, "aid", where), where, "aid", min_len=5, max_len=16)
    cvm_raw = _strs(d, "cvm", where, ("offline_pin",))
    try:
        cvm = tuple(CvmMethod(c) for c in cvm_raw)
    except ValueError:
        raise ConfigError(f"{where}: cvm entries must be one of "
                          f"{', '.join(m.value for m in CvmMethod)}") from None
    dols = {}
    for key, default in (("pdol", DEFAULT_PDOL), ("cdol1", DEFAULT_CDOL1), ("cdol2", DEFAULT_CDOL2)):
        raw = _hex(d.get(key, default), where, key)
        try:
            decode_dol(raw)
        except DecodeError as e:
            raise ConfigError(f"{where}: {key} is not a valid DOL ({e.msg})") from None
        dols[key] = raw
    fmt = _int(d, "response_format", where, 2, 1, 2)
    prio = _int(d, "priority", where, 1, 0, 15)
    extra_d = d.get("extra", {})
    if not isinstance(extra_d, dict):
        raise ConfigError(f"{where}: extra must be a table of hex tag = hex value")
    extra = []
    for k, v in extra_d.items():
        try:
            tag = parse_tag(str(k))
        except PosemuError:
            raise ConfigError(f"{where}: extra tag {k!r} is not a valid tag") from None
        extra.append((tag, _hex(v, where, f"extra.{k}")))
    records = []
    for i, r in enumerate(_typed(d.get("records", []), list, where, "records", "an array of tables")):
        rw = f"{where} records[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{rw}: must be a table with sfi, record, tlv")
        sfi, number = r.get("sfi"), r.get("record")
        if isinstance(sfi, bool) or isinstance(number, bool) or not isinstance(sfi, int) \
                or not isinstance(number, int):
            raise ConfigError(f"{rw}: needs integer sfi and record")
        if not (1 <= sfi <= 30 and 1 <= number <= 255):
            raise ConfigError(f"{rw}: sfi must be 1..30 and record 1..255")
        body = _hex(r.get("tlv", ""), rw, "tlv", min_len=2)
        try:
            objs = decode(body)
        except DecodeError as e:
            raise ConfigError(f"{rw}: tlv is not BER-TLV ({e.msg} at {e.field or '?'})") from None
        if len(objs) != 1 or objs[0].tag != 0x70:
            raise ConfigError(f"{rw}: tlv must be one 70 record template (EMV Book 3 §6.5.11)")
        records.append((sfi, number, body))
    effective = _str(d, "effective", where, "")
    if effective and (len(effective) != 6 or not _is_digits(effective)):
        raise ConfigError(f"{where}: effective must be YYMMDD")
    label = _str(d, "label", where, "EMV")
    if not (label.isascii() and label.isprintable()) or not 1 <= len(label) <= 16:
        raise ConfigError(f"{where}: label must be 1 to 16 ASCII characters (tag 50)")
    preferred = _str(d, "preferred_name", where, "")
    if not (preferred.isascii() and preferred.isprintable()) or len(preferred) > 16:
        raise ConfigError(f"{where}: preferred_name must be at most 16 ASCII characters (tag 9F12)")
    return EmvApplication(
        aid=aid,
        label=label,
        priority=prio,
        preferred_name=preferred,
        pdol=dols["pdol"],
        cdol1=dols["cdol1"],
        cdol2=dols["cdol2"],
        aip=_hex(d.get("aip", "1800"), where, "aip", lengths=(2,)),
        cvm=cvm,
        ac_key=_hex(d.get("ac_key", DEFAULT_AC_KEY), where, "ac_key", lengths=(16,)),
        response_format=fmt,
        app_version=_hex(d.get("app_version", "0030"), where, "app_version", lengths=(2,)),
        usage_control=_hex(d.get("usage_control", "FF00"), where, "usage_control", lengths=(2,)),
        iac_default=_hex(d.get("iac_default", "0000000000"), where, "iac_default", lengths=(5,)),
        iac_denial=_hex(d.get("iac_denial", "0000000000"), where, "iac_denial", lengths=(5,)),
        iac_online=_hex(d.get("iac_online", "0000000000"), where, "iac_online", lengths=(5,)),
        currency=_num4(d.get("currency", "0156"), where, "currency"),
        country=_num4(d.get("country", "0156"), where, "country"),
        effective=effective,
        blocked=_flag(d, "blocked", where, False),
        offline_approve=_flag(d, "offline_approve", where, False),
        decline_after_online=_flag(d, "decline_after_online", where, False),
        extra=tuple(extra),
        records=tuple(records),
    )


def parse_chip(data: dict[str, Any], where: str, *, pin_tries: int = 3) -> ChipSpec:
    """Validate a ``[chip]`` table into a :class:`ChipSpec`."""
    where = f"{where} [chip]"
    apps_raw = data.get("applications", [{"aid": DEFAULT_AID, "label": "DEBIT"}])
    if not isinstance(apps_raw, list) or not apps_raw:
        raise ConfigError(f"{where}: applications must be a non-empty array of tables")
    apps = []
    for i, a in enumerate(apps_raw):
        if not isinstance(a, dict):
            raise ConfigError(f"{where}: applications[{i}] must be a table")
        apps.append(_parse_app(a, f"{where} applications[{i}]"))
    try:
        status = ChipStatus(_str(data, "status", where, "active"))
    except ValueError:
        raise ConfigError(f"{where}: status must be active or blocked") from None
    protocols_raw = _typed(data.get("protocols", [0]), list, where, "protocols", "a list of 0 and/or 1")
    protocols = tuple(protocols_raw)
    if not protocols or any(isinstance(t, bool) or t not in (0, 1) for t in protocols):
        raise ConfigError(f"{where}: protocols must list 0 and/or 1")
    atc = _int(data, "atc", where, 0, 0, 0xFFFF)
    tries: int | None = None
    if "pin_tries_left" in data:
        tries = _typed(data["pin_tries_left"], int, where, "pin_tries_left", "a whole number")
        if not 0 <= tries <= min(15, pin_tries):
            raise ConfigError(f"{where}: pin_tries_left must be 0..pin_tries")
    language = _str(data, "language", where, "zhen")
    if not (language.isascii() and language.isalpha() and language.islower() and len(language) in (2, 4, 6, 8)):
        raise ConfigError(f"{where}: language must be 1 to 4 ISO 639-1 codes, e.g. \"zhen\" (tag 5F2D)")
    historical = _hex(data.get("historical", DEFAULT_HISTORICAL), where, "historical", max_len=15)
    try:
        parse_historical(historical)
    except DecodeError as e:
        raise ConfigError(f"{where}: historical bytes are not valid ISO/IEC 7816-4 §8.1.1 ({e.msg})") from None
    return ChipSpec(
        applications=tuple(apps),
        status=status,
        protocols=protocols,
        t0_wire=_flag(data, "t0_wire", where, False),
        pse=_flag(data, "pse", where, True),
        atc=atc,
        pin_tries_left=tries,
        language=language,
        read_before_gpo=_flag(data, "read_before_gpo", where, True),
        historical=historical,
    )


def _parse_stripe(data: Any, where: str) -> tuple[DamageRegion, ...]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [stripe] must be a table")
    regions = data.get("damage", [])
    if not isinstance(regions, list):
        raise ConfigError(f"{where}: stripe.damage must be an array of tables")
    out = []
    for i, r in enumerate(regions):
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: stripe.damage[{i}] must be a table")
        try:
            start, end = _finite(r["start_in"]), _finite(r["end_in"])
            severity = _finite(r.get("severity", 1.0))
        except (KeyError, ValueError):
            raise ConfigError(f"{where}: stripe.damage[{i}] needs numeric (finite) start_in, end_in, "
                              "severity") from None
        if not (0 <= start < end <= MAX_CARD_LENGTH_IN and 0.0 <= severity <= 1.0):
            raise ConfigError(f"{where}: stripe.damage[{i}]: need 0 <= start_in < end_in <= {MAX_CARD_LENGTH_IN}, "
                              "0 <= severity <= 1")
        out.append(DamageRegion(start, end, severity))
    return tuple(out)


def parse_profile(data: dict[str, Any], where: str) -> CardProfile:
    """Validate a profile dict (from TOML) into a :class:`CardProfile`.

    Wrong types, values out of range and text a track cannot carry are a :class:`ConfigError`
    naming the file and key — never a Python error and never a silently converted value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a card profile must be a table of keys")
    name = _str(data, "name", where)
    if not name:
        raise ConfigError(f"{where}: name must not be empty")
    pan = _str(data, "pan", where)
    if not (12 <= len(pan) <= 19 and luhn_ok(pan)):
        raise ConfigError(f"{where}: pan is not a 12–19 digit Luhn-valid number")
    expiry = _str(data, "expiry", where)
    if len(expiry) != 4 or not _is_digits(expiry) or not 1 <= int(expiry[2:]) <= 12:
        raise ConfigError(f"{where}: expiry must be YYMM, got {expiry!r}")
    sc = _str(data, "service_code", where)
    if len(sc) != 3 or not _is_digits(sc):
        raise ConfigError(f"{where}: service_code must be 3 digits, got {sc!r}")
    pin = _str(data, "pin", where, "123456")
    if not (4 <= len(pin) <= 12 and _is_digits(pin)):
        raise ConfigError(f"{where}: pin must be 4–12 digits")
    acc = _table(data, "account", where)
    aw = f"{where} [account]"
    status = _str(acc, "status", aw, "active")
    if status not in ("active", "blocked", "restricted"):
        raise ConfigError(f"{where}: account.status must be active, blocked or restricted")
    currency = _str(acc, "currency", aw, "156")
    if len(currency) != 3 or not _is_digits(currency):
        raise ConfigError(f"{where}: account.currency must be 3 digits (ISO 4217 numeric), got {currency!r}")
    account = AccountSeed(
        status=status,
        balance=_int(acc, "balance", aw, 0, -MAX_BALANCE, MAX_BALANCE),
        currency=currency,
        permissions=_strs(acc, "permissions", aw, DEFAULT_PERMISSIONS),
    )
    disc = _str(data, "discretionary", where, "")
    if disc and not _is_digits(disc):
        raise ConfigError(f"{where}: discretionary data must be digits")
    cardholder = _str(data, "cardholder", where, "TEST/CARD")
    if not (2 <= len(cardholder) <= 26 and cardholder.isascii() and cardholder.isprintable()
            and "^" not in cardholder):
        raise ConfigError(f"{where}: cardholder must be 2 to 26 ASCII characters without '^' (ISO/IEC 7813 "
                          "track 1 name)")
    track2 = len(pan) + 1 + 4 + 3 + len(disc)
    if track2 > TRACK2_MAX:
        raise ConfigError(f"{where}: pan, expiry, service code and discretionary data make {track2} characters; "
                          f"track 2 holds at most {TRACK2_MAX} (ISO/IEC 7813)")
    track1 = 1 + len(pan) + 1 + len(cardholder) + 1 + 4 + 3 + len(disc)
    if track1 > TRACK1_MAX:
        raise ConfigError(f"{where}: track 1 would be {track1} characters; it holds at most {TRACK1_MAX} "
                          "(ISO/IEC 7813)")
    pin_tries = _int(data, "pin_tries", where, 3, 1, 15)
    chip_raw = data.get("chip")
    emv: ChipSpec | None = None
    if chip_raw is not None:
        if not isinstance(chip_raw, dict):
            raise ConfigError(f"{where}: [chip] must be a table")
        emv = parse_chip(chip_raw, where, pin_tries=pin_tries)
    elif sc[:1] in ("2", "6"):
        emv = parse_chip({}, where, pin_tries=pin_tries)  # a chip card without details: defaults
    stripe_damage = _parse_stripe(data.get("stripe", {}), where)
    return CardProfile(
        name=name,
        pan=pan,
        expiry=expiry,
        service_code=sc,
        cardholder=cardholder,
        discretionary=disc,
        pin=pin,
        pin_tries=pin_tries,
        description=_str(data, "description", where, ""),
        account=account,
        raw=data,
        emv=emv,
        stripe_damage=stripe_damage,
    )


#: ISO/IEC 7813 track capacities, data characters between the sentinels (79 and 40 with SS, ES, LRC)
TRACK1_MAX = 76
TRACK2_MAX = 37
#: an ID-1 card is 3.370 in long (ISO/IEC 7810): stripe damage lies within it
MAX_CARD_LENGTH_IN = 3.37
#: a balance fits ISO 8583 field 54's 12 digits
MAX_BALANCE = 10**12 - 1


@functools.cache
def _profile_files() -> dict[str, Path]:
    """The bundled profiles (package data: they do not change while posemu runs)."""
    root = resources.files("hardware.cards") / PROFILE_DIR
    out: dict[str, Path] = {}
    for entry in root.iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name[:-5]] = Path(str(entry))
    return out


def list_profiles() -> list[str]:
    """Names of the bundled card profiles."""
    return sorted(_profile_files())


def load_profile(name_or_path: str) -> CardProfile:
    """Load a bundled profile by name, or a profile file by path (parsed once per file version)."""
    files = dict(_profile_files())
    path = files.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"unknown card profile {name_or_path!r}; bundled: {', '.join(sorted(files))}")
    try:
        stat = path.stat()
    except OSError as e:
        raise ConfigError(f"card profile {path}: {e}") from None
    return _load_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=128)
def _load_file(path: str, mtime_ns: int, size: int) -> CardProfile:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"card profile {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"card profile {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"card profile {path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"card profile {path}: nested too deeply") from None
    return parse_profile(data, path)
