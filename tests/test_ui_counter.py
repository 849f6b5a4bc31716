"""The desktop emulator as a payments engineer uses it at the counter (issue 12 item 8), driven
with Textual's pilot: the fault panel from the keyboard, the display of a real terminal with the
screens' history in its own pane, the diagnosis of the last action only, the regression dialog at
80×24, trace values at 80×24, the operator lock's feedback and its way out, retry hints."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, RichLog

from emulator.messages import Msg
from emulator.ui.face import Page
from emulator.ui.fault_panel import FaultPanel, FaultTree
from emulator.ui.faults_adapter import FaultsAdapter
from emulator.ui.keypad import Do, KeypadFlow
from emulator.ui.main_screen import TerminalScreen, hint
from emulator.ui.pinpad import KeypadPinPad
from tests.test_ui import codes, inquiry_to_pin, make_app, ready, sign_on, until

DEMO_CARD = "990001******0019"


def _focused(scr: TerminalScreen) -> object:
    return scr.focused


def _armed(scr: TerminalScreen) -> list[str]:
    return [a.id for a in scr.active_faults]


def _locked(scr: TerminalScreen) -> bool:
    return scr.rig is not None and scr.rig.terminal.locked


def _page(flow: KeypadFlow) -> Page:
    return flow.page


def _tree(scr: object) -> FaultTree:
    return scr.query_one("#faults-tree", FaultTree)  # type: ignore[attr-defined, no-any-return]


async def test_fault_panel_works_from_the_keyboard(tmp_path: Path) -> None:
    adapter = FaultsAdapter().load()
    app = make_app(tmp_path, faults=adapter)
    async with app.run_test(size=(120, 36)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("f")                       # the pane opens with the tree focused
        await pilot.pause()
        tree = _tree(scr)
        assert _focused(scr) is tree
        first = tree.cursor_node
        assert first is not None and first.data is not None
        info = adapter.get(str(first.data))
        assert info is not None and info.title.split(" / ")[-1] in str(first.label)   # titles, not only ids
        assert "Enter arm" in str(scr.query_one("#hint").render())
        await pilot.press("down")                    # the next fault (past a layer's line)
        while tree.cursor_node is not None and tree.cursor_node.data is None:
            await pilot.press("down")
        node = tree.cursor_node
        assert node is not None and node.data is not None and node is not first
        fault_id = str(node.data)
        await pilot.press("enter")                   # arms it; the terminal's 确认 never sees it
        await pilot.pause()
        assert _armed(scr) == [fault_id]
        assert scr.page is Page.MENU and not scr.is_busy
        await pilot.press("enter")                   # and off again
        await pilot.pause()
        assert _armed(scr) == []
        await pilot.press("escape")                  # the keys go back to the terminal
        assert _focused(scr) is None
        await pilot.press("2")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("escape")
        await until(pilot, lambda: not scr.is_busy, "the cancel")


async def test_a_click_selects_a_fault_and_a_double_click_arms_it(tmp_path: Path) -> None:
    app = make_app(tmp_path, faults=FaultsAdapter().load())
    async with app.run_test(size=(120, 36)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        await pilot.press("f")
        await pilot.pause()
        tree = _tree(scr)
        panel = scr.query_one("#faults", FaultPanel)
        await pilot.click(FaultTree, offset=(8, 3))         # one click on the third line: a fault
        await pilot.pause()
        node = tree.cursor_node
        assert node is not None and node.data is not None
        assert panel.current is not None and panel.current.id == node.data   # its details are shown
        assert _armed(scr) == []                         # …and nothing armed
        await pilot.click(FaultTree, offset=(8, 3), times=2)   # a double click arms it
        await pilot.pause()
        assert _armed(scr) == [node.data]


async def test_display_shows_the_current_screen_amount_and_card_history_in_its_pane(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 40)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("3", *"1250", "enter")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        text = scr.lcd_text()
        assert "CNY 12.50" in text and "消费" in text and "请插卡或刷卡" in text
        await pilot.press("w")
        await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")
        text = scr.lcd_text()
        assert "CNY 12.50" in text and DEMO_CARD in text and "请输入密码" in text
        assert "请插卡或刷卡" not in text                      # a display, not the history
        await pilot.press("k")
        await until(pilot, lambda: not scr.is_busy, "the purchase")
        text = scr.lcd_text()
        assert "交易成功" in text and "CNY 12.50" in text and DEMO_CARD in text
        assert "…" not in text and scr.lcd.size.width > 40      # room at 160 columns: nothing cut
        await pilot.press("h")                       # the screens pane
        await pilot.pause()
        log = scr.query_one("#history", RichLog)
        history = "\n".join(line.text for line in log.lines)
        for code in ("请插卡或刷卡", "请输入密码", "交易成功"):
            assert code in history


async def test_diagnosis_is_about_the_last_action_only(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await inquiry_to_pin(pilot, scr)
        await pilot.press(*"000000", "enter")              # wrong PIN: the host answers 55
        await until(pilot, lambda: not scr.is_busy, "the inquiry")
        assert "A12" in scr.diag.plain and "rc 55" in scr.diag.plain and "密码错" in scr.diag.plain
        await pilot.press("enter", "2")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("escape")                          # cancelled while waiting for the card
        await until(pilot, lambda: not scr.is_busy, "the cancel")
        await pilot.press("enter")
        await inquiry_to_pin(pilot, scr)
        await pilot.press("k")
        await until(pilot, lambda: not scr.is_busy, "the inquiry")
        assert scr.last_outcome is not None and scr.last_outcome.approved
        # nothing of the wrong PIN stays (the approved result's data may hold the digits 55: a STAN, a time)
        assert "approved" in scr.diag.plain and "A12" not in scr.diag.plain and "rc 55" not in scr.diag.plain
        assert "WRONG_PIN" not in scr.diag.plain and "密码错" not in scr.diag.plain
        await pilot.press("enter")
        await inquiry_to_pin(pilot, scr)
        await pilot.press("escape")                          # cancel at the PIN prompt
        await until(pilot, lambda: not scr.is_busy, "the cancel")
        assert "rc 55" not in scr.diag.plain and "0210" not in scr.diag.plain   # no earlier evidence


async def test_regression_dialog_keeps_summary_and_results_in_view(tmp_path: Path) -> None:
    from emulator.ui.regress_screen import RegressScreen

    for size in ((80, 24), (140, 45)):
        app = make_app(tmp_path / f"{size[0]}")
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            run = RegressScreen(only=["user.wrong-pin"])
            app.push_screen(run)
            await until(pilot, lambda run=run: run.finished, "the regression run", timeout=30)  # type: ignore[misc]
            await pilot.pause()
            region = run.region
            summary = run.query_one("#regress-summary")
            assert region.contains_region(summary.region) and summary.region.height >= 1
            assert "passed" in str(summary.render())
            table = run.query_one(DataTable)
            assert region.contains_region(table.region)
            assert str(table.ordered_columns[0].label) == "result"   # the verdict is the first column
            assert table.row_count == run.total
            await pilot.press("escape")


async def test_trace_values_are_visible_at_80x24(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("t")
        await pilot.pause()
        log = scr.query_one("#trace-log", RichLog)
        width = log.scrollable_content_region.width
        rc = [line.text[:width] for line in log.lines if line.text.strip().startswith("39 ")]
        assert rc and all("00" in line for line in rc), rc            # field 39's value in view
        stan = [line.text[:width] for line in log.lines if line.text.strip().startswith("11 ")]
        assert stan and all(any(ch.isdigit() for ch in line.split("11", 1)[1]) for line in stan)


async def test_operator_lock_says_what_happened_and_the_admin_password_unlocks(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        await pilot.press("6", *"9999", "enter")
        assert "2 tries left" in scr.lcd_text()
        await pilot.press(*"9999", "enter")
        assert "1 try left" in scr.lcd_text()
        await pilot.press(*"9999", "enter")
        assert _locked(scr)
        text = " ".join(scr.lcd_text().split())
        assert "终端已锁定" in text and "administrator password" in text
        await pilot.press("enter", "6")                       # the way out: 6, the administrator password
        assert scr.keys.unlocking and "Administrator password" in scr.lcd_text()
        await pilot.press(*"1234", "enter")                   # a wrong one keeps it locked
        assert _locked(scr) and "Wrong administrator password" in " ".join(scr.lcd_text().split())
        await pilot.press(*scr.cfg.admin_password, "enter")
        assert not _locked(scr) and "Unlocked" in " ".join(scr.lcd_text().split())
        await pilot.press("6", *scr.cfg.operator_password, "enter")   # the operator's tries start again
        assert scr.operator_ok


def test_retry_hints_after_a_chip_error() -> None:
    shown = ["INSERT_OR_SWIPE", "READING_CARD", "READER_ERROR"]
    line = hint(Page.BUSY, shown, busy=True, signed_on=True)
    assert "reinsert" in line and "w swipe" in line and "Esc" in line
    real = hint(Page.BUSY, shown, busy=True, signed_on=True, real_reader=True)
    assert "reinsert" in real and "swipe" in real and " w " not in real
    # the reader's detail line after the chip error (READER_PROBLEM) keeps the hint
    assert "reinsert" in hint(Page.BUSY, [*shown, "READER_PROBLEM"], busy=True, signed_on=True)
    assert "swipe" in hint(Page.BUSY, ["FALLBACK_SWIPE"], busy=True, signed_on=True)
    assert "administrator" in hint(Page.MENU, [], busy=False, signed_on=True, locked=True)


def test_keypad_flow_is_one_state_machine() -> None:
    flow = KeypadFlow(KeypadPinPad())
    cmd = flow.press("3", busy=False)
    assert cmd is not None and (cmd.do, cmd.arg) == (Do.MENU, "3")
    flow.ask_amount()
    for k in ("0", "1", "2", "00", "correct", "5"):      # a leading zero is ignored; 更正 removes one
        assert flow.press(k, busy=False) is None
    assert flow.amount == 1205
    cmd = flow.press("confirm", busy=False)
    assert cmd is not None and (cmd.do, cmd.arg) == (Do.PURCHASE, "1205")
    flow.busy()
    cmd = flow.press("1", busy=True)
    assert cmd is not None and cmd.do is Do.BELL            # busy and no PIN asked: not taken
    cmd = flow.press("cancel", busy=True)
    assert cmd is not None and cmd.do is Do.CANCEL_ACTION
    flow.idle()
    assert _page(flow) is Page.RESULT
    flow.ask_password(admin=True)
    for k in "99999999":
        flow.press(k, busy=False)
    assert flow.shown_entry() == "********"
    cmd = flow.press("confirm", busy=False)
    assert cmd is not None and (cmd.do, cmd.arg) == (Do.UNLOCK, "99999999")
    flow.ask_password(then="settings")
    assert flow.press("cancel", busy=False) is None and _page(flow) is Page.MENU and not flow.unlocking
