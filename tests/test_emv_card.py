"""The virtual EMV card (hardware.cards.emv_card) command by command."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.atr import parse_atr
from hardware.cards.emv_card import PSE_NAME, EmvCard, encode_pin_block
from hardware.cards.emv_crypto import CryptogramType, verify_cryptogram
from hardware.cards.profiles import CardProfile, ChipSpec, load_profile
from hardware.sim import StripeOnlyCard, card_for_profile
from hardware.t0 import T0WiredCard, wire_t0
from protocol.apdu import CommandApdu, ResponseApdu
from protocol.tlv import build_dol_data, decode, decode_one, find

SELECT_PSE = CommandApdu(0x00, 0xA4, 0x04, 0x00, PSE_NAME, ne=256).encode()


def select(aid: str, p2: int = 0) -> bytes:
    return CommandApdu(0x00, 0xA4, 0x04, p2, bytes.fromhex(aid), ne=256).encode()


def read_record(sfi: int, rec: int) -> bytes:
    return CommandApdu(0x00, 0xB2, rec, (sfi << 3) | 4, ne=256).encode()


def verify(pin: str) -> bytes:
    return CommandApdu(0x00, 0x20, 0x00, 0x80, encode_pin_block(pin)).encode()


def gpo(card: EmvCard) -> ResponseApdu:
    app = card.selected_application
    assert app is not None
    data = build_dol_data(app.pdol, {})
    return run(card, CommandApdu(0x80, 0xA8, 0, 0, bytes([0x83, len(data)]) + data, ne=256).encode())


def gen_ac(card: EmvCard, p1: int, dol: bytes, values: dict[int, bytes] | None = None) -> tuple[ResponseApdu, bytes]:
    data = build_dol_data(dol, values or {})
    return run(card, CommandApdu(0x80, 0xAE, p1, 0, data, ne=256).encode()), data


def run(card: EmvCard | T0WiredCard, apdu: bytes) -> ResponseApdu:
    return ResponseApdu.decode(card.execute(apdu))


def emv(name: str) -> EmvCard:
    card = card_for_profile(load_profile(name))
    if isinstance(card, T0WiredCard):
        inner = card.inner
        assert isinstance(inner, EmvCard)
        return inner
    assert isinstance(card, EmvCard)
    return card


def started(name: str = "intl_credit") -> EmvCard:
    card = emv(name)
    app = card.spec.applications[0]
    assert run(card, select(app.aid_hex)).ok
    assert gpo(card).ok
    return card


def with_chip(profile: CardProfile, **changes: object) -> CardProfile:
    assert profile.emv is not None
    return dataclasses.replace(profile, emv=dataclasses.replace(profile.emv, **changes))  # type: ignore[arg-type]


# --- basics ------------------------------------------------------------------------------------
def test_card_for_profile_kinds() -> None:
    assert isinstance(card_for_profile(load_profile("demo")), StripeOnlyCard)
    assert isinstance(card_for_profile(load_profile("cup_debit")), EmvCard)
    assert isinstance(card_for_profile(load_profile("intl_debit")), T0WiredCard)


def test_atr_and_stripe() -> None:
    card = emv("cup_debit")
    atr = parse_atr(card.atr)
    assert atr.protocols == (0,) and atr.tb(1) == 0 and atr.tc(1) == 0
    assert parse_atr(emv("intl_credit").atr).protocols == (0, 1)
    t1, t2, t3 = card.stripe
    assert t2 == "9900020000000018=30122200000000000" and t1 is not None and t3 is None


def test_dispatch_errors() -> None:
    card = emv("cup_debit")
    assert run(card, bytes.fromhex("00FF000000")).sw == 0x6D00        # unknown INS
    assert run(card, bytes.fromhex("80A4040000")).sw == 0x6E00        # SELECT with CLA 80
    assert run(card, bytes.fromhex("00A40400")).sw == 0x6700          # SELECT without name
    assert run(card, bytes.fromhex("00A4040005AA")).sw == 0x6700      # Lc mismatch
    assert run(card, bytes.fromhex("00A4010002A000")).sw == 0x6A86    # select by FID not supported


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_any_bytes_get_a_status_word(data: bytes) -> None:
    card = emv("intl_credit")
    resp = card.execute(data)
    assert len(resp) >= 2


# --- selection -----------------------------------------------------------------------------------
def test_pse_and_directory() -> None:
    card = emv("multi_app")
    r = run(card, SELECT_PSE)
    assert r.ok
    sfi = find(decode(r.data), "6F.A5.88")
    assert sfi is not None and sfi.value == b"\x01"
    aids = []
    for rec in (1, 2):
        d = decode_one(run(card, read_record(1, rec)).data)
        entry = d.find("61.4F")
        assert entry is not None
        aids.append(entry.value.hex().upper())
    assert aids == ["A0000000031010", "A0000000032010"]
    assert run(card, read_record(1, 3)).sw == 0x6A83
    assert run(card, read_record(2, 1)).sw == 0x6A82


def test_no_pse() -> None:
    assert run(emv("intl_debit"), SELECT_PSE).sw == 0x6A82


def test_partial_selection_and_next_occurrence() -> None:
    card = emv("multi_app")
    first = run(card, select("A000000003"))
    assert first.ok and find(decode(first.data), "6F.84").value.hex().upper() == "A0000000031010"  # type: ignore[union-attr]
    nxt = run(card, select("A000000003", p2=0x02))
    assert nxt.ok and find(decode(nxt.data), "6F.84").value.hex().upper() == "A0000000032010"  # type: ignore[union-attr]
    assert run(card, select("A000000003", p2=0x02)).sw == 0x6A82
    assert run(card, select("A0000000041010")).sw == 0x6A82


def test_blocked_card_and_blocked_application() -> None:
    assert run(emv("chip_blocked"), SELECT_PSE).sw == 0x6A81
    prof = load_profile("cup_debit")
    assert prof.emv is not None
    blocked_app = dataclasses.replace(prof.emv.applications[0], blocked=True)
    card = EmvCard(prof, dataclasses.replace(prof.emv, applications=(blocked_app,)))
    r = run(card, select(blocked_app.aid_hex))
    assert r.sw == 0x6283 and find(decode(r.data), "6F.84") is not None
    assert gpo(card).sw == 0x6985


# --- GPO / records / sequencing ------------------------------------------------------------------
def test_order_is_enforced() -> None:
    card = emv("intl_debit")                              # a strict card: read_before_gpo = false
    assert not card.spec.read_before_gpo
    app = card.spec.applications[0]
    r, _ = gen_ac(card, 0x80, app.cdol1)
    assert r.sw == 0x6985                                 # nothing selected
    assert run(card, select(app.aid_hex)).ok
    r, _ = gen_ac(card, 0x80, app.cdol1)
    assert r.sw == 0x6985                                 # GENERATE AC before GPO
    assert run(card, read_record(1, 1)).sw == 0x6985      # READ RECORD before GPO
    assert gpo(card).ok
    assert gpo(card).sw == 0x6985                         # GPO twice


def test_read_record_before_gpo_is_allowed_by_default() -> None:
    """Generic EMV readers (card browsers, pcsc tools) READ RECORD right after SELECT; most real
    cards answer, and so does every bundled chip profile except the deliberately strict one."""
    from hardware.cards.profiles import list_profiles

    strict = []
    for name in list_profiles():
        prof = load_profile(name)
        if prof.emv is None or prof.emv.status.value != "active":
            continue
        card = emv(name)
        app = card.spec.applications[0]
        if app.blocked:
            continue
        assert run(card, select(app.aid_hex)).ok
        r = run(card, read_record(1, 1))
        if card.spec.read_before_gpo:
            assert r.ok and decode(r.data)[0].tag == 0x70, name
            assert gpo(card).ok                       # GPO still works after reading
            assert run(card, read_record(1, 1)).data == r.data
        else:
            assert r.sw == 0x6985
            strict.append(name)
    assert strict == ["intl_debit"]
    # nothing selected is still refused, and the option is validated
    assert run(emv("cup_debit"), read_record(1, 1)).sw == 0x6985
    prof = load_profile("cup_debit")
    assert prof.emv is not None and prof.emv.read_before_gpo


def test_gpo_checks_data() -> None:
    card = emv("cup_debit")
    assert run(card, select("A000000333010101")).ok
    assert run(card, CommandApdu(0x80, 0xA8, 0, 0, bytes.fromhex("830100"), ne=256).encode()).sw == 0x6700
    assert run(card, CommandApdu(0x80, 0xA8, 0, 0, bytes.fromhex("8400"), ne=256).encode()).sw == 0x6A80
    assert run(card, CommandApdu(0x80, 0xA8, 0, 0, bytes.fromhex("83"), ne=256).encode()).sw == 0x6A80


@pytest.mark.parametrize(("name", "fmt"), [("cup_debit", 0x77), ("intl_credit", 0x80)])
def test_gpo_formats_and_records(name: str, fmt: int) -> None:
    card = emv(name)
    app = card.spec.applications[0]
    assert run(card, select(app.aid_hex)).ok
    r = gpo(card)
    t = decode_one(r.data)
    assert t.tag == fmt
    afl = t.value[2:] if fmt == 0x80 else t.find("94").value  # type: ignore[union-attr]
    tags: set[int] = set()
    for i in range(0, len(afl), 4):
        for rec in range(afl[i + 1], afl[i + 2] + 1):
            rr = run(card, read_record(afl[i] >> 3, rec))
            assert rr.ok
            tags |= {o.tag for o in decode_one(rr.data).children}
    assert {0x57, 0x5A, 0x5F24, 0x5F20, 0x5F34, 0x8C, 0x8D, 0x8E, 0x9F07, 0x9F0D, 0x9F0E, 0x9F0F} <= tags
    assert run(card, read_record(1, 9)).sw == 0x6A83


# --- PIN --------------------------------------------------------------------------------------------
def test_wrong_pin_counts_down_then_blocks_and_persists() -> None:
    card = started("intl_credit")
    assert run(card, verify("0000")).sw == 0x63C2
    assert run(card, verify("0000")).sw == 0x63C1
    assert run(card, CommandApdu(0, 0x20, 0, 0x80).encode()).sw == 0x63C1    # status query
    assert run(card, verify("0000")).sw == 0x63C0
    assert run(card, verify("0000")).sw == 0x6983
    assert run(card, verify("1234")).sw == 0x6983                            # right PIN, still blocked
    card.reset()                                                             # power cycle: NVM stays
    assert run(card, select("A0000000031010")).ok
    assert run(card, verify("1234")).sw == 0x6983
    assert run(card, bytes.fromhex("80CA9F1700")).data == bytes.fromhex("9F170100")


def test_right_pin_resets_the_counter() -> None:
    card = started("intl_credit")
    assert run(card, verify("9999")).sw == 0x63C2
    assert run(card, verify("1234")).ok
    assert card.pin_tries_left == 3
    assert run(card, CommandApdu(0, 0x20, 0, 0x80, bytes.fromhex("2412")).encode()).sw == 0x6700
    assert run(card, CommandApdu(0, 0x20, 0, 0x80, bytes.fromhex("3412FFFFFFFFFFFF")).encode()).sw == 0x6A80
    assert run(card, CommandApdu(0, 0x20, 0, 0x88, encode_pin_block("1234")).encode()).sw == 0x6A86


def test_verify_refused_without_offline_pin() -> None:
    card = started("cup_debit")
    assert run(card, verify("123456")).sw == 0x6985


def test_get_data() -> None:
    card = started("cup_debit")
    assert run(card, bytes.fromhex("80CA9F1700")).data == bytes.fromhex("9F170103")
    assert run(card, bytes.fromhex("80CA9F3600")).data == bytes.fromhex("9F36020001")   # ATC after one GPO
    assert run(card, bytes.fromhex("80CA9F1300")).data == bytes.fromhex("9F13020000")
    assert run(card, bytes.fromhex("80CA9F4F00")).sw == 0x6A88


# --- GENERATE AC -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cup_debit", "intl_credit"])
def test_arqc_cryptogram_verifies_with_the_card_key(name: str) -> None:
    card = started(name)
    app = card.spec.applications[0]
    r, data = gen_ac(card, 0x80, app.cdol1, {0x9F02: bytes.fromhex("000000001000"), 0x9F37: b"\x01\x02\x03\x04"})
    assert r.ok
    t = decode_one(r.data)
    if t.tag == 0x80:
        cid, atc, ac, iad = t.value[0], t.value[1:3], t.value[3:11], t.value[11:]
    else:
        vals = {c.tag: c.value for c in t.children}
        cid, atc, ac, iad = vals[0x9F27][0], vals[0x9F36], vals[0x9F26], vals[0x9F10]
    assert CryptogramType.from_cid(cid) is CryptogramType.ARQC
    assert int.from_bytes(atc, "big") == card.atc == 1
    assert iad[:4] == bytes.fromhex("06010A03")
    assert verify_cryptogram(app.ac_key, card.atc, data, app.aip, iad, ac)
    assert not verify_cryptogram(app.ac_key, card.atc, data[:-1] + b"\xFF", app.aip, iad, ac)


def test_card_risk_management_and_second_generate_ac() -> None:
    card = started("cup_debit")
    app = card.spec.applications[0]
    r, _ = gen_ac(card, 0x40, app.cdol1)        # TC asked: the card goes online
    assert CryptogramType.from_cid(decode_one(r.data).find("9F27").value[0]) is CryptogramType.ARQC  # type: ignore[union-attr]
    r, data = gen_ac(card, 0x40, app.cdol2, {0x8A: b"00"})
    t = decode_one(r.data)
    assert CryptogramType.from_cid(t.find("9F27").value[0]) is CryptogramType.TC  # type: ignore[union-attr]
    iad = t.find("9F10").value  # type: ignore[union-attr]
    assert verify_cryptogram(app.ac_key, card.atc, data, app.aip, iad, t.find("9F26").value)  # type: ignore[union-attr]
    assert card.last_online_atc == card.atc
    r, _ = gen_ac(card, 0x40, app.cdol2, {0x8A: b"00"})
    assert r.sw == 0x6985                       # transaction finished


def test_declined_online_gives_aac_and_aac_request_ends() -> None:
    card = started("cup_debit")
    app = card.spec.applications[0]
    gen_ac(card, 0x80, app.cdol1)
    r, _ = gen_ac(card, 0x40, app.cdol2, {0x8A: b"05"})
    assert decode_one(r.data).find("9F27").value == b"\x00"  # type: ignore[union-attr]
    card2 = started("cup_debit")
    r, _ = gen_ac(card2, 0x00, app.cdol1)
    assert decode_one(r.data).find("9F27").value == b"\x00"  # type: ignore[union-attr]
    assert gen_ac(card2, 0x80, app.cdol1)[0].sw == 0x6985
    assert gen_ac(started("cup_debit"), 0x80, app.cdol1[:-3])[0].sw == 0x6700   # wrong CDOL length
    assert gen_ac(started("cup_debit"), 0xC0, app.cdol1)[0].sw == 0x6A86        # RFU type


def test_offline_approval_when_allowed() -> None:
    prof = load_profile("cup_debit")
    assert prof.emv is not None
    app = dataclasses.replace(prof.emv.applications[0], offline_approve=True)
    card = EmvCard(prof, dataclasses.replace(prof.emv, applications=(app,)))
    assert run(card, select(app.aid_hex)).ok and gpo(card).ok
    r, _ = gen_ac(card, 0x40, app.cdol1)
    assert decode_one(r.data).find("9F27").value == b"\x40"  # type: ignore[union-attr]


def test_atc_exhausted() -> None:
    prof = load_profile("cup_debit")
    card = EmvCard(with_chip(prof, atc=0xFFFF))
    assert run(card, select("A000000333010101")).ok
    assert gpo(card).sw == 0x6985


# --- through the T=0 adapter -------------------------------------------------------------------------
def test_same_session_through_t0() -> None:
    script = [SELECT_PSE, read_record(1, 1), select("A0000000031010"),
              CommandApdu(0x80, 0xA8, 0, 0, bytes.fromhex("830E") + bytes(14), ne=256).encode(),
              read_record(1, 1), read_record(2, 1), read_record(2, 2), bytes.fromhex("80CA9F1700"),
              verify("1111"), verify("1234"),
              CommandApdu(0x80, 0xAE, 0x80, 0, bytes(33), ne=256).encode()]
    direct, wired = emv("intl_credit"), wire_t0(emv("intl_credit"), byte_by_byte=True, nulls=1)
    for apdu in script:
        assert wired.execute(apdu) == direct.execute(apdu)
    assert wired.stats.tpdus > len(script)   # GET RESPONSE and 6Cxx resends happened


def test_profile_spec_mismatch() -> None:
    with pytest.raises(TypeError):
        EmvCard(load_profile("demo"))
    with pytest.raises(TypeError):
        EmvCard("cup_debit")  # type: ignore[arg-type]
    assert isinstance(load_profile("cup_debit").emv, ChipSpec)
