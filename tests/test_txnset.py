"""The standard transaction set end to end (issue 12): void, refund, pre-authorization, completion and
their voids, settlement with batch upload — terminal → TCP → bundled host, on both profiles, with the
money at the host and the journal checked after every step."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from emulator.app import Rig, open_rig
from emulator.config import TerminalConfig
from emulator.fsm import Event, State
from emulator.host.rules import HostRule, HostRules
from emulator.journal import Reversal, Status
from emulator.messages import Msg
from emulator.ports import ScriptedPinPad
from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.sim import card_for_profile
from protocol.iso import Message
from protocol.txn import BatchTotals, TxnType

PROFILES = ["cup", "iso87ascii"]


def make_rig(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path, *, profile: str = "cup", card: str = "demo",
             rules: HostRules | None = None) -> Rig:
    cfg = replace(TerminalConfig(), profile=profile, reader=f"sim://{card}")

    async def go() -> Rig:
        return await open_rig(cfg, clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"),
                              host_rules=rules)

    rig = vrun.run(go())
    assert vrun.run(rig.terminal.sign_on()).approved
    return rig


def balance(rig: Rig, card: str = "demo") -> int:
    assert rig.host is not None
    row = rig.host.store.card(load_profile(card).pan)
    assert row is not None
    return rig.host.store.balance(row.account_id)[0]


def sent(rig: Rig) -> list[Message]:
    assert rig.host is not None
    seen: list[Message] = []
    rig.host.observers.append(seen.append)
    return seen


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("card", ["demo", "cup_debit"])
def test_void_gives_the_money_back_once(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path, profile: str,
                                        card: str) -> None:
    rig = make_rig(vrun, vclock, tmp_path, profile=profile, card=card)
    msgs = sent(rig)
    try:
        before = balance(rig, card)
        p = vrun.run(rig.terminal.purchase(25_00))
        assert p.approved and balance(rig, card) == before - 25_00
        v = vrun.run(rig.terminal.void(p.journal_id or 0))
        assert v.approved and v.kind == "void" and balance(rig, card) == before
        again = vrun.run(rig.terminal.void(p.journal_id or 0))
        orig, void = rig.journal.get(p.journal_id or 0), rig.journal.get(v.journal_id or 0)
    finally:
        vrun.run(rig.close())
    # the void names its original: RRN (37), authorization code (38), batch + STAN (61)
    req = next(m for m in msgs if m.mti == "0200" and m.get(3) == "200000")
    assert req.get(37) == orig.rrn and req.get(38) == orig.auth_code and req.get(4) == "000000002500"
    assert str(req.get(61)).startswith(orig.batch + orig.stan) and str(req.get(60)).startswith("23")
    assert 55 not in req                       # a void asks the chip for no cryptogram
    assert v.rrn and v.auth_code and v.stan and v.pan_masked == orig.pan_masked and v.amount == 25_00
    assert orig.state == "voided" and orig.voided_by == void.id and void.original_id == orig.id
    # a second void is refused by the terminal itself, before the card is asked for
    assert not again.approved and again.codes == ["TXN_REFUSED", "ALREADY_VOIDED"]
    assert "txn.original_voided" in again.evidence
    assert len([m for m in msgs if m.get(3) == "200000"]) == 1


@pytest.mark.parametrize("profile", PROFILES)
def test_preauth_completion_and_their_voids(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
                                            profile: str) -> None:
    rig = make_rig(vrun, vclock, tmp_path, profile=profile)
    msgs = sent(rig)
    try:
        before = balance(rig)
        pre = vrun.run(rig.terminal.preauth(100_00))
        assert pre.approved and balance(rig) == before - 100_00            # held
        done = vrun.run(rig.terminal.complete(pre.journal_id or 0, 80_00))
        assert done.approved and balance(rig) == before - 80_00            # captured 80, released 20
        assert rig.journal.get(pre.journal_id or 0).state == "completed"
        twice = vrun.run(rig.terminal.complete(pre.journal_id or 0, 10_00))
        assert twice.codes == ["TXN_REFUSED", "ALREADY_COMPLETED"]
        undo = vrun.run(rig.terminal.void(done.journal_id or 0))           # 完成撤销: held again
        assert undo.approved and undo.kind == "completion_void" and balance(rig) == before - 100_00
        assert rig.journal.get(pre.journal_id or 0).completed_by is None
        cancel = vrun.run(rig.terminal.void(pre.journal_id or 0))          # 预授权撤销: released
        assert cancel.approved and cancel.kind == "preauth_void" and balance(rig) == before
    finally:
        vrun.run(rig.close())
    shapes = [(m.mti, m.get(3), m.get(25), str(m.get(60))[:2]) for m in msgs if m.mti in ("0100", "0200")]
    assert shapes == [("0100", "030000", "06", "10"), ("0200", "000000", "06", "20"),
                      ("0200", "200000", "06", "21"), ("0100", "200000", "06", "11")]


@pytest.mark.parametrize("profile", PROFILES)
def test_refund_credits_at_most_the_original(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
                                             profile: str) -> None:
    rig = make_rig(vrun, vclock, tmp_path, profile=profile)
    msgs = sent(rig)
    try:
        before = balance(rig)
        p = vrun.run(rig.terminal.purchase(30_00))
        r1 = vrun.run(rig.terminal.refund(10_00, original_id=p.journal_id))
        orig = rig.journal.get(p.journal_id or 0)
        assert orig.rrn is not None
        r2 = vrun.run(rig.terminal.refund(20_00, rrn=orig.rrn, date=orig.date))    # by RRN, as for another batch
        r3 = vrun.run(rig.terminal.refund(1_00, rrn=orig.rrn, date=orig.date))     # nothing left to refund
        too_much = vrun.run(rig.terminal.refund(31_00, original_id=p.journal_id))
        after = balance(rig)
    finally:
        vrun.run(rig.close())
    assert r1.approved and r2.approved and not r3.approved and r3.rc == "13"
    assert too_much.codes == ["TXN_REFUSED", "AMOUNT_MISMATCH"]
    assert after == before
    refunds = [m for m in msgs if m.mti == "0220"]
    assert len(refunds) == 3 and all(m.get(3) == "200000" and str(m.get(60)).startswith("25") for m in refunds)
    assert refunds[0].get(37) == orig.rrn


@pytest.mark.parametrize("kind", ["void", "refund", "completion", "preauth"])
def test_a_step_whose_answer_is_lost_is_reversed(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
                                                 kind: str) -> None:
    rules = HostRules()
    rig = make_rig(vrun, vclock, tmp_path, rules=rules)
    try:
        before = balance(rig)
        if kind == "preauth":
            rules.add(HostRule.parse("drop-response:mti=0100,count=1"))
            out = vrun.run(rig.terminal.preauth(40_00))
            orig_id = None
            expected = before
        else:
            first = vrun.run(rig.terminal.preauth(40_00) if kind == "completion" else rig.terminal.purchase(40_00))
            orig_id = first.journal_id or 0
            rules.add(HostRule.parse(f"drop-response:mti={'0220' if kind == 'refund' else '0200'},count=1"))
            out = vrun.run(rig.terminal.refund(40_00, original_id=orig_id) if kind == "refund"
                           else rig.terminal.complete(orig_id, 40_00) if kind == "completion"
                           else rig.terminal.void(orig_id))
            expected = before - 40_00                # the original stands, the lost step is undone
        e = rig.journal.get(out.journal_id or 0)
        after = balance(rig)
        orig = rig.journal.get(orig_id) if orig_id else None
    finally:
        vrun.run(rig.close())
    assert (out.headline, out.detail) == (Msg.TXN_FAILED, Msg.TIMEOUT)
    assert e.status is Status.REVERSED and e.reversal is Reversal.DONE and e.screen == "TIMEOUT"
    # the journal's times are the virtual clock's, and they move: written, then reversed 60 s later
    assert e.created < e.updated <= vclock.wall().isoformat(timespec="seconds")
    assert after == expected
    assert orig is None or (orig.voided_by is None and orig.completed_by is None)


@pytest.mark.parametrize("profile", PROFILES)
def test_settlement_closes_the_batch(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path, profile: str) -> None:
    rig = make_rig(vrun, vclock, tmp_path, profile=profile)
    msgs = sent(rig)
    try:
        p1 = vrun.run(rig.terminal.purchase(10_00))
        p2 = vrun.run(rig.terminal.purchase(5_00))
        vrun.run(rig.terminal.void(p2.journal_id or 0))
        vrun.run(rig.terminal.refund(2_00, original_id=p1.journal_id))
        batch = rig.terminal.ids.batch
        s = vrun.run(rig.terminal.settle())
        late = vrun.run(rig.terminal.void(p1.journal_id or 0))
        again = vrun.run(rig.terminal.purchase(1_00))
    finally:
        vrun.run(rig.close())
    assert s.approved and s.codes[-1] == "SETTLE_OK" and s.batch == batch
    assert s.totals == BatchTotals(10_00, 1, 2_00, 1)
    settle = [m for m in msgs if m.mti == "0500"]
    assert len(settle) == 1 and BatchTotals.parse(str(settle[0].get(48))) == s.totals
    assert str(settle[0].get(60)).endswith("201")
    assert not [m for m in msgs if m.mti == "0320"]           # totals agreed: no batch upload
    assert late.codes == ["TXN_REFUSED", "ALREADY_SETTLED"]
    assert again.approved and again.batch == f"{int(batch) + 1:06d}"


def test_settlement_with_different_totals_uploads_the_batch(vrun: asyncio.Runner, vclock: VirtualClock,
                                                            tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path)
    msgs = sent(rig)
    try:
        p = vrun.run(rig.terminal.purchase(10_00))
        vrun.run(rig.terminal.purchase(7_00))
        assert rig.host is not None
        row = rig.host.store.find_txs(rig.terminal.ids.tid, kinds=("purchase",))[-1]
        rig.host.store.update_tx(row.id, reversed=1)           # the host lost one: its totals differ
        start = len(rig.terminal.machine.path)
        s = vrun.run(rig.terminal.settle())
        settled = rig.journal.get(p.journal_id or 0).settled
        path = rig.terminal.machine.path[start:]
    finally:
        vrun.run(rig.close())
    # the state machine drives the settlement: every step is a row of its table
    assert path == [(State.IDLE, Event.SETTLE, State.SETTLING), (State.SETTLING, Event.UPLOAD, State.UPLOADING),
                    (State.UPLOADING, Event.SETTLE, State.SETTLING), (State.SETTLING, Event.SETTLED, State.IDLE)]
    assert s.approved
    assert [c for c in s.codes if c in ("SETTLING", "BATCH_UPLOAD", "SETTLE_OK")] == \
        ["SETTLING", "BATCH_UPLOAD", "SETTLE_OK"]
    flow = [(m.mti, str(m.get(60))[-3:]) for m in msgs if m.mti in ("0500", "0320")]
    assert flow == [("0500", "201"), ("0320", "201"), ("0320", "201"), ("0500", "202")]
    assert settled and "settle.totals_differ" in s.evidence


def test_settlement_is_repeatable_after_a_lost_answer(vrun: asyncio.Runner, vclock: VirtualClock,
                                                      tmp_path: Path) -> None:
    rules = HostRules()
    rig = make_rig(vrun, vclock, tmp_path, rules=rules)
    try:
        vrun.run(rig.terminal.purchase(3_00))
        batch = rig.terminal.ids.batch
        rules.add(HostRule.parse("drop-response:mti=0500,count=1"))
        lost = vrun.run(rig.terminal.settle())
        assert not lost.approved and lost.codes[-2:] == ["SETTLE_FAILED", "TIMEOUT"]
        assert rig.terminal.ids.batch == batch                  # still open
        again = vrun.run(rig.terminal.settle())
    finally:
        vrun.run(rig.close())
    assert again.approved and rig.terminal.ids.batch != batch


def test_void_with_another_card_is_refused(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path)
    try:
        p = vrun.run(rig.terminal.purchase(9_00))
        assert rig.cardholder is not None
        rig.cardholder.card = card_for_profile(load_profile("load"))     # another magstripe card
        out = vrun.run(rig.terminal.void(p.journal_id or 0))
        orig = rig.journal.get(p.journal_id or 0)
    finally:
        vrun.run(rig.close())
    assert not out.approved and out.detail is Msg.CARD_MISMATCH and orig.voided_by is None


def test_txn_types_from_their_requests() -> None:
    """The host tells every type apart by MTI, processing code and field 25, with or without 60.1."""
    for t in TxnType:
        if t is TxnType.SIGN_ON:
            continue
        with_60 = Message(t.mti, {3: t.processing_code, 25: t.condition, 60: t.type_code + "000001000"})
        bare = Message(t.mti, {3: t.processing_code, 25: t.condition})
        assert TxnType.from_request(with_60) is t and TxnType.from_request(bare) is t
