"""Snapshot tests of the desktop emulator's main screens (SVGs in ``tests/snapshots/``).

Update after an intended change with ``pytest tests/test_ui_snapshots.py --snapshot-update`` and
look at the SVGs before committing them. Deterministic by construction: a frozen VirtualClock for
everything the terminal displays as time, a fresh state folder (STAN 1…), no reader scan, and the
trace and diagnosis panes fed fixed entries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pytest_textual_snapshot import SVGImageExtension  # type: ignore[import-untyped]
from syrupy.assertion import SnapshotAssertion
from syrupy.location import PyTestLocation
from textual._doc import take_svg_screenshot
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Input

from emulator.config import TerminalConfig
from emulator.messages import Msg
from emulator.terminal import Outcome
from emulator.trace import Kind, TraceEntry
from emulator.ui import PosemuApp
from emulator.ui.diagnosis import DiagnosisPane
from emulator.ui.faults_adapter import FaultInfo, FaultParam, FaultsAdapter
from emulator.ui.trace_view import TracePane, field_names
from faults.catalogue import load as load_catalogue
from tests.test_ui import FAST, codes, until

SNAPSHOTS = Path(__file__).parent / "snapshots"


class _InTestsSnapshots(SVGImageExtension):  # type: ignore[misc]
    """pytest-textual-snapshot's SVG extension, storing files in tests/snapshots/."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(SNAPSHOTS)


Compare = Callable[..., bool]


@pytest.fixture
def snap(snapshot: SnapshotAssertion) -> Compare:
    svg_snapshot = snapshot.use_extension(_InTestsSnapshots)

    def compare(app: App[Any], *, press: Iterable[str] = (), terminal_size: tuple[int, int] = (80, 24),
                run_before: Callable[[Pilot[Any]], Awaitable[None]] | None = None) -> bool:
        svg = take_svg_screenshot(app=app, press=press, terminal_size=terminal_size, run_before=run_before)
        return bool(svg_snapshot == svg)

    return compare


FAKE_FAULTS = FaultsAdapter(available=True, reason="", _loaded=True, _catalogue=load_catalogue(), faults=[
    FaultInfo("reader.dirty-contacts", "hardware", ("A1", "B2"), "读卡器触点脏污 / Dirty reader contacts",
              (FaultParam("contact_ohms", "Ω", "30", 0.0, 1000.0, "resistance of each contact"),),
              ("READER_ERROR", "QUERY_CARD_FAILED"), "Measure the contact resistance", "Clean the contacts",
              "cup_debit", "reader"),
    FaultInfo("reader.seat-switch-stuck", "hardware", ("B1", "B18"), "Card-seat switch stuck", (),
              ("REMOVE_CARD_FAILED",), "Watch the seat switch", "Service the reader", "cup_debit", "reader"),
    FaultInfo("net.latency", "network", ("A8", "A22"), "Slow network",
              (FaultParam("latency_ms", "ms", "800", 0.0, 60000.0),), ("TIMEOUT",), "", "", "demo", "link"),
])


def app_for(tmp_path: Path, *, card: str = "demo", theme: str | None = None, sign_on: bool = True,
            faults: FaultsAdapter | None = None) -> PosemuApp:
    from hardware.clock import VirtualClock

    cfg = replace(TerminalConfig(), reader=f"sim://{card}", timeouts=FAST)
    return PosemuApp(cfg, state_dir=tmp_path, card=card, clock=VirtualClock(), hotplug=False,
                     auto_sign_on=sign_on, theme=theme, faults=faults or FAKE_FAULTS)


def signed_on(app: PosemuApp) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        scr = app.main
        await until(pilot, lambda: scr.rig is not None and scr.rig.terminal.signed_on and not scr.is_busy,
                    "sign-on")
    return run


def test_main_menu_80x24(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path)
    assert snap(app, run_before=signed_on(app))


def test_main_menu_light_theme(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path, theme="textual-light")
    assert snap(app, run_before=signed_on(app))


async def to_pin_prompt(app: Any, pilot: Pilot[Any]) -> Any:
    """Sign on, start a balance inquiry, swipe the demo card: the terminal asks for the PIN."""
    await signed_on(app)(pilot)
    scr = app.main
    await pilot.press("b")
    await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
    await pilot.press("w")
    await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")
    return scr


def test_pin_entry_shows_asterisks(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        await to_pin_prompt(app, pilot)
        await pilot.press(*"1234")

    assert snap(app, run_before=run)


def test_approved_balance_100x30(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        scr = await to_pin_prompt(app, pilot)
        await pilot.press("k")
        await until(pilot, lambda: not scr.is_busy, "the inquiry")

    assert snap(app, run_before=run, terminal_size=(100, 30))


def test_help_screen(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        await signed_on(app)(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap(app, run_before=run)


def test_swipe_view_tilted_swipe(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        await signed_on(app)(pilot)
        app.main.query_one("#swipe-skew", Input).value = "6"
        await pilot.press("w", "g")
        await pilot.pause()

    assert snap(app, run_before=run, terminal_size=(110, 34))


def test_fault_panel(tmp_path: Path, snap: Compare) -> None:
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        await signed_on(app)(pilot)
        await pilot.press("f")
        await pilot.pause()
        panel = app.main.query_one("#faults")
        info = FAKE_FAULTS.get("reader.dirty-contacts")
        assert info is not None
        await panel.show_detail(info)  # type: ignore[attr-defined]
        await panel.toggle(info.id)  # type: ignore[attr-defined]
        await pilot.pause()

    assert snap(app, run_before=run, terminal_size=(110, 34))


def _no_catalogue_module() -> object:
    raise ModuleNotFoundError("No module named 'posemu_no_such_fault_module'", name="posemu_no_such_fault_module")


def test_fault_panel_without_catalogue(tmp_path: Path, snap: Compare) -> None:
    missing = FaultsAdapter(loader=_no_catalogue_module)
    app = app_for(tmp_path, faults=missing)

    async def run(pilot: Pilot[Any]) -> None:
        await signed_on(app)(pilot)
        await pilot.press("f")
        await pilot.pause()

    assert snap(app, run_before=run)


def _entries() -> list[TraceEntry]:
    return [
        TraceEntry(0.0, Kind.SCREEN, "INSERT_OR_SWIPE"),
        TraceEntry(1.25, Kind.READER, "card swiped"),
        TraceEntry(3.5, Kind.ISO_OUT, "0200", {"fields": {
            "2": "990001******0019", "3": "310000", "11": "000004", "22": "021", "35": "<34 chars hidden>",
            "41": "POSEMU01", "42": "898310*****5678", "49": "156", "52": "<8 bytes hidden>"}}),
        TraceEntry(3.52, Kind.ISO_IN, "0210", {"fields": {"11": "000004", "39": "55", "41": "POSEMU01"}}),
        TraceEntry(3.53, Kind.SCREEN, "QUERY_CARD_FAILED"),
        TraceEntry(3.53, Kind.SCREEN, "WRONG_PIN", {"params": {"rc": "55"}}),
        TraceEntry(3.6, Kind.APDU, "SELECT 1PAY.SYS.DDF01", {"sw": "9000"}),
    ]


class PaneHarness(App[None]):
    def compose(self) -> ComposeResult:
        yield TracePane(id="trace")
        yield DiagnosisPane(id="diag")

    def on_mount(self) -> None:
        pane = self.query_one(TracePane)
        pane.names = field_names("cup")
        for e in _entries():
            pane.add(e)
        out = Outcome("balance", False, Msg.QUERY_CARD_FAILED, Msg.WRONG_PIN, "55")
        self.query_one(DiagnosisPane).show_outcome(out, _entries(), "both")


def test_trace_and_diagnosis_panes(snap: Compare) -> None:
    assert snap(PaneHarness(), terminal_size=(90, 40))


def test_more_transactions_menu(tmp_path: Path, snap: Compare) -> None:
    """Main menu 8 其他交易 at 80×24: every entry whole, one a line."""
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        await signed_on(app)(pilot)
        await pilot.press("8")

    assert snap(app, run_before=run)


def test_receipt_after_a_purchase(tmp_path: Path, snap: Compare) -> None:
    """Menu 9 重打印 after an approved purchase: the two-copy slip at 80×24, its keys in view."""
    app = app_for(tmp_path)

    async def run(pilot: Pilot[Any]) -> None:
        await signed_on(app)(pilot)
        scr = app.main
        assert scr.rig is not None
        scr.rig.journal.set_counter("stan", 100)    # a new terminal's STAN starts at random: fix the voucher
        await pilot.press("3", *"1250", "enter")
        await until(pilot, lambda: Msg.INSERT_OR_SWIPE.value in codes(scr), "请插卡或刷卡")
        await pilot.press("w")
        await until(pilot, lambda: scr.pinpad.active, "the PIN prompt")
        await pilot.press("k")
        await until(pilot, lambda: not scr.is_busy, "the purchase")
        await pilot.press("9")
        await until(pilot, lambda: type(app.screen).__name__ == "ReceiptScreen", "the receipt")
        app.clear_notifications()

    assert snap(app, run_before=run)
