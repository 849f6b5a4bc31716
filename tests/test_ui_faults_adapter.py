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


def test_stripe_and_swipe_faults_reach_the_next_swipe(vrun: asyncio.Runner, vclock: VirtualClock,
                                                      tmp_path: Path) -> None:
    from emulator.app import _find_sim
    from hardware.magstripe import SwipeParams, simulate_swipe
    from hardware.sim import stripe_damage

    adapter = FaultsAdapter().load()

    async def main() -> None:
        rig = await open_rig(TerminalConfig(), clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"),
                             auto_cardholder=False)
        sim = _find_sim(rig.reader)
        assert sim is not None and sim.default_card is not None
        full = sim.default_card.stripe
        try:
            armed = await adapter.arm(rig, [ActiveFault("stripe.incomplete", (("keep_chars", "12"),))])
            assert sim.default_card.stripe[1] == (full[1] or "")[:12]
            await armed.disarm()
            assert sim.default_card.stripe == full
            armed = await adapter.arm(rig, [ActiveFault("stripe.damaged", ())])
            worn = stripe_damage(sim.default_card)        # the damaged card is in the slot now
            assert worn
            report = simulate_swipe(full, SwipeParams(damage=worn, seed=1))
            t2 = report.result.track(2)
            assert t2 is not None and not t2.ok          # what the UI's next swipe will meet
            await armed.disarm()
            assert stripe_damage(sim.default_card) == ()
            armed = await adapter.arm(rig, [ActiveFault("user.swipe-too-fast", ())])
            assert rig.swipe_faults == {"speed_ips": 800.0} and armed.hints
            await armed.disarm()
            assert rig.swipe_faults == {}
        finally:
            await rig.close()

    vrun.run(main())
