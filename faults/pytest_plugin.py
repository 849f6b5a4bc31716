"""pytest plugin (entry point ``pytest11``): write your own fault regressions.

Fixtures (all on a virtual clock, everything on 127.0.0.1):

* ``posemu_clock`` — a :class:`hardware.clock.VirtualClock`;
* ``posemu_runner`` — an :class:`asyncio.Runner` whose loop runs on that clock;
* ``posemu_host`` — the bundled host simulator (``cup`` profile, demo data), started;
* ``posemu_terminal`` — a factory: ``posemu_terminal(card="cup_debit", reader=None, pins=("123456",))``
  gives a :class:`emulator.app.Rig` connected to ``posemu_host``;
* ``posemu_inject`` — sign on and run one transaction with faults, given in the CLI's grammar
  (``"reader.dirty-contacts@mild:onset=online"``); keyword arguments override a single fault's
  parameters (``contact_ohms=40``). Returns an :class:`InjectedRun` with ``.codes``,
  ``.outcomes``, ``.final``, ``.approved``, ``.diagnosis``, ``.groups``, ``.readings`` and ``.trace``.
  ``card=``, ``txn=`` (balance, purchase, preauth, void, refund, complete, settle, sign_off),
  ``steps=``, ``amount=``, ``pin=``, ``seed=`` and ``host="127.0.0.1:PORT"`` (your own host)
  compose with the faults.

Example::

    def test_dirty_contacts_give_query_card_failed(posemu_inject):
        run = posemu_inject("reader.dirty-contacts", contact_ohms=40)
        assert "QUERY_CARD_FAILED" in run.codes
        assert run.groups[0] == "contacts"
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
    """What one injected run did: the message codes shown, every outcome (sign-on included), the
    diagnosis (ranked cause groups with evidence), the trace, the technician's readings."""

    codes: list[str]
    outcomes: list[Any]
    diagnosis: Any
    trace: list[Any] = field(default_factory=list)
    readings: dict[str, Any] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    final: Any = None

    @property
    def approved(self) -> bool:
        """Did the run's last transaction (not the sign-on, unless nothing else ran) succeed?"""
        return self.final is not None and bool(self.final.approved)

    @property
    def groups(self) -> list[str]:
        """The cause groups the diagnosis names, most likely first."""
        return list(self.diagnosis.groups)


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
    from faults.grammar import parse_spec, spec_from
    from faults.runner import final_outcome, run_specs

    counter = [0]

    def inject(*specs: str, card: str | None = None, txn: str | None = None, steps: list[str] | None = None,
               seed: int = 7, amount: int | None = None, pin: str | None = None, host: str | None = None,
               readings: bool = True, **params: Any) -> InjectedRun:
        """Run with these faults (``ID[@PRESET][:k=v,…]``, the CLI's grammar). Keyword ``params``
        (typed values, ``onset`` too) override the parameters of a single fault."""
        cat = load()
        chosen = [parse_spec(text, cat) for text in specs]
        if params:
            if len(chosen) != 1:
                raise TypeError("keyword parameters need exactly one fault; give several faults as "
                                "'ID:k=v' specs instead")
            first = chosen[0]
            given: dict[str, Any] = {k: v for k, v in first.values.items() if v != first.fault.defaults().get(k)}
            given.update(params)
            if first.onset != first.fault.onset and "onset" not in params:
                given["onset"] = str(first.onset)
            chosen = [spec_from(first.id, cat, preset=first.preset, given=given)]
        counter[0] += 1

        async def go() -> InjectedRun:
            ran = await run_specs(chosen, clock=posemu_clock, state=tmp_path / f"inject{counter[0]}", card=card,
                                  txn=txn, steps=steps, seed=seed, amount=amount, pin=pin, external_host=host,
                                  self_test_too=readings)
            try:
                trace = list(ran.run.rig.trace) if ran.run.rig else []
                return InjectedRun(list(ran.run.screens), ran.outcomes, ran.diagnosis, trace, ran.readings,
                                   [str(s) for s in chosen], final_outcome(ran.outcomes))
            finally:
                await ran.run.close()

        return posemu_runner.run(go())

    return inject
