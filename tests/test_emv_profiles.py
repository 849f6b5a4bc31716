"""Card profiles: the [chip] and [stripe] sections and the bundled demo cards."""

from __future__ import annotations

from typing import Any

import pytest

from hardware.cards.profiles import (
    ChipStatus,
    CvmMethod,
    DamageRegion,
    list_profiles,
    load_profile,
    luhn_ok,
    parse_profile,
)
from protocol.errors import ConfigError

BASE: dict[str, Any] = {"name": "t", "pan": "9900020000000018", "expiry": "3012", "service_code": "220"}


def test_bundled_profiles_are_test_cards() -> None:
    names = list_profiles()
    for wanted in ("demo", "cup_debit", "intl_credit", "intl_debit", "expired", "blocked", "restricted"):
        assert wanted in names
    pans = set()
    for n in names:
        p = load_profile(n)
        assert p.pan.startswith("99") and luhn_ok(p.pan), n
        pans.add(p.pan)
        if p.emv is not None:
            assert p.chip, f"{n}: a chip card has service code 2xx/6xx"
            for app in p.emv.applications:
                assert 5 <= len(app.aid) <= 16
    assert len(pans) == len(names), "every profile has its own PAN"


def test_demo_stays_magstripe_only() -> None:
    p = load_profile("demo")
    assert p.emv is None and p.service_code == "101" and not p.chip
    assert p.track2 == "9900010000000019=30121010000000000"


def test_demo_cards_have_their_roles() -> None:
    cup = load_profile("cup_debit")
    assert cup.emv is not None and cup.service_code == "220"
    assert cup.emv.applications[0].aid.hex().upper().startswith("A000000333")
    assert cup.emv.applications[0].cvm == (CvmMethod.ONLINE_PIN,)
    assert load_profile("intl_credit").emv.applications[0].aid_hex == "A0000000031010"  # type: ignore[union-attr]
    assert load_profile("intl_debit").emv.applications[0].aid_hex == "A0000000041010"  # type: ignore[union-attr]
    assert load_profile("intl_debit").emv.t0_wire  # type: ignore[union-attr]
    assert load_profile("expired").expiry < "2601"
    assert load_profile("blocked").account.status == "blocked"
    restricted = load_profile("restricted").account
    assert restricted.status == "restricted" and restricted.permissions == ("balance",)
    assert load_profile("chip_blocked").emv.status is ChipStatus.BLOCKED  # type: ignore[union-attr]


def test_chip_defaults_for_a_2xx_card_without_a_chip_table() -> None:
    p = parse_profile(dict(BASE), "x")
    assert p.emv is not None
    assert p.emv.applications[0].aid_hex == "A000000333010101"
    assert p.emv.protocols == (0,) and p.emv.pse


def test_stripe_damage() -> None:
    p = parse_profile({**BASE, "stripe": {"damage": [{"start_in": 1.2, "end_in": 1.4, "severity": 0.8}]}}, "x")
    assert p.stripe_damage == (DamageRegion(1.2, 1.4, 0.8),)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"chip": {"applications": [{"aid": "A0"}]}}, "aid must be 5..16 bytes"),
        ({"chip": {"applications": [{"aid": "zz"}]}}, "aid is not hex"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "response_format": 3}]}}, "response_format"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "cvm": ["iris"]}]}}, "cvm entries"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "pdol": "9F"}]}}, "pdol is not a valid DOL"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "ac_key": "00"}]}}, "ac_key must be 16 bytes"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "extra": {"9F80": "00"}}]}}, "not a valid tag"),
        ({"chip": {"applications": []}}, "non-empty"),
        ({"chip": {"status": "lost"}}, "status must be"),
        ({"chip": {"protocols": [2]}}, "protocols"),
        ({"chip": {"pin_tries_left": 9}}, "pin_tries_left"),
        ({"chip": "yes"}, "must be a table"),
        ({"stripe": {"damage": [{"start_in": 2, "end_in": 1}]}}, "start_in < end_in"),
        ({"stripe": {"damage": [{"start_in": "a"}]}}, "numeric"),
        ({"pin_tries": 0}, "pin_tries"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "records": [{"sfi": 0, "record": 1}]}]}},
         "sfi must be 1..30"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "records": [{"sfi": 1, "record": 1,
                                                                           "tlv": "7005"}]}]}}, "not BER-TLV"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "records": [{"sfi": 1, "record": 1,
                                                                           "tlv": "5A00"}]}]}}, "one 70 record"),
        ({"chip": {"applications": [{"aid": "A0000000031010", "records": ["x"]}]}}, "must be a table"),
        ({"chip": {"read_before_gpo": "yes"}}, "read_before_gpo must be true or false"),
        ({"chip": {"historical": "80318065B0"}}, "announces 5 bytes, 1 follow"),
        ({"chip": {"historical": "8A"}}, "reserved"),
    ],
)
def test_profile_errors(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_profile({**BASE, **extra}, "x")


def test_explicit_records_replace_the_generated_files() -> None:
    from hardware.cards.emv_card import build_records

    recs = [{"sfi": 1, "record": 1, "tlv": "7000"}, {"sfi": 1, "record": 2, "tlv": "7000"},
            {"sfi": 1, "record": 4, "tlv": "70035A0111"}, {"sfi": 3, "record": 1, "tlv": "7000"}]
    p = parse_profile({**BASE, "chip": {"applications": [{"aid": "A0000000031010", "records": recs}]}}, "x")
    assert p.emv is not None
    afl, records = build_records(p, p.emv.applications[0])
    assert afl.hex().upper() == "08010200" "08040400" "18010100"
    assert records[(1, 4)] == bytes.fromhex("70035A0111")
