"""Track codecs (ISO/IEC 7811-2, 7813, ISO 4909) and F2F recording: vectors, paths, properties."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.magstripe import (
    TRACKS,
    TrackNumberError,
    decode_track,
    encode_track,
    lrc,
    mask_track,
    parse_track,
    track_spec,
)
from hardware.magstripe.f2f import f2f_bits, f2f_positions
from hardware.magstripe.tracks import encode_chars, status_for
from hardware.ports import TrackStatus
from protocol.errors import DecodeError, EncodeError

DEMO_T1 = "B9900010000000019^TEST/DEMO^30121010000000000"
DEMO_T2 = "9900010000000019=30121010000000000"


def bits_of(s: str) -> list[int]:
    return [int(c) for c in s]


def char_bits(value: int, width: int) -> list[int]:
    b = [(value >> i) & 1 for i in range(width)]
    return [*b, 1 - sum(b) % 2]


# --- vectors --------------------------------------------------------------------------------

def test_lrc_vectors_from_the_standard() -> None:
    assert lrc(1, "%ABC123?") == 0x2A
    assert lrc(2, ";12345?") == 0x5
    # The LRC characters as recorded: 0x2A has three 1 bits → parity 0; 0x5 has two → parity 1.
    t1 = encode_chars(1, "ABC123")
    assert t1[-7:] == [0, 1, 0, 1, 0, 1, 0]
    t2 = encode_chars(2, "12345")
    assert t2[-5:] == [1, 0, 1, 0, 1]


def test_track2_bit_layout_lsb_first_parity_last() -> None:
    bits = encode_track(2, "12345", lead=2, trail=2)
    expected = "00" + "11010" + "10000" + "01000" + "11001" + "00100" + "10101" + "11111" + "10101" + "00"
    assert bits == bits_of(expected)


def test_track1_start_sentinel_and_clocking_zeros() -> None:
    bits = encode_track(1, "A")
    spec = TRACKS[1]
    assert bits[:spec.clock_zeros] == [0] * 61
    assert bits[61:68] == char_bits(0x05, 6) == [1, 0, 1, 0, 0, 0, 1]   # '%'
    assert bits[-61:] == [0] * 61
    assert len(bits) == 61 + 4 * 7 + 61


def test_track_specs_follow_iso() -> None:
    assert [(s.number, s.data_bits, s.bpi, s.max_chars) for s in TRACKS.values()] == [
        (1, 6, 210.0, 79), (2, 4, 75.0, 40), (3, 4, 210.0, 107)]
    assert TRACKS[1].max_data == 76 and TRACKS[2].max_data == 37 and TRACKS[3].max_data == 104
    assert "%" not in TRACKS[1].data_charset and "^" in TRACKS[1].data_charset
    assert TRACKS[2].data_charset == "0123456789:<=>"


def test_demo_card_round_trip() -> None:
    assert parse_track(1, encode_track(1, DEMO_T1)) == DEMO_T1
    assert parse_track(2, encode_track(2, DEMO_T2)) == DEMO_T2


# --- encode errors --------------------------------------------------------------------------

def test_encode_rejects_too_long_and_foreign_characters() -> None:
    with pytest.raises(EncodeError) as e1:
        encode_track(2, "1" * 38)
    assert e1.value.field == "track2.length"
    with pytest.raises(EncodeError) as e2:
        encode_track(2, "123A5")
    assert e2.value.field == "track2.data[3]"
    with pytest.raises(EncodeError) as e3:
        encode_track(1, "AB?C")             # the end sentinel cannot be data
    assert e3.value.field == "track1.data[2]"
    with pytest.raises(EncodeError):
        encode_track(1, "abc")              # lower case is outside the 6-bit set
    encode_track(1, "A" * 76)
    encode_track(3, "1" * 104)


def test_track_number_and_type_misuse() -> None:
    with pytest.raises(TrackNumberError):
        track_spec(4)
    with pytest.raises(TypeError):
        track_spec("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_track(1, b"ABC")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_track(2, ["0", "1"])  # type: ignore[list-item]


# --- decode errors: which track, which character, which check --------------------------------

def test_parity_error_names_the_character() -> None:
    bits = encode_track(1, DEMO_T1, lead=10, trail=10)
    char = 12
    bits[10 + char * 7 + 2] ^= 1
    with pytest.raises(DecodeError) as e:
        parse_track(1, bits)
    assert e.value.field == "track1.char[12].parity"
    assert e.value.pos == 10 + char * 7
    assert e.value.partial["data"] == DEMO_T1[:11]
    assert status_for(e.value) is TrackStatus.PARITY_ERROR
    read = decode_track(1, bits)
    assert read.status is TrackStatus.PARITY_ERROR
    assert "character 12" in read.detail and "track1.char[12].parity" in read.detail


def test_two_errors_in_one_character_are_caught_by_the_lrc() -> None:
    bits = encode_track(2, "12345", lead=5, trail=5)
    bits[5 + 5 * 2 + 0] ^= 1         # '2' → value 2 ^ 0b11 = 1 → '1': parity still odd
    bits[5 + 5 * 2 + 1] ^= 1
    with pytest.raises(DecodeError) as e:
        parse_track(2, bits)
    assert e.value.field == "track2.lrc"
    assert decode_track(2, bits).status is TrackStatus.LRC_ERROR


def test_lrc_parity_missing_es_missing_ss_no_data() -> None:
    good = encode_track(2, "12345", lead=5, trail=5)
    lrc_parity = list(good)
    lrc_parity[5 + 7 * 5 + 4] ^= 1
    with pytest.raises(DecodeError) as e:
        parse_track(2, lrc_parity)
    assert e.value.field == "track2.lrc.parity"
    assert decode_track(2, lrc_parity).status is TrackStatus.LRC_ERROR

    no_es = [0] * 5 + char_bits(0xB, 4) + char_bits(1, 4) + char_bits(2, 4)   # ;12 and then nothing
    with pytest.raises(DecodeError) as e:
        parse_track(2, no_es)
    assert e.value.field == "track2.es"
    assert decode_track(2, no_es).status is TrackStatus.NO_END_SENTINEL

    no_lrc = [0] * 5 + char_bits(0xB, 4) + char_bits(1, 4) + char_bits(0xF, 4)
    with pytest.raises(DecodeError) as e:
        parse_track(2, no_lrc)
    assert e.value.field == "track2.lrc"

    no_ss = [0] * 10 + char_bits(1, 4) + char_bits(0xF, 4) + [0] * 10
    with pytest.raises(DecodeError) as e:
        parse_track(2, no_ss)
    assert e.value.field == "track2.ss"
    assert decode_track(2, no_ss).status is TrackStatus.NO_START_SENTINEL

    assert decode_track(1, [0] * 100).status is TrackStatus.NO_DATA
    assert decode_track(1, []).status is TrackStatus.NO_DATA
    with pytest.raises(DecodeError) as e:
        parse_track(3, [0, 1, 2])
    assert e.value.field == "track3.bits" and e.value.pos == 2


def test_too_many_characters_without_end_sentinel() -> None:
    bits = [0] * 4 + char_bits(0xB, 4) + char_bits(1, 4) * 60
    with pytest.raises(DecodeError) as e:
        parse_track(2, bits)
    assert e.value.field == "track2.es"
    assert "38 characters" in e.value.msg


def test_decode_error_pickles_and_masks() -> None:
    bits = encode_track(2, DEMO_T2)
    bits[22 + 5 * 3] ^= 1
    with pytest.raises(DecodeError) as e:
        parse_track(2, bits)
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is DecodeError and back.field == e.value.field and back.pos == e.value.pos
    assert DEMO_T2 not in str(e.value) and "9900010000000019" not in str(e.value)


def test_reversed_swipe_decodes_and_says_so() -> None:
    bits = encode_track(1, DEMO_T1)
    bits.reverse()
    assert parse_track(1, bits) == DEMO_T1
    read = decode_track(1, bits)
    assert read.ok and read.data == DEMO_T1 and "reverse" in read.detail


def test_reversed_track2_whose_lrc_reads_backwards_as_a_start_sentinel() -> None:
    # LRC 0xA recorded as 01011 reads backwards as 11010 = ';', the next character backwards is
    # the palindromic end sentinel 11111, and a last data character '4' then passes as the LRC:
    # the forward reading is a valid but empty frame. The frame that spans the track must win.
    data = "99594215320422328=4303501638063584"
    assert lrc(2, f";{data}?") == 0xA
    bits = encode_track(2, data)
    bits.reverse()
    assert parse_track(2, bits) == data
    read = decode_track(2, bits)
    assert read.ok and read.data == data and "reverse" in read.detail


def test_reversed_swipe_errors_report_positions_in_the_input() -> None:
    bits = encode_track(2, DEMO_T2, lead=22, trail=22)
    bits[22 + 5 * 4 + 1] ^= 1
    bits.reverse()
    with pytest.raises(DecodeError) as e:
        parse_track(2, bits)
    assert e.value.field == "track2.char[4].parity"
    assert e.value.pos == len(bits) - 1 - (22 + 5 * 4)


def test_mask_track_never_shows_the_pan_or_discretionary_data() -> None:
    m1 = mask_track(1, DEMO_T1)
    m2 = mask_track(2, DEMO_T2)
    assert m1 == "%B990001******0019^T***/D***^3012101**********?"
    assert m2 == ";990001******0019=3012101**********?"
    assert mask_track(2, "12345") == ";*****?"


# --- properties -----------------------------------------------------------------------------

def track_data(n: int) -> st.SearchStrategy[str]:
    spec = track_spec(n)
    return st.text(alphabet=spec.data_charset, max_size=spec.max_data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 2, 3]).flatmap(lambda n: st.tuples(st.just(n), track_data(n))),
       st.integers(0, 70), st.integers(0, 70), st.booleans())
def test_round_trip_any_valid_data(nd: tuple[int, str], lead: int, trail: int, reverse: bool) -> None:
    n, data = nd
    bits = encode_track(n, data, lead=lead, trail=trail)
    if reverse:
        bits.reverse()
    assert parse_track(n, bits) == data
    read = decode_track(n, bits)
    assert read.ok and read.data == data and read.track == n


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.lists(st.integers(0, 1), max_size=900))
def test_arbitrary_bits_raise_only_decode_error(n: int, bits: list[int]) -> None:
    try:
        data = parse_track(n, bits)
    except DecodeError as e:
        assert e.field.startswith(f"track{n}.")
        assert decode_track(n, bits).status is status_for(e)
        return
    spec = track_spec(n)
    assert len(data) <= spec.max_data and all(c in spec.charset for c in data)
    assert decode_track(n, bits).data == data


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_decode_error(n: int, raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_track(n, raw)
    read = decode_track(n, raw)
    assert read.track == n and isinstance(read.status, TrackStatus)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=200), st.sampled_from([75.0, 210.0]))
def test_f2f_positions_invert(bits: list[int], bpi: float) -> None:
    framed = [0, 0, *bits]           # the clocking zeros define the cell, as on a card
    pos = f2f_positions(framed, bpi)
    assert len(pos) == len(framed) + sum(framed) + 1
    assert f2f_bits(pos) == framed
    assert pos[-1] == pytest.approx(len(framed) / bpi)
