"""The standard transaction set and the receipt in the desktop emulator (issue 12 items 1 and 2),
driven with Textual's pilot as a cashier would: main menu 8 其他交易 for void, refund,
pre-authorization, completion, settlement and sign-off; the original named by its voucher number on
the keypad or picked in the journal; main menu 9 重打印 and Enter in the journal for the receipt,
saved as text or PDF. Outcomes are checked in the terminal's journal (amounts, originals voided or
completed, reversals), not only on the screen."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from emulator.config import TerminalConfig
from emulator.host.rules import HostRule, HostRules
from emulator.journal import Reversal, Status
from emulator.messages import Msg
from emulator.outcome import Outcome
from emulator.receipt import find_cjk_font
from emulator.ui.face import Page
from emulator.ui.keypad import Do, KeypadFlow, Txn
from emulator.ui.main_screen import TerminalScreen, hint
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.receipt_screen import ReceiptScreen
from emulator.ui.screens import JournalScreen
from protocol.errors import PosemuError
from tests.test_ui import FAST, codes, make_app, sign_on, until


def _page(scr: TerminalScreen) -> Page:
    return scr.page


def _fpage(flow: KeypadFlow) -> Page:
    return flow.page


def _ftxn(flow: KeypadFlow) -> Txn:
    return flow.txn


def _out(scr: TerminalScreen) -> Outcome | None:
    return scr.last_outcome


def _last_kind(scr: TerminalScreen) -> str:
    return scr.last_outcome.kind if scr.last_outcome is not None else ""


async def _card_and_pin(pilot: Pilot[None], scr: TerminalScreen, what: str) -> None:
    """Swipe the card when asked and let the virtual cardholder type its PIN when asked; wait for the end."""
    await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr) or not scr.is_busy, f"{what}: the card prompt")
    if scr.is_busy:
        await pilot.press("w")
        await until(pilot, lambda: scr.pinpad.active or not scr.is_busy, f"{what}: the PIN prompt")
        if scr.pinpad.active:
            await pilot.press("k")
    await until(pilot, lambda: not scr.is_busy, what)


async def _purchase(pilot: Pilot[None], scr: TerminalScreen, cents: str) -> int:
    await pilot.press("3", *cents, "enter")
    await _card_and_pin(pilot, scr, "the purchase")
    out = scr.last_outcome
    assert out is not None and out.approved and out.kind == "purchase" and out.journal_id is not None
    await pilot.press("enter")
    return out.journal_id


async def test_void_by_voucher_number_on_the_keypad_then_reprint_and_save(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        pid = await _purchase(pilot, scr, "1250")
        assert scr.rig is not None
        stan = scr.rig.journal.get(pid).stan
        await pilot.press("8")
        assert _page(scr) is Page.MORE
        text = scr.lcd_text()
        for item in ("1 撤销 Void", "2 退货 Refund", "3 预授权", "4 预授权完成", "5 结算", "6 签退 Sign off"):
            assert item in text
        await pilot.press("1", *stan.lstrip("0"))          # leading zeros may be left out
        text = scr.lcd_text()
        assert "请输入原凭证号" in text and "撤销 Void" in text and stan.lstrip("0") in text
        await pilot.press("enter")
        await _card_and_pin(pilot, scr, "the void")
        out = scr.last_outcome
        assert out is not None and out.approved and out.kind == "void", out
        assert out.original_id == pid and out.amount == 1250
        text = scr.lcd_text()
        assert "撤销 Void" in text and "CNY 12.50" in text
        assert scr.rig.journal.get(pid).state == "voided"
        # 9 重打印: the void's receipt, its copies and a text file
        await pilot.press("enter", "9")
        await until(pilot, lambda: isinstance(app.screen, ReceiptScreen), "the receipt")
        rs = app.screen
        assert isinstance(rs, ReceiptScreen) and rs.entry.id == out.journal_id
        shown = rs.text()
        assert "消费撤销 VOID" in shown and "-12.50" in shown and "重打印凭证 / DUPLICATE" in shown
        assert "商户存根" in shown and "持卡人存根" in shown and f"原凭证号 ORIG VOUCHER: {stan}" in shown
        await pilot.press("m")                             # the merchant's copy only
        assert "商户存根" in rs.text() and "持卡人存根" not in rs.text()
        await pilot.press("t")
        await until(pilot, lambda: bool(rs.saved), "the text file")
        saved = rs.saved[0]
        assert saved.parent == tmp_path / "receipts" and saved.read_text(encoding="utf-8") == rs.text()
        assert "990001******0019" in saved.read_text(encoding="utf-8")
        assert "9900010000000019" not in saved.read_text(encoding="utf-8")   # the PAN is masked on paper too
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is scr, "the receipt to close")


async def test_receipt_saves_as_pdf(tmp_path: Path) -> None:
    try:
        find_cjk_font()
    except PosemuError as e:
        pytest.skip(f"no CJK font for PDF receipts on this machine: {e}")
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await _purchase(pilot, scr, "700")
        await pilot.press("9")
        await until(pilot, lambda: isinstance(app.screen, ReceiptScreen), "the receipt")
        rs = app.screen
        assert isinstance(rs, ReceiptScreen)
        await pilot.press("p")
        await until(pilot, lambda: bool(rs.saved), "the PDF")
        assert rs.saved[0].suffix == ".pdf" and rs.saved[0].read_bytes().startswith(b"%PDF")


async def test_preauth_then_completion_of_the_held_amount(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("8", "3", *"30000")
        text = scr.lcd_text()
        assert "预授权 Pre-authorization" in text and "CNY 300.00" in text
        await pilot.press("enter")
        await _card_and_pin(pilot, scr, "the pre-authorization")
        pre = scr.last_outcome
        assert pre is not None and pre.approved and pre.kind == "preauth" and pre.journal_id is not None
        assert scr.rig is not None
        stan = scr.rig.journal.get(pre.journal_id).stan
        await pilot.press("enter", "8", "4", *stan, "enter")
        assert _page(scr) is Page.AMOUNT
        text = scr.lcd_text()
        assert "直接确认为原金额" in text and f"原凭证号 Voucher {stan}" in text
        await pilot.press("enter")                          # Enter alone: the pre-authorized amount
        await _card_and_pin(pilot, scr, "the completion")
        out = scr.last_outcome
        assert out is not None and out.approved and out.kind == "completion", out
        assert out.amount == 30000 and out.original_id == pre.journal_id
        assert scr.rig.journal.get(pre.journal_id).state == "completed"


async def test_refund_picked_in_the_journal_with_its_amount_typed(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        pid = await _purchase(pilot, scr, "5000")
        await pilot.press("4")
        await until(pilot, lambda: isinstance(app.screen, JournalScreen), "the journal")
        js = app.screen
        assert isinstance(js, JournalScreen)
        sel = js.selected()
        assert sel is not None and sel.id == pid            # the newest row is under the cursor
        await pilot.press("f")
        await until(pilot, lambda: app.screen is scr and _page(scr) is Page.AMOUNT, "the refund's amount")
        assert "退货 Refund" in scr.lcd_text()
        await pilot.press(*"1500", "enter")
        await _card_and_pin(pilot, scr, "the refund")
        out = scr.last_outcome
        assert out is not None and out.approved and out.kind == "refund", out
        assert out.amount == 1500 and out.original_id == pid
        assert scr.rig is not None and scr.rig.journal.get(out.journal_id or 0).amount == 1500
        # a refund of more than the original is refused before the card is asked for
        await pilot.press("enter", "8", "2", *scr.rig.journal.get(pid).stan, "enter", *"9999", "enter")
        await until(pilot, lambda: not scr.is_busy and _last_kind(scr) == "refund"
                    and scr.last_outcome is not out, "the refusal")
        assert scr.last_outcome is not None and not scr.last_outcome.approved
        assert Msg.AMOUNT_MISMATCH.value in codes(scr) and Msg.INSERT_OR_SWIPE.value not in codes(scr)


async def test_journal_enter_shows_the_row_receipt_and_v_voids_it(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        first = await _purchase(pilot, scr, "100")
        await _purchase(pilot, scr, "200")
        await pilot.press("4")
        await until(pilot, lambda: isinstance(app.screen, JournalScreen), "the journal")
        js = app.screen
        assert isinstance(js, JournalScreen)
        table = js.query_one(DataTable)
        assert [str(c.label) for c in table.columns.values()][:5] == ["id", "time", "kind", "batch", "STAN"]
        await pilot.press("up")                             # the first purchase
        sel = js.selected()
        assert sel is not None and sel.id == first
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReceiptScreen), "the row's receipt")
        rs = app.screen
        assert isinstance(rs, ReceiptScreen) and rs.entry.id == first and "RMB 1.00" in rs.text()
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is js, "back to the journal")
        await pilot.press("v")
        await _card_and_pin(pilot, scr, "the void")
        out = scr.last_outcome
        assert out is not None and out.approved and out.kind == "void" and out.original_id == first
        assert scr.rig is not None and scr.rig.journal.get(first).state == "voided"


async def test_settlement_then_a_void_of_the_settled_sale_is_refused_then_sign_off(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        pid = await _purchase(pilot, scr, "880")
        assert scr.rig is not None
        stan = scr.rig.journal.get(pid).stan
        batch = scr.rig.journal.get(pid).batch
        await pilot.press("8", "5")
        await until(pilot, lambda: not scr.is_busy and _last_kind(scr) == "settle", "the settlement")
        out = scr.last_outcome
        assert out is not None and out.approved and out.totals is not None
        assert "结算成功" in scr.lcd_text() and "结算 Settlement" in scr.lcd_text()
        assert scr.rig.journal.get(pid).settled
        assert "借记 Debits" in scr.diag.plain and "1 · CNY 8.80" in scr.diag.plain     # the batch's one sale
        await pilot.press("enter", "9")                     # the settlement slip
        await until(pilot, lambda: isinstance(app.screen, ReceiptScreen), "the settlement slip")
        rs = app.screen
        assert isinstance(rs, ReceiptScreen) and "结算总计单 / SETTLEMENT" in rs.text()
        assert f"批次号 BATCH NO.: {batch}" in rs.text()
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is scr, "the slip to close")
        await pilot.press("8", "1", *stan, "enter")
        await until(pilot, lambda: not scr.is_busy and _last_kind(scr) == "void", "the refusal")
        assert scr.last_outcome is not None and not scr.last_outcome.approved
        assert Msg.ALREADY_SETTLED.value in codes(scr) and Msg.INSERT_OR_SWIPE.value not in codes(scr)
        assert "原交易已结算" in scr.lcd_text()
        await pilot.press("enter", "8", "6")
        await until(pilot, lambda: not scr.is_busy and _last_kind(scr) == "sign_off", "the sign-off")
        signed_off = _out(scr)
        assert signed_off is not None and signed_off.approved
        assert not scr.rig.terminal.signed_on and "签退成功" in scr.lcd_text()


async def test_unknown_voucher_and_nothing_to_print(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("9")                              # nothing approved yet
        await pilot.pause()
        assert app.screen is scr and Msg.NOTHING_TO_PRINT.value in codes(scr)
        await pilot.press("enter", "7")                     # nothing to reverse either
        assert codes(scr) == [Msg.NO_PENDING_REVERSAL.value] and _page(scr) is Page.RESULT
        await pilot.press("enter", "8", "1", *"4242", "enter")
        await until(pilot, lambda: not scr.is_busy and _last_kind(scr) == "void", "the refusal")
        assert Msg.ORIGINAL_NOT_FOUND.value in codes(scr) and "原交易不存在" in scr.lcd_text()
        assert scr.rig is not None
        assert all(e.kind != "void" for e in scr.rig.journal.entries())   # refused before anything is sent
        assert Msg.INSERT_OR_SWIPE.value not in codes(scr)


def test_keypad_flow_of_the_transaction_set() -> None:
    flow = KeypadFlow(KeypadPinPad())
    cmd = flow.press("8", busy=False)
    assert cmd is not None and (cmd.do, cmd.arg) == (Do.MENU, "8")
    flow.ask_more()
    assert flow.press("7", busy=False) == flow.press("9", busy=False)
    bell = flow.press("7", busy=False)
    assert bell is not None and bell.do is Do.BELL and _fpage(flow) is Page.MORE
    settle = flow.press("5", busy=False)
    assert settle is not None and settle.do is Do.SETTLE
    sign_off = flow.press("6", busy=False)
    assert sign_off is not None and sign_off.do is Do.SIGN_OFF
    # void: the voucher number, zero-filled to six digits
    assert flow.press("1", busy=False) is None and _fpage(flow) is Page.VOUCHER and _ftxn(flow) is Txn.VOID
    empty = flow.press("confirm", busy=False)
    assert empty is not None and empty.do is Do.BELL      # nothing typed
    for k in "42":
        flow.press(k, busy=False)
    assert flow.shown_entry() == "42"
    void = flow.press("confirm", busy=False)
    assert void is not None and (void.do, void.voucher, void.amount) == (Do.VOID, "000042", None)
    # refund by voucher: Enter alone takes the original's amount
    flow.ask_more()
    flow.press("2", busy=False)
    for k in "7":
        flow.press(k, busy=False)
    assert flow.press("confirm", busy=False) is None and _fpage(flow) is Page.AMOUNT and flow.voucher == "000007"
    refund = flow.press("confirm", busy=False)
    assert refund is not None and (refund.do, refund.voucher, refund.amount) == (Do.REFUND, "000007", None)
    # refund by reference number (another batch's sale): the amount must be typed; 7-11 digits are neither
    flow.ask_voucher(Txn.REFUND)
    for k in "1234567":
        flow.press(k, busy=False)
    odd = flow.press("confirm", busy=False)
    assert odd is not None and odd.do is Do.BELL
    for k in "89012":
        flow.press(k, busy=False)
    assert flow.press("confirm", busy=False) is None and flow.by_rrn and flow.voucher == "123456789012"
    no_amount = flow.press("confirm", busy=False)
    assert no_amount is not None and no_amount.do is Do.BELL
    for k in "250":
        flow.press(k, busy=False)
    by_rrn = flow.press("confirm", busy=False)
    assert by_rrn is not None and (by_rrn.do, by_rrn.voucher, by_rrn.amount) == (Do.REFUND, "123456789012", 250)
    # pre-authorization needs an amount; completion names its pre-authorization first
    flow.ask_more()
    flow.press("3", busy=False)
    assert _fpage(flow) is Page.AMOUNT and _ftxn(flow) is Txn.PREAUTH
    none = flow.press("confirm", busy=False)
    assert none is not None and none.do is Do.BELL
    flow.press("9", busy=False)
    pre = flow.press("confirm", busy=False)
    assert pre is not None and (pre.do, pre.arg) == (Do.PREAUTH, "9")
    flow.ask_amount(Txn.COMPLETION, voucher="000003", original_id=3)
    flow.press("5", busy=False)
    done = flow.press("confirm", busy=False)
    assert done is not None and (done.do, done.voucher, done.original_id, done.amount) == (Do.COMPLETE, "000003", 3, 5)
    # Esc from any of these pages is the main menu, and forgets the original
    flow.ask_voucher(Txn.COMPLETION)
    flow.press("cancel", busy=False)
    assert _fpage(flow) is Page.MENU and flow.voucher == "" and flow.original_id is None


def test_hints_of_the_transaction_set_pages() -> None:
    assert "void" in hint(Page.MORE, [], busy=False, signed_on=True)
    assert "12-digit" in hint(Page.VOUCHER, [], busy=False, signed_on=True)
    assert "9 receipt" in hint(Page.RESULT, ["APPROVED"], busy=False, signed_on=True, printed=True)
    assert "9 receipt" not in hint(Page.RESULT, ["DECLINED"], busy=False, signed_on=True)


async def test_a_void_the_host_never_answers_is_reversed_like_a_purchase(tmp_path: Path) -> None:
    """Faults apply to the whole set: the host stays silent to the void (0200), the terminal times
    out, reverses it (0400) and the sale stays unvoided in the journal."""
    rules = HostRules()
    cfg = replace(TerminalConfig(), reader="sim://demo", timeouts=replace(FAST, response=1.0))
    app = make_app(tmp_path, cfg=cfg, host_rules=rules)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        pid = await _purchase(pilot, scr, "990")
        assert scr.rig is not None
        rules.add(HostRule.parse("no-response:mti=0200"))
        await pilot.press("8", "1", *scr.rig.journal.get(pid).stan, "enter")
        await _card_and_pin(pilot, scr, "the void")
        out = _out(scr)
        assert out is not None and not out.approved and out.kind == "void"
        void_row = scr.rig.journal.get(out.journal_id or 0)
        assert void_row.status is Status.REVERSED and void_row.reversal is Reversal.DONE, void_row
        assert scr.rig.journal.get(pid).state == "approved"          # the sale stands
        assert scr.rig.journal.pending_reversals() == []


async def test_an_approved_result_lists_its_transaction_data(tmp_path: Path) -> None:
    """The diagnosis pane of an approved purchase: amount, masked card, entry mode, auth code, RRN,
    voucher, batch, TID/MID, time and screen code — those of the journal row."""
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        pid = await _purchase(pilot, scr, "4321")
        assert scr.rig is not None
        row = scr.rig.journal.get(pid)
        shown = scr.diag.plain
        assert row.auth_code and row.rrn
        for value in ("CNY 43.21", "990001******0019", "SWIPE", row.auth_code, row.rrn, row.stan, row.batch,
                      row.tid, row.mid, "APPROVED"):
            assert value in shown, value
        assert "9900010000000019" not in shown
