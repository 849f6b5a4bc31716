"""The EMV kernel's flow: card I/O from power-on to the first GENERATE AC, and the second.

The steps are those of :mod:`emulator.emv` (see its docstring); every EMV rule they apply is a
pure function of :mod:`emulator.emv.rules`, every type is in :mod:`emulator.emv.model`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence

from emulator.emv import rules
from emulator.emv.model import (
    MAX_COMMANDS,
    MAX_RESPONSE_DATA,
    MAX_VERIFY,
    PSE_NAME,
    ApduLogEntry,
    Candidate,
    CardBlockedError,
    CardDeclinedError,
    CardholderCancelledError,
    ChipRead,
    ChipReadError,
    Completion,
    Cvm,
    EmvError,
    KernelConfig,
    NoApplicationError,
    PinBlockedError,
    PinEntry,
    Transaction,
)
from emulator.emv.rules import Tvr
from hardware.atr import Atr, parse_atr
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
from protocol.cryptogram import CryptogramType
from protocol.errors import DecodeError
from protocol.tlv import PDOL_DATA_MAX, Tlv, build_dol_data, decode, find, tag_hex

__all__ = ["EmvKernel", "read_chip"]


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
        config: KernelConfig | None = None,
        *,
        unpredictable: Callable[[], bytes] | None = None,
        choose_application: Callable[[Sequence[Candidate]], Awaitable[Candidate | None]] | None = None,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.config = config or KernelConfig()
        self._unpredictable = unpredictable or (lambda: os.urandom(4))
        self._choose = choose_application
        self.atr: Atr | None = None
        self._log: list[ApduLogEntry] = []
        self._data: dict[int, bytes] = {}
        self._card: dict[int, bytes] = {}
        self._tvr = Tvr()
        self._tsi = bytearray(2)
        self._read: ChipRead | None = None

    # --- plumbing -------------------------------------------------------------------------------
    @property
    def apdu_log(self) -> tuple[ApduLogEntry, ...]:
        return tuple(self._log)

    @property
    def tvr(self) -> bytes:
        return bytes(self._tvr)

    def _set(self, *flags: str) -> None:
        self._tvr.set(*flags)

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
        return rules.decode_tlv(step, data)

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
        self._tvr = Tvr()
        self._tsi = bytearray(2)
        self._card = {}
        now = self.clock.wall()
        un = self._unpredictable()
        if not isinstance(un, bytes) or len(un) != 4:
            raise TypeError("unpredictable() must return 4 bytes")
        self._data = rules.terminal_values(self.config, txn, now, un)

        try:
            self.atr = parse_atr(await self.reader.power_on())
        except DecodeError as e:
            raise ChipReadError(f"unreadable ATR: {e.msg} ({e.field})") from None
        except CardAbsentError:
            raise
        except ReaderError as e:
            raise ChipReadError(f"power on: {e}") from e

        candidates = await self._candidates()
        _fci, aip, afl = await self._select_and_gpo(candidates)
        await self._read_records(afl)
        self._card[0x82] = aip
        self._set(*rules.processing_restrictions(self._card, self.config, now, txn))
        self._set(*rules.risk_management(self.config, txn))
        self._tsi[0] |= 0x08                               # terminal risk management performed
        cvm, online_pin = await self._cardholder_verification(txn, pin_entry, aip)
        kind = await self._first_generate_ac()
        self._read = rules.chip_read(self._card, self._dol_values(), tvr=bytes(self._tvr), log=tuple(self._log),
                                     cvm=cvm, online_pin=online_pin, kind=kind)
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
        return rules.terminal_accepts(self.config.aids, aid)

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
                out.append(rules.candidate(aid.value, entry))
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
                    out.append(rules.candidate(name, prop))
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
            aip, afl = rules.parse_gpo(gpo.data)
            return fci, aip, afl
        raise NoApplicationError("every candidate application was refused by the card")

    # --- read application data ------------------------------------------------------------------
    async def _read_records(self, afl: bytes) -> None:
        """Book 3 §10.2: every record the AFL names; redundant or missing mandatory data ends the read."""
        seen: set[int] = set()
        for sfi, rec in rules.afl_records(afl):
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

    # --- cardholder verification ----------------------------------------------------------------
    async def _cardholder_verification(self, txn: Transaction, pin_entry: PinEntry,
                                       aip: bytes) -> tuple[Cvm, str | None]:
        """Book 3 §10.5 and Annex C3: the rule is chosen by :func:`rules.choose_cvm`, then done."""
        d = rules.choose_cvm(self._card, aip, txn, self.config)
        if d.performed:
            self._tsi[0] |= 0x40
        online_pin = None
        if d.cvm is Cvm.OFFLINE_PIN_OK:
            self._set(*d.flags)
            await self._offline_pin(pin_entry)
        elif d.cvm is Cvm.ONLINE_PIN:
            online_pin = await self._ask_pin(pin_entry, None)
            self._set(*d.flags)
        else:
            self._set(*d.flags)
        self._data[0x9F34] = d.results
        return (d.cvm or Cvm.NO_CVM), online_pin

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
    async def _generate_ac(self, step: str, p1: int, dol: bytes) -> CryptogramType:
        try:
            data = build_dol_data(dol, self._dol_values())
        except DecodeError as e:
            raise ChipReadError(f"{step}: malformed CDOL ({e.msg})") from None
        resp = await self._exchange(step, CommandApdu(0x80, 0xAE, p1, 0x00, data, ne=256))
        if resp.sw != SW.OK:
            raise ChipReadError(f"{step}: {resp.sw:04X} {sw_meaning(resp.sw)}")
        kind, vals = rules.parse_generate_ac(step, resp.data, p1)
        self._data.update(vals)
        return kind

    async def _first_generate_ac(self) -> CryptogramType:
        requested = rules.requested_cryptogram(bytes(self._tvr), self._card, self.config)
        kind = await self._generate_ac("GENERATE AC (first)", requested, self._card[0x8C])
        self._tsi[0] |= 0x20
        if kind is CryptogramType.AAC:
            raise CardDeclinedError("the card declined the transaction offline (AAC)")
        return kind

    def _field55(self) -> bytes:
        return rules.field55(self._dol_values())

    # --- completion --------------------------------------------------------------------------------
    async def complete(self, approved: bool, arc: bytes | str, issuer_auth: bytes = b"") -> Completion:
        """Second GENERATE AC (Book 3 §10.11) with the host's decision, after :meth:`read`.

        ``approved`` — the host approved (ask the card for a TC) or not (ask for an AAC);
        ``arc`` — the Authorisation Response Code, tag 8A: the ISO 8583 field 39 value as 2
        characters (``"00"``) or 2 ASCII bytes; ``issuer_auth`` — tag 91 if the host sent one.
        Returns the card's :class:`Completion`: ``approved`` (TC) or ``declined`` (AAC — after
        a host approval the terminal must reverse). Raises :class:`EmvError` when there is
        nothing to complete (no successful read, or the card did not ask to go online),
        :class:`ChipReadError` when the card fails (no CDOL2, a status word, a malformed
        answer — e.g. a second completion, which the card refuses), and lets
        :class:`hardware.errors.CardAbsentError` through when the card was pulled out.
        """
        if self._read is None:
            raise EmvError("complete() needs a successful read() first")
        if self._read.cryptogram_type is not CryptogramType.ARQC:
            raise EmvError(f"the card decided offline ({self._read.cryptogram_type.name}); "
                           "there is no second GENERATE AC")
        if isinstance(arc, str):
            arc = arc.encode("ascii", "replace")
        if not isinstance(arc, bytes) or len(arc) != 2:
            raise TypeError("arc must be 2 characters or bytes (tag 8A, e.g. \"00\")")
        cdol2 = self._card.get(0x8D)
        if cdol2 is None:
            raise ChipReadError("the card has no CDOL2 (8D)")
        self._data[0x8A] = arc
        if issuer_auth:
            self._data[0x91] = issuer_auth
        p1 = CryptogramType.TC if approved else CryptogramType.AAC
        kind = await self._generate_ac("GENERATE AC (second)", p1, cdol2)
        return Completion(kind, self._field55())


async def read_chip(
    reader: CardReader,
    clock: Clock,
    txn: Transaction,
    pin_entry: PinEntry,
    config: KernelConfig | None = None,
    *,
    unpredictable: Callable[[], bytes] | None = None,
    choose_application: Callable[[Sequence[Candidate]], Awaitable[Candidate | None]] | None = None,
) -> ChipRead:
    """One-shot: an :class:`EmvKernel` on ``reader`` reads the inserted card."""
    kernel = EmvKernel(reader, clock, config, unpredictable=unpredictable,
                       choose_application=choose_application)
    return await kernel.read(txn, pin_entry)
