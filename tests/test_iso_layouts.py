"""The codec's cached layouts (protocol.iso): a layout made for one message's field set or bitmap is
reused for the next, and the next may be bad where the first was good — it is then refused exactly
as the reference path refuses it. Property tests of both paths are in tests/test_iso8583.py."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from protocol.errors import DecodeError, EncodeError
from protocol.iso import _LAYOUT_CACHE, Message, _decode_checked, _encode_checked, _plan, decode, encode
from protocol.specs import PROFILES, Profile
from protocol.txn import CardData, EntryMode, TerminalIds, TxnType, financial_request

PAN = "9900010000000019"
NOW = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)


class Text(str):
    """A str subclass: the reference path refuses it (``TypeError``), so the fast path must too."""


def _inquiry(profile: Profile) -> Message:
    ids = TerminalIds("POSEMU01", "898310012345678", profile.default_header)
    card = CardData(PAN, EntryMode.SWIPE, "3012", f"{PAN}=30121010000000000")
    return financial_request(profile, ids, TxnType.BALANCE, card, stan="000123", now=NOW)


def _outcome_encode(msg: Message, profile: Profile) -> object:
    try:
        return encode(msg, profile)
    except (EncodeError, TypeError) as e:
        return (type(e), str(e))


def _reference_encode(msg: Message, profile: Profile) -> object:
    try:
        return _encode_checked(msg, profile)
    except (EncodeError, TypeError) as e:
        return (type(e), str(e))


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_a_cached_encode_layout_refuses_what_the_reference_refuses(profile: Profile) -> None:
    good = _inquiry(profile)
    assert _plan(profile).encode(good) == _encode_checked(good, profile)       # the layout is cached now
    bad_values: list[dict[int, object]] = [
        {11: "00012"}, {11: "0001234"}, {11: "00012A"}, {11: Text("000123")}, {11: b"000123"},
        {41: "POSEMU0"}, {41: "POSEMU0\u00e9"}, {41: Text("POSEMU01")}, {3: "31000\u0661"},
        {2: "9" * 20}, {2: "99000100000000A9"}, {2: Text(PAN)}, {2: ""}, {49: "15"}, {25: "0"},
        {35: f"{PAN}X3012"}, {35: "9" * 38}, {60: "x" * 1000},
    ]
    for change in bad_values:
        msg = Message(good.mti, {**good.fields, **change}, good.header)  # type: ignore[dict-item]
        assert list(msg.fields) == list(good.fields)                     # the same key: the cached layout
        fast = _plan(profile).encode(msg)
        assert fast is None or fast == _reference_encode(msg, profile), change
        assert _outcome_encode(msg, profile) == _reference_encode(msg, profile), change


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_a_cached_decode_layout_refuses_what_the_reference_refuses(profile: Profile) -> None:
    raw = encode(_inquiry(profile), profile)
    assert _plan(profile).decode(raw) == decode(raw, profile)
    for at, value in itertools.product(range(profile.header_len + 4 + 8, len(raw)), (0x41, 0xE9, 0x3D, 0x20)):
        bad = bytes(raw[:at]) + bytes([value]) + raw[at + 1:]
        fast = _plan(profile).decode(bad)
        try:
            ref: object = _decode_checked(bad, profile)
        except DecodeError as e:
            ref = (e.msg, e.field)
        if fast is not None:
            assert fast == ref and list(fast.fields) == list(ref.fields)
        try:
            got: object = decode(bad, profile)
        except DecodeError as e:
            got = (e.msg, e.field)
        assert got == ref
    for cut in range(len(raw)):
        assert _plan(profile).decode(raw[:cut]) is None or cut == len(raw)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_more_field_sets_than_the_layout_cache_holds(profile: Profile) -> None:
    base = _inquiry(profile)
    optional = [n for n in (4, 12, 13, 14, 22, 25, 49) if n in base.fields or profile.has_field(n)]
    sets = [c for k in range(len(optional) + 1) for c in itertools.combinations(optional, k)]
    values = {4: "000000001250", 12: "090000", 13: "0101", 14: "3012", 22: "021", 25: "00", 49: "156"}
    made = 0
    for _ in range(2):
        for drop in sets * (1 + _LAYOUT_CACHE // max(len(sets), 1)):
            fields = {n: v for n, v in base.fields.items() if n not in optional}
            fields.update({n: values[n] for n in drop})
            msg = Message(base.mti, fields, base.header)
            data = encode(msg, profile)
            assert data == _encode_checked(msg, profile)
            assert decode(data, profile) == msg
            made += 1
            if made > 3 * _LAYOUT_CACHE:
                return
