"""Run faults through the real stack and check what happened.

For a set of :class:`~faults.model.FaultSpec` s the runner builds the whole world — bundled host
(real asyncio TCP server on 127.0.0.1, SQLite) or the user's host, the fault proxy on the path, the
resolver, the reader backend (sim, serial pty, PC/SC) wrapped by the fault reader, the environment,
the terminal's clock, terminal and journal — on the given clock, attaches the faults through the
seam (:mod:`faults.seam`), runs the steps (sign-on, balance inquiry, purchase, crash and
restart…), takes the technician's readings (:mod:`faults.instruments`) and diagnoses
(:mod:`faults.diagnose`). For a catalogue preset it then checks:

* **screens** — the expected message codes appear, in order;
* **outcome** — approved or not, as expected;
* **diagnosis** — exactly the expected cause groups are named (the first of them on top), from the
  trace and the readings only;
* **journal** — no transaction lost or duplicated, none left pending, every unknown purchase
  reversed and acknowledged; what the preset says the journal must show;
* **money** — the cardholder's balance at the host moved exactly by the approved, unreversed
  purchases (B20: a failed transaction leaves the cardholder unharmed);
* **evidence** — for mild faults, the evidence code of the recovered errors is in the trace.

Every run is bounded: each step has a deadline on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emulator.app import Rig
from emulator.config import TerminalConfig
from emulator.messages import Msg, Screen
from emulator.terminal import Outcome
from faults.catalogue import Catalogue, load
from faults.checks import (
    Check,
    RunResult,
    _codes_in,
    check_diagnosis,
    final_outcome,
    journal_checks,
    journal_money,
    subsequence,
)
from faults.diagnose import Diagnosis, diagnose
from faults.grammar import spec_from
from faults.injectors import Plan
from faults.instruments import self_test
from faults.model import Fault, FaultSpec, Preset
from faults.reader import FaultyReader
from faults.seam import Injection
from faults.world import HOST_NAME, Run, _base, base_config, current_base, for_bundled_host, vpcd_available
from hardware.clock import Clock, VirtualClock
from protocol.errors import PosemuError
from protocol.iso import Message

STEP_DEADLINE_S = 900.0
"""No step of a run takes longer than this on the clock (a deadlock is a failed run, not a hang)."""


def make_plan(specs: Sequence[FaultSpec], *, preset: Preset | None = None, seed: int = 7, card: str | None = None,
              txn: str | None = None, steps: Sequence[str] | None = None, reader_url: str | None = None,
              cfg: TerminalConfig | None = None, amount: int | None = None,
              pin: str | None = None) -> tuple[Plan, Injection]:
    """The world before power-on for these faults, and the injection that will arm them. The terminal
    starts from ``cfg``, else from the base configuration (:func:`base_config`), else the defaults."""
    base = cfg or _base()
    if preset is not None and preset.config:
        conf = dict(preset.config)
        timeouts = conf.pop("timeouts", None)
        if timeouts:
            base = replace(base, timeouts=replace(base.timeouts, **{k: float(v) for k, v in timeouts.items()}))
        base = replace(base, **conf)
    first = specs[0].fault if specs else None
    plan = Plan(cfg=base, card=card or (preset.card if preset else None) or (first.card if first else "demo"),
                txn=txn or (preset.txn if preset else None) or (first.txn if first else "balance"), seed=seed)
    if amount is not None:
        plan.amount = amount
    if pin is not None:
        plan.habits.pins = [pin]
    injection = Injection(list(specs), seed=seed)
    injection.prepare(plan)
    if preset is not None and preset.steps:
        plan.steps = list(preset.steps)
    if steps:
        plan.steps = list(steps)
    if preset is not None and preset.reader:
        plan.reader_url = preset.reader
    if reader_url:
        plan.reader_url = reader_url
    return plan, injection

DEFAULT_STEPS = {"balance": ["sign_on", "balance"], "purchase": ["sign_on", "purchase"],
                 # the transaction set: each with the original it needs first (issue 12)
                 "preauth": ["sign_on", "preauth"], "void": ["sign_on", "purchase", "void"],
                 "refund": ["sign_on", "purchase", "refund"], "complete": ["sign_on", "preauth", "complete"],
                 "settle": ["sign_on", "purchase", "settle"], "sign_off": ["sign_on", "sign_off"]}
_ACTIONABLE = {"void": ("purchase", "preauth", "completion"), "refund": ("purchase", "completion"),
               "complete": ("preauth",)}


async def _steps(run: Run, outcomes: list[Outcome]) -> None:
    plan = run.plan
    rig = await run.open_terminal()
    steps = plan.steps or DEFAULT_STEPS.get(plan.txn, ["sign_on", plan.txn])
    for i, step in enumerate(steps, start=1):
        run.injection.step(i)
        name, _, arg = step.partition(":")
        t = rig.terminal
        try:
            async with asyncio.timeout(STEP_DEADLINE_S):
                out = await _step(run, rig, name, arg)
        except TimeoutError:
            raise PosemuError(f"step {i} ({step}) did not finish within {STEP_DEADLINE_S:g} s: a deadlock") from None
        rig = run.rig or rig
        if out is not None:
            outcomes.append(out)
            if name == "sign_on" and not out.approved and i < len(steps) and steps[i].split(":")[0] != "sign_on" \
                    and not plan.steps:
                break          # a failed sign-on is the result: nothing runs after it
        del t


async def _step(run: Run, rig: Rig, name: str, arg: str) -> Outcome | None:
    t = rig.terminal
    plan = run.plan
    if name == "sign_on":
        return await t.sign_on()
    if name == "sign_off":
        return await t.sign_off()
    if name == "balance":
        return await t.balance_inquiry()
    if name == "purchase":
        return await t.purchase(int(arg) if arg else plan.amount)
    if name == "preauth":
        return await t.preauth(int(arg) if arg else plan.amount)
    if name in _ACTIONABLE:
        # ``void[:journal id]``, ``refund[:amount]``, ``complete[:amount]``: the last original that fits
        orig = rig.journal.get(int(arg)) if name == "void" and arg else rig.journal.last(_ACTIONABLE[name])
        if orig is None:
            raise PosemuError(f"scenario step {name!r}: no transaction to act on in the journal")
        if name == "void":
            return await t.void(orig.id)
        if name == "refund":
            return await t.refund(int(arg) if arg else orig.amount, original_id=orig.id)
        return await t.complete(orig.id, int(arg) if arg else None)
    if name == "settle":
        return await t.settle()
    if name == "operator":
        t.operator_login(arg)
        return None
    if name == "reversals":
        await t.send_pending_reversals()
        return None
    if name == "clean":
        r = rig.reader
        if isinstance(r, FaultyReader):
            r.clean()
        return None
    if name == "crash_purchase":
        # the application dies right after the purchase request left: the task is killed. If the request
        # never reaches the host (the link is down), the purchase ends by itself first.
        sent = asyncio.Event()

        def on_request(m: Message, ev: asyncio.Event = sent) -> None:
            if m.mti == "0200":
                ev.set()

        if run.host is not None:
            run.host.observers.append(on_request)
        task = asyncio.ensure_future(t.purchase(int(arg) if arg else plan.amount))
        waiter = asyncio.ensure_future(sent.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            return task.result() if not task.cancelled() and task.exception() is None else None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, PosemuError):
            await task
        # what the operator saw: the terminal died in the middle of a purchase
        return Outcome("purchase", False, Msg.SYSTEM_ERROR, error="the application stopped in the middle of a purchase")
    if name == "restart":
        await rig.terminal.close()
        rig.journal.close()
        run.rig = None
        await run.open_terminal()
        return None
    raise PosemuError(f"unknown scenario step {name!r}")


@dataclass(slots=True)
class Ran:
    """A finished :func:`run_specs`: the run (the caller closes it), its outcomes, the diagnosis and the
    readings."""

    run: Run
    outcomes: list[Outcome]
    diagnosis: Diagnosis
    readings: dict[str, Any]


async def run_specs(specs: Sequence[FaultSpec], *, clock: Clock, state: Path, preset: Preset | None = None,
                    seed: int = 7, card: str | None = None, txn: str | None = None,
                    steps: Sequence[str] | None = None, reader_url: str | None = None,
                    cfg: TerminalConfig | None = None, amount: int | None = None, external_host: str | None = None,
                    display: Callable[[Screen], None] | None = None, self_test_too: bool = True,
                    pin: str | None = None) -> Ran:
    """Build the world for ``specs``, run its steps, take the readings and diagnose. The caller closes
    ``ran.run``."""
    plan, injection = make_plan(specs, preset=preset, seed=seed, card=card, txn=txn, steps=steps,
                                reader_url=reader_url, cfg=cfg, amount=amount, pin=pin)
    run = Run(plan, injection, clock, state, external_host=external_host,
              base=for_bundled_host(cfg) if cfg is not None else None)
    run.display = display
    outcomes: list[Outcome] = []
    await run.start_host()
    await _steps(run, outcomes)
    rig = run.rig
    if rig is None:
        raise PosemuError("the run left no terminal running")
    run.freeze_struck()
    readings = await self_test(rig, run.points, run.sheet(), seed=seed) if self_test_too else {}
    return Ran(run, outcomes, diagnose(list(rig.trace), outcomes, readings), readings)


def run_journal_checks(run: Run, preset: Preset) -> list[Check]:
    """:func:`faults.checks.journal_checks` on a run's terminal journal and bundled host."""
    assert run.rig is not None
    return journal_checks(run.rig.journal, preset, store=run.host.store if run.host is not None else None,
                          pan=run.pan, balance_before=run.balance_before)


async def run_preset(fault: Fault, preset: Preset, *, clock: Clock, state: Path, seed: int = 7,
                     catalogue: Catalogue | None = None, extra: Sequence[FaultSpec] = ()) -> RunResult:
    cat = catalogue or load()
    spec = spec_from(fault.id, cat, preset=preset.name)
    result = RunResult(fault, preset, [spec, *extra])
    t0_wall, t0_virtual = time.perf_counter(), clock.now()
    if preset.reader == "vpcd" and not vpcd_available():
        result.skipped = "needs pcscd with the vsmartcard vpcd driver (started by `make test`)"
        return result
    ran: Ran | None = None
    try:
        ran = await run_specs(result.specs, clock=clock, state=state, preset=preset, seed=seed)
        run = ran.run
        rig = run.rig
        assert rig is not None
        result.outcomes, result.diagnosis = ran.outcomes, ran.diagnosis
        result.codes = run.screens
        result.trace = [e.to_json() for e in rig.trace]
        result.struck = run.struck()
        result.checks.append(Check("screens", subsequence(preset.expect, result.codes),
                                   f"expected {list(preset.expect)} in {result.codes}"))
        final = final_outcome(result.outcomes)
        if preset.approved is not None:
            got = final.approved if final else None
            result.checks.append(Check("outcome", got == preset.approved,
                                       f"expected approved={preset.approved}, got {got}"))
        result.checks.append(check_diagnosis(ran.diagnosis, preset.diagnosis))
        result.checks.extend(run_journal_checks(run, preset))
        if preset.evidence:
            seen = _codes_in(list(rig.trace))
            reading = ran.readings.get(preset.evidence)
            ok = preset.evidence in seen or (isinstance(reading, int | float) and reading > 0)
            result.checks.append(Check(f"evidence: {preset.evidence}", ok,
                                       f"reading {reading!r}; codes seen: {sorted(seen)}"))
    except PosemuError as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        if ran is not None:
            await ran.run.close()
    result.wall_s = time.perf_counter() - t0_wall
    result.virtual_s = clock.now() - t0_virtual
    return result


def all_presets(cat: Catalogue, only: list[str] | None = None) -> list[tuple[Fault, Preset]]:
    out = []
    for f in cat.faults.values():
        if only and f.id not in only:
            continue
        for p in f.presets:
            out.append((f, p))
    return out


all_scenarios = all_presets


def run_one(fault: Fault, preset: Preset, state: Path, seed: int = 7) -> RunResult:
    """Run one preset on a fresh virtual clock (blocking)."""
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        return runner.run(run_preset(fault, preset, clock=clock, state=state, seed=seed))


__all__ = [
    "DEFAULT_STEPS",
    "HOST_NAME",
    "STEP_DEADLINE_S",
    "Check",
    "Msg",
    "Ran",
    "Run",
    "RunResult",
    "all_presets",
    "all_scenarios",
    "base_config",
    "current_base",
    "final_outcome",
    "for_bundled_host",
    "journal_money",
    "load",
    "make_plan",
    "run_journal_checks",
    "run_one",
    "run_preset",
    "run_specs",
    "subsequence",
    "vpcd_available",
]
