"""Length framing: short reads, back-to-back frames, broken lengths."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, EncodeError
from protocol.framing import Framer, frame


@given(payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=8), cuts=st.lists(st.integers(0, 4000)))
def test_any_split_of_the_stream_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    f = Framer()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        f.receive_data(stream[a:b])
        got.extend(f.frames())
    assert got == payloads
    assert f.buffered == 0


def test_one_byte_at_a_time() -> None:
    f = Framer()
    out = []
    for b in frame(b"hello") + frame(b"world"):
        f.receive_data(bytes([b]))
        out.extend(f.frames())
    assert out == [b"hello", b"world"]


@pytest.mark.parametrize("header", [b"\x00\x00", b"\xff\xff"])
def test_zero_or_oversized_length_breaks_the_stream(header: bytes) -> None:
    f = Framer(max_frame=1000)
    f.receive_data(header + b"x")
    with pytest.raises(DecodeError) as ei:
        f.next_event()
    assert ei.value.field == "length"
    with pytest.raises(DecodeError):
        f.next_event()        # stays broken: the caller must close the connection


def test_frame_rejects_empty_or_huge_payloads() -> None:
    with pytest.raises(EncodeError):
        frame(b"")
    with pytest.raises(EncodeError):
        frame(b"x" * 9000)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(raw: bytes) -> None:
    f = Framer()
    f.receive_data(raw)
    with contextlib.suppress(DecodeError):
        f.frames()


# --- other hosts' length headers (host dialects) ------------------------------------------------------
from protocol.framing import LengthHeader  # noqa: E402

HEADERS = [LengthHeader(2, "binary"), LengthHeader(4, "binary"), LengthHeader(4, "ascii"), LengthHeader(2, "bcd"),
           LengthHeader(2, "binary", inclusive=True), LengthHeader(4, "ascii", inclusive=True)]


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: f"{h.size}{h.encoding}{'+' if h.inclusive else ''}")
@given(payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=6), cuts=st.lists(st.integers(0, 3000)))
def test_any_length_header_survives_any_split(header: LengthHeader, payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p, header=header) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    f = Framer(header=header)
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        f.receive_data(stream[a:b])
        got.extend(f.frames())
    assert got == payloads


@pytest.mark.parametrize(("header", "payload", "wire"), [
    (LengthHeader(4, "ascii"), b"abc", b"0003abc"),
    (LengthHeader(2, "bcd"), b"x" * 123, b"\x01\x23" + b"x" * 123),
    (LengthHeader(4, "binary"), b"ab", b"\x00\x00\x00\x02ab"),
    (LengthHeader(2, "binary", inclusive=True), b"ab", b"\x00\x04ab"),
])
def test_length_header_bytes(header: LengthHeader, payload: bytes, wire: bytes) -> None:
    assert frame(payload, header=header) == wire


@pytest.mark.parametrize("junk", [b"00x1", b"-001", b" 12 "])
def test_ascii_length_that_is_not_digits_breaks_the_stream(junk: bytes) -> None:
    f = Framer(header=LengthHeader(4, "ascii"))
    f.receive_data(junk + b"abcdefgh")
    with pytest.raises(DecodeError) as ei:
        f.next_event()
    assert ei.value.field == "length" and ei.value.raw == junk


def test_bcd_length_with_hex_nibbles_breaks_the_stream() -> None:
    f = Framer(header=LengthHeader(2, "bcd"))
    f.receive_data(b"\x0a\x01xyz")
    with pytest.raises(DecodeError):
        f.next_event()


@pytest.mark.parametrize(("size", "encoding"), [(3, "binary"), (0, "ascii"), (2, "ebcdic")])
def test_impossible_length_headers_are_refused(size: int, encoding: str) -> None:
    with pytest.raises(EncodeError):
        LengthHeader(size, encoding)


def test_payload_too_long_for_a_short_ascii_header() -> None:
    with pytest.raises(EncodeError):
        frame(b"x" * 100, header=LengthHeader(2, "ascii"))
