"""The UI's fault adapter applies network, DNS and account faults to a running rig, and undoes them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from emulator.app import open_rig
from emulator.config import TerminalConfig
from emulator.messages import Msg
from emulator.ports import ScriptedPinPad
from emulator.ui.faults_adapter import ActiveFault, FaultsAdapter
from hardware.clock import VirtualClock


def test_link_dns_and_account_faults_apply_and_undo(vrun: asyncio.Runner, vclock: VirtualClock,
                                                     tmp_path: Path) -> None:
    adapter = FaultsAdapter().load()
    assert adapter.available

    async def main() -> list[tuple[Msg, Msg | None, bool]]:
        rig = await open_rig(TerminalConfig(), clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"))
        out = []
        try:
            assert (await rig.terminal.sign_on()).approved
            for fault in (ActiveFault("network.congestion", (("latency", "40"),)),
                          ActiveFault("network.dns", (("mode", "fail"),)),
                          ActiveFault("account.not-permitted", (("card_permissions", "purchase"),))):
                armed = await adapter.arm(rig, [fault])
                try:
                    o = await rig.terminal.balance_inquiry()
                finally:
                    await armed.disarm()
                out.append((o.headline, o.detail, o.approved))
            o = await rig.terminal.balance_inquiry()          # everything undone: approved again
            out.append((o.headline, o.detail, o.approved))
        finally:
            await rig.close()
        return out

    results = vrun.run(main())
    assert results[0][:2] == (Msg.QUERY_CARD_FAILED, Msg.TIMEOUT)
    assert results[1][:2] == (Msg.QUERY_CARD_FAILED, Msg.DNS_FAILED)
    assert results[2][:2] == (Msg.QUERY_CARD_FAILED, Msg.NOT_PERMITTED)
    assert results[3] == (Msg.APPROVED_BALANCE, None, True)
