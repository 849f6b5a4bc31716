"""ATR parsing and building (ISO/IEC 7816-3 §8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.atr import Atr, Convention, InterfaceGroup, build_atr, parse_atr, parse_historical
from protocol.errors import DecodeError, EncodeError

opt_byte = st.none() | st.integers(0, 255)


@st.composite
def atrs(draw: st.DrawFn) -> Atr:
    n = draw(st.integers(1, 4))
    groups = []
    for i in range(n):
        proto = None if i == n - 1 else draw(st.sampled_from([0, 1, 15, 14]))
        groups.append(InterfaceGroup(draw(opt_byte), draw(opt_byte), draw(opt_byte), proto))
    atr = Atr(draw(st.sampled_from(Convention)), tuple(groups), draw(st.binary(max_size=15)))
    return atr


@given(atrs())
def test_build_parse_round_trip(atr: Atr) -> None:
    try:
        raw = atr.encode()
    except EncodeError:
        return   # longer than 33 bytes
    assert parse_atr(raw) == atr
    assert raw[0] == atr.convention.value


@given(st.binary(max_size=40))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        atr = parse_atr(data)
    except DecodeError as e:
        assert e.raw == data
        assert e.pos is not None and 0 <= e.pos <= len(data)
        return
    assert atr.encode() == data
    atr.describe()


@given(st.sampled_from([(0,), (1,), (0, 1)]), st.sampled_from([1, 2, 3, 9]), st.sampled_from([1, 2, 3, 4]),
       st.none() | st.integers(1, 255), st.binary(max_size=10))
def test_build_from_parameters(protocols: tuple[int, ...], fi: int, di: int, wi: int | None, hist: bytes) -> None:
    atr = parse_atr(build_atr(protocols=protocols, fi=fi, di=di, wi=wi, ifsc=0xFE, bwi_cwi=0x45,
                              historical=hist).encode())
    assert atr.protocols == protocols
    assert (atr.fi_code, atr.di_code) == (fi, di)
    assert atr.historical == hist
    assert atr.tb(1) == 0   # EMV: TB1 = 00
    if protocols[0] == 0 and wi is not None:
        assert atr.wi == wi
    if 1 in protocols:
        assert atr.ifsc == 0xFE and atr.bwi == 4 and atr.cwi == 5


def test_known_atrs() -> None:
    # EMV basic ATR for T=0 (Book 1 §8.3): TS T0 TB1 TC1, no TCK
    a = parse_atr(bytes.fromhex("3B6500008031806" "5B0"))
    assert a.protocols == (0,)
    assert (a.fi, a.di, a.fmax_mhz) == (372, 1, 5.0)
    assert a.extra_guard_time == 0 and a.guard_time_etu() == 12
    assert a.wi == 10
    assert a.work_waiting_time() == pytest.approx(10 * 960 * 372 / 3.57e6)
    assert a.etu() == pytest.approx(372 / 3.57e6)
    assert not a.has_tck and not a.specific_mode
    # EMV basic ATR for T=1: TD1 = 81, TD2 = 31, TA3 = IFSC FE, TB3 = BWI/CWI 45, TCK
    b = parse_atr(bytes.fromhex("3BE000008131FE45EB"))
    assert b.protocols == (1,)
    assert (b.ifsc, b.bwi, b.cwi) == (0xFE, 4, 5)
    assert b.has_tck
    # TA1 = 18 (FI 1, DI 8), TC1 = FF (N = 255), dual protocol
    c = parse_atr(bytes.fromhex("3BD018FF8091FE1F03C4"))
    assert c.protocols == (0, 1)
    assert (c.fi, c.di) == (372, 12)   # DI 8 codes Di = 12 (Table 8)
    assert c.ta(4) == 0x03 and c.ifsc == 0xFE
    assert c.guard_time_etu(0) == 12 and c.guard_time_etu(1) == 11
    assert "T=0/T=1" in c.describe()


@pytest.mark.parametrize(
    ("hexdata", "field", "pos"),
    [
        ("", "TS", 0),
        ("3C00", "TS", 0),
        ("3B80", "TD1", 2),        # TD1 announced, missing
        ("3B10", "TA1", 2),        # TA1 announced, missing
        ("3B8001", "TCK", 3),      # T=1 announced: TCK required
        ("3B02AA", "historical", 3),
        ("3B00FF", "TCK", 2),      # TCK present although only T=0
        ("3B800180", "TCK", 3),    # wrong TCK (XOR != 0)
    ],
)
def test_errors_carry_field_and_position(hexdata: str, field: str, pos: int) -> None:
    raw = bytes.fromhex(hexdata)
    with pytest.raises(DecodeError) as ei:
        parse_atr(raw)
    assert ei.value.field == field
    assert ei.value.pos == pos


def test_rfu_rates_are_reported() -> None:
    a = parse_atr(bytes.fromhex("3B1000"[:4] + "70"))   # TA1 = 70: FI 7 is RFU
    with pytest.raises(DecodeError):
        _ = a.fi
    assert "RFU" in a.describe()


def test_invalid_models() -> None:
    with pytest.raises(EncodeError):
        Atr(Convention.DIRECT, ())
    with pytest.raises(EncodeError):
        Atr(Convention.DIRECT, (InterfaceGroup(protocol=1),))   # TD1 without group 2
    with pytest.raises(EncodeError):
        Atr(Convention.DIRECT, (InterfaceGroup(), InterfaceGroup()))
    with pytest.raises(TypeError):
        parse_atr("3B00")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        build_atr(fi=7)


# --- historical bytes (ISO/IEC 7816-4 §8.1.1) --------------------------------------------------
def test_every_chip_profile_has_valid_historical_bytes() -> None:
    from hardware.cards.profiles import list_profiles, load_profile
    from hardware.sim import card_for_profile

    checked = 0
    for name in list_profiles():
        card = card_for_profile(load_profile(name))
        if not card.atr:
            continue
        h = parse_historical(parse_atr(card.atr).historical)
        assert h.category == 0x80, name
        assert h.get(0x3) == b"\x80"                       # card service data
        assert h.status == bytes.fromhex("009000")         # LCS 00, SW 9000
        checked += 1
    assert checked >= 8


def test_historical_bytes_categories() -> None:
    assert parse_historical(b"").category is None
    h = parse_historical(bytes.fromhex("00" "3180" "009000"))       # category 00: status outside TLV
    assert h.objects == ((3, b"\x80"),) and h.status == bytes.fromhex("009000")
    assert parse_historical(bytes.fromhex("1042")).dir_reference == 0x42
    assert parse_historical(b"PEMU").proprietary == b"EMU"          # proprietary category 50
    h = parse_historical(bytes.fromhex("80" "8101"))               # status indicator: LCS only
    assert h.get(0x8) == h.status == b"\x01"


@pytest.mark.parametrize(
    ("hexdata", "message"),
    [
        ("80318065B0", "tag 6 .* announces 5 bytes, 1 follow"),    # what every profile had
        ("8000", "tag 0 is not defined"),
        ("80328000", "tag 3 .* must be 1..1 bytes"),
        ("808100" "3180", r"tag 8\) must be the last"),
        ("8F", "reserved"),
        ("003180", "3-byte status indicator"),
        ("10", "exactly one DIR"),
        ("80" + "00" * 15, "at most 15"),
    ],
)
def test_invalid_historical_bytes(hexdata: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_historical(bytes.fromhex(hexdata))


@given(st.binary(max_size=20))
def test_arbitrary_historical_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        h = parse_historical(data)
    except DecodeError as e:
        assert e.raw == data
        return
    assert h.category == (data[0] if data else None)
