"""The desktop emulator starts ``posemu proxy`` and ``posemu relay`` (issue 14 item 5), switches
their faults from the fault panel and shows their traffic live — pilot tests on loopback only: a
plain pyiso8583 host and terminal (tests/plain_iso.py) on either side of the proxy, and a relay
of a virtual card to a loopback listener standing in for vpcd; and a relay through the real test
pcscd and vpcd (a posemu card on slot 0 stands in for a card in a real reader, the relay presents
it on slot 1 to a bare pyscard application) with a fault from the panel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from emulator.config import TerminalConfig
from emulator.trace import Kind
from emulator.ui.bridges import BridgePane
from emulator.ui.fault_panel import FaultPanel
from emulator.ui.faults_adapter import FaultsAdapter
from emulator.ui.main_screen import TerminalScreen
from faults.relay import CardRelay
from faults.wire import MessageProxy
from hardware.cards.profiles import load_profile
from hardware.sim import card_for_profile
from hardware.vpcd import VpcdClient
from tests.pcsc_fixtures import Pcscd
from tests.plain_iso import ISO87, PlainHost, PlainTerminal
from tests.test_relay import SCARD_W_REMOVED_CARD, SELECT_PSE, Handle
from tests.test_ui import FAST, make_app, ready, until

PAN = "9912345678901234"


def _armed(scr: TerminalScreen) -> list[str]:
    return [a.id for a in scr.active_faults]


async def test_proxy_from_the_ui_with_faults_from_the_panel_and_live_traffic(tmp_path: Path) -> None:
    host = PlainHost(ISO87)
    upstream = await host.start()
    adapter = FaultsAdapter().load()
    cfg = replace(TerminalConfig(), reader="sim://demo", timeouts=FAST, profile="iso87ascii")
    app = make_app(tmp_path, cfg=cfg, faults=adapter)
    term: PlainTerminal | None = None
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            scr = app.main
            await ready(pilot, scr)
            await pilot.press("y")
            pane = scr.query_one("#bridge", BridgePane)
            pane.query_one("#bridge-b", Input).value = f"{upstream[0]}:{upstream[1]}"
            await pilot.click("#bridge-start")
            await pilot.pause()
            await until(pilot, lambda: pane.controller is not None, "the proxy to start")
            proxy = pane.controller
            assert isinstance(proxy, MessageProxy)
            assert "proxy running" in str(scr.query_one("#status").render())
            term = PlainTerminal(ISO87, proxy.address)
            await term.connect()
            clean = await term.exchange("0200", 10, f2=PAN, f3="310000", f4="000000000000")
            assert clean["39"] == "00"
            await until(pilot, lambda: any(e.kind is Kind.ISO_IN and e.what == "0210" for e in pane.entries),
                        "the answer in the pane's traffic")
            log = "\n".join(line.text for line in pane.log_widget.lines)
            assert "→ 0200" in log and "← 0210" in log and "991234******1234" in log and PAN not in log

            # the fault panel now arms the proxy's faults, not the terminal's
            panel = scr.query_one("#faults", FaultPanel)
            await panel.toggle("host.overload")                  # the host answers 96 (on the proxy)
            await pilot.pause()
            assert [t.name for t in proxy.toxics()] == ["host.overload"] and _armed(scr) == []
            busy = await term.exchange("0200", 10, f2=PAN, f3="310000", f4="000000000000")
            assert busy["39"] == "96"
            await panel.toggle("reader.dirty-contacts")          # not a proxy's fault: refused, switched off
            await pilot.pause()
            assert "reader.dirty-contacts" not in panel.active and [t.name for t in proxy.toxics()] == [
                "host.overload"]
            await panel.toggle("host.overload")                  # off again: answers pass through
            await pilot.pause()
            assert proxy.toxics() == []
            again = await term.exchange("0200", 10, f2=PAN, f3="310000", f4="000000000000")
            assert again["39"] == "00"
            await pilot.click("#bridge-stop")
            await until(pilot, lambda: pane.controller is None, "the proxy to stop")
            await panel.toggle("host.overload")                  # stopped: the panel drives the terminal again
            await pilot.pause()
            assert _armed(scr) == ["host.overload"]
    finally:
        if term is not None:
            await term.close()
        await host.close()


async def test_relay_from_the_ui_takes_reader_faults(tmp_path: Path) -> None:
    connected = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def vpcd_stand_in(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        connected.set()
        with contextlib.suppress(Exception):
            await r.read()

    server = await asyncio.start_server(vpcd_stand_in, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    app = make_app(tmp_path, faults=FaultsAdapter().load())
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            scr = app.main
            await ready(pilot, scr)
            await pilot.press("y")
            pane = scr.query_one("#bridge", BridgePane)
            pane.query_one("#bridge-kind").value = "relay"           # type: ignore[attr-defined]
            await pilot.pause()
            assert pane.query_one("#bridge-a", Input).value == "sim://cup_debit"
            pane.query_one("#bridge-b", Input).value = f"127.0.0.1:{port}"
            assert await pane.start()
            relay = pane.controller
            assert isinstance(relay, CardRelay)
            assert any(e.what == "relay started" for e in pane.entries)
            panel = scr.query_one("#faults", FaultPanel)
            await panel.toggle("reader.dirty-contacts")
            await pilot.pause()
            assert [t.name for t in relay.toxics()] == ["reader.dirty-contacts"]
            await panel.toggle("host.overload")                    # a host fault: not the relay's
            await pilot.pause()
            assert "host.overload" not in panel.active
            await pane.stop()
            assert pane.controller is None and relay.toxics() == []
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


READ_RECORD_1_1 = bytes.fromhex("00B2010C00")       # READ RECORD 1 of SFI 1 (EMV Book 3 §6.5.11)


async def until_blocking(pilot: Pilot[None], cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """As :func:`tests.test_ui.until` for a predicate that blocks (a PC/SC call): run off the loop,
    which the relay and the card on vpcd need."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await asyncio.to_thread(cond):
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await pilot.pause(0.1)


@pytest.mark.pcsc
async def test_relay_from_the_ui_through_pcscd_with_a_fault_from_the_panel(pcscd: Pcscd, tmp_path: Path) -> None:
    """Bridge pane → relay of ``pcsc://Virtual PCD 00 00`` (the card) to vpcd slot 1; a pyscard client
    on slot 1 reads cleanly; ``user.card-pulled`` switched on in the fault panel pulls the card at the
    first READ RECORD: the command in flight gets no answer, PC/SC then says the card left
    (0x80100069), and the pane's traffic shows the fault switched on and what it did."""
    profile = "cup_debit"
    app = make_app(tmp_path, faults=FaultsAdapter().load())
    handle: Handle | None = None
    async with app.run_test(size=(120, 40)) as pilot:
        scr = app.main
        card = VpcdClient(card_for_profile(load_profile(profile)), clock=scr.clock, port=pcscd.slot_port(0))
        await card.insert()                                   # the "real" card, in reader slot 0
        try:
            await ready(pilot, scr)
            await pilot.press("y")
            pane = scr.query_one("#bridge", BridgePane)
            pane.query_one("#bridge-kind").value = "relay"    # type: ignore[attr-defined]
            await pilot.pause()
            pane.query_one("#bridge-a", Input).value = f"pcsc://{pcscd.reader_name(0)}?poll=0.2"
            pane.query_one("#bridge-b", Input).value = f"127.0.0.1:{pcscd.slot_port(1)}"
            await pilot.click("#bridge-start")
            await until(pilot, lambda: pane.controller is not None, "the relay to start")
            relay = pane.controller
            assert isinstance(relay, CardRelay)
            assert "relay running" in str(scr.query_one("#status").render())

            handle = await asyncio.to_thread(Handle, pcscd.reader_name(1))
            await until_blocking(pilot, handle.present, "the relayed card on slot 1")
            assert await asyncio.to_thread(handle.connect) == 0
            hr, resp = await asyncio.to_thread(handle.transmit, SELECT_PSE)
            assert hr == 0 and resp[-2:] == b"\x90\x00", (hex(hr), resp.hex())
            await until(pilot, lambda: any(e.kind is Kind.APDU and e.data.get("sw") == "9000" for e in pane.entries),
                        "the SELECT in the pane's traffic")

            panel = scr.query_one("#faults", FaultPanel)
            await panel.toggle("user.card-pulled")            # pulls the card while it is read
            await pilot.pause()
            assert [t.name for t in relay.toxics()] == ["user.card-pulled"] and _armed(scr) == []
            hr, resp = await asyncio.to_thread(handle.transmit, READ_RECORD_1_1)
            assert len(resp) < 2, f"the command in flight when the card left got an answer: {hex(hr)} {resp.hex()}"
            await until(pilot, lambda: relay.stats["pulled"] == 1, "the relay to pull the card")
            await until(pilot, lambda: any(e.data.get("code") == "slot.empty" for e in pane.entries),
                        "the empty slot in the pane's traffic")
            log = "\n".join(line.text for line in pane.log_widget.lines)
            assert "toxic enabled" in log and "user.card-pulled" in log
            assert "the cardholder pulled the card" in log and "READ RECORD" in log
            assert load_profile(profile).pan not in log
            await until_blocking(pilot, lambda: not handle.present(), "slot 1 to empty for the application")
            hr, _ = await asyncio.to_thread(handle.transmit, SELECT_PSE)
            assert hr == SCARD_W_REMOVED_CARD, hex(hr)         # PC/SC tells the application the card left

            await pilot.click("#bridge-stop")
            await until(pilot, lambda: pane.controller is None, "the relay to stop")
            assert relay.toxics() == []
        finally:
            if handle is not None:
                await asyncio.to_thread(handle.close)
            await pane_stop(scr)
            await card.remove()


async def pane_stop(scr: TerminalScreen) -> None:
    for pane in scr.query("#bridge").results(BridgePane):
        await pane.stop()
