"""A purchase is sent, the terminal process is killed before the response, and restarted:
the reversal goes out and the host balance is back where it was."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from emulator.app import open_rig
from emulator.config import TerminalConfig
from emulator.host.logic import Decision
from emulator.host.rules import HostRule, HostRules
from emulator.host.server import HostServer
from emulator.journal import Reversal, Status
from emulator.ports import ScriptedPinPad
from hardware.clock import RealClock
from protocol.iso import Message
from protocol.specs import PROFILES, Profile

PAN = "9900010000000019"
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_killed_terminal_sends_reversal_after_restart(tmp_path: Path, profile: Profile) -> None:
    """On both profiles: the iso87ascii reversal carries field 90, so its MAC is field 128."""
    clock = RealClock()

    async def main() -> None:
        # the host never answers the purchase: the terminal is killed while it waits
        rules = HostRules([HostRule.parse("drop-response:mti=0200,count=1")])
        host = await HostServer.start(profile, clock=clock, db=tmp_path / "host.sqlite3", rules=rules)
        got_purchase = asyncio.Event()

        def watch(msg: Message, decision: Decision) -> None:
            if msg.mti == "0200":
                got_purchase.set()

        host.decided.append(watch)
        acct = host.store.card(PAN).account_id  # type: ignore[union-attr]
        before = host.store.balance(acct)[0]
        state = tmp_path / "terminal"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "emulator.cli", "purchase", "--amount", "42.00", "--card", "demo",
            "--host", f"127.0.0.1:{host.port}", "--state", str(state), "--profile", profile.name,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            async with asyncio.timeout(60):      # bounded: the child starts, signs on, sends the 0200
                await got_purchase.wait()
            # the host has debited the account and will never answer; kill the terminal hard
            assert host.store.balance(acct)[0] == before - 42_00
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        # restart: a new terminal on the same state folder
        rig = await open_rig(TerminalConfig(host=f"127.0.0.1:{host.port}", profile=profile.name), clock=clock,
                             state_dir=state,
                             pinpad=ScriptedPinPad("123456"))
        try:
            pending = rig.journal.pending_reversals()
            assert len(pending) == 1 and pending[0][0].status is Status.UNKNOWN
            assert pending[0][1].get(2) == PAN           # the sealed reversal data survived the crash
            assert (await rig.terminal.sign_on()).approved
            assert await rig.terminal.send_pending_reversals() == 1
            entry = rig.journal.get(pending[0][0].id)
            assert entry.reversal is Reversal.DONE
            assert rig.journal.pending_reversals() == []
        finally:
            await rig.close()
            after = host.store.balance(acct)[0]
            await host.close()
        assert after == before

    asyncio.run(main())
