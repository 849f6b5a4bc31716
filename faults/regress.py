"""The fault-regression suite: every catalogue scenario plus scenario files, on the virtual clock.

Scenario files (TOML, ``faults/scenarios/*.toml`` and any given with ``--scenario``) combine
faults across layers, each with its preset, parameters and onset::

    name = "contacts-then-network-drop"
    card = "cup_debit"
    txn = "purchase"
    seed = 11
    steps = ["sign_on", "purchase"]            # optional
    [[fault]]
    id = "reader.dirty-contacts"
    params = { contact_ohms = 30.0, fallback = true }
    [[fault]]
    id = "network.drop-after-send"
    params = { onset = "online" }
    [expect]
    screens = [...]; approved = false; diagnosis = ["contacts", "lost-answer"]; journal = "reversed"

Runs are seeded and reproducible; with ``--trace-dir`` each run's trace is written as JSON lines
whose first line records the scenario and seed, so ``posemu regress --replay FILE`` runs it again
and compares the event sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from emulator.config import TerminalConfig
from faults.catalogue import JOURNAL_EXPECT, Catalogue, _codes, load
from faults.grammar import spec_from
from faults.model import Fault, FaultSpec, Preset
from faults.runner import RunResult, base_config, current_base, make_plan, run_preset, run_specs
from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from hardware.registry import ReaderURL
from protocol.errors import ConfigError, PosemuError

__all__ = ["Case", "catalogue_cases", "junit", "load", "load_scenario_file", "replay", "run_cases"]


@dataclass(frozen=True, slots=True)
class Case:
    """One thing to run: a catalogue preset, or a scenario file (several faults, its own expectations)."""

    name: str
    preset: Preset
    fault: Fault | None = None                   # the catalogue fault of a preset
    specs: tuple[FaultSpec, ...] = ()            # a scenario file's faults
    seed: int = 7
    source: str = "catalogue"


def catalogue_cases(cat: Catalogue, only: list[str] | None = None, seed: int = 7) -> list[Case]:
    """Every preset of every fault, or of the faults named in ``only`` (``ID`` for all its presets,
    ``ID@PRESET`` for one); an unknown id or preset is a :class:`ConfigError`."""
    wanted: dict[str, set[str] | None] = {}
    for item in only or ():
        fid, _, pname = item.partition("@")
        fault = cat.get(fid)
        if pname:
            fault.preset(pname)
            have = wanted.get(fid, set())
            if have is not None:
                wanted[fid] = have | {pname}
        else:
            wanted[fid] = None
    cases: list[Case] = []
    for f in cat.faults.values():
        if only and f.id not in wanted:
            continue
        names = wanted.get(f.id)
        cases.extend(Case(f"{f.id}[{p.name}]", p, f, seed=seed) for p in f.presets if names is None or p.name in names)
    return cases


#: the keys a scenario file may have, at the top, in each [[fault]] and in [expect]
SCENARIO_KEYS = frozenset({"name", "description", "card", "txn", "seed", "steps", "reader", "config", "fault",
                           "expect"})
FAULT_KEYS = frozenset({"id", "preset", "params"})
EXPECT_KEYS = frozenset({"screens", "approved", "diagnosis", "journal"})
#: what ``txn`` may name, and the steps :func:`faults.runner._steps` runs (``name`` or ``name:arg``)
SCENARIO_TXNS = ("balance", "purchase", "preauth", "void", "refund", "complete", "settle", "sign_off")
SCENARIO_STEPS = frozenset({"sign_on", "sign_off", "balance", "purchase", "operator", "reversals", "clean",
                            "crash_purchase", "restart", "preauth", "void", "refund", "complete", "settle"})
#: steps whose argument is a number: an amount in minor units (a void's: the original's journal id)
_NUMERIC_STEPS = frozenset({"purchase", "crash_purchase", "preauth", "refund", "complete", "void"})


def _typed(value: Any, kind: type | tuple[type, ...], where: str, key: str, what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(f"{where}: {key} must be {what}, got {type(value).__name__} {value!r:.40}")
    return value


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    _typed(value, list, where, key, "a list of strings")
    return tuple(_typed(v, str, where, key, "a list of strings") for v in value)


def _unknown(table: dict[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}; known: {', '.join(sorted(known))}")


def _fault_entry(entry: Any, i: int, cat: Catalogue, where: str) -> FaultSpec:
    fw = f"{where} [[fault]] {i + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{fw}: must be a table with id (and preset, params)")
    _unknown(entry, FAULT_KEYS, fw)
    if "id" not in entry:
        raise ConfigError(f"{fw}: missing id (a fault id from `posemu faults list`)")
    fid = _typed(entry["id"], str, fw, "id", "a fault id")
    preset = entry.get("preset")
    if preset is not None:
        _typed(preset, str, fw, "preset", "a preset name")
    params = dict(_typed(entry.get("params", {}), dict, fw, "params", "a table"))
    for k, v in params.items():
        _typed(v, (str, int, float, bool), fw, f"params.{k}", "a string, number or boolean")
    try:
        return spec_from(fid, cat, preset=preset, given=params, where=fw)
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(fw) else f"{fw}: {e}") from None


def load_scenario_file(path: Path | str, cat: Catalogue, *, text: str | None = None) -> Case:
    """A scenario file, validated: every key, type and name is checked here, and its faults are
    planned once, so a bad file is a :class:`ConfigError` naming it before anything runs."""
    where = f"scenario file {path}"
    try:
        doc = tomllib.loads(text if text is not None else Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    try:
        return _scenario_case(doc, path, where, cat)
    except ConfigError as e:
        if str(e).startswith(where):
            raise
        raise ConfigError(f"{where}: {e}") from None


def _scenario_case(doc: dict[str, Any], path: Path | str, where: str, cat: Catalogue) -> Case:
    _unknown(doc, SCENARIO_KEYS, where)
    name = _typed(doc.get("name") or Path(str(path)).stem, str, where, "name", "a string")
    entries = _typed(doc.get("fault", []), list, where, "fault", "an array of [[fault]] tables")
    specs = [_fault_entry(entry, i, cat, where) for i, entry in enumerate(entries)]
    if not specs:
        raise ConfigError(f"{where}: no [[fault]]")
    seed = _typed(doc.get("seed", 7), int, where, "seed", "a whole number")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"{where}: seed must be 0 … 2**63-1, got {seed}")
    card = doc.get("card")
    if card is not None:
        load_profile(_typed(card, str, where, "card", "a card profile name"))
    txn = doc.get("txn")
    if txn is not None and txn not in SCENARIO_TXNS:
        raise ConfigError(f"{where}: txn must be one of {', '.join(SCENARIO_TXNS)}, got {txn!r:.40}")
    steps = _strings(doc.get("steps", []), where, "steps")
    for step in steps:
        step_name, _, arg = step.partition(":")
        if step_name not in SCENARIO_STEPS:
            raise ConfigError(f"{where}: unknown step {step!r}; known: {', '.join(sorted(SCENARIO_STEPS))}")
        if step_name in _NUMERIC_STEPS and arg and not (arg.isascii() and arg.isdigit() and 0 < int(arg) < 10**12):
            raise ConfigError(f"{where}: step {step!r}: the amount is whole minor units, e.g. purchase:1250 "
                              "(a void's argument: the original's journal id)")
    reader = doc.get("reader")
    if reader is not None:
        ReaderURL.parse(_typed(reader, str, where, "reader", "a reader URL"))
    config = dict(_typed(doc.get("config", {}), dict, where, "config", "a table"))
    exp = _typed(doc.get("expect", {}), dict, where, "expect", "a table")
    _unknown(exp, EXPECT_KEYS, f"{where} [expect]")
    approved = exp.get("approved")
    if approved is not None:
        _typed(approved, bool, where, "expect.approved", "true or false")
    diagnosis = _strings(exp.get("diagnosis", []), where, "expect.diagnosis")
    for g in diagnosis:
        if g not in cat.groups:
            raise ConfigError(f"{where}: expect.diagnosis: unknown cause group {g!r}; groups: "
                              f"{', '.join(sorted(cat.groups))}")
    journal = _typed(exp.get("journal", "any"), str, where, "expect.journal", "a string")
    if journal not in JOURNAL_EXPECT:
        raise ConfigError(f"{where}: expect.journal must be one of {', '.join(JOURNAL_EXPECT)}")
    screens = _strings(exp.get("screens", []), where, "expect.screens")
    preset = Preset(name=name, params={}, expect=_codes(list(screens), where), approved=approved,
                    diagnosis=diagnosis, journal=journal, steps=steps, config=config, card=card, txn=txn,
                    reader=reader)
    try:   # the faults' parameters and the config, as the run will combine them
        plan, _ = make_plan(specs, preset=preset, seed=seed)
        plan.cfg.validate()
    except ConfigError:
        raise
    except (PosemuError, ValueError, TypeError, KeyError, OverflowError) as e:
        raise ConfigError(f"{where}: the faults' parameters or config do not fit together "
                          f"({type(e).__name__}: {e})") from None
    return Case(name, preset, None, tuple(specs), seed, str(path))


def bundled_scenario_files(cat: Catalogue) -> list[Case]:
    base = resources.files("faults") / "scenarios"
    out = []
    for entry in sorted(base.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            out.append(load_scenario_file(entry.name, cat, text=entry.read_text(encoding="utf-8")))
    return out


async def run_case(case: Case, state: Path, clock: VirtualClock) -> RunResult:
    if case.fault is not None:
        return await run_preset(case.fault, case.preset, clock=clock, state=state, seed=case.seed)
    return await run_file_case(case, state, clock)


async def run_file_case(case: Case, state: Path, clock: VirtualClock) -> RunResult:
    """A scenario file's faults together, checked against its own expectations."""
    import time

    from faults.checks import Check, check_diagnosis, final_outcome, subsequence
    from faults.runner import run_journal_checks

    result = RunResult(None, case.preset, list(case.specs), label=case.name)
    t0_wall, t0_virtual = time.perf_counter(), clock.now()
    ran = None
    try:
        ran = await run_specs(case.specs, clock=clock, state=state, preset=case.preset, seed=case.seed)
        rig = ran.run.rig
        assert rig is not None
        result.outcomes, result.diagnosis, result.codes = ran.outcomes, ran.diagnosis, ran.run.screens
        result.trace = [e.to_json() for e in rig.trace]
        result.struck = ran.run.struck()
        p = case.preset
        result.checks.append(Check("screens", subsequence(p.expect, result.codes),
                                   f"expected {list(p.expect)} in {result.codes}"))
        final = final_outcome(result.outcomes)
        if p.approved is not None:
            result.checks.append(Check("outcome", (final.approved if final else None) == p.approved,
                                       f"expected approved={p.approved}"))
        result.checks.append(check_diagnosis(ran.diagnosis, p.diagnosis))
        result.checks.extend(run_journal_checks(ran.run, p))
    except PosemuError as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        if ran is not None:
            await ran.run.close()
    result.wall_s = time.perf_counter() - t0_wall
    result.virtual_s = clock.now() - t0_virtual
    return result


def _run_one(case: Case, base: TerminalConfig | None = None) -> RunResult:
    """One case in its own state folder (RAM-backed where there is one) on its own virtual clock, on the
    caller's base configuration (``regress --config``: set again here, as a worker process has a context
    of its own)."""
    logging.disable(logging.WARNING)        # the bundled host's log of what it refused is not a result
    shm = Path("/dev/shm")
    scratch = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    clock = VirtualClock()
    with base_config(base), tempfile.TemporaryDirectory(prefix="posemu-regress-", dir=scratch) as tmp, \
            asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        return runner.run(run_case(case, Path(tmp), clock))


def run_cases(cases: list[Case], *, trace_dir: Path | None = None, workers: int | None = None) -> list[RunResult]:
    """Run every case, each in its own state folder and on its own virtual clock, in the order given.

    With more than a few cases they run in ``workers`` processes (default: one per CPU, at most
    four); cases on a real PC/SC stack run here, one at a time (vpcd serves one card per slot)."""
    workers = workers if workers is not None else min(4, os.cpu_count() or 1) if len(cases) > 8 else 1
    results: dict[int, RunResult] = {}
    base = current_base()
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        local = [i for i, c in enumerate(cases) if c.preset.reader == "vpcd"]
        remote = [i for i in range(len(cases)) if i not in set(local)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {i: pool.submit(_run_one, cases[i], base) for i in remote}
            for i in local:
                results[i] = _run_one(cases[i], base)
            for i, fut in futures.items():
                results[i] = fut.result()
    else:
        for i, case in enumerate(cases):
            results[i] = _run_one(case, base)
    ordered = [results[i] for i in range(len(cases))]
    if trace_dir is not None:
        for case, r in zip(cases, ordered, strict=True):
            write_trace(trace_dir, case, r)
    return ordered


def _safe_name(case: Case) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case.name)


def write_trace(trace_dir: Path, case: Case, r: RunResult) -> Path:
    trace_dir.mkdir(parents=True, exist_ok=True)
    path = trace_dir / f"{_safe_name(case)}.jsonl"
    head = {"posemu_trace": 1, "fault": case.fault.id if case.fault else "", "scenario": case.preset.name,
            "seed": case.seed, "source": case.source, "ok": r.ok}
    path.write_text(json.dumps(head) + "\n" + "".join(line + "\n" for line in r.trace), encoding="utf-8")
    return path


def replay(path: Path, cat: Catalogue | None = None) -> tuple[RunResult, list[str]]:
    """Run the scenario a trace file records again; return the new result and the differences in
    the event sequence (kind + what, which a seeded run must reproduce). A file that is not a
    posemu trace is a :class:`ConfigError` naming it, before anything runs."""
    cat = cat or load()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the trace ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a posemu trace (not UTF-8 text)") from None
    try:
        head = json.loads(lines[0])
    except (IndexError, ValueError, RecursionError):
        raise ConfigError(f"{path} is not a posemu trace (no header line)") from None
    if not isinstance(head, dict) or head.get("posemu_trace") != 1:
        raise ConfigError(f"{path} is not a posemu trace")
    source, fault_id, scenario_name, seed = (head.get(k) for k in ("source", "fault", "scenario", "seed"))
    if not (isinstance(source, str) and isinstance(fault_id, str) and isinstance(scenario_name, str)
            and isinstance(seed, int) and not isinstance(seed, bool)):
        raise ConfigError(f"{path}: the trace header needs source, fault, scenario (text) and seed (a number)")
    old = _sequence(lines[1:], path)
    if source == "catalogue":
        fault = cat.get(fault_id)
        sc = next((s for s in fault.presets if s.name == scenario_name), None)
        if sc is None:
            raise ConfigError(f"preset {scenario_name!r} is no longer in fault {fault.id}")
        case = Case(f"{fault.id}[{sc.name}]", sc, fault, seed=seed)
    else:
        case = load_scenario_file(source, cat)
    result = run_cases([case])[0]
    new = _sequence(result.trace, path)
    diffs = [f"#{i}: recorded {a!r}, replayed {b!r}" for i, (a, b) in enumerate(zip(old, new, strict=False))
             if a != b]
    if len(old) != len(new):
        diffs.append(f"recorded {len(old)} events, replayed {len(new)}")
    return result, diffs


def _sequence(lines: list[str], path: Path) -> list[str]:
    out = []
    for n, line in enumerate(lines, 2):
        try:
            e = json.loads(line)
            out.append(f"{e['kind']}:{e['what']}")
        except (ValueError, RecursionError, TypeError, KeyError):
            raise ConfigError(f"{path}: line {n} is not a trace event") from None
    return out


def junit(results: list[RunResult], path: Path) -> None:
    """JUnit XML: one testsuite, one testcase per scenario, a failure per failed check."""
    suite = ET.Element("testsuite", name="posemu-regress", tests=str(len(results)),
                       failures=str(sum(1 for r in results if r.error is None and not r.ok and not r.skipped)),
                       skipped=str(sum(1 for r in results if r.skipped)),
                       errors=str(sum(1 for r in results if r.error is not None)),
                       time=f"{sum(r.wall_s for r in results):.3f}")
    for r in results:
        fid = r.fault.id if r.fault else "scenario"
        causes = sorted({c for s in r.specs for c in s.fault.causes})
        tc = ET.SubElement(suite, "testcase", classname=f"posemu.faults.{fid}", name=r.preset.name if r.preset else "",
                           time=f"{r.wall_s:.3f}")
        ET.SubElement(tc, "properties").extend([
            ET.Element("property", name="causes", value=",".join(causes)),
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
