"""A virtual EMV contact card, vsmartcard-style: ``execute(apdu) -> response``.

The card is a pure function of its state and the command: the command APDU is decoded
(ISO/IEC 7816-4 §5.1), its INS looked up in one dispatch table (INS → allowed CLA, handler),
and a handler either returns response data (→ ``data 90 00``) or raises a
:class:`protocol.apdu.CardStatusError`, which becomes the status word. No I/O, no clock.

Commands (EMV 4.4 Book 3 §6.5 unless noted):

========== ==== ==== =======================================================================
command    CLA  INS  behaviour
========== ==== ==== =======================================================================
SELECT     00   A4   by DF name (P1 04), first/next occurrence (P2 00/02); PSE
                     ``1PAY.SYS.DDF01`` → FCI with the directory SFI (tag 88); an AID
                     (or a prefix of one, partial selection) → FCI with label, priority,
                     PDOL. Card blocked → 6A81, application blocked → FCI + 6283.
READ REC.  00   B2   P2 = SFI<<3 | 4. PSE selected: directory records (70 → 61 entries).
                     Application: the records the AFL names; before GPO only if the
                     profile allows it (``read_before_gpo``, default true), else 6985.
GPO        80   A8   data ``83 L pdol-data`` (length must match the PDOL → else 6700);
                     ATC incremented; answers AIP + AFL in format 1 (80) or 2 (77).
                     Twice, or before SELECT → 6985.
VERIFY     00   20   P2 80 plaintext PIN block ``2N PIN F…`` (8 bytes); wrong PIN →
                     63Cx (x tries left), tries 0 → 6983; no data → 63Cx status query.
GET DATA   80   CA   9F17 PIN try counter, 9F36 ATC, 9F13 last online ATC; else 6A88.
GEN. AC    80   AE   P1 b8-b7: 00 AAC, 40 TC, 80 ARQC; CDOL1 (first) or CDOL2 (second)
                     data. Before GPO, or after a final TC/AAC → 6985. Returns
                     CID 9F27, ATC 9F36, AC 9F26, IAD 9F10 (format 1 or 2).
========== ==== ==== =======================================================================

State: the PIN try counter, the ATC and the last online ATC are non-volatile (they survive
:meth:`EmvCard.reset`, like EEPROM); the selected file, GPO and cryptogram progress are
volatile. Card risk management is deliberately simple: an ARQC request gets an ARQC; a TC
request gets a TC only if the application allows offline approval, else an ARQC; an AAC
request, or a blocked application, gets an AAC. Second GENERATE AC: a TC if asked for and the
ARC approves, unless the application has ``decline_after_online`` (then an AAC).

Issuer Application Data (9F10) is ``06 01 0A 03 c1 c2 00`` — length, key index 01,
cryptogram version 0A, then a 4-byte Card Verification Result (length 03, c1, c2, 00) with
c1 b8-7 = second GENERATE AC type (00 AAC, 01 TC, 10 not requested), b6-5 = first
GENERATE AC type (00 AAC, 01 TC, 10 ARQC), b3 = offline PIN verified, b2 = offline PIN verification failed; c2 b8-5
= PIN try counter, b1 = PIN try limit exceeded. The cryptogram is computed as documented in
:mod:`hardware.cards.emv_crypto`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from hardware.atr import build_atr
from hardware.cards.emv_crypto import application_cryptogram
from hardware.cards.profiles import CardProfile, ChipSpec, ChipStatus, CvmMethod, EmvApplication
from protocol.apdu import (
    SW,
    AuthMethodBlockedError,
    CardStatusError,
    ClaNotSupportedError,
    CommandApdu,
    ConditionsNotSatisfiedError,
    FileNotFoundStatusError,
    FunctionNotSupportedError,
    InsNotSupportedError,
    RecordNotFoundError,
    ReferencedDataNotFoundError,
    WrongDataError,
    WrongLengthError,
    WrongP1P2Error,
    WrongPinError,
)
from protocol.cryptogram import CryptogramType
from protocol.errors import DecodeError, EncodeError
from protocol.tlv import Tlv, decode, decode_dol

__all__ = ["PSE_NAME", "CryptogramType", "EmvCard", "build_records", "encode_pin_block"]

PSE_NAME = b"1PAY.SYS.DDF01"
"""Payment System Environment DF name (EMV Book 1 §12.2.2)."""

PSE_DIRECTORY_SFI = 1


_CVR_AC = {CryptogramType.AAC: 0b00, CryptogramType.TC: 0b01, CryptogramType.ARQC: 0b10}


def _bcd(digits: str) -> bytes:
    """Digits to BCD, right-padded with F to whole bytes (EMV format cn)."""
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def _last_day(yymm: str) -> str:
    y, m = 2000 + int(yymm[:2]), int(yymm[2:])
    if m == 12:
        return f"{yymm}31"
    last = (dt.date(y, m + 1, 1) - dt.timedelta(days=1)).day
    return f"{yymm}{last:02d}"


def _cvm_list(app: EmvApplication) -> bytes:
    """CVM List (tag 8E, Book 3 §10.5 / Annex C3): X = Y = 0, one rule per method, condition 00.

    Every rule but the last sets b7 ("apply succeeding CV rule if this CVM is unsuccessful").
    """
    out = bytearray(8)
    for i, m in enumerate(app.cvm):
        code = m.code | (0x40 if i < len(app.cvm) - 1 else 0)
        out += bytes((code, 0x00))
    return bytes(out)


def build_records(profile: CardProfile, app: EmvApplication) -> tuple[bytes, dict[tuple[int, int], bytes]]:
    """The AFL (tag 94) and the application's records ``{(sfi, record): 70-template bytes}``.

    SFI 1 record 1: track 2 equivalent (57), cardholder name (5F20), track 1 discretionary
    data (9F1F). SFI 2 record 1: PAN (5A), expiry (5F24), effective date (5F25), issuer
    country (5F28), PAN sequence (5F34), usage control (9F07), application version (9F08),
    currency (9F42, 9F44), service code (5F30). SFI 2 record 2: CDOL1 (8C), CDOL2 (8D), CVM
    list (8E), issuer action codes (9F0D/9F0E/9F0F) and any extra tags.

    An application with explicit ``records`` uses exactly those; its AFL (Book 3 §10.2)
    has one entry per run of consecutive records in an SFI, none for offline authentication.
    """
    if app.records:
        given = {(sfi, rec): body for sfi, rec, body in app.records}
        entries = bytearray()
        for sfi in sorted({k[0] for k in given}):
            nums = sorted(r for s, r in given if s == sfi)
            start = prev = nums[0]
            for n in [*nums[1:], None]:
                if n is not None and n == prev + 1:
                    prev = n
                    continue
                entries += bytes((sfi << 3, start, prev, 0))
                if n is not None:
                    start = prev = n
        return bytes(entries), given
    t2 = f"{profile.pan}D{profile.expiry}{profile.service_code}{profile.discretionary}"
    rec11 = [
        Tlv(0x57, _bcd(t2)),
        Tlv(0x5F20, profile.cardholder.encode("ascii", "replace")[:26]),
    ]
    if profile.discretionary:
        rec11.append(Tlv(0x9F1F, profile.discretionary.encode("ascii")))
    rec21 = [
        Tlv(0x5A, _bcd(profile.pan)),
        Tlv(0x5F24, bytes.fromhex(_last_day(profile.expiry))),
    ]
    if app.effective:
        rec21.append(Tlv(0x5F25, bytes.fromhex(app.effective)))
    rec21 += [
        Tlv(0x5F28, bytes.fromhex(app.country)),
        Tlv(0x5F34, b"\x01"),
        Tlv(0x9F07, app.usage_control),
        Tlv(0x9F08, app.app_version),
        Tlv(0x9F42, bytes.fromhex(app.currency)),
        Tlv(0x9F44, b"\x02"),
        Tlv(0x5F30, bytes.fromhex("0" + profile.service_code)),
    ]
    rec22 = [
        Tlv(0x8C, app.cdol1),
        Tlv(0x8D, app.cdol2),
        Tlv(0x8E, _cvm_list(app)),
        Tlv(0x9F0D, app.iac_default),
        Tlv(0x9F0E, app.iac_denial),
        Tlv(0x9F0F, app.iac_online),
    ]
    rec22 += [Tlv(tag, value) for tag, value in app.extra]
    records = {
        (1, 1): Tlv(0x70, children=tuple(rec11)).encode(),
        (2, 1): Tlv(0x70, children=tuple(rec21)).encode(),
        (2, 2): Tlv(0x70, children=tuple(rec22)).encode(),
    }
    afl = bytes((1 << 3, 1, 1, 0, 2 << 3, 1, 2, 1))
    return afl, records


@dataclass(slots=True)
class _Session:
    """Volatile state: cleared by reset and by SELECT."""

    pse_selected: bool = False
    app_index: int | None = None
    gpo_done: bool = False
    pdol_data: bytes = b""
    pin_verified: bool = False
    pin_failed: bool = False
    first_ac: CryptogramType | None = None
    second_ac: CryptogramType | None = None
    finished: bool = False


_Handler = Callable[["EmvCard", CommandApdu], bytes]


class EmvCard:
    """A virtual EMV contact card built from a :class:`CardProfile` (see module docstring)."""

    def __init__(self, profile: CardProfile, spec: ChipSpec | None = None) -> None:
        if not isinstance(profile, CardProfile):
            raise TypeError(f"profile must be a CardProfile, not {type(profile).__name__}")
        chip = spec or profile.emv
        if chip is None:
            raise TypeError(f"profile {profile.name!r} has no chip")
        self.profile = profile
        self.spec = chip
        self._atr = build_atr(protocols=chip.protocols, historical=chip.historical).encode()
        self._files = [build_records(profile, app) for app in chip.applications]
        # non-volatile memory
        self.pin_tries_max = profile.pin_tries
        self.pin_tries_left = profile.pin_tries if chip.pin_tries_left is None else chip.pin_tries_left
        self.atc = chip.atc
        self.last_online_atc = 0
        self._s = _Session()

    # --- VirtualCard port ------------------------------------------------------------------
    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return (self.profile.track1, self.profile.track2, None)

    def reset(self) -> None:
        """Cold or warm reset: volatile state only; PIN tries and ATC persist."""
        self._s = _Session()

    def execute(self, apdu: bytes) -> bytes:
        """Process one command APDU; always returns a response (data + SW1 SW2)."""
        try:
            cmd = CommandApdu.decode(bytes(apdu))
        except DecodeError:
            return SW.WRONG_LENGTH.to_bytes(2, "big")
        entry = _DISPATCH.get(cmd.ins)
        if entry is None:
            return InsNotSupportedError().response()
        cla, handler = entry
        if cmd.cla & 0xFC != cla:  # b2-b1: logical channel, ignored (basic channel only)
            return ClaNotSupportedError().response()
        try:
            data = handler(self, cmd)
        except CardStatusError as e:
            return e.response()
        return data + b"\x90\x00"

    # --- helpers ---------------------------------------------------------------------------
    @property
    def selected_application(self) -> EmvApplication | None:
        i = self._s.app_index
        return None if i is None else self.spec.applications[i]

    @property
    def gpo_done(self) -> bool:
        """GET PROCESSING OPTIONS has run for the selected application."""
        return self._s.gpo_done

    def _app(self) -> tuple[int, EmvApplication]:
        i = self._s.app_index
        if i is None:
            raise ConditionsNotSatisfiedError(msg="no application selected")
        return i, self.spec.applications[i]

    def _fci_app(self, app: EmvApplication) -> bytes:
        prop: list[Tlv] = [Tlv(0x50, app.label.encode("ascii")), Tlv(0x87, bytes([app.priority]))]
        if app.pdol:
            prop.append(Tlv(0x9F38, app.pdol))
        prop += [Tlv(0x5F2D, self.spec.language.encode("ascii")), Tlv(0x9F11, b"\x01")]
        if app.preferred_name:
            prop.append(Tlv(0x9F12, app.preferred_name.encode("ascii", "replace")[:16]))
        return Tlv(0x6F, children=(Tlv(0x84, app.aid), Tlv(0xA5, children=tuple(prop)))).encode()

    def _fci_pse(self) -> bytes:
        prop = (Tlv(0x88, bytes([PSE_DIRECTORY_SFI])), Tlv(0x5F2D, self.spec.language.encode("ascii")))
        return Tlv(0x6F, children=(Tlv(0x84, PSE_NAME), Tlv(0xA5, children=prop))).encode()

    def _directory_record(self, n: int) -> bytes:
        """PSE directory record ``n`` (Book 1 §12.2.3): one application per record."""
        apps = self.spec.applications
        if not 1 <= n <= len(apps):
            raise RecordNotFoundError()
        app = apps[n - 1]
        entry: list[Tlv] = [Tlv(0x4F, app.aid), Tlv(0x50, app.label.encode("ascii"))]
        if app.preferred_name:
            entry.append(Tlv(0x9F12, app.preferred_name.encode("ascii", "replace")[:16]))
        entry.append(Tlv(0x87, bytes([app.priority])))
        return Tlv(0x70, children=(Tlv(0x61, children=tuple(entry)),)).encode()

    # --- command handlers --------------------------------------------------------------------
    def _select(self, cmd: CommandApdu) -> bytes:
        if self.spec.status is ChipStatus.BLOCKED:
            raise FunctionNotSupportedError(msg="card blocked")
        if cmd.p1 != 0x04 or cmd.p2 & 0xFC:
            raise WrongP1P2Error(SW.INCORRECT_P1P2)
        occurrence = cmd.p2 & 0x03
        if occurrence not in (0x00, 0x02):
            raise WrongP1P2Error(SW.INCORRECT_P1P2)
        name = cmd.data
        if not 1 <= len(name) <= 16:
            raise WrongLengthError()
        previous = self._s.app_index
        if name == PSE_NAME:
            if not self.spec.pse or occurrence:
                raise FileNotFoundStatusError()
            self._s = _Session(pse_selected=True)
            return self._fci_pse()
        matches = [i for i, a in enumerate(self.spec.applications) if a.aid.startswith(name)]
        if occurrence == 0x02 and previous in matches:
            matches = [i for i in matches if i > previous]
        if not matches:
            self._s = _Session()
            raise FileNotFoundStatusError()
        i = matches[0]
        app = self.spec.applications[i]
        self._s = _Session(app_index=i)
        fci = self._fci_app(app)
        if app.blocked:
            # 6283 with the FCI: the application is blocked (Book 1 §12.3.3)
            raise _WithData(fci, SW.SELECTED_FILE_INVALIDATED)
        return fci

    def _read_record(self, cmd: CommandApdu) -> bytes:
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 == 0:
            raise WrongP1P2Error(SW.INCORRECT_P1P2)
        sfi = cmd.p2 >> 3
        if self._s.pse_selected:
            if sfi != PSE_DIRECTORY_SFI:
                raise FileNotFoundStatusError()
            return self._directory_record(cmd.p1)
        i, _ = self._app()
        if not self._s.gpo_done and not self.spec.read_before_gpo:
            raise ConditionsNotSatisfiedError(msg="READ RECORD before GET PROCESSING OPTIONS")
        _, records = self._files[i]
        rec = records.get((sfi, cmd.p1))
        if rec is None:
            if any(s == sfi for s, _ in records):
                raise RecordNotFoundError()
            raise FileNotFoundStatusError()
        return rec

    def _gpo(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise WrongP1P2Error(SW.INCORRECT_P1P2)
        i, app = self._app()
        if app.blocked or self._s.gpo_done:
            raise ConditionsNotSatisfiedError()
        try:
            objs = decode(cmd.data)
        except DecodeError:
            raise WrongDataError() from None
        if len(objs) != 1 or objs[0].tag != 0x83:
            raise WrongDataError(msg="GPO data must be one 83 template")
        need = sum(n for _, n in decode_dol(app.pdol)) if app.pdol else 0
        if len(objs[0].value) != need:
            raise WrongLengthError(msg=f"PDOL data is {len(objs[0].value)} bytes, expected {need}")
        if self.atc >= 0xFFFF:
            raise ConditionsNotSatisfiedError(msg="ATC exhausted")
        self.atc += 1
        self._s.gpo_done = True
        self._s.pdol_data = objs[0].value
        afl, _ = self._files[i]
        if app.response_format == 1:
            return Tlv(0x80, app.aip + afl).encode()
        return Tlv(0x77, children=(Tlv(0x82, app.aip), Tlv(0x94, afl))).encode()

    def _verify(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise WrongP1P2Error(SW.INCORRECT_P1P2)  # only plaintext PIN (P2 80)
        _, app = self._app()
        if CvmMethod.OFFLINE_PIN not in app.cvm:
            raise ConditionsNotSatisfiedError(msg="the application has no offline PIN")
        if self.pin_tries_left == 0:
            raise AuthMethodBlockedError()
        if not cmd.data:
            raise WrongPinError.with_tries(self.pin_tries_left)  # status query, ISO 7816-4 §11.5.6
        pin = _parse_plain_pin_block(cmd.data)
        if pin == self.profile.pin:
            self.pin_tries_left = self.pin_tries_max
            self._s.pin_verified = True
            self._s.pin_failed = False
            return b""
        self.pin_tries_left -= 1
        self._s.pin_failed = True
        raise WrongPinError.with_tries(self.pin_tries_left)

    def _get_data(self, cmd: CommandApdu) -> bytes:
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == 0x9F17:
            return Tlv(0x9F17, bytes([self.pin_tries_left])).encode()
        if tag == 0x9F36:
            return Tlv(0x9F36, self.atc.to_bytes(2, "big")).encode()
        if tag == 0x9F13:
            return Tlv(0x9F13, self.last_online_atc.to_bytes(2, "big")).encode()
        raise ReferencedDataNotFoundError()

    def _generate_ac(self, cmd: CommandApdu) -> bytes:
        if cmd.p2 != 0x00 or cmd.p1 & 0xC0 == 0xC0 or cmd.p1 & 0x2F:
            raise WrongP1P2Error(SW.INCORRECT_P1P2)
        _, app = self._app()
        s = self._s
        if not s.gpo_done or s.finished:
            raise ConditionsNotSatisfiedError(msg="GENERATE AC out of sequence")
        second = s.first_ac is not None
        dol = app.cdol2 if second else app.cdol1
        need = sum(n for _, n in decode_dol(dol))
        if len(cmd.data) != need:
            raise WrongLengthError(msg=f"CDOL data is {len(cmd.data)} bytes, expected {need}")
        requested = CryptogramType(cmd.p1 & 0xC0)
        if second:
            arc = _arc_from_cdol2(dol, cmd.data)
            approved = arc in (b"00", b"10", b"11", b"\x00\x00")
            accept = requested is CryptogramType.TC and approved and not app.decline_after_online
            kind = CryptogramType.TC if accept else CryptogramType.AAC
            s.second_ac = kind
            s.finished = True
            if approved:
                self.last_online_atc = self.atc
        else:
            if app.blocked or requested is CryptogramType.AAC:
                kind = CryptogramType.AAC
            elif requested is CryptogramType.TC and app.offline_approve:
                kind = CryptogramType.TC
            else:
                kind = CryptogramType.ARQC
            s.first_ac = kind
            s.finished = kind is not CryptogramType.ARQC
        iad = self._iad()
        ac = application_cryptogram(app.ac_key, self.atc, cmd.data, app.aip, iad)
        cid = bytes([kind])
        atc = self.atc.to_bytes(2, "big")
        if app.response_format == 1:
            return Tlv(0x80, cid + atc + ac + iad).encode()
        return Tlv(0x77, children=(Tlv(0x9F27, cid), Tlv(0x9F36, atc), Tlv(0x9F26, ac),
                                   Tlv(0x9F10, iad))).encode()

    def _iad(self) -> bytes:
        s = self._s
        first = 0b10 if s.first_ac is None else _CVR_AC[s.first_ac]
        second = 0b10 if s.second_ac is None else _CVR_AC[s.second_ac]
        c1 = (second << 6) | (first << 4) | (0x04 if s.pin_verified else 0) | (0x02 if s.pin_failed else 0)
        c2 = (min(self.pin_tries_left, 15) << 4) | (0x01 if self.pin_tries_left == 0 else 0)
        return bytes((0x06, 0x01, 0x0A, 0x03, c1, c2, 0x00))

    # --- inspection (tests, `posemu card` tooling) ------------------------------------------
    def records(self, app_index: int = 0) -> dict[tuple[int, int], bytes]:
        return dict(self._files[app_index][1])


class _WithData(CardStatusError):
    """A warning status that still returns data (SELECT of a blocked application → FCI + 6283)."""

    def __init__(self, data: bytes, sw: int) -> None:
        super().__init__(sw)
        self.data = data

    def response(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.data, self.sw))


def _parse_plain_pin_block(block: bytes) -> str:
    """Plaintext offline PIN block (EMV Book 3 §6.5.12): ``2N P P … F F``, 8 bytes."""
    if len(block) != 8:
        raise WrongLengthError()
    h = block.hex().upper()
    n = int(h[1], 16)
    if h[0] != "2" or not 4 <= n <= 12:
        raise WrongDataError()
    digits, filler = h[2 : 2 + n], h[2 + n :]
    if not digits.isdigit() or set(filler) - {"F"}:
        raise WrongDataError()
    return digits


def _arc_from_cdol2(cdol2: bytes, data: bytes) -> bytes:
    pos = 0
    for tag, n in decode_dol(cdol2):
        if tag == 0x8A:
            return data[pos : pos + n]
        pos += n
    return b""


_DISPATCH: dict[int, tuple[int, _Handler]] = {
    0xA4: (0x00, EmvCard._select),
    0xB2: (0x00, EmvCard._read_record),
    0x20: (0x00, EmvCard._verify),
    0xA8: (0x80, EmvCard._gpo),
    0xCA: (0x80, EmvCard._get_data),
    0xAE: (0x80, EmvCard._generate_ac),
}
"""INS → (CLA with the channel bits cleared, handler). EMV Book 3 §6.3.2 Table 3 (CLA 00/80)."""


def encode_pin_block(pin: str) -> bytes:
    """The plaintext PIN block a terminal sends in VERIFY (Book 3 §6.5.12.2).

    >>> encode_pin_block("1234").hex().upper()
    '241234FFFFFFFFFF'
    """
    if not isinstance(pin, str):
        raise TypeError("pin must be str")
    if not (4 <= len(pin) <= 12 and pin.isdigit()):
        raise EncodeError("PIN must be 4..12 digits")
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))

