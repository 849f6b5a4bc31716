"""Sans-IO sessions joined in memory: matching, unmatched responses, malformed requests, MACs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, ProtocolError
from protocol.framing import frame
from protocol.iso import Message, encode
from protocol.sansio import NEED_DATA
from protocol.session import (
    ClientSession,
    MacStatus,
    MalformedRequest,
    RequestReceived,
    ResponseReceived,
    ServerSession,
    check_mac,
    mac_field,
    seal,
)
from protocol.specs import CUP, ISO87ASCII, PROFILES, Profile
from protocol.txn import RC, response_to

MAK = bytes.fromhex("0123456789ABCDEF")


def req(stan: str, profile: Profile, tid: str = "POSEMU01") -> Message:
    return Message("0200", {3: "310000", 11: stan, 41: tid}, profile.default_header)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_pair_exchanges_events_in_order(profile: Profile) -> None:
    client, server = ClientSession(profile), ServerSession(profile)
    wire = client.send(req("000001", profile)) + client.send(req("000002", profile))
    server.receive_data(wire[:7])
    assert server.next_event() is NEED_DATA
    server.receive_data(wire[7:])
    evs = [server.next_event(), server.next_event(), server.next_event()]
    assert isinstance(evs[0], RequestReceived) and isinstance(evs[1], RequestReceived) and evs[2] is NEED_DATA
    # answer out of order: each response still finds its request
    client.receive_data(server.send(response_to(evs[1].request, RC.APPROVED)))
    client.receive_data(server.send(response_to(evs[0].request, RC.APPROVED)))
    r1, r2 = client.next_event(), client.next_event()
    assert isinstance(r1, ResponseReceived) and r1.request.get(11) == "000002"
    assert isinstance(r2, ResponseReceived) and r2.request.get(11) == "000001"
    assert client.outstanding == 0
    assert r1.response.mti == "0210"


def test_response_with_wrong_stan_or_tid_is_unmatched() -> None:
    client, server = ClientSession(CUP), ServerSession(CUP)
    client.send(req("000005", CUP))
    wrong = Message("0210", {11: "000006", 41: "POSEMU01", 39: "00"}, CUP.default_header)
    other_tid = Message("0210", {11: "000005", 41: "POSEMU02", 39: "00"}, CUP.default_header)
    client.receive_data(server.send(wrong) + server.send(other_tid))
    e1, e2 = client.next_event(), client.next_event()
    assert type(e1).__name__ == "UnmatchedResponse" and type(e2).__name__ == "UnmatchedResponse"
    assert client.outstanding == 1


def test_duplicate_outstanding_request_is_refused() -> None:
    client = ClientSession(ISO87ASCII)
    client.send(req("000001", ISO87ASCII))
    with pytest.raises(ProtocolError):
        client.send(req("000001", ISO87ASCII))


def test_malformed_request_keeps_the_connection() -> None:
    server = ServerSession(ISO87ASCII)
    good = encode(req("000001", ISO87ASCII), ISO87ASCII)
    bad = good[:4] + b"\xff" * 8 + b"zz"          # MTI readable, bitmap claims fields that are absent
    server.receive_data(frame(bad) + frame(good))
    e1, e2 = server.next_event(), server.next_event()
    assert isinstance(e1, MalformedRequest) and e1.mti == "0200"
    assert isinstance(e2, RequestReceived)


def test_broken_framing_raises() -> None:
    server = ServerSession(CUP)
    server.receive_data(b"\x00\x00abc")
    with pytest.raises(DecodeError):
        server.next_event()


def _key(profile: Profile) -> bytes:
    return MAK if profile is CUP else MAK + bytes.fromhex("FEDCBA9876543210")


def _check(payload: bytes, profile: Profile, key: bytes) -> MacStatus:
    from protocol.iso import decode

    return check_mac(decode(payload, profile), payload, profile, key)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_seal_and_check_mac(profile: Profile) -> None:
    key = _key(profile)
    payload = seal(req("000009", profile), profile, key)
    assert payload[-8:] != bytes(8)
    assert _check(payload, profile, key) is MacStatus.OK
    tampered = bytearray(payload)
    tampered[profile.header_len + 12] ^= 0x01
    assert _check(bytes(tampered), profile, key) is not MacStatus.OK


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_a_message_without_mac_is_missing_not_skipped(profile: Profile) -> None:
    payload = encode(req("000009", profile), profile)
    assert _check(payload, profile, _key(profile)) is MacStatus.MISSING


def test_mac_goes_to_field_128_when_a_secondary_bitmap_is_present() -> None:
    """A reversal on iso87ascii carries field 90: the MAC is the last data element, field 128."""
    m = Message("0400", {3: "000000", 4: "000000001000", 11: "000010", 41: "POSEMU01", 90: "0" * 42})
    assert mac_field(m, ISO87ASCII) == 128
    key = _key(ISO87ASCII)
    payload = seal(m, ISO87ASCII, key)
    from protocol.iso import decode

    back = decode(payload, ISO87ASCII)
    assert back.text(90) == "0" * 42 and 64 not in back and isinstance(back.get(128), bytes)
    assert check_mac(back, payload, ISO87ASCII, key) is MacStatus.OK
    # the old placement (64, with field 90 after it) is refused, never verified over the wrong bytes
    misplaced = encode(m.replace(f64=payload[-8:]), ISO87ASCII)
    assert _check(misplaced, ISO87ASCII, key) is MacStatus.MISPLACED


_FIELD_VALUES: dict[int, st.SearchStrategy[Any]] = {
    2: st.text("0123456789", min_size=12, max_size=19), 3: st.sampled_from(["000000", "310000", "200000"]),
    4: st.integers(0, 10**12 - 1).map(lambda v: f"{v:012d}"), 11: st.integers(0, 999999).map(lambda v: f"{v:06d}"),
    39: st.sampled_from(["00", "05", "A0", "96"]), 41: st.text("ABCDEFGH0123456789", min_size=8, max_size=8),
    48: st.text("abcdefXYZ 0123", min_size=1, max_size=40), 52: st.binary(min_size=8, max_size=8),
    55: st.binary(min_size=1, max_size=60), 90: st.text("0123456789", min_size=42, max_size=42),
    95: st.text("0123456789", min_size=42, max_size=42),
}


@st.composite
def _messages(draw: st.DrawFn, profile: Profile) -> Message:
    usable = [n for n in _FIELD_VALUES if profile.has_field(n)]
    chosen = draw(st.lists(st.sampled_from(usable), min_size=1, unique=True))
    mti = draw(st.sampled_from(["0200", "0210", "0400", "0410", "0800"]))
    fields: dict[int, str | bytes] = {n: draw(_FIELD_VALUES[n]) for n in chosen}
    return Message(mti, fields, profile.default_header)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
@given(data=st.data())
def test_any_message_seals_decodes_and_verifies(profile: Profile, data: st.DataObject) -> None:
    from protocol.iso import decode

    msg = data.draw(_messages(profile))
    key = _key(profile)
    payload = seal(msg, profile, key)
    back = decode(payload, profile)
    assert check_mac(back, payload, profile, key) is MacStatus.OK
    assert {n for n in back.fields if n not in (64, 128)} == set(msg.fields)
    # any single bit flipped after the header is caught
    pos = data.draw(st.integers(profile.header_len, len(payload) - 1))
    bad = bytearray(payload)
    bad[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        flipped = decode(bytes(bad), profile)
    except DecodeError:
        return
    assert check_mac(flipped, bytes(bad), profile, key) is not MacStatus.OK or flipped == back
