"""The virtual clock: what a 60 s timeout costs in wall time (the tests prove it is jumped, not waited).

Targets: a bare 60 s ``asyncio.timeout`` ≤ 50 ms; a balance inquiry whose host never answers (sign-on,
card, PIN, 60 s response timeout, reversal bookkeeping) ≤ 1 s.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from emulator.app import open_rig
from emulator.config import TerminalConfig
from emulator.host.rules import HostRule, HostRules
from emulator.ports import ScriptedPinPad
from hardware.clock import VirtualClock
from tests.bench import BenchResult


def _bare_timeout() -> float:
    clock = VirtualClock()

    async def main() -> None:
        try:
            async with asyncio.timeout(60.0):
                await asyncio.get_running_loop().create_future()
        except TimeoutError:
            pass

    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        t0 = time.perf_counter()
        runner.run(main())
        return time.perf_counter() - t0


def _host_timeout() -> tuple[float, float]:
    clock = VirtualClock()

    async def main(state: Path) -> None:
        rig = await open_rig(TerminalConfig(), clock=clock, state_dir=state, pinpad=ScriptedPinPad("123456"),
                             host_rules=HostRules([HostRule.parse("no-response:mti=0200")]))
        try:
            await rig.terminal.sign_on()
            await rig.terminal.balance_inquiry()
        finally:
            await rig.close()

    with tempfile.TemporaryDirectory() as d, asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        t0 = time.perf_counter()
        runner.run(main(Path(d)))
        return time.perf_counter() - t0, clock.now()


def run() -> list[BenchResult]:
    bare = min(_bare_timeout() for _ in range(5))
    wall, virtual = min(_host_timeout() for _ in range(3))
    return [
        BenchResult("60 s asyncio.timeout on the virtual clock", bare * 1000, "ms wall", "<= 50 ms", bare <= 0.05),
        BenchResult(f"inquiry with a 60 s host timeout ({virtual:.0f} s virtual)", wall * 1000, "ms wall",
                    "<= 1000 ms", wall <= 1.0),
    ]
