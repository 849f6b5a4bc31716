"""ISO 8583 profiles as data (protocol.specs.build_profile) and the standard 0810 of iso87ascii."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt

import iso8583
import iso8583.specs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.host.logic import seed_demo
from emulator.host.server import HostServer
from emulator.hostlink import HostLink
from emulator.trace import Trace
from hardware.clock import VirtualClock
from protocol import keys as keymod
from protocol.errors import ConfigError, DecodeError
from protocol.framing import LengthHeader
from protocol.iso import Message, _decode_checked, _encode_checked, _plan, decode, encode
from protocol.mac import MacAlgorithm
from protocol.session import ClientSession, ServerSession
from protocol.specs import CUP, ISO87ASCII, Kind, Profile, build_profile
from protocol.txn import (
    CardData,
    EntryMode,
    TerminalIds,
    TxnType,
    financial_request,
    key_block,
    response_to,
    sign_on_request,
)
from tests.strategies import messages

NOW = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
PAN = "9900090000000017"


def test_unchanged_base_is_the_bundled_profile() -> None:
    assert build_profile("cup") is CUP and build_profile("iso87ascii") is ISO87ASCII


def test_iso87ascii_is_pyiso8583s_default_spec() -> None:
    """Any tool on pyiso8583's default spec reads iso87ascii, field 62 included (ans LLLVAR)."""
    default = copy.deepcopy(iso8583.specs.default)
    assert ISO87ASCII.spec == default
    assert ISO87ASCII.kind("62") is Kind.ANS


def test_overrides_change_only_the_keys_they_name() -> None:
    p = build_profile("iso87ascii", name="acme", fields={"62": {"data_enc": "b", "max_len": 64},
                                                        "48": {"max_len": 30}})
    assert p.spec["62"]["data_enc"] == "b" and p.spec["62"]["len_type"] == 3 and p.kind("62") is Kind.B
    assert p.spec["48"]["max_len"] == 30 and p.kind("48") is Kind.ANS
    assert ISO87ASCII.spec["62"]["data_enc"] == "ascii"       # the base is not touched


def test_new_field_and_explicit_kind() -> None:
    p = build_profile("cup", fields={"7": {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": 10,
                                           "len_count": "nibbles"},
                                     "47": {"data_enc": "ascii", "len_enc": "bcd", "len_type": 2, "max_len": 99,
                                            "kind": "an"}})
    assert p.kind("7") is Kind.N and p.kind("47") is Kind.AN
    m = Message("0800", {7: "0101090000", 11: "000001", 41: DEMO_TID, 47: "hello"}, p.default_header)
    assert decode(encode(m, p), p) == m


def test_envelope_tpdu_only_and_no_header() -> None:
    tpdu = bytes.fromhex("6000120000")
    p = build_profile("cup", tpdu=tpdu, app_header=b"")
    assert p.header_len == 5 and p.default_header == tpdu and p.tpdu_len == 5
    q = build_profile("cup", tpdu=b"", app_header=b"")
    m = Message("0800", {11: "000001", 41: DEMO_TID}, b"")
    assert q.header_len == 0 and decode(encode(m, q), q) == m
    r = build_profile("iso87ascii", tpdu=tpdu)
    m2 = Message("0800", {11: "000001", 41: DEMO_TID, 70: "301"}, tpdu)
    assert decode(encode(m2, r), r) == m2
    # the host swaps the TPDU's addresses, and nothing when there is no TPDU
    app_only = build_profile("iso87ascii", app_header=b"ISO0123")
    req = Message("0800", {11: "000001", 41: DEMO_TID, 70: "301"}, b"ISO0123")
    assert response_to(req, "00", tpdu_len=app_only.tpdu_len).header == b"ISO0123"
    assert response_to(Message("0800", {11: "000001"}, tpdu), "00", tpdu_len=5).header == bytes.fromhex("6000000012")


def test_complete_spec_from_data() -> None:
    spec = {k: dict(v) for k, v in iso8583.specs.default_ascii.items() if k != "h"}
    p = build_profile(None, name="ascii-bitmap", fields=spec, mac_alg=MacAlgorithm.X9_19,
                      length_header=LengthHeader(4, "ascii"))
    assert p.name == "ascii-bitmap" and p.header_len == 0 and p.spec["p"]["data_enc"] == "ascii"
    m = Message("0200", {2: PAN, 3: "310000", 11: "000002", 41: DEMO_TID})
    raw = encode(m, p)
    assert raw[4:20].isalnum()          # the bitmap as hex text
    assert decode(raw, p) == m
    s = ServerSession(p)
    s.receive_data(ClientSession(p).send(m))
    assert s.next_event().request == m  # type: ignore[union-attr]


@pytest.mark.parametrize(("base", "fields", "message"), [
    ("x25", {}, "base must be one of"),
    (None, {"2": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 2, "max_len": 19}}, "needs field 't'"),
    ("cup", {"62": {"data_enc": "klingon"}}, "not 'b'"),
    ("cup", {"62": {"max_len": -1}}, "max_len"),
    ("cup", {"62": {"len_type": "LL"}}, "len_type"),
    ("cup", {"62": {"max_len": 5, "colour": "red"}}, "unknown key 'colour'"),
    ("cup", {"130": {"max_len": 5}}, "not a field"),
    ("cup", {"99": {"max_len": 5}}, "a new field needs data_enc"),
    ("cup", {"47": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 2, "max_len": 9, "kind": "x"}}, "kind"),
    ("cup", {"62": {"left_pad": "00"}}, "one character"),
    ("cup", {"62": {"len_count": "bits"}}, "len_count"),
    ("cup", {"62": "b"}, "must be a table"),
])
def test_bad_profile_data_is_a_clear_error(base: str | None, fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_profile(base, fields=fields)  # type: ignore[arg-type]


_DATA_PROFILE = build_profile("iso87ascii", tpdu=bytes.fromhex("6000010000"), fields={"62": {"data_enc": "b"}})


@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_on_a_data_profile_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data, _DATA_PROFILE)


def test_hosts_0810_decodes_with_pyiso8583s_own_default_spec(vclock: VirtualClock) -> None:
    """Field 62 of the iso87ascii 0810 is hex text: pyiso8583's default spec decodes the whole message
    and the keys read from that text are the keys the terminal uses (issue 11: "field 62 pos 78")."""

    async def main() -> None:
        host = await HostServer.start(ISO87ASCII, clock=vclock, seed=False)
        seed_demo(host.store, profiles=[])
        link = HostLink("127.0.0.1", host.port, ISO87ASCII, clock=vclock, trace=Trace(vclock))
        try:
            ids = TerminalIds(DEMO_TID, DEMO_MID)
            ex = await link.exchange(sign_on_request(ISO87ASCII, ids, stan="000001"), mak=DEMO_TMK)
            doc, _ = iso8583.decode(ex.raw, iso8583.specs.default)
            assert doc["t"] == "0810" and doc["39"] == "00" and doc["70"] == "001"
            text = doc["62"]
            assert len(text) == 80 and all(c in "0123456789ABCDEF" for c in text)
            keys = keymod.parse_field62(DEMO_TMK, bytes.fromhex(text), keymod.KeyScheme.DOUBLE)
            assert keys == keymod.parse_field62(DEMO_TMK, key_block(ex.response), keymod.KeyScheme.DOUBLE)
            # the next financial request MACed with those keys is accepted
            card = CardData(PAN, EntryMode.SWIPE, "3012", PAN + "=30121010000000000")
            req = financial_request(ISO87ASCII, ids, TxnType.BALANCE, card, stan="000002", now=NOW)
            resp = (await link.exchange(req, mak=keys.mak)).response
            assert resp.get(39) in ("14", "55")          # an unknown card, not A0: the MAC was right
        finally:
            await link.close()
            await host.close()

    with asyncio.Runner(loop_factory=vclock.new_event_loop) as r:
        r.run(main())


def test_key_block_reads_binary_and_hex_and_refuses_the_rest() -> None:
    assert key_block(Message("0810", {62: "00ff"})) == b"\x00\xff"
    for bad in ({}, {62: "zz"}, {62: "0"}, {62: "٠١"}):
        with pytest.raises(DecodeError):
            key_block(Message("0810", bad))  # type: ignore[arg-type]


# --- the codec's compiled fast path on profiles made from data (protocol.iso._plan) --------------------
_DIALECT_PROFILES = {
    "iso87ascii+tpdu+binary-62": _DATA_PROFILE,
    "cup+bcd-7+an-47": build_profile("cup", fields={
        "7": {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": 10, "len_count": "nibbles"},
        "47": {"data_enc": "ascii", "len_enc": "bcd", "len_type": 2, "max_len": 99, "kind": "an"}}),
    "complete-ascii-bitmap": build_profile(None, name="ascii-bitmap", length_header=LengthHeader(4, "ascii"),
                                           fields={k: dict(v) for k, v in iso8583.specs.default_ascii.items()
                                                   if k != "h"}),
}


@pytest.mark.parametrize("profile", list(_DIALECT_PROFILES.values()), ids=list(_DIALECT_PROFILES))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_codec_agrees_with_the_reference_on_dialect_profiles(profile: Profile, data: st.DataObject) -> None:
    """A host dialect's profile goes through the same compiled coders as the bundled ones: whatever the
    fast path accepts, it encodes and decodes exactly as pyiso8583 with our checks does."""
    msg = data.draw(messages(profile))
    fast = _plan(profile).encode(msg)
    ref = _encode_checked(msg, profile)
    assert fast is None or fast == ref
    assert encode(msg, profile) == ref
    raw = bytearray(ref)
    for _ in range(data.draw(st.integers(0, 2))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    got = _plan(profile).decode(bytes(raw))
    try:
        want: Message | None = _decode_checked(bytes(raw), profile)
    except DecodeError:
        want = None
    if got is not None:
        assert want is not None and got == want and got.header == want.header
