"""The main screen at the smallest size it supports, 80×24: every pane's tab is in sight and can be
clicked or reached by its key (issue 12's 80-column promise; the tabs shorten below 91 columns)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import TabbedContent, Tabs
from textual.widgets.tabbed_content import ContentTab

from emulator.ui.layout import PANE_TABS, WIDE_TABS, tab_labels
from emulator.ui.main_screen import TerminalScreen
from tests.test_ui import make_app, ready


def _tabs(scr: TerminalScreen) -> tuple[Tabs, list[ContentTab]]:
    tabs = scr.query_one("#panes Tabs", Tabs)
    return tabs, list(tabs.query(ContentTab))


def _in_sight(scr: TerminalScreen) -> None:
    bar, tabs = _tabs(scr)
    assert len(tabs) == len(PANE_TABS)
    screen = scr.region
    for tab in tabs:
        r = tab.region
        assert r.width >= len(str(tab.label)) > 0, (tab.id, r)
        assert bar.region.contains_region(r) and screen.contains_region(r), (tab.id, r, bar.region)


async def test_every_tab_in_sight_and_reachable_at_80x24(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.animation_level = "none"                   # the tab underline's slide: nothing to wait for
    async with app.run_test(size=(80, 24)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        await pilot.pause()
        _in_sight(scr)
        panes = scr.query_one("#panes", TabbedContent)
        for t in PANE_TABS:                        # by its key
            await pilot.press(t.key)
            assert panes.active == t.pane_id, t
            scr.set_focus(None)                    # the faults pane gives the tree the keys
        for t in (PANE_TABS[-1], PANE_TABS[-2], PANE_TABS[0]):   # by a click: the two once out of sight
            await pilot.click(f"#{ContentTab.add_prefix(t.pane_id)}")
            await pilot.pause()
            assert panes.active == t.pane_id, t
        assert str(panes.get_tab("pane-bridge").label) == "Bridge"


async def test_tabs_shorten_and_grow_back_with_the_window(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.animation_level = "none"
    async with app.run_test(size=(120, 30)) as pilot:
        scr = app.main
        await ready(pilot, scr)
        panes = scr.query_one("#panes", TabbedContent)
        names = {pane_id: str(panes.get_tab(pane_id).label) for pane_id in tab_labels(120)}
        assert names == {t.pane_id: t.label for t in PANE_TABS} and "-narrow-tabs" not in scr.classes
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        _in_sight(scr)
        assert "-narrow-tabs" in scr.classes
        assert str(panes.get_tab("pane-history").label) == "Scrn"
        await pilot.resize_terminal(WIDE_TABS, 30)
        await pilot.pause()
        _in_sight(scr)
        assert str(panes.get_tab("pane-history").label) == "Screens"


def test_tab_labels_by_width() -> None:
    assert tab_labels(WIDE_TABS)["pane-faults"] == "Faults"
    assert tab_labels(WIDE_TABS - 1)["pane-faults"] == "Fault"
    # the short names with one column between them fit the 40 columns left at 80
    assert sum(len(t.short) + 1 for t in PANE_TABS) <= 80 - 40
    assert sum(len(t.label) + 2 for t in PANE_TABS) <= WIDE_TABS - 40
