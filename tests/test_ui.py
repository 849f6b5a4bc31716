"""The desktop emulator driven with Textual's pilot: key presses in, terminal screens out.

The app runs on Textual's own (real-time) event loop. The rig gets a :class:`VirtualClock` that
is never advanced: it only freezes what the terminal *displays* as time (trace timestamps,
journal times, ISO 8583 fields 12/13); every wait is an asyncio timeout on the loop, so tests
keep their timeouts short through the configuration and wait on conditions, never on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.keys import _character_to_key
from textual.pilot import Pilot
from textual.widgets import Button, Input, Select

from emulator.config import TerminalConfig, Timeouts
from emulator.host.rules import HostRule, HostRules
from emulator.journal import Status
from emulator.messages import Msg
from emulator.ui import PosemuApp
from emulator.ui.face import Page
from emulator.ui.fault_panel import FaultPanel
from emulator.ui.faults_adapter import FaultsAdapter
from emulator.ui.main_screen import TerminalScreen
from emulator.ui.readers import find_sim
from faults.catalogue import load as load_catalogue
from faults.reader import FaultyReader
from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.sim import SimReader

FAST = Timeouts(connect=2.0, response=5.0, pin_entry=5.0, card=5.0, removal=0.4)


def make_app(tmp_path: Path, *, card: str = "demo", cfg: TerminalConfig | None = None, **kw: Any) -> PosemuApp:
    cfg = cfg or replace(TerminalConfig(), reader=f"sim://{card}", timeouts=FAST)
    kw.setdefault("auto_sign_on", False)
    return PosemuApp(cfg, state_dir=tmp_path, card=card, clock=VirtualClock(), hotplug=False, **kw)


async def until(pilot: Pilot[None], cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the app run until ``cond()`` holds (loop time, polled between pilot pauses)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await pilot.pause(0.01)


def codes(scr: TerminalScreen) -> list[str]:
    return [s.code for s in scr.screens]


async def ready(pilot: Pilot[None], scr: TerminalScreen) -> None:
    await until(pilot, lambda: scr.rig is not None and not scr.is_busy, "the terminal to open")


async def sign_on(pilot: Pilot[None], scr: TerminalScreen) -> None:
    await ready(pilot, scr)
    await pilot.press("1")                         # menu 1: 签到 sign on
    await until(pilot, lambda: scr.rig is not None and scr.rig.terminal.signed_on and not scr.is_busy, "sign-on")


async def inquiry_to_pin(pilot: Pilot[None], scr: TerminalScreen, card_key: str = "w") -> None:
    await pilot.press("2")                         # menu 2: 查询余额 balance inquiry
    await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
    await pilot.press(card_key)                    # swipe (w) or insert (i) the selected card
    await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")


async def test_balance_inquiry_by_key_presses(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        assert "签到成功" in scr.lcd_text()
        await inquiry_to_pin(pilot, scr)
        await pilot.press(*"123456")
        text = scr.lcd_text()
        assert "******" in text and "123456" not in text
        await pilot.press("backspace", "6", "enter")   # 更正 then 确认
        await until(pilot, lambda: not scr.is_busy, "the inquiry to finish")
        text = scr.lcd_text()
        assert "交易成功" in text and "CNY 12,345.67" in text
        assert scr.last_outcome is not None and scr.last_outcome.approved
        assert scr.page is Page.RESULT
        await pilot.press("enter")
        assert scr.page.value == Page.MENU.value


async def test_keypad_works_with_the_mouse(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        await pilot.click("#key-1")
        await until(pilot, lambda: scr.rig is not None and scr.rig.terminal.signed_on and not scr.is_busy, "sign-on")
        await pilot.click("#key-2")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.click("#card-swipe")
        await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")
        for d in "123456":
            await pilot.click(f"#key-{d}")
        await pilot.click("#key-confirm")
        await until(pilot, lambda: not scr.is_busy, "the inquiry to finish")
        assert "交易成功" in scr.lcd_text()


async def test_wrong_pin(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await inquiry_to_pin(pilot, scr)
        await pilot.press(*"000000", "enter")
        await until(pilot, lambda: not scr.is_busy, "the inquiry to finish")
        text = scr.lcd_text()
        assert "查询卡信息失败" in text and "密码错误" in text
        assert codes(scr)[-2:] == [Msg.QUERY_CARD_FAILED.value, Msg.WRONG_PIN.value]
        assert app.main.query_one("#panes").active == "pane-diag"  # type: ignore[attr-defined]
        assert "A12" in scr.diag.plain


async def test_card_removal_failure(tmp_path: Path) -> None:
    """A chip card the user leaves in the slot: after the removal timeout, 拔出卡失败."""
    app = make_app(tmp_path, card="cup_debit")
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await inquiry_to_pin(pilot, scr, card_key="i")
        await pilot.press("k")                     # the virtual cardholder types the test PIN
        await until(pilot, lambda: Msg.REMOVE_CARD.value in codes(scr), "请拔卡")
        await until(pilot, lambda: not scr.is_busy, "the removal timeout")
        assert "拔出卡失败" in scr.lcd_text()
        out = scr.last_outcome
        assert out is not None and out.headline is Msg.REMOVE_CARD_FAILED
        await pilot.press("r")                     # now the card comes out
        sim = find_sim(scr.rig.reader) if scr.rig is not None else None
        assert isinstance(sim, SimReader) and sim.card is None


@pytest.mark.slow
async def test_dirty_contacts_fault_gives_query_card_failed(tmp_path: Path) -> None:
    """reader.dirty-contacts switched on in the fault panel: the chip fails every time, the terminal
    falls back to the stripe, the cardholder does not swipe → 查询卡信息失败; the diagnosis names A1/B2."""
    adapter = FaultsAdapter().load()
    assert adapter.available, adapter.reason          # a broken catalogue fails here
    cfg = replace(TerminalConfig(), reader="sim://cup_debit", timeouts=replace(FAST, card=1.0))
    app = make_app(tmp_path, card="cup_debit", cfg=cfg, faults=adapter)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("f")
        panel = scr.query_one("#faults", FaultPanel)
        info = adapter.get("reader.dirty-contacts")
        assert info is not None and "A1" in info.cause_ids
        await panel.show_detail(info)
        panel.query_one("#param-contact_ohms", Input).value = "40"
        await pilot.click("#fault-toggle")
        assert [a.spec() for a in scr.active_faults] == ["reader.dirty-contacts:contact_ohms=40"]
        await pilot.press("2")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("i")
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while scr.is_busy and loop.time() < end:   # the cardholder re-inserts when told; never swipes
            if codes(scr)[-1] == Msg.READER_ERROR.value:
                await pilot.press("r", "i")
            await pilot.pause(0.02)
        assert not scr.is_busy
        assert Msg.READER_ERROR.value in codes(scr) and Msg.QUERY_CARD_FAILED.value in codes(scr)
        assert "查询卡信息失败" in scr.lcd_text()
        assert "A1" in scr.diag.plain and "B2" in scr.diag.plain
        faulty = scr.ui_reader.inner if scr.ui_reader is not None else None
        assert isinstance(faulty, FaultyReader) and not faulty.armed        # disarmed again


async def test_cancel_while_waiting_for_the_host(tmp_path: Path) -> None:
    rules = HostRules()
    app = make_app(tmp_path, host_rules=rules)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        rules.add(HostRule.parse("no-response"))
        await inquiry_to_pin(pilot, scr)
        await pilot.press("k")
        await until(pilot, lambda: Msg.PROCESSING.value in codes(scr), "处理中")
        assert scr.query_one("#progress").display
        await pilot.press("escape")                # 取消 while the host is silent
        await until(pilot, lambda: not scr.is_busy, "the cancel")
        assert codes(scr)[-1] == Msg.CANCELLED.value
        assert scr.rig is not None and scr.rig.terminal.fsm.state.value == "idle"
        assert [e.status for e in scr.rig.journal.entries()][-1] is Status.UNKNOWN
        rules.clear()
        await pilot.press("enter", "2")            # the terminal is usable again
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("escape")
        await until(pilot, lambda: not scr.is_busy, "the cancel")


async def test_keyboard_wedge_swipe_is_recognised(tmp_path: Path) -> None:
    prof = load_profile("demo")
    typed = f"%{prof.track1}?;{prof.track2}?"
    app = make_app(tmp_path, wedge_timeout=1.0)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("2")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        for ch in [*typed, "\r"]:                  # a USB magstripe reader types fast, key after key
            key = "enter" if ch == "\r" else _character_to_key(ch)
            app.post_message(events.Key(key, ch))
        await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")
        assert scr.rig is not None
        assert any(e.what == "keyboard-wedge swipe" for e in scr.rig.trace.entries)
        await pilot.press("escape")
        await until(pilot, lambda: not scr.is_busy, "the cancel")
        assert codes(scr)[-1] == Msg.CANCELLED.value


async def test_purchase_amount_entry_and_journal(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await sign_on(pilot, scr)
        await pilot.press("3", "1", "2", "5", "0")
        assert "CNY 12.50" in scr.lcd_text() and "请输入金额" in scr.lcd_text()
        await pilot.press("enter")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("w")
        await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")
        await pilot.press("k")
        await until(pilot, lambda: not scr.is_busy, "the purchase")
        assert scr.last_outcome is not None and scr.last_outcome.approved
        await pilot.press("j")
        await pilot.pause()
        table = app.screen.query_one("#journal-table")
        assert table.row_count == 1  # type: ignore[attr-defined]
        await pilot.press("escape")


async def test_operator_password_and_lock(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        for _ in range(3):
            await pilot.press("6", *"9999", "enter")
        assert scr.rig is not None and scr.rig.terminal.locked
        assert "终端已锁定" in scr.lcd_text()


async def test_resize_to_80x24(tmp_path: Path) -> None:
    app = make_app(tmp_path, auto_sign_on=True)
    async with app.run_test(size=(120, 40)) as pilot:
        scr = app.main
        await until(pilot, lambda: scr.rig is not None and scr.rig.terminal.signed_on and not scr.is_busy, "sign-on")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.size == (80, 24)
        region = app.screen.region
        for wid in ("#lcd", "#status", "#hint", "#keypad", "#key-confirm", "#key-0", "#panes"):
            w = app.screen.query_one(wid)
            assert region.contains_region(w.region), wid
            assert w.region.width > 0 and w.region.height > 0, wid
        assert "查询余额" in scr.lcd_text()
        await pilot.press("b")                    # still works at 80×24
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("escape")
        await until(pilot, lambda: not scr.is_busy, "the cancel")


async def test_settings_after_operator_password_save_and_apply(tmp_path: Path) -> None:
    from emulator import config as configmod
    from emulator.ui.screens import SettingsScreen

    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        await pilot.press("5", *"0000", "enter")      # settings ask for the operator password first
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen), "the settings screen")
        settings = app.screen
        assert isinstance(settings, SettingsScreen)
        settings.query_one("#set-language", Select).value = "en"
        await pilot.press("ctrl+s")
        saved = configmod.load(tmp_path / "terminal.toml")
        assert saved.language == "en" and saved.tmk == scr.cfg.tmk
        settings.query_one("#set-apply", Button).press()
        await until(pilot, lambda: scr.cfg.language == "en" and scr.rig is not None and not scr.is_busy,
                    "the terminal to reopen")
        assert scr.lang == "en" and "Balance" in scr.lcd_text() and "查询余额" not in scr.lcd_text()


@pytest.mark.slow
async def test_regression_run_from_the_ui_shows_progress_and_cancels(tmp_path: Path) -> None:
    from emulator.ui.regress_screen import RegressScreen

    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        one = RegressScreen(only=["user.wrong-pin"])
        app.push_screen(one)
        await until(pilot, lambda: one.finished, "the regression run", timeout=30)
        n = len(load_catalogue().get("user.wrong-pin").presets)
        assert (one.passed, one.failed, one.total) == (n, 0, n)
        await pilot.press("escape")                      # finished: Esc closes
        await until(pilot, lambda: not isinstance(app.screen, RegressScreen), "the dialog to close")
        await pilot.press("e")                           # the whole suite, from the key binding…
        await until(pilot, lambda: isinstance(app.screen, RegressScreen), "the regression dialog")
        run = app.screen
        assert isinstance(run, RegressScreen)
        await until(pilot, lambda: run.passed >= 1, "the first result", timeout=30)
        await pilot.press("escape")                      # …cancelled while it runs
        await until(pilot, lambda: run.finished, "the cancel to take effect", timeout=30)
        assert run.cancelled and run.passed + run.failed + run.skipped < run.total
