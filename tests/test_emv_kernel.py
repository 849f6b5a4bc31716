"""The terminal-side EMV kernel against virtual cards through the sim reader."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.emv import (
    FIELD55_TAGS,
    Candidate,
    CardBlockedError,
    CardDeclinedError,
    CardholderCancelledError,
    ChipRead,
    ChipReadError,
    Cvm,
    EmvError,
    EmvKernel,
    KernelConfig,
    NoApplicationError,
    PinBlockedError,
    TerminalAid,
    Transaction,
    TransactionType,
    read_chip,
)
from hardware.cards.emv_card import EmvCard
from hardware.cards.emv_crypto import CryptogramType, verify_cryptogram, verify_icc_data
from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.errors import CardAbsentError
from hardware.ports import VirtualCard
from hardware.sim import SimReader, card_for_profile
from protocol.apdu import CommandApdu
from protocol.errors import ConfigError, PosemuError
from protocol.tlv import decode, decode_dol, flatten

UN = bytes.fromhex("A1B2C3D4")


class Pins:
    """A scripted PIN pad: hands out PINs in order, ``None`` when out; records the tries shown."""

    def __init__(self, *pins: str | None) -> None:
        self.pins = list(pins)
        self.asked: list[int | None] = []

    async def __call__(self, tries: int | None) -> str | None:
        self.asked.append(tries)
        return self.pins.pop(0) if self.pins else None


def reader_with(clock: VirtualClock, card: VirtualCard | str) -> SimReader:
    r = SimReader(clock)
    r.insert(card_for_profile(load_profile(card)) if isinstance(card, str) else card)
    return r


def kernel(clock: VirtualClock, card: VirtualCard | str, config: KernelConfig | None = None) -> EmvKernel:
    return EmvKernel(reader_with(clock, card), clock, config, unpredictable=lambda: UN)


def field55(read: ChipRead) -> dict[int, bytes]:
    return flatten(decode(read.icc_data))


def steps(read_or_kernel: ChipRead | EmvKernel) -> list[tuple[str, str]]:
    return [(e.step, e.response[-2:].hex().upper()) for e in read_or_kernel.apdu_log]


# --- happy paths ----------------------------------------------------------------------------------
def test_online_pin_card(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    pins = Pins("123456")
    read = vrun.run(kernel(vclock, "cup_debit").read(Transaction(1000, TransactionType.PURCHASE), pins))
    assert read.pan == "9900020000000018"
    assert read.expiry == "3012" and read.service_code == "220"
    assert read.track2_equivalent == "9900020000000018=30122200000000000"
    assert read.pan_sequence == 1
    assert read.cardholder == "TEST/UNIONPAY DEBIT"
    assert read.aid == "A000000333010101"
    assert read.label == "TEST DEBIT"
    assert read.cvm is Cvm.ONLINE_PIN and read.online_pin == "123456"
    assert pins.asked == [None]
    assert read.cryptogram_type is CryptogramType.ARQC and read.atc == 1
    assert [s for s, _ in steps(read)][:3] == ["SELECT PSE", "READ RECORD (PSE directory)",
                                               "READ RECORD (PSE directory)"]
    # nothing secret in the repr
    text = repr(read)
    assert "9900020000000018" not in text and "123456" not in text and "990002******0018" in text
    log = " ".join(repr(e) for e in read.apdu_log)
    assert "0000000018" not in log and "D3012" not in log.upper()
    assert "57=<" in log and "5A=<" in log


def test_field55_and_cryptogram(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    k = kernel(vclock, "cup_debit")
    read = vrun.run(k.read(Transaction(12345), Pins("123456")))
    f55 = field55(read)
    assert set(FIELD55_TAGS) <= set(f55)
    assert [o.tag for o in decode(read.icc_data)] == list(FIELD55_TAGS)
    assert f55[0x9F02] == bytes.fromhex("000000012345")
    assert f55[0x9F37] == UN
    assert f55[0x9A] == bytes.fromhex("260101")      # the virtual clock's date
    assert f55[0x9C] == b"\x00"
    assert f55[0x5F2A] == f55[0x9F1A] == bytes.fromhex("0156")
    assert f55[0x84] == bytes.fromhex("A000000333010101")
    assert f55[0x9F27] == b"\x80"
    assert f55[0x9F34] == bytes.fromhex("020000")    # enciphered PIN online, always, unknown
    assert f55[0x95][2] & 0x04                        # TVR: online PIN entered
    # the issuer's check: recompute the ARQC from the CDOL1 data the terminal sent
    genac = next(e for e in read.apdu_log if e.step == "GENERATE AC (first)")
    cmd = CommandApdu.decode(genac.command)
    card = load_profile("cup_debit").emv
    assert card is not None
    app = card.applications[0]
    assert len(cmd.data) == sum(n for _, n in decode_dol(app.cdol1))
    assert verify_cryptogram(app.ac_key, int.from_bytes(f55[0x9F36], "big"), cmd.data, f55[0x82],
                             f55[0x9F10], f55[0x9F26])
    # the host's view: field 55 alone plus the card's CDOL1 and key
    assert verify_icc_data(app.ac_key, app.cdol1, read.icc_data)
    assert not verify_icc_data(bytes(16), app.cdol1, read.icc_data)
    tampered = read.icc_data.replace(bytes.fromhex("9F0206000000012345"), bytes.fromhex("9F0206000000099999"))
    assert tampered != read.icc_data and not verify_icc_data(app.ac_key, app.cdol1, tampered)
    assert not verify_icc_data(app.ac_key, app.cdol1, b"\x9F")


def test_offline_pin_with_a_wrong_try(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    pins = Pins("1111", "1234")
    read = vrun.run(kernel(vclock, "intl_credit").read(Transaction(500), pins))
    assert read.cvm is Cvm.OFFLINE_PIN_OK and read.online_pin is None
    assert pins.asked == [3, 2]
    assert [sw for s, sw in steps(read) if s == "VERIFY"] == ["63C2", "9000"]
    verify_logged = [e.command for e in read.apdu_log if e.step == "VERIFY"]
    assert verify_logged == [bytes.fromhex("0020008008")] * 2        # PIN block never logged
    assert field55(read)[0x9F34] == bytes.fromhex("410002")          # rule 41 00, successful
    assert read.track2_equivalent.startswith("9900030000000025=2912201")


def test_wrong_pin_until_blocked(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    card = card_for_profile(load_profile("intl_credit"))
    pins = Pins("0000", "0000", "0000")
    k = kernel(vclock, card)
    with pytest.raises(PinBlockedError):
        vrun.run(k.read(Transaction(500), pins))
    assert pins.asked == [3, 2, 1]
    assert [sw for s, sw in steps(k) if s == "VERIFY"] == ["63C2", "63C1", "63C0"]
    assert k.tvr[2] & 0x20                                          # PIN try limit exceeded
    # the card remembers: a later VERIFY answers 6983, and a new session refuses at once
    assert card.execute(CommandApdu(0, 0x20, 0, 0x80, bytes.fromhex("241234FFFFFFFFFF")).encode()) == b"\x69\x83"
    pins2 = Pins("1234")
    with pytest.raises(PinBlockedError):
        vrun.run(kernel(vclock, card).read(Transaction(500), pins2))
    assert pins2.asked == []


def test_pin_blocked_profile(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    pins = Pins("1234")
    with pytest.raises(PinBlockedError):
        vrun.run(kernel(vclock, "pin_blocked").read(Transaction(1), pins))
    assert pins.asked == []


def test_6983_from_verify_is_pin_blocked(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    class NoTryCounter(EmvCard):
        """A card that hides its PIN try counter (GET DATA 9F17 → 6A88) and is blocked."""

        def execute(self, apdu: bytes) -> bytes:
            if apdu[:4] == bytes.fromhex("80CA9F17"):
                return b"\x6A\x88"
            return super().execute(apdu)

    prof = load_profile("intl_credit")
    card = NoTryCounter(prof)
    card.pin_tries_left = 0
    pins = Pins("1234")
    with pytest.raises(PinBlockedError):
        vrun.run(kernel(vclock, card).read(Transaction(1), pins))
    assert pins.asked == [None]


# --- selection ----------------------------------------------------------------------------------
def test_pse_missing_falls_back_to_the_aid_list(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    read = vrun.run(kernel(vclock, "intl_debit").read(Transaction(100), Pins("4321")))
    s = steps(read)
    assert s[0] == ("SELECT PSE", "6A82")
    assert ("SELECT AID", "9000") in s
    assert read.aid == "A0000000041010" and read.cvm is Cvm.OFFLINE_PIN_OK


def test_pse_failure_other_than_6a82_also_falls_back(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    class BrokenPse(EmvCard):
        def execute(self, apdu: bytes) -> bytes:
            if b"1PAY.SYS.DDF01" in apdu:
                return bytes.fromhex("6F02A500" "9000")     # FCI without the directory SFI
            return super().execute(apdu)

    read = vrun.run(kernel(vclock, BrokenPse(load_profile("cup_debit"))).read(Transaction(1), Pins("123456")))
    assert read.aid == "A000000333010101"
    assert "SELECT AID" in [s for s, _ in steps(read)]


def test_priority_and_cardholder_choice(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    read = vrun.run(kernel(vclock, "multi_app").read(Transaction(1), Pins("1234")))
    assert read.label == "DEBIT"                                    # priority 1 beats 2

    offered: list[Sequence[Candidate]] = []

    async def choose(cands: Sequence[Candidate]) -> Candidate | None:
        offered.append(cands)
        return next(c for c in cands if c.label == "CREDIT")

    k = EmvKernel(reader_with(vclock, "multi_app"), vclock, unpredictable=lambda: UN, choose_application=choose)
    read = vrun.run(k.read(Transaction(1), Pins("1234")))
    assert read.label == "CREDIT" and read.aid == "A0000000031010"
    assert [c.label for c in offered[0]] == ["DEBIT", "CREDIT"]

    async def cancel(cands: Sequence[Candidate]) -> Candidate | None:
        return None

    k = EmvKernel(reader_with(vclock, "multi_app"), vclock, choose_application=cancel)
    with pytest.raises(CardholderCancelledError):
        vrun.run(k.read(Transaction(1), Pins("1234")))


def test_no_common_application(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    cfg = KernelConfig(aids=(TerminalAid(bytes.fromhex("A0000000651010")),))
    with pytest.raises(NoApplicationError):
        vrun.run(kernel(vclock, "cup_debit", cfg).read(Transaction(1), Pins()))
    # exact-match-only terminal entries do not select longer card AIDs
    cfg = KernelConfig(aids=(TerminalAid(bytes.fromhex("A000000333"), partial=False),))
    with pytest.raises(NoApplicationError):
        vrun.run(kernel(vclock, "cup_debit", cfg).read(Transaction(1), Pins()))
    cfg = KernelConfig(aids=(TerminalAid(bytes.fromhex("A000000333")),))
    read = vrun.run(kernel(vclock, "cup_debit", cfg).read(Transaction(1), Pins("123456")))
    assert read.aid == "A000000333010101"


def test_blocked_application_is_skipped(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    prof = load_profile("multi_app")
    assert prof.emv is not None
    debit = dataclasses.replace(prof.emv.applications[1], blocked=True)
    card = EmvCard(prof, dataclasses.replace(prof.emv, pse=False, applications=(prof.emv.applications[0], debit)))
    read = vrun.run(kernel(vclock, card).read(Transaction(1), Pins("1234")))
    assert read.label == "CREDIT"


def test_card_blocked(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    with pytest.raises(CardBlockedError):
        vrun.run(kernel(vclock, "chip_blocked").read(Transaction(1), Pins()))


def test_gpo_6985_drops_the_candidate(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    class RefusesCredit(EmvCard):
        def execute(self, apdu: bytes) -> bytes:
            sel = self.selected_application
            if apdu[:2] == b"\x80\xA8" and sel is not None and sel.label == "DEBIT":
                return b"\x69\x85"
            return super().execute(apdu)

    read = vrun.run(kernel(vclock, RefusesCredit(load_profile("multi_app"))).read(Transaction(1), Pins("1234")))
    assert read.label == "CREDIT"
    assert ("GET PROCESSING OPTIONS", "6985") in steps(read)


# --- decisions ------------------------------------------------------------------------------------
def test_expired_card_goes_online_with_tvr(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    read = vrun.run(kernel(vclock, "expired").read(Transaction(1), Pins("123456")))
    assert read.tvr[1] & 0x40 and read.cryptogram_type is CryptogramType.ARQC


def test_issuer_denial_code_gets_an_aac(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    prof = load_profile("expired")
    assert prof.emv is not None
    app = dataclasses.replace(prof.emv.applications[0], iac_denial=bytes.fromhex("0040000000"))
    card = EmvCard(prof, dataclasses.replace(prof.emv, applications=(app,)))
    k = kernel(vclock, card)
    with pytest.raises(CardDeclinedError):
        vrun.run(k.read(Transaction(1), Pins("123456")))
    genac = next(e for e in k.apdu_log if e.step == "GENERATE AC (first)")
    assert genac.command[2] == 0x00          # AAC requested


def test_complete_second_generate_ac(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    k = kernel(vclock, "cup_debit")

    async def flow() -> tuple[ChipRead, CryptogramType, CryptogramType | None]:
        read = await k.read(Transaction(1), Pins("123456"))
        done = await k.complete(True, b"00")
        try:
            await k.complete(True, b"00")
        except ChipReadError:
            return read, done.cryptogram_type, None
        return read, done.cryptogram_type, CryptogramType.TC

    _, kind, again = vrun.run(flow())
    assert kind is CryptogramType.TC and again is None   # a finished card refuses a third AC

    k2 = kernel(vclock, "cup_debit")

    async def declined() -> CryptogramType:
        await k2.read(Transaction(1), Pins("123456"))
        done = await k2.complete(False, "05")           # the field 39 text works as well
        assert done.declined and not done.approved
        return done.cryptogram_type

    assert vrun.run(declined()) is CryptogramType.AAC

    # a card that declines after the host approved (chip.applications[].decline_after_online)
    prof = load_profile("cup_debit")
    assert prof.emv is not None
    late = dataclasses.replace(prof.emv.applications[0], decline_after_online=True)
    card = EmvCard(prof, dataclasses.replace(prof.emv, applications=(late,)))
    k3 = kernel(vclock, card)

    async def late_decline() -> tuple[ChipRead, bool, bytes]:
        read = await k3.read(Transaction(1), Pins("123456"))
        done = await k3.complete(True, "00")
        return read, done.declined, done.icc_data

    read, late_declined, icc = vrun.run(late_decline())
    assert read.cryptogram_type is CryptogramType.ARQC and late_declined
    assert flatten(decode(icc))[0x9F27] == b"\x00"        # field 55 of the reversal carries the AAC
    with pytest.raises(EmvError):
        vrun.run(kernel(vclock, "cup_debit").complete(True, b"00"))


# --- failures -------------------------------------------------------------------------------------
def test_stripe_only_card_is_a_chip_read_error(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    with pytest.raises(ChipReadError):
        vrun.run(kernel(vclock, "demo").read(Transaction(1), Pins()))


def test_card_removed(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    r = reader_with(vclock, "cup_debit")
    r.remove()
    with pytest.raises(CardAbsentError):
        vrun.run(EmvKernel(r, vclock).read(Transaction(1), Pins()))


def test_malformed_record_names_the_tlv_path(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    class BadRecord(EmvCard):
        def execute(self, apdu: bytes) -> bytes:
            if apdu[:4] == bytes.fromhex("00B2010C") and self.gpo_done:
                return bytes.fromhex("7003570899" "9000")
            return super().execute(apdu)

    with pytest.raises(ChipReadError, match=r"70\.57"):
        vrun.run(kernel(vclock, BadRecord(load_profile("cup_debit"))).read(Transaction(1), Pins("1")))


def test_missing_mandatory_data(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    class NoPan(EmvCard):
        def execute(self, apdu: bytes) -> bytes:
            if apdu[:4] == bytes.fromhex("00B20114"):
                return bytes.fromhex("70045F340101" "9000")
            return super().execute(apdu)

    with pytest.raises(ChipReadError, match="5A, 5F24") as ei:
        vrun.run(kernel(vclock, NoPan(load_profile("cup_debit"))).read(Transaction(1), Pins("1")))
    assert pickle.loads(pickle.dumps(ei.value)).args == ei.value.args


def test_profile_with_explicit_records(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    from hardware.cards.emv_card import build_records

    prof = load_profile("cup_debit")
    assert prof.emv is not None
    app = prof.emv.applications[0]
    _, generated = build_records(prof, app)
    explicit = tuple((sfi, rec, body) for (sfi, rec), body in generated.items())
    card = EmvCard(prof, dataclasses.replace(prof.emv, applications=(dataclasses.replace(app, records=explicit),)))
    read = vrun.run(kernel(vclock, card).read(Transaction(1), Pins("123456")))
    assert read.pan == prof.pan
    # without the PAN record the read stops with the missing tags named
    no_pan = tuple(r for r in explicit if (r[0], r[1]) != (2, 1))
    card = EmvCard(prof, dataclasses.replace(prof.emv, applications=(dataclasses.replace(app, records=no_pan),)))
    with pytest.raises(ChipReadError, match="5A, 5F24"):
        vrun.run(kernel(vclock, card).read(Transaction(1), Pins("123456")))


def test_cancelled_pin_entry(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    with pytest.raises(CardholderCancelledError):
        vrun.run(kernel(vclock, "intl_credit").read(Transaction(1), Pins(None)))
    pins = Pins("12", "abcd", "1234")           # malformed entries are asked again
    read = vrun.run(kernel(vclock, "intl_credit").read(Transaction(1), pins))
    assert read.cvm is Cvm.OFFLINE_PIN_OK and pins.asked == [3, 3, 3]


def test_t0_style_reader_61xx_is_handled(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    class RawT0Status(EmvCard):
        """Answers data-bearing responses with 61xx like a PC/SC T=0 pass-through would."""

        pending = b""

        def execute(self, apdu: bytes) -> bytes:
            if apdu[:2] == b"\x00\xC0":
                out, self.pending = self.pending + b"\x90\x00", b""
                return out
            resp = super().execute(apdu)
            if len(resp) > 2 and apdu[1] in (0xA4, 0xA8, 0xAE):
                self.pending = resp[:-2]
                return bytes((0x61, len(self.pending) & 0xFF))
            return resp

    read = vrun.run(kernel(vclock, RawT0Status(load_profile("cup_debit"))).read(Transaction(1), Pins("123456")))
    assert read.cryptogram_type is CryptogramType.ARQC


def test_read_chip_helper_and_types(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    r = reader_with(vclock, "cup_debit")
    read = vrun.run(read_chip(r, vclock, Transaction(1, TransactionType.BALANCE_INQUIRY), Pins("123456"),
                              unpredictable=lambda: UN))
    assert field55(read)[0x9C] == b"\x31"
    with pytest.raises(TypeError):
        Transaction("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        vrun.run(EmvKernel(r, vclock).read(1, Pins()))  # type: ignore[arg-type]
    assert issubclass(EmvError, PosemuError)
    with pytest.raises(ConfigError):
        KernelConfig(country="156")
    with pytest.raises(ConfigError):
        KernelConfig(capabilities=b"\xE0")
    with pytest.raises(TypeError):
        KernelConfig(aids=("A0000000031010",))  # type: ignore[arg-type]


def test_every_bundled_chip_profile_reads_or_fails_cleanly(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    from hardware.cards.profiles import list_profiles

    outcomes = {}
    for name in list_profiles():
        prof = load_profile(name)
        pins = Pins(prof.pin, prof.pin)
        try:
            read = vrun.run(kernel(vclock, name).read(Transaction(100), pins))
        except EmvError as e:
            outcomes[name] = type(e).__name__
        else:
            assert read.pan == prof.pan and read.expiry == prof.expiry
            outcomes[name] = read.cvm.name
    assert outcomes["demo"] == "ChipReadError"
    assert outcomes["chip_blocked"] == "CardBlockedError"
    assert outcomes["pin_blocked"] == "PinBlockedError"
    assert outcomes["blocked"] == outcomes["restricted"] == "ONLINE_PIN"


# --- robustness: a card answering garbage never crashes the kernel --------------------------------
class MutatingCard(EmvCard):
    """A real card whose answers to chosen commands are replaced, truncated or bit-flipped."""

    def __init__(self, name: str, plan: dict[int, tuple[str, bytes]]) -> None:
        super().__init__(load_profile(name))
        self.plan = plan
        self.calls = 0

    def execute(self, apdu: bytes) -> bytes:
        resp = super().execute(apdu)
        i = self.calls
        self.calls += 1
        if i not in self.plan:
            return resp
        kind, extra = self.plan[i]
        if kind == "replace":
            return extra
        if kind == "truncate":
            return resp[: len(extra) % (len(resp) + 1)] + resp[-2:]
        pos = int.from_bytes(extra[:2] or b"\x00", "big") % len(resp)
        return resp[:pos] + bytes([resp[pos] ^ (extra[-1] or 0x01 if extra else 0x01)]) + resp[pos + 1 :]


plans = st.dictionaries(
    st.integers(0, 14),
    st.tuples(st.sampled_from(["replace", "truncate", "flip"]), st.binary(max_size=40)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["cup_debit", "intl_credit", "multi_app"]), plans)
def test_garbage_from_the_card_raises_only_emv_errors(name: str, plan: dict[int, tuple[str, bytes]]) -> None:
    clock = VirtualClock()
    card = MutatingCard(name, plan)
    k = EmvKernel(reader_with(clock, card), clock, unpredictable=lambda: UN)
    pin = load_profile(name).pin
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        try:
            read = runner.run(k.read(Transaction(100), Pins(pin, pin, pin)))
        except EmvError:
            return
    assert read.pan.isdigit()
    decode(read.icc_data)
