"""``posemu relay`` through a real PC/SC stack: a posemu card served on vpcd slot 0 stands in for the
card in a real reader; the relay reads it through pcscd (``pcsc://Virtual PCD 00 00``) and presents
it on slot 1; an application on slot 1 — posemu's EMV kernel over pyscard, and a bare pyscard
handle for the exact PC/SC status codes — reads it cleanly, then meets each fault."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from emulator.emv import EmvKernel
from emulator.emv.model import ChipReadError, Transaction, TransactionType
from emulator.trace import Kind, read_trace
from faults.diagnose import diagnose
from faults.relay import CardRelay, apdu_name
from hardware.cards.profiles import load_profile
from hardware.clock import Clock, RealClock, VirtualClock, run_external
from hardware.errors import ReaderError
from hardware.pcsc import PcscReader
from hardware.ports import ReaderEventKind
from hardware.registry import open_reader
from hardware.sim import card_for_profile
from hardware.vpcd import VpcdClient
from tests.pcsc_fixtures import Pcscd

PROFILE = "cup_debit"
SCARD_W_REMOVED_CARD = 0x80100069
SCARD_W_RESET_CARD = 0x80100068
SELECT_PSE = bytes.fromhex("00A404000E315041592E5359532E444446303100")


class Handle:
    """A bare pyscard application: one shared handle on the reader, every status code as it comes."""

    def __init__(self, reader: str) -> None:
        from smartcard import scard as s

        self.s = s
        self.reader = reader
        hr, self.ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        assert hr == 0
        self.h: int | None = None
        self.pci: Any = s.SCARD_PCI_T1

    def connect(self) -> int:
        s = self.s
        hr, h, proto = s.SCardConnect(self.ctx, self.reader, s.SCARD_SHARE_SHARED,
                                      s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1)
        if hr == 0:
            self.h = h
            self.pci = s.SCARD_PCI_T0 if proto == s.SCARD_PROTOCOL_T0 else s.SCARD_PCI_T1
        return int(hr) & 0xFFFFFFFF

    def transmit(self, apdu: bytes) -> tuple[int, bytes]:
        assert self.h is not None
        hr, resp = self.s.SCardTransmit(self.h, self.pci, list(apdu))
        return int(hr) & 0xFFFFFFFF, bytes(resp or b"")

    def present(self) -> bool:
        hr, states = self.s.SCardGetStatusChange(self.ctx, 0, [(self.reader, self.s.SCARD_STATE_UNAWARE)])
        return hr == 0 and bool(states[0][1] & self.s.SCARD_STATE_PRESENT)

    def close(self) -> None:
        if self.h is not None:
            self.s.SCardDisconnect(self.h, self.s.SCARD_LEAVE_CARD)
            self.h = None
        self.s.SCardReleaseContext(self.ctx)


async def until(clock: Clock, cond: Any, timeout: float = 15.0, what: str = "") -> None:
    """Poll ``cond`` (a blocking predicate, run off the loop) every 0.1 s until true."""
    deadline = clock.now() + timeout
    while not await run_external(clock, cond):
        assert clock.now() < deadline, f"timed out waiting for {what or cond}"
        with clock.external():
            await asyncio.sleep(0.1)


class Pins:
    async def __call__(self, tries: int | None) -> str | None:
        return load_profile(PROFILE).pin


async def emv_read(reader: PcscReader, clock: Clock) -> Any:
    await reader.power_on()
    kernel = EmvKernel(reader, clock, unpredictable=lambda: b"\x01\x02\x03\x04")
    return await kernel.read(Transaction(1000, TransactionType.BALANCE_INQUIRY), Pins())


@asynccontextmanager
async def relay_rig(pcscd: Pcscd, clock: VirtualClock) -> AsyncIterator[tuple[CardRelay, PcscReader, Handle]]:
    card = VpcdClient(card_for_profile(load_profile(PROFILE)), clock=clock, port=pcscd.slot_port(0))
    await card.insert()                                   # the "real" card, in reader slot 0
    source = open_reader(f"pcsc://{pcscd.reader_name(0)}?poll=0.2", clock=clock)
    relay = CardRelay(source, clock=clock, vpcd=("127.0.0.1", pcscd.slot_port(1)),
                      target_reader=pcscd.reader_name(1), reinsert_after=1.0)
    RIGS.append(relay)
    app = open_reader(f"pcsc://{pcscd.reader_name(1)}?poll=0.2", clock=clock)
    assert isinstance(app, PcscReader)
    handle = Handle(pcscd.reader_name(1))
    try:
        with clock.external():
            await relay.start()
            ev = await app.next_event(20)
            assert ev is not None and ev.kind is ReaderEventKind.CARD_INSERTED, ev
            yield relay, app, handle
    finally:
        await app.close()
        await run_external(clock, handle.close)
        await relay.stop()
        await card.remove()


@pytest.mark.pcsc
def test_relay_presents_the_card_and_each_fault_reaches_the_application(
        pcscd: Pcscd, vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    atr = card_for_profile(load_profile(PROFILE)).atr

    async def main() -> None:
        async with relay_rig(pcscd, vclock) as (relay, app, handle):
            with vclock.external():
                # clean: a whole EMV read through pcscd → relay → pcscd → the card
                read = await emv_read(app, vclock)
                assert read.pan == load_profile(PROFILE).pan and read.cryptogram_type.name == "ARQC"
                assert relay.atr == atr
                steps = [e.what for e in relay.trace if e.kind is Kind.APDU]
                assert steps[:2] == ["SELECT", "READ RECORD"] and steps[-1] == "GENERATE AC"
                assert diagnose(list(relay.trace)).groups == []
                text = "".join(e.to_json() for e in relay.trace)
                assert load_profile(PROFILE).pan not in text                  # no APDU data in the trace

                # a brown-out in GENERATE AC: 6F00, then PC/SC says the card was reset (0x80100068)
                assert await run_external(vclock, handle.connect) == 0
                relay.arm("reader.dirty-contacts@crypto-brownout:onset=power-on", name="dirty")
                with pytest.raises(Exception, match=r"6F00|6f00|GENERATE AC"):
                    await emv_read(app, vclock)
                assert relay.stats["resets"] == 1
                await until(vclock, lambda: relay.stats["reset_notices"] == 1, what="the reset notice")
                hr, _ = await run_external(vclock, handle.transmit, SELECT_PSE)
                assert hr == SCARD_W_RESET_CARD, hex(hr)
                assert diagnose(list(relay.trace)).groups[0] == "contacts"
                relay.disarm("dirty")
                await app.power_off()

                # the cardholder pulls the card while it is read: the slot empties (0x80100069)
                await run_external(vclock, handle.close)
                handle = Handle(pcscd.reader_name(1))
                assert await run_external(vclock, handle.connect) == 0
                relay.arm("user.card-pulled@while-reading", name="pull")
                with pytest.raises((ReaderError, ChipReadError)):
                    await emv_read(app, vclock)             # the command in flight gets nothing back
                await until(vclock, lambda: not handle.present(), what="the slot to empty")
                hr, _ = await run_external(vclock, handle.transmit, SELECT_PSE)
                assert hr == SCARD_W_REMOVED_CARD, hex(hr)
                assert relay.stats["pulled"] == 1
                assert diagnose(list(relay.trace)).groups == ["card-pulled"]
                relay.disarm("pull")
                await until(vclock, handle.present, what="the card to come back")

                # a dead reader: the card disappears and does not come back while it is dead
                relay.arm("reader.dropped@dead", name="dead")
                await until(vclock, lambda: not handle.present(), what="the slot to empty")
                assert "reader.no_response" in [e.data.get("code") for e in relay.trace]
                relay.disarm("dead")
                await until(vclock, handle.present, what="the card to come back")
                assert relay.status()["presented"]

    try:
        vrun.run(main())
    except BaseException:
        import sys
        for r in RIGS:
            for e in r.trace:
                print(e.to_json(), file=sys.stderr)
        raise


RIGS: list[CardRelay] = []


def test_apdu_names() -> None:
    assert apdu_name(SELECT_PSE) == "SELECT" and apdu_name(b"\x00") == "?" and apdu_name(b"\x00\x99") == "INS 99"


def test_relay_refuses_faults_it_cannot_apply(vclock: VirtualClock) -> None:
    from protocol.errors import ConfigError

    relay = CardRelay(open_reader("sim://cup_debit", clock=vclock), clock=vclock, vpcd=("127.0.0.1", 9))
    with pytest.raises(ConfigError, match="network link, which the relay does not have"):
        relay.arm("network.weak-wifi")
    with pytest.raises(ConfigError, match="cannot see the moment sign-on"):
        relay.arm("reader.dirty-contacts:onset=sign-on")
    t = relay.arm("reader.dirty-contacts")                     # onset card-read: waits for the card
    assert t.enabled and not t.armed and t.onset == "card-read"


@pytest.mark.pcsc
def test_relay_command(pcscd: Pcscd, tmp_path: Path) -> None:
    """``posemu relay`` in its own process relays slot 0 to slot 1; a fault from the command line; its
    trace written when it stops."""
    trace = tmp_path / "relay.jsonl"
    env = {**os.environ, **pcscd.env()}

    async def main() -> None:
        clock = RealClock()                  # a real child process: real time, bounded waits
        card = VpcdClient(card_for_profile(load_profile(PROFILE)), clock=clock, port=pcscd.slot_port(0))
        await card.insert()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "relay", "--from", f"pcsc://{pcscd.reader_name(0)}?poll=0.2",
            "--to", f"vpcd:{pcscd.slot_port(1)}", "--trace", str(trace), "--fault", "reader.aging@slow-chip:wtx_s=0.01",
            "--for", "60", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        handle = Handle(pcscd.reader_name(1))
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line.startswith("posemu relay: pcsc://") and pcscd.reader_name(1) in line, line
            await until(clock, handle.present, what="the relayed card on slot 1")
            assert await run_external(clock, handle.connect) == 0
            hr, resp = await run_external(clock, handle.transmit, SELECT_PSE)
            assert hr == 0 and resp[-2:] == b"\x90\x00"
            await run_external(clock, handle.close)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await card.remove()

    asyncio.run(main())
    entries = read_trace(trace)
    assert [e.what for e in entries if e.kind is Kind.APDU] == ["SELECT"]
    assert any(e.what.startswith("toxic enabled") for e in entries)
