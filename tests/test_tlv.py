"""BER-TLV codec (EMV Book 3 Annex B) and DOLs (Book 3 §5.4)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import tlv
from protocol.errors import DecodeError, EncodeError
from protocol.tlv import Tlv, build_dol_data, decode, decode_dol, decode_one, encode, find, split_dol_data


# --- strategies --------------------------------------------------------------------------------
@st.composite
def tags(draw: st.DrawFn, constructed: bool) -> int:
    cls = draw(st.integers(0, 3)) << 6
    c = 0x20 if constructed else 0
    if draw(st.booleans()):
        number = draw(st.integers(0, 30))
        first = cls | c | number
        if first == 0:
            first = 0x01
        return first
    first = cls | c | 0x1F
    n_more = draw(st.integers(1, 3))
    rest = [draw(st.integers(0x81, 0xFF)) for _ in range(n_more - 1)] + [draw(st.integers(0x00, 0x7F))]
    if rest[0] == 0x80:
        rest[0] = 0x81
    return int.from_bytes(bytes([first, *rest]), "big")


def tlv_trees() -> st.SearchStrategy[Tlv]:
    leaves = st.builds(lambda t, v: Tlv(t, v), tags(False), st.binary(max_size=300))
    return st.recursive(
        leaves,
        lambda kids: st.builds(lambda t, cs: Tlv(t, children=tuple(cs)), tags(True), st.lists(kids, max_size=4)),
        max_leaves=12,
    )


# --- properties --------------------------------------------------------------------------------
@given(st.lists(tlv_trees(), max_size=5))
def test_round_trip(objs: list[Tlv]) -> None:
    raw = encode(objs)
    assert decode(raw) == tuple(objs)
    assert encode(decode(raw)) == raw


@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_raise_only_decode_error(data: bytes, skip_padding: bool) -> None:
    try:
        objs = decode(data, skip_padding=skip_padding)
    except DecodeError as e:
        assert e.pos is not None and 0 <= e.pos <= len(data)
        assert e.raw == data
        return
    # whatever decodes re-encodes canonically and decodes to the same tree
    assert decode(encode(objs)) == objs


@given(st.binary(max_size=60))
def test_arbitrary_dol_bytes(data: bytes) -> None:
    try:
        entries = decode_dol(data)
    except DecodeError:
        return
    assert decode_dol(tlv.encode_dol(entries)) == entries


# --- examples ----------------------------------------------------------------------------------
def test_multi_byte_tags_and_long_lengths() -> None:
    value = bytes(range(256)) * 2
    o = Tlv(0x9F4B, value)
    raw = o.encode()
    assert raw[:5] == bytes.fromhex("9F4B820200")
    assert decode_one(raw) == o
    assert Tlv(0x5A, b"\x01" * 0x80).encode()[:3] == bytes.fromhex("5A8180")
    assert tlv.tag_is_constructed(0x70) and not tlv.tag_is_constructed(0x9F26)
    assert tlv.tag_hex(0xBF0C) == "BF0C"


def test_non_minimal_length_is_accepted_and_normalised() -> None:
    o = decode_one(bytes.fromhex("5A8102AABB"))
    assert o.value == bytes.fromhex("AABB")
    assert o.encode() == bytes.fromhex("5A02AABB")


def test_padding_between_objects_is_skipped() -> None:
    objs = decode(bytes.fromhex("00005A01110000500141"))
    assert [o.tag for o in objs] == [0x5A, 0x50]
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("00"), skip_padding=False)


def test_find_by_path() -> None:
    fci = decode(bytes.fromhex("6F1C840E315041592E5359532E4444463031A50A8801015F2D047A68656E"))
    sfi = find(fci, "6F.A5.88")
    assert sfi is not None and sfi.value == b"\x01"
    assert find(fci, "6F.A5.99") is None
    assert find(fci, [0x6F, 0x84]) is not None
    assert [x.tag for x in tlv.find_all(fci, "5F2D")] == [0x5F2D]
    assert tlv.flatten(fci)[0x88] == b"\x01"
    assert [p for p, _ in fci[0].walk()] == ["6F", "6F.84", "6F.A5", "6F.A5.88", "6F.A5.5F2D"]


@pytest.mark.parametrize(
    ("hexdata", "path", "pos"),
    [
        ("7003570399", "70.57", 2),                    # record: 57 runs past the 70 template
        ("77099F2701809F26080102", "77.9F26", 6),      # GENERATE AC format 2: 9F26 truncated
        ("77039F2701", "77.9F27", 2),
        ("70035F", "70", 0),                           # outer length runs past the end
        ("70015F", "70", 2),                           # truncated multi-byte tag inside 70
        ("5A80", "5A", 1),                             # indefinite length
        ("5A850100000000", "5A", 1),                   # 5 length bytes
        ("9F", "?", 0),
    ],
)
def test_decode_errors_carry_path_and_position(hexdata: str, path: str, pos: int) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(DecodeError) as ei:
        decode(data)
    assert ei.value.field == path
    assert ei.value.pos == pos
    assert ei.value.raw == data
    again = pickle.loads(pickle.dumps(ei.value))
    assert again.field == path and str(again) == str(ei.value)


def test_sensitive_values_never_in_repr() -> None:
    pan = "9900020000000018"
    rec = Tlv(0x70, children=(Tlv(0x5A, bytes.fromhex(pan)), Tlv(0x57, bytes.fromhex(pan + "D3012F"))))
    text = repr(rec)
    assert pan not in text and "redacted" in text


def test_constructed_given_as_bytes_is_parsed() -> None:
    o = Tlv(0x70, bytes.fromhex("5A0111"))
    assert o.children == (Tlv(0x5A, b"\x11"),)
    with pytest.raises(EncodeError):
        Tlv(0x70, bytes.fromhex("5A05"))
    with pytest.raises(EncodeError):
        Tlv(0x5A, children=(Tlv(0x5A, b""),))


def test_wrong_types() -> None:
    with pytest.raises(TypeError):
        Tlv("5A", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Tlv(0x5A, "11")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode("5A00")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        tlv.tag_bytes(0x9F80)   # continuation bit set on the last byte
    with pytest.raises(EncodeError):
        tlv.parse_tag("zz")


def test_dol_build_pads_and_truncates_per_format() -> None:
    dol = bytes.fromhex("9F0206" "9F1A02" "5003" "9F3702" "8C02")
    data = build_dol_data(dol, {
        0x9F02: bytes.fromhex("0100"),              # n: left-padded
        0x9F1A: bytes.fromhex("000156"),            # n: truncated on the left
        0x50: b"ABCDE",                             # an: truncated on the right
        0x9F37: b"\x01",                            # b: right-padded
        0x8C: b"\x00",                              # constructed? no: primitive → padded
    })
    assert data.hex().upper() == "000000000100" "0156" "414243" "0100" "0000"
    assert split_dol_data(dol, data)[0x9F1A] == bytes.fromhex("0156")
    with pytest.raises(DecodeError):
        split_dol_data(dol, data[:-1])
    # a constructed tag in a DOL is sent as zeros
    assert build_dol_data(bytes.fromhex("7002"), {0x70: b"\x11\x22"}) == b"\x00\x00"
