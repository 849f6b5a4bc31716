"""Builders of the standard transaction set (protocol/txn.py): shapes on both profiles, round trips,
and the field 48 / 61 codecs under arbitrary input."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, EncodeError
from protocol.iso import decode, encode
from protocol.specs import CUP, ISO87ASCII, Profile
from protocol.txn import (
    RC,
    BatchTotals,
    CardData,
    EntryMode,
    OriginalRef,
    TerminalIds,
    TxnType,
    UploadItem,
    batch_upload_request,
    financial_request,
    original_mti,
    reversal_request,
    settlement_request,
)

NOW = dt.datetime(2026, 3, 4, 10, 11, 12, tzinfo=dt.UTC)
CARD = CardData("9900010000000019", EntryMode.SWIPE, "3012", "9900010000000019=30122010000000000")
REF = OriginalRef("000001", "000123", "0304", rrn="260304000007", auth_code="000007")


def ids(profile: Profile) -> TerminalIds:
    return TerminalIds("POSEMU01", "898310012345678", profile.default_header, "000002")


@pytest.mark.parametrize("profile", [CUP, ISO87ASCII], ids=lambda p: p.name)
@pytest.mark.parametrize("txn", [t for t in TxnType if t is not TxnType.SIGN_ON], ids=lambda t: t.name)
def test_each_type_round_trips_with_its_shape(profile: Profile, txn: TxnType) -> None:
    msg = financial_request(profile, ids(profile), txn, CARD, stan="000200", now=NOW,
                            amount=None if txn is TxnType.BALANCE else 12_34, original=REF, pin_block=bytes(8))
    back = decode(encode(msg, profile), profile)
    assert back.mti == txn.mti and back.get(3) == txn.processing_code and back.get(25) == txn.condition
    assert str(back.get(60)).startswith(txn.type_code + "000002")
    assert TxnType.from_request(back) is txn
    if txn.references_original:
        assert str(back.get(61)).startswith("000001000123")
        assert (back.get(37) == REF.rrn) == (txn in (TxnType.VOID, TxnType.REFUND, TxnType.COMPLETION_VOID))
        assert (back.get(38) == REF.auth_code) == (txn is not TxnType.REFUND)
    if txn.reversible:
        rev = reversal_request(profile, back, reason=RC.NO_RESPONSE, ids=ids(profile))
        assert original_mti(decode(encode(rev, profile), profile)) == txn.mti


def test_a_referencing_type_needs_its_original() -> None:
    with pytest.raises(EncodeError, match="names its original"):
        financial_request(CUP, ids(CUP), TxnType.VOID, CARD, stan="000200", now=NOW, amount=1)
    with pytest.raises(EncodeError, match="needs an amount"):
        financial_request(CUP, ids(CUP), TxnType.PREAUTH, CARD, stan="000200", now=NOW)
    with pytest.raises(EncodeError):
        OriginalRef("1", "000123", "0304")


@pytest.mark.parametrize("profile", [CUP, ISO87ASCII], ids=lambda p: p.name)
def test_settlement_and_upload_round_trip(profile: Profile) -> None:
    totals = BatchTotals(99_00, 3, 1_50, 1)
    s = decode(encode(settlement_request(profile, ids(profile), totals, stan="000300", now=NOW), profile), profile)
    assert s.mti == "0500" and BatchTotals.parse(str(s.get(48))) == totals and str(s.get(60)).endswith("201")
    after = settlement_request(profile, ids(profile), totals, stan="000301", now=NOW, after_upload=True)
    assert str(after.get(60)).endswith("202")
    up = batch_upload_request(profile, ids(profile), UploadItem(TxnType.PURCHASE, 12_00, REF), stan="000302")
    back = decode(encode(up, profile), profile)
    assert back.mti == "0320" and back.get(61) == REF.field61() and back.get(37) == REF.rrn and 2 not in back


@given(st.builds(BatchTotals, st.integers(0, 10**12 - 1), st.integers(0, 999), st.integers(0, 10**12 - 1),
                 st.integers(0, 999), st.sampled_from("012")))
def test_batch_totals_round_trip(t: BatchTotals) -> None:
    assert BatchTotals.parse(t.encode()) == t


@given(st.text(max_size=80))
def test_batch_totals_parse_raises_only_decode_error(text: str) -> None:
    try:
        t = BatchTotals.parse(text)
    except DecodeError:
        return
    assert t.encode()[:30] == text.ljust(62, "0")[:30]


@given(st.text(max_size=40))
def test_field61_parse_raises_only_decode_error(text: str) -> None:
    try:
        batch, stan, date = OriginalRef.parse61(text)
    except DecodeError:
        return
    assert len(batch) == 6 and len(stan) == 6 and len(date) == 4
