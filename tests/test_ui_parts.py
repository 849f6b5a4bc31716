"""The desktop emulator's pure parts: PIN pad, swipe plot, trace formatting, fault adapter, reader wrapper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from emulator.messages import Msg, Screen
from emulator.trace import Kind, TraceEntry
from emulator.ui.face import FaceState, Page, face_renderable
from emulator.ui.faults_adapter import ActiveFault, FaultParam, FaultsAdapter
from emulator.ui.pinpad import KeypadPinPad
from emulator.ui.readers import UiReader, find_sim, pcsc_url
from emulator.ui.swipe_plot import break_window, plot_track
from emulator.ui.trace_view import field_names, format_entry
from hardware.cards.profiles import load_profile
from hardware.clock import RealClock
from hardware.magstripe import SwipeParams, simulate_swipe
from hardware.ports import ReaderEventKind
from hardware.registry import ReaderURL
from hardware.sim import SimReader, card_for_profile, ideal_swipe
from hardware.wedge import parse_wedge


async def test_pinpad_collects_digits_and_shows_only_asterisks() -> None:
    changes: list[str] = []
    pad = KeypadPinPad(lambda: changes.append(pad.masked))
    task = asyncio.ensure_future(pad.get_pin(Screen(Msg.ENTER_PIN), 5.0))
    await asyncio.sleep(0)
    assert pad.active
    for d in "12345":
        assert pad.digit(d)
    assert pad.backspace()
    pad.digit("9")
    assert pad.masked == "*****" and "1234" not in repr(pad)
    assert pad.confirm()
    assert await task == "12349"
    assert pad.masked == "" and not pad.digit("1")     # entry over
    assert all(set(c) <= {"*"} for c in changes)


async def test_pinpad_rejects_short_pins_cancels_and_times_out() -> None:
    pad = KeypadPinPad()
    task = asyncio.ensure_future(pad.get_pin(Screen(Msg.ENTER_PIN), 5.0))
    await asyncio.sleep(0)
    pad.digit("1")
    assert not pad.confirm()               # ISO 9564: at least 4 digits
    assert pad.cancel()
    assert await task is None
    assert not pad.digit("1")              # no entry in progress
    assert await pad.get_pin(Screen(Msg.ENTER_PIN), 0.01) is None   # the timeout, on the loop
    with pytest.raises(ValueError, match="one digit"):
        pad.digit("x")


def test_face_renders_menu_and_entry_from_the_catalogue() -> None:
    from rich.console import Console

    def plain(st: FaceState) -> str:
        c = Console(width=40, color_system=None)
        with c.capture() as cap:
            c.print(face_renderable(st, 20))
        return cap.get()

    menu = plain(FaceState(Page.MENU, (), "zh", title=Screen(Msg.SIGN_ON_REQUIRED)))
    assert "请先签到" in menu and "查询余额" in menu and "Balance" not in menu
    pin = plain(FaceState(Page.BUSY, (Screen(Msg.ENTER_PIN),), "en", entry="****"))
    assert "Enter PIN" in pin and "****" in pin


def test_swipe_plot_marks_where_decoding_broke() -> None:
    card = card_for_profile(load_profile("demo"))
    good = simulate_swipe(card.stripe, SwipeParams(seed=0))
    diag = good.tracks[1]
    assert diag is not None
    lines = plot_track(diag, good.result.track(2), width=40, rows=3)
    assert len(lines) == 5 and all(len(line.plain) == 40 for line in lines[:4])
    assert "✗" not in lines[3].plain and "OK" in lines[4].plain
    bad = simulate_swipe(card.stripe, SwipeParams(skew_deg=6.0, seed=0))
    d1 = bad.tracks[0]
    assert d1 is not None and not bad.result.track(1).ok  # type: ignore[union-attr]
    lines = plot_track(d1, bad.result.track(1), width=50, rows=2)
    assert "✗" in lines[2].plain and "CLOCK LOST" in lines[3].plain
    zoom = break_window(d1)
    assert zoom is not None and zoom.start <= (d1.break_sample or 0) < zoom.end
    assert all(ch in "⠀⣿" or 0x2800 <= ord(ch) <= 0x28FF for ch in lines[0].plain)


def test_trace_lines_show_fields_by_name_and_never_card_data() -> None:
    names = field_names("cup")
    assert names[2] == "Primary account number"
    e = TraceEntry(1.5, Kind.ISO_OUT, "0200", {"fields": {"2": "990001******0019", "52": "<8 bytes hidden>",
                                                         "35": "<34 chars hidden>", "39": "00"}})
    text = "\n".join(t.plain for t in format_entry(e, names))
    assert "→ 0200" in text and "1.500" in text and "Primary account number" in text
    assert "990001******0019" in text and "<8 bytes hidden>" in text
    s = TraceEntry(0.0, Kind.SCREEN, "WRONG_PIN", {"params": {"rc": "55"}})
    assert "密码错误 / Incorrect PIN" in format_entry(s, names)[0].plain


def test_fault_param_ranges_and_spec() -> None:
    p = FaultParam("contact_ohms", "Ω", "30", 0.0, 1000.0)
    assert p.check("40") is None and p.check("-1") and p.check("x") and p.check("nan")
    c = FaultParam("mode", "", "fail", type="choice", choices=("fail", "slow"))
    assert c.check("slow") is None and c.check("often")
    assert ActiveFault("host.peak-hours", (("rule", "respond:rc=91,mti=0200"),)).spec() == \
        "host.peak-hours:rule='respond:rc=91,mti=0200'"
    assert ActiveFault("reader.dirty-contacts", (("contact_ohms", "40"),)).spec() == \
        "reader.dirty-contacts:contact_ohms=40"


def missing_catalogue() -> object:
    """A catalogue loader whose module is not there."""
    raise ModuleNotFoundError("No module named 'posemu_missing_catalogue_module'",
                              name="posemu_missing_catalogue_module")


def test_fault_adapter_without_the_package() -> None:
    ad = FaultsAdapter(loader=missing_catalogue).load()
    assert not ad.available and "fault catalogue not available" in ad.reason
    assert "posemu_missing_catalogue_module is not installed" in ad.reason
    assert ad.faults == []


def test_fault_adapter_with_a_broken_catalogue() -> None:
    def broken() -> object:
        raise ValueError("catalogue.toml: line 3: bad value")

    ad = FaultsAdapter(loader=broken).load()
    assert not ad.available
    assert ad.reason == "fault catalogue not available: ValueError: catalogue.toml: line 3: bad value"


@pytest.fixture
def fake_catalogue() -> Callable[[], object]:
    from faults.catalogue import Catalogue
    from faults.model import Fault, Group, Onset, OnsetKind, ParamDef, ParamType

    param = ParamDef("contact_ohms", ParamType.FLOAT, 30.0, "Ω", 0.0, 1000.0, (), "resistance")
    faults = {"reader.x": Fault("reader.x", ("A1",), "g", "hardware", "脏", "dirty", "reader", (param,),
                                Onset(OnsetKind.CARD_READ), ("READER_ERROR",), "测", "measure", "洗", "clean",
                                "none", "cup_debit", "balance", ())}
    return lambda: Catalogue({}, faults, {"g": Group("g", ("A1",), "组", "group")})


def test_fault_adapter_reads_a_catalogue(fake_catalogue: Callable[[], object]) -> None:
    ad = FaultsAdapter(loader=fake_catalogue).load()
    assert ad.available and [f.id for f in ad.faults] == ["reader.x"]
    info = ad.get("reader.x")
    assert info is not None and info.cause_ids == ("A1",) and info.remedy == "洗 / clean"
    assert ad.by_layer() == {"hardware": [info]}
    assert ad.check(ActiveFault("reader.x", (("contact_ohms", "2000"),)))
    assert ad.check(ActiveFault("reader.x", (("nope", "1"),)))
    assert ad.check(ActiveFault("reader.x", (("contact_ohms", "40"),))) is None


async def test_ui_reader_passes_reader_events_and_injected_wedge_swipes() -> None:
    sim = SimReader(RealClock())
    sim.default_card = card_for_profile(load_profile("demo"))
    ui = UiReader(sim, RealClock(), slice_s=0.05)
    assert find_sim(ui) is sim and ui.name == sim.name
    assert await ui.next_event(0.05) is None
    sim.insert()
    ev = await ui.next_event(1.0)
    assert ev is not None and ev.kind is ReaderEventKind.CARD_INSERTED
    prof = load_profile("demo")
    swipe = parse_wedge(f"%{prof.track1}?;{prof.track2}?\r")
    waiter = asyncio.ensure_future(ui.next_event(5.0))
    await asyncio.sleep(0)
    ui.inject_swipe(swipe)
    ev = await waiter
    assert ev is not None and ev.kind is ReaderEventKind.CARD_SWIPED and ev.swipe == swipe
    assert swipe != ideal_swipe(card_for_profile(load_profile("load")))


def test_pcsc_urls_round_trip_reader_names() -> None:
    url = pcsc_url("Virtual PCD 00 01")
    assert ReaderURL.parse(url).target == "Virtual PCD 00 01"
