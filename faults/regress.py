"""The fault-regression suite: every catalogue scenario plus scenario files, on the virtual clock.

Scenario files (TOML, ``faults/scenarios/*.toml`` and any given with ``--scenario``) combine
faults across layers with a schedule::

    name = "contacts-then-network-drop"
    card = "cup_debit"
    txn = "purchase"
    seed = 11
    steps = ["sign_on", "purchase"]            # optional
    [[fault]]
    id = "reader.dirty-contacts"
    params = { contact_ohms = 12.0, contact_from_apdu = 5 }
    [[fault]]
    id = "network.drop-after-send"
    [expect]
    screens = [...]; approved = false; diagnosis = [...]; journal = "reversed"

Runs are seeded and reproducible; with ``--trace-dir`` each run's trace is written as JSON lines
whose first line records the scenario and seed, so ``posemu regress --replay FILE`` runs it again
and compares the event sequence.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from faults.catalogue import Catalogue, Fault, Scenario, load

__all__ = ["Case", "catalogue_cases", "junit", "load", "load_scenario_file", "replay", "run_cases"]
from faults.runner import RunResult, combine, run_scenario
from hardware.clock import VirtualClock
from protocol.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Case:
    """One thing to run: a catalogue scenario, or a scenario file."""

    fault: Fault
    scenario: Scenario
    faults: tuple[tuple[Fault, dict[str, Any]], ...] = ()
    seed: int = 7
    source: str = "catalogue"

    @property
    def name(self) -> str:
        return f"{self.fault.id}[{self.scenario.name}]"


def catalogue_cases(cat: Catalogue, only: list[str] | None = None, seed: int = 7) -> list[Case]:
    cases: list[Case] = []
    for f in cat.faults.values():
        if only and f.id not in only:
            continue
        cases.extend(Case(f, s, seed=seed) for s in f.scenarios)
    return cases


def load_scenario_file(path: Path | str, cat: Catalogue, *, text: str | None = None) -> Case:
    where = str(path)
    try:
        doc = tomllib.loads(text if text is not None else Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"scenario file {where}: {e}") from None
    name = str(doc.get("name") or Path(where).stem)
    faults = []
    for entry in doc.get("fault", []):
        faults.append((cat.get(str(entry["id"])), dict(entry.get("params", {}))))
    if not faults:
        raise ConfigError(f"scenario file {where}: no [[fault]]")
    exp = doc.get("expect", {})
    from faults.catalogue import _codes

    causes = tuple(sorted({c for f, _ in faults for c in f.causes}))
    scenario = Scenario(
        name=name, params={}, expect=_codes(exp.get("screens"), where), approved=exp.get("approved"),
        diagnosis=tuple(str(c) for c in exp.get("diagnosis", ())), journal=str(exp.get("journal", "any")),
        steps=tuple(str(x) for x in doc.get("steps", ())), config=dict(doc.get("config", {})),
        card=doc.get("card"), txn=doc.get("txn"), reader=doc.get("reader"))
    fault = Fault(f"scenario:{name}", causes, faults[0][0].layer, name, name, faults[0][0].injector, (),
                  scenario.expect, "-", "-", "-", "-", scenario.journal, scenario.card or "demo",
                  scenario.txn or "balance", (scenario,))
    return Case(fault, scenario, tuple(faults), int(doc.get("seed", 7)), where)


def bundled_scenario_files(cat: Catalogue) -> list[Case]:
    base = resources.files("faults") / "scenarios"
    out = []
    for entry in sorted(base.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            out.append(load_scenario_file(entry.name, cat, text=entry.read_text(encoding="utf-8")))
    return out


async def run_case(case: Case, state: Path, clock: VirtualClock) -> RunResult:
    if case.faults:
        sc = case.scenario
        setup = combine(list(case.faults), scenario=sc, seed=case.seed)
        return await run_scenario(case.fault, sc, clock=clock, state=state, seed=case.seed, setup=setup)
    return await run_scenario(case.fault, case.scenario, clock=clock, state=state, seed=case.seed)


def run_cases(cases: list[Case], *, trace_dir: Path | None = None) -> list[RunResult]:
    """Run every case, each in its own state folder and on its own virtual clock."""
    results = []
    # scratch state on a RAM-backed folder where there is one: journals fsync every write
    shm = Path("/dev/shm")
    scratch = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    for case in cases:
        clock = VirtualClock()
        with tempfile.TemporaryDirectory(prefix="posemu-regress-", dir=scratch) as tmp, \
                asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            r = runner.run(run_case(case, Path(tmp), clock))
        results.append(r)
        if trace_dir is not None:
            write_trace(trace_dir, case, r)
    return results


def _safe_name(case: Case) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case.name)


def write_trace(trace_dir: Path, case: Case, r: RunResult) -> Path:
    trace_dir.mkdir(parents=True, exist_ok=True)
    path = trace_dir / f"{_safe_name(case)}.jsonl"
    head = {"posemu_trace": 1, "fault": case.fault.id, "scenario": case.scenario.name, "seed": case.seed,
            "source": case.source, "ok": r.ok}
    path.write_text(json.dumps(head) + "\n" + "".join(line + "\n" for line in r.trace), encoding="utf-8")
    return path


def replay(path: Path, cat: Catalogue | None = None) -> tuple[RunResult, list[str]]:
    """Run the scenario a trace file records again; return the new result and the differences in
    the event sequence (kind + what, which a seeded run must reproduce)."""
    cat = cat or load()
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        head = json.loads(lines[0])
    except (IndexError, json.JSONDecodeError):
        raise ConfigError(f"{path} is not a posemu trace (no header line)") from None
    if head.get("posemu_trace") != 1:
        raise ConfigError(f"{path} is not a posemu trace")
    if str(head["source"]) == "catalogue":
        fault = cat.get(str(head["fault"]))
        sc = next((s for s in fault.scenarios if s.name == head["scenario"]), None)
        if sc is None:
            raise ConfigError(f"scenario {head['scenario']!r} is no longer in fault {fault.id}")
        case = Case(fault, sc, seed=int(head["seed"]))
    else:
        case = load_scenario_file(str(head["source"]), cat)
    result = run_cases([case])[0]

    def seq(ls: list[str]) -> list[str]:
        out = []
        for line in ls:
            e = json.loads(line)
            out.append(f"{e['kind']}:{e['what']}")
        return out

    old, new = seq(lines[1:]), seq(result.trace)
    diffs = [f"#{i}: recorded {a!r}, replayed {b!r}" for i, (a, b) in enumerate(zip(old, new, strict=False))
             if a != b]
    if len(old) != len(new):
        diffs.append(f"recorded {len(old)} events, replayed {len(new)}")
    return result, diffs


def junit(results: list[RunResult], path: Path) -> None:
    """JUnit XML: one testsuite, one testcase per scenario, a failure per failed check."""
    suite = ET.Element("testsuite", name="posemu-regress", tests=str(len(results)),
                       failures=str(sum(1 for r in results if r.error is None and not r.ok and not r.skipped)),
                       skipped=str(sum(1 for r in results if r.skipped)),
                       errors=str(sum(1 for r in results if r.error is not None)),
                       time=f"{sum(r.wall_s for r in results):.3f}")
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname=f"posemu.faults.{r.fault.id}", name=r.scenario.name,
                           time=f"{r.wall_s:.3f}")
        ET.SubElement(tc, "properties").extend([
            ET.Element("property", name="causes", value=",".join(r.fault.causes)),
            ET.Element("property", name="virtual_seconds", value=f"{r.virtual_s:.3f}"),
            ET.Element("property", name="screens", value=",".join(r.codes)),
        ])
        if r.skipped is not None:
            ET.SubElement(tc, "skipped", message=r.skipped)
        if r.error is not None:
            ET.SubElement(tc, "error", message=r.error)
        for c in r.checks:
            if not c.ok:
                ET.SubElement(tc, "failure", message=c.name).text = c.detail
        if r.diagnosis is not None:
            ET.SubElement(tc, "system-out").text = r.diagnosis.render("en")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
