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
