"""Sans-IO sessions joined in memory: matching, unmatched responses, malformed requests, MACs."""

from __future__ import annotations

import pytest

from protocol.errors import DecodeError, ProtocolError
from protocol.framing import frame
from protocol.iso import Message, encode
from protocol.session import (
    NEED_DATA,
    ClientSession,
    MalformedRequest,
    RequestReceived,
    ResponseReceived,
    ServerSession,
    mac_ok,
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


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_seal_and_check_mac(profile: Profile) -> None:
    m = req("000009", profile).replace(f64=bytes(8))
    payload = seal(m, profile, MAK if profile is CUP else MAK + bytes.fromhex("FEDCBA9876543210"))
    key = MAK if profile is CUP else MAK + bytes.fromhex("FEDCBA9876543210")
    assert payload[-8:] != bytes(8)
    assert mac_ok(payload, profile, key)
    tampered = bytearray(payload)
    tampered[profile.header_len + 12] ^= 0x01
    assert not mac_ok(bytes(tampered), profile, key)
