"""The trace file format: written by TraceEntry.to_json, read back by emulator.trace.parse_trace only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.trace import Kind, Trace, TraceEntry, parse_trace, read_trace
from hardware.clock import VirtualClock
from protocol.errors import DecodeError

RESERVED = {"t", "kind", "what"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
entries = st.builds(
    TraceEntry,
    t=st.integers(0, 10**9).map(lambda us: us / 1_000_000),
    kind=st.sampled_from(Kind),
    what=st.text(max_size=30),
    data=st.dictionaries(st.text(max_size=10).filter(lambda k: k not in RESERVED), json_values, max_size=5),
)


@given(st.lists(entries, max_size=8))
def test_round_trip(es: list[TraceEntry]) -> None:
    text = json.dumps({"posemu_trace": 1, "seed": 7}) + "\n" + "".join(e.to_json() + "\n" for e in es)
    assert parse_trace(text) == es
    assert parse_trace(text.encode("utf-8")) == es


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        es = parse_trace(data)
    except DecodeError as e:
        assert "not a JSON-lines trace" in str(e) or "unknown trace entry" in str(e)
        return
    assert all(isinstance(x, TraceEntry) and isinstance(x.kind, Kind) for x in es)


@pytest.mark.parametrize(("text", "message"), [
    (b"\xff\xfe", "not a JSON-lines trace (not UTF-8 text)"),
    ('{"t": 0, "kind": "screen", "what": "x"}\nnot json', "line 2 is not JSON: not a JSON-lines trace"),
    ("[" * 100_000, "line 1 is not JSON: not a JSON-lines trace"),
    ("[1, 2]", "line 1 is not a JSON object: not a JSON-lines trace"),
    ('{"t": NaN, "kind": "screen", "what": "x"}',
     "line 1: unknown trace entry {'t': nan, 'kind': 'screen', 'what': 'x'}"),
    ('{"t": 1, "kind": "nope", "what": "9900010000000019 and more text to cut at eighty characters ..."}',
     "line 1: unknown trace entry {'t': 1, 'kind': 'nope', 'what': '990001******0019 and more text to cut at eight"),
])
def test_bad_traces_are_clear_errors(text: str | bytes, message: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_trace(text)
    assert str(err.value) == message


def test_an_exported_trace_reads_back(tmp_path: Path, vclock: VirtualClock) -> None:
    trace = Trace(vclock)
    trace.record(Kind.SCREEN, "ENTER_PIN", params={"amount": "CNY 1.00"})
    vclock.advance(1.5)
    trace.record(Kind.READER, "card removed", pan="9900010000000019")
    path = tmp_path / "t.jsonl"
    trace.export(path)
    back = read_trace(path)
    assert back == trace.entries
    fields: dict[str, Any] = back[1].data
    assert fields == {"pan": "990001******0019"} and back[1].t == 1.5
