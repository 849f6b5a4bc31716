"""The terminal end to end on the virtual clock: card → terminal → TCP → bundled host → screen."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from emulator.app import Rig, open_rig
from emulator.config import TerminalConfig, Timeouts
from emulator.host.rules import HostRule, HostRules
from emulator.journal import Reversal, Status
from emulator.messages import Msg
from emulator.ports import CancelPinPad, PinPad, ScriptedPinPad
from hardware.clock import VirtualClock


def make_rig(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path, *, pinpad: PinPad | None = None,
             rules: HostRules | None = None, cfg: TerminalConfig | None = None) -> Rig:
    async def go() -> Rig:
        return await open_rig(cfg or TerminalConfig(), clock=vclock, state_dir=tmp_path,
                              pinpad=pinpad or ScriptedPinPad("123456"), host_rules=rules)

    return vrun.run(go())


def test_balance_inquiry_approved(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path)
    try:
        assert vrun.run(rig.terminal.sign_on()).approved
        out = vrun.run(rig.terminal.balance_inquiry())
    finally:
        vrun.run(rig.close())
    assert out.approved and out.rc == "00" and out.balance == 1234567
    assert out.codes == ["INSERT_OR_SWIPE", "READING_CARD", "ENTER_PIN", "PROCESSING", "APPROVED_BALANCE"]
    assert out.screens[-1].params == {"balance": "CNY 12,345.67"}
    states = [rig.terminal.fsm.path[0][0].value] + [new.value for _, _, new in rig.terminal.fsm.path]
    assert states == ["idle", "signing on", "idle", "waiting for card", "reading card", "PIN entry", "online",
                      "online", "result", "idle"]


def test_journal_records_before_send_and_completes(vrun: asyncio.Runner, vclock: VirtualClock,
                                                  tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path)
    seen: list[str] = []
    assert rig.host is not None

    def at_host(msg: object) -> None:  # the journal row exists (pending) when the host gets the request
        rows = rig.journal.entries()
        if rows and rows[-1].kind == "balance":
            seen.append(rows[-1].status.value)

    rig.host.observers.append(at_host)
    try:
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.balance_inquiry())
        e = rig.journal.get(out.journal_id or 0)
    finally:
        vrun.run(rig.close())
    assert seen == ["pending"]
    assert e.status is Status.APPROVED and e.pan_masked == "990001******0019" and e.rc == "00"


def test_transaction_before_sign_on_is_refused(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path)
    try:
        out = vrun.run(rig.terminal.balance_inquiry())
    finally:
        vrun.run(rig.close())
    assert not out.approved and out.codes == ["SIGN_ON_REQUIRED"]


def test_wrong_pin_then_tries_exceeded(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path, pinpad=ScriptedPinPad("111111"))
    try:
        vrun.run(rig.terminal.sign_on())
        outs = [vrun.run(rig.terminal.balance_inquiry()) for _ in range(3)]
    finally:
        vrun.run(rig.close())
    assert [(o.headline, o.detail, o.rc) for o in outs] == [
        (Msg.QUERY_CARD_FAILED, Msg.WRONG_PIN, "55"), (Msg.QUERY_CARD_FAILED, Msg.WRONG_PIN, "55"),
        (Msg.QUERY_CARD_FAILED, Msg.PIN_TRIES_EXCEEDED, "75")]


def test_pin_cancelled(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    rig = make_rig(vrun, vclock, tmp_path, pinpad=CancelPinPad())
    try:
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.balance_inquiry())
    finally:
        vrun.run(rig.close())
    assert (out.headline, out.detail) == (Msg.QUERY_CARD_FAILED, Msg.CANCELLED)


def test_sixty_second_host_timeout_costs_no_wall_time(vclock: VirtualClock, tmp_path: Path,
                                                      real_waits: list[float | None]) -> None:
    rules = HostRules([HostRule.parse("no-response:mti=0200")])
    with asyncio.Runner(loop_factory=vclock.new_event_loop) as vrun:
        rig = make_rig(vrun, vclock, tmp_path, rules=rules)
        try:
            vrun.run(rig.terminal.sign_on())
            t_virtual = vclock.now()
            out = vrun.run(rig.terminal.balance_inquiry())
            took_virtual = vclock.now() - t_virtual
        finally:
            vrun.run(rig.close())
    assert (out.headline, out.detail) == (Msg.QUERY_CARD_FAILED, Msg.TIMEOUT)
    from emulator.trace import Kind

    sent = next(e.t for e in rig.trace if e.kind is Kind.ISO_OUT and e.what == "0200")
    timed_out = next(e.t for e in rig.trace if e.kind is Kind.TCP and e.what == "response timeout")
    assert timed_out - sent == pytest.approx(60.0, abs=0.01)     # the host wait itself: exactly 60 s
    assert took_virtual > 60.0                                   # plus card reading and PIN entry time
    assert real_waits and set(real_waits) == {0}     # the loop never waited in real time: the 60 s were jumped
    assert rig.cfg.timeouts.response == 60.0


def test_connect_refused_and_dns_failure(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()          # nothing listens there now
    cfg = replace(TerminalConfig(), host=f"127.0.0.1:{port}")
    rig = make_rig(vrun, vclock, tmp_path, cfg=cfg)
    try:
        out = vrun.run(rig.terminal.sign_on())
    finally:
        vrun.run(rig.close())
    assert (out.headline, out.detail) == (Msg.SIGN_ON_FAILED, Msg.CONNECT_FAILED)

    async def no_dns(host: str, port: int) -> list[tuple[str, int]]:
        from emulator.errors import DnsError

        raise DnsError(f"cannot resolve {host}")

    async def go() -> Rig:
        return await open_rig(TerminalConfig(), clock=vclock, state_dir=tmp_path / "2",
                              pinpad=ScriptedPinPad("123456"), resolver=no_dns, host_name="host.invalid")

    rig2 = vrun.run(go())
    try:
        out2 = vrun.run(rig2.terminal.sign_on())
    finally:
        vrun.run(rig2.close())
    assert out2.detail is Msg.DNS_FAILED


def test_purchase_unknown_outcome_is_reversed(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    rules = HostRules([HostRule.parse("drop-response:mti=0200,count=1")])
    rig = make_rig(vrun, vclock, tmp_path, rules=rules)
    assert rig.host is not None
    pan = "9900010000000019"
    try:
        vrun.run(rig.terminal.sign_on())
        acct = rig.host.store.card(pan).account_id  # type: ignore[union-attr]
        before = rig.host.store.balance(acct)[0]
        debited: list[int] = []
        store = rig.host.store
        rig.host.observers.append(lambda m: debited.append(store.balance(acct)[0]) if m.mti == "0400" else None)
        out = vrun.run(rig.terminal.purchase(50_00))
        # the host processed the purchase (money moved) but its answer never came
        e = rig.journal.get(out.journal_id or 0)
        after = rig.host.store.balance(acct)[0]
    finally:
        vrun.run(rig.close())
    assert (out.headline, out.detail) == (Msg.TXN_FAILED, Msg.TIMEOUT)
    assert "REVERSAL_PENDING" in out.codes or e.reversal is Reversal.DONE
    assert e.status is Status.REVERSED and e.reversal is Reversal.DONE and e.reversal_attempts == 1
    assert debited == [before - 50_00]        # the lost purchase did debit the account…
    assert after == before                    # …and the reversal refunded it


def test_reversal_retried_until_acknowledged(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    # the purchase's answer is lost, and so are the first two reversals
    rules = HostRules([HostRule.parse("drop-response:mti=0200,count=1"),
                       HostRule.parse("no-response:mti=0400,count=2")])
    cfg = replace(TerminalConfig(), timeouts=Timeouts(response=30), reversal_retries=1)   # one try per flush
    rig = make_rig(vrun, vclock, tmp_path, rules=rules, cfg=cfg)
    try:
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.purchase(10_00))
        first = rig.journal.get(out.journal_id or 0)
        second_txn = vrun.run(rig.terminal.balance_inquiry())     # sends the pending reversal first (2nd try)
        mid = rig.journal.get(out.journal_id or 0)
        vrun.run(rig.terminal.send_pending_reversals())            # 3rd try: acknowledged
        last = rig.journal.get(out.journal_id or 0)
    finally:
        vrun.run(rig.close())
    assert first.reversal is Reversal.PENDING and first.reversal_attempts == 1
    assert second_txn.approved and mid.reversal is Reversal.PENDING and mid.reversal_attempts == 2
    assert last.reversal is Reversal.DONE and last.reversal_attempts == 3


def test_reversal_retries_from_the_config(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    """``[reversal] retries = 3``: a reversal lost twice is acknowledged at the third try of the same flush."""
    rules = HostRules([HostRule.parse("drop-response:mti=0200,count=1"),
                       HostRule.parse("no-response:mti=0400,count=2")])
    cfg = replace(TerminalConfig(), timeouts=Timeouts(response=30), reversal_retries=3)
    rig = make_rig(vrun, vclock, tmp_path, rules=rules, cfg=cfg)
    try:
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.purchase(10_00))
        entry = rig.journal.get(out.journal_id or 0)
    finally:
        vrun.run(rig.close())
    assert not out.approved and entry.reversal is Reversal.DONE and entry.reversal_attempts == 3


def test_chip_inquiry_over_a_t0_character_line(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    """sim://…?protocol=t0 puts the ISO 7816-3 T=0 transport between kernel and card."""
    from hardware.t0 import T0WiredCard

    cfg = replace(TerminalConfig(), reader="sim://cup_debit?protocol=t0")
    rig = make_rig(vrun, vclock, tmp_path, cfg=cfg)
    try:
        assert rig.cardholder is not None and isinstance(rig.cardholder.card, T0WiredCard)
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.balance_inquiry())
    finally:
        vrun.run(rig.close())
    assert out.approved and out.codes[-2:] == ["APPROVED_BALANCE", "REMOVE_CARD"]


@pytest.mark.parametrize("card", ["demo", "cup_debit"])
def test_trace_never_holds_card_data(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path, card: str) -> None:
    """A full inquiry's trace (ISO messages, APDUs, reader events) shows the PAN only as 6+4."""
    from hardware.cards.profiles import load_profile

    prof = load_profile(card)
    cfg = replace(TerminalConfig(), reader=f"sim://{card}")
    rig = make_rig(vrun, vclock, tmp_path, cfg=cfg)
    try:
        vrun.run(rig.terminal.sign_on())
        assert vrun.run(rig.terminal.balance_inquiry()).approved
        rig.trace.export(tmp_path / "trace.jsonl")
    finally:
        vrun.run(rig.close())
    text = (tmp_path / "trace.jsonl").read_text(encoding="utf-8")
    assert prof.pan not in text and prof.track2 not in text
    assert prof.pan[:6] + "******" + prof.pan[-4:] in text
    assert '"54": "1001156C000001234567' in text       # balances are not mistaken for card numbers


def test_chip_card_swiped_is_told_to_insert(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    """Service code 2xx: a swiped chip card must be inserted (no fallback without chip failures)."""
    from emulator.trace import Kind

    cfg = replace(TerminalConfig(), reader="sim://cup_debit")
    rig = make_rig(vrun, vclock, tmp_path, cfg=cfg)
    assert rig.cardholder is not None
    rig.cardholder.prefer_chip = False
    try:
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.balance_inquiry())
    finally:
        vrun.run(rig.close())
    assert out.approved
    assert out.codes[:4] == ["INSERT_OR_SWIPE", "READING_CARD", "INSERT_CHIP", "READING_CARD"]
    assert rig.cardholder.actions[:2] == ["swipe", "insert"]
    req = next(e for e in rig.trace if e.kind is Kind.ISO_OUT and e.what == "0200")
    assert req.data["fields"]["22"].startswith("05")          # POS entry mode: chip


def test_fallback_to_the_stripe_after_chip_failures(vrun: asyncio.Runner, vclock: VirtualClock,
                                                    tmp_path: Path) -> None:
    """Three chip failures: the terminal asks for a swipe and sends entry mode 80x (fallback)."""
    from emulator.trace import Kind
    from faults.reader import FaultyReader, ReaderFaults
    from hardware.registry import open_reader

    async def go() -> tuple[list[str], str]:
        reader = FaultyReader(open_reader("sim://cup_debit", clock=vclock), ReaderFaults(seating="reversed"), vclock)
        rig = await open_rig(TerminalConfig(), clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"),
                             reader=reader)
        try:
            await rig.terminal.sign_on()
            out = await rig.terminal.balance_inquiry()
            assert out.approved
            req = next(e for e in rig.trace if e.kind is Kind.ISO_OUT and e.what == "0200")
            return out.codes, req.data["fields"]["22"]
        finally:
            await rig.close()

    codes, entry = vrun.run(go())
    assert codes.count("READER_ERROR") == 2 and "FALLBACK_SWIPE" in codes
    assert entry.startswith("80")


def test_profile_stripe_damage_makes_swipes_fail(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    """A card profile's `[stripe] damage` reaches the swipe physics: the stripe cannot be read."""
    prof = tmp_path / "worn.toml"
    prof.write_text('name = "worn"\npan = "9900010000000019"\nexpiry = "3012"\nservice_code = "101"\n'
                    'pin = "123456"\n[stripe]\ndamage = [{ start_in = 1.0, end_in = 1.6, severity = 1.0 }]\n',
                    encoding="utf-8")
    cfg = replace(TerminalConfig(), reader=f"sim://{prof}")
    rig = make_rig(vrun, vclock, tmp_path / "state", cfg=cfg)
    try:
        vrun.run(rig.terminal.sign_on())
        out = vrun.run(rig.terminal.balance_inquiry())
    finally:
        vrun.run(rig.close())
    assert (out.headline, out.detail) == (Msg.QUERY_CARD_FAILED, Msg.SWIPE_AGAIN)
    assert out.codes.count("SWIPE_AGAIN") >= 3


def test_card_that_declines_after_the_host_approved_is_reversed(vrun: asyncio.Runner, vclock: VirtualClock,
                                                               tmp_path: Path) -> None:
    """Second GENERATE AC answered with an AAC: the purchase the host approved is reversed (EMV Book 3 §10.11)."""
    from hardware.cards.profiles import _profile_files

    text = _profile_files()["cup_debit"].read_text().replace(
        'response_format = 2', 'response_format = 2\ndecline_after_online = true')
    prof = tmp_path / "late_decline.toml"
    prof.write_text(text)

    async def go() -> Rig:
        return await open_rig(replace(TerminalConfig(), reader="sim://cup_debit"), clock=vclock,
                              state_dir=tmp_path / "state", pinpad=ScriptedPinPad("123456"), card_profile=str(prof))

    rig = vrun.run(go())
    assert rig.host is not None
    acct = rig.host.store.card("9900020000000018")
    assert acct is not None
    before = rig.host.store.balance(acct.account_id)[0]
    try:
        assert vrun.run(rig.terminal.sign_on()).approved
        out = vrun.run(rig.terminal.purchase(25_00))
        entry = rig.journal.get(out.journal_id or 0)
        after = rig.host.store.balance(acct.account_id)[0]
    finally:
        vrun.run(rig.close())
    assert not out.approved and out.rc == "00" and out.detail is Msg.CARD_DECLINED
    assert "chip.declined_after_online" in out.evidence
    assert entry.reversal is Reversal.DONE and after == before
