"""Balance inquiries end to end through the real reader stacks: pyscard → pcscd → vpcd → virtual
chip card, and pyserial → pty → emulated MSR605; plus the CLI with ``--reader serial://…``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.app import open_rig
from emulator.cli import main
from emulator.config import TerminalConfig
from emulator.messages import Msg, Screen
from emulator.ports import ScriptedPinPad
from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.msr605_device import Msr605Device, Msr605PtyServer
from hardware.sim import card_for_profile
from tests.pcsc_fixtures import Pcscd

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.pcsc
def test_emv_inquiry_through_pcscd_and_vpcd(pcscd: Pcscd, vrun: asyncio.Runner, vclock: VirtualClock,
                                            tmp_path: Path) -> None:
    from hardware.vpcd import VpcdClient

    card = card_for_profile(load_profile("cup_debit"))

    async def run() -> list[str]:
        client = VpcdClient(card, clock=vclock, port=pcscd.slot_port(0))
        cfg = replace(TerminalConfig(), reader=f"pcsc://{pcscd.reader_name(0)}?poll=0.2")
        rig = await open_rig(cfg, clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"))
        tasks: set[asyncio.Task[None]] = set()

        def cardholder(s: Screen) -> None:       # a person at a real reader: insert when asked, remove after
            action = {Msg.INSERT_OR_SWIPE: client.insert, Msg.REMOVE_CARD: client.remove}.get(s.msg)
            if action is not None:
                t = asyncio.ensure_future(action())
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        rig.terminal.add_display(cardholder)
        try:
            assert (await rig.terminal.sign_on()).approved
            out = await rig.terminal.balance_inquiry()
            assert out.approved, out
            assert any(e.what == "GENERATE AC" or e.data.get("ins") == "AE" for e in rig.trace)
            return out.codes
        finally:
            await rig.close()
            await client.remove()

    codes = vrun.run(run())
    assert codes[-2:] == ["APPROVED_BALANCE", "REMOVE_CARD"]
    assert "ENTER_PIN" in codes


def test_magstripe_inquiry_through_a_pty_msr605(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path) -> None:
    card = card_for_profile(load_profile("demo"))

    async def run() -> list[str]:
        server = Msr605PtyServer(Msr605Device(), clock=vclock, stripe=card.stripe, auto_swipe=0.5)
        path = await server.start()
        cfg = replace(TerminalConfig(), reader=f"serial://{path}?baud=9600")
        rig = await open_rig(cfg, clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"))
        try:
            assert (await rig.terminal.sign_on()).approved
            out = await rig.terminal.balance_inquiry()
            assert out.approved and out.balance == 1234567
            return out.codes
        finally:
            await rig.close()
            await server.close()

    codes = vrun.run(run())
    assert codes == ["INSERT_OR_SWIPE", "READING_CARD", "ENTER_PIN", "PROCESSING", "APPROVED_BALANCE"]


def test_cli_inquiry_with_a_serial_reader(tmp_path: Path) -> None:
    """`posemu device msr --pty` in its own process, `posemu inquiry --reader serial://…` against it."""
    dev = subprocess.Popen([sys.executable, "-m", "emulator.cli", "device", "msr", "--pty", "--auto-swipe", "300"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert dev.stdout is not None
        path = None
        for _ in range(20):                      # bounded: the first lines name the pty
            line = dev.stdout.readline()
            if "/dev/pts/" in line:
                path = next(w for w in line.split() if w.startswith("/dev/pts/"))
                break
        assert path, "the device did not print its pty"
        res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--reader", f"serial://{path}",
                                        "--state", str(tmp_path), "--lang", "en"])
        assert res.exit_code == 0, res.output
        assert "[APPROVED_BALANCE] Approved  balance: CNY 12,345.67" in res.output
    finally:
        dev.terminate()
        dev.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.pcsc
def test_cli_inquiry_with_pcsc_reader_index(pcscd: Pcscd, tmp_path: Path) -> None:
    """`posemu card serve` in its own process puts the chip card in vpcd's reader;
    `posemu inquiry --reader pcsc://0` completes an EMV balance inquiry through pcscd."""
    serve = subprocess.Popen([sys.executable, "-m", "emulator.cli", "card", "serve", "--profile", "cup_debit",
                              "--vpcd", f"127.0.0.1:{pcscd.slot_port(0)}"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **pcscd.env(), "PYTHONPATH": str(ROOT)})
    cfg = tmp_path / "terminal.toml"
    cfg.write_text("[timeouts]\nremoval = 1\ncard = 20\n", encoding="utf-8")   # nobody pulls the card out
    try:
        assert serve.stdout is not None
        for _ in range(20):                      # bounded: wait until the card is in the reader
            if "serving" in serve.stdout.readline():
                break
        res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--reader", "pcsc://0", "--card", "cup_debit",
                                        "--config", str(cfg), "--state", str(tmp_path), "--lang", "en"])
        assert "[APPROVED_BALANCE] Approved  balance: CNY 12,345.67" in res.output, res.output
        assert "[REMOVE_CARD] Remove card" in res.output
    finally:
        serve.terminate()
        serve.wait(timeout=10)
