"""pytest plugin (entry point ``pytest11``): write your own fault regressions.

Fixtures (all on a virtual clock, everything on 127.0.0.1):

* ``posemu_clock`` — a :class:`hardware.clock.VirtualClock`;
* ``posemu_runner`` — an :class:`asyncio.Runner` whose loop runs on that clock;
* ``posemu_host`` — the bundled host simulator (``cup`` profile, demo data), started;
* ``posemu_terminal`` — a factory: ``posemu_terminal(card="cup_debit", reader=None, pins=("123456",))``
  gives a :class:`emulator.app.Rig` connected to ``posemu_host``;
* ``posemu_inject`` — run one transaction with faults: ``posemu_inject("reader.dirty-contacts",
  contact_ohms=30, fallback=0)`` returns a :class:`faults.runner.RunResult`-like outcome with
  ``.codes``, ``.outcomes`` and ``.diagnosis``.

Example::

    def test_dirty_contacts_give_query_card_failed(posemu_inject):
        run = posemu_inject("reader.dirty-contacts", contact_ohms=40, fallback=0)
        assert "QUERY_CARD_FAILED" in run.codes
        assert {"A1", "B2"} <= run.diagnosis.cause_ids
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass(slots=True)
class InjectedRun:
    codes: list[str]
    outcomes: list[Any]
    diagnosis: Any
    trace: list[Any] = field(default_factory=list)

    @property
    def approved(self) -> bool:
        return bool(self.outcomes) and bool(self.outcomes[-1].approved)


@pytest.fixture
def posemu_clock() -> Any:
    from hardware.clock import VirtualClock

    return VirtualClock()


@pytest.fixture
def posemu_runner(posemu_clock: Any) -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=posemu_clock.new_event_loop) as runner:
        yield runner


@pytest.fixture
def posemu_host(posemu_runner: asyncio.Runner, posemu_clock: Any, tmp_path: Path) -> Iterator[Any]:
    from emulator.host.server import HostServer
    from protocol.specs import CUP

    host = posemu_runner.run(HostServer.start(CUP, clock=posemu_clock, db=tmp_path / "host.sqlite3"))
    yield host
    posemu_runner.run(host.close())


@pytest.fixture
def posemu_terminal(posemu_runner: asyncio.Runner, posemu_clock: Any, posemu_host: Any,
                    tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from dataclasses import replace

    from emulator.app import open_rig
    from emulator.config import TerminalConfig
    from emulator.ports import ScriptedPinPad

    rigs: list[Any] = []

    def make(card: str = "demo", reader: str | None = None, pins: tuple[str, ...] = ("123456",),
             **config: Any) -> Any:
        cfg = replace(TerminalConfig(), host=f"127.0.0.1:{posemu_host.port}", reader=reader or f"sim://{card}",
                      **config)
        rig = posemu_runner.run(open_rig(cfg, clock=posemu_clock, state_dir=tmp_path / f"terminal{len(rigs)}",
                                         pinpad=ScriptedPinPad(*pins)))
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        posemu_runner.run(rig.close())


@pytest.fixture
def posemu_inject(posemu_runner: asyncio.Runner, posemu_clock: Any, tmp_path: Path) -> Callable[..., InjectedRun]:
    from faults.catalogue import load
    from faults.runner import combine, run_setup

    counter = [0]

    def inject(*fault_ids: str, card: str | None = None, txn: str | None = None, steps: list[str] | None = None,
               seed: int = 7, **params: Any) -> InjectedRun:
        cat = load()
        chosen = [(cat.get(fid), dict(params) if i == 0 else {}) for i, fid in enumerate(fault_ids)]
        setup = combine(chosen, card=card, txn=txn, steps=steps, seed=seed)
        counter[0] += 1

        async def go() -> InjectedRun:
            run, outcomes, diag = await run_setup(setup, clock=posemu_clock, state=tmp_path / f"inject{counter[0]}")
            try:
                trace = list(run.rig.trace) if run.rig else []
                return InjectedRun(list(run.screens), outcomes, diag, trace)
            finally:
                await run.close()

        return posemu_runner.run(go())

    return inject
