"""How often the diagnosis names the right cause: a randomised accuracy benchmark.

Design (nothing here is hand-picked):

* **Singles** — for each seed, every fault of the catalogue that runs without pcscd, ``PER_FAULT``
  times, each with its parameters drawn afresh: half the draws start from one of the fault's
  presets (mild, severe, …), then every numeric parameter is redrawn with probability ½ across its
  documented range (log-uniform where the range spans more than two decades, so mild values are
  drawn as often as severe ones), booleans and choices uniformly. Text parameters (host rules,
  operator steps) keep their value. The onset is the fault's own.
* **Pairs** — per seed, ``PAIRS`` random pairs of faults from *different layers*, drawn the same way.
* **Controls** — per seed, ``CONTROLS`` runs with no fault (random card, balance or purchase).

Each run goes through the real stack on the virtual clock (:func:`faults.runner.run_specs`): the
sign-on, the transaction, the technician's readings, the diagnosis. It is scored at the level the
diagnosis names — cause **groups** (causes the evidence cannot tell apart, declared in the
catalogue):

* the **truth** of a run is the groups of the faults that actually acted (a fault whose injector
  never changed anything — dirt on a card that was swiped — is not part of it);
* a run is **visible** when its transaction failed or the card could not be removed; runs that are
  not visible (the fault was too mild to show) are **counted apart**: their precision is reported,
  they do not enter recall;
* **precision** = right named groups / named groups; **recall** = right named groups / truth groups
  (visible runs); **top-1** = the top named group is injected (visible single faults);
* a **false alarm** is a control run with any group named;
* **trace-only** repeats the scoring with the diagnosis given the trace and no readings.

Per layer figures count the single faults of that layer. ``python -m tests.bench.bench_diagnosis
[--quick] [--confusions]`` prints the details (the misses and false names) for tuning.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults.catalogue import Catalogue, load
from faults.diagnose import diagnose
from faults.grammar import spec_from
from faults.model import Fault, ParamType, ParamValue
from tests.bench import BenchResult

SEEDS = (1, 2, 3)
PER_FAULT = 6
PAIRS = 100
CONTROLS = 20
TARGETS = {"precision": 0.9, "recall": 0.9, "top1": 0.9, "trace_recall": 0.8}
CONTROL_CARDS = ("demo", "cup_debit")


@dataclass(frozen=True, slots=True)
class Sample:
    kind: str                                        # single | pair | control
    faults: tuple[tuple[str, str | None, tuple[tuple[str, Any], ...]], ...]   # (id, preset, values)
    seed: int
    card: str | None = None
    txn: str | None = None

    @property
    def label(self) -> str:
        parts = []
        for fid, preset, values in self.faults:
            head = fid + (f"@{preset}" if preset else "")
            parts.append(head + (":" + ",".join(f"{k}={_show(v)}" for k, v in values) if values else ""))
        return " + ".join(parts) or f"control({self.card},{self.txn})"


def _show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass(slots=True)
class Scored:
    sample: Sample
    truth: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    visible: bool = False
    named: list[str] = field(default_factory=list)
    named_trace: list[str] = field(default_factory=list)
    struck: dict[str, bool] = field(default_factory=dict)
    screens: list[str] = field(default_factory=list)
    error: str | None = None


def _draw_value(rng: random.Random, p: Any) -> ParamValue:
    if p.type is ParamType.BOOL:
        return rng.random() < 0.5
    if p.type is ParamType.CHOICE:
        return str(rng.choice(p.choices))
    lo, hi = float(p.min), float(p.max)
    if p.type is ParamType.INT:
        if hi - lo > 100 and rng.random() < 0.5:
            return round(math.exp(rng.uniform(math.log(max(lo, 1.0)), math.log(hi))))
        return rng.randint(int(lo), int(hi))
    base = lo if lo > 0 else hi / 1000.0
    if hi > 0 and hi / max(base, 1e-12) > 100:
        return math.exp(rng.uniform(math.log(max(base, 1e-9)), math.log(hi)))
    return rng.uniform(lo, hi)


def _draw(rng: random.Random, f: Fault) -> tuple[str, str | None, tuple[tuple[str, Any], ...]]:
    local = [p for p in f.presets if p.reader != "vpcd"]           # PC/SC presets need pcscd
    preset = rng.choice(local).name if local and rng.random() < 0.5 else None
    values: dict[str, Any] = {}
    for p in f.params:
        if p.type is ParamType.TEXT or rng.random() < 0.5:
            continue
        values[p.name] = _draw_value(rng, p)
    return f.id, preset, tuple(sorted(values.items()))


def _runnable(cat: Catalogue) -> list[Fault]:
    return [f for f in cat.faults.values() if "pcscd" not in f.requires]


_EXCLUSIVE = {"steps", "port-busy", "pcsc"}


def samples(seeds: Iterable[int] = SEEDS, per_fault: int = PER_FAULT, pairs: int = PAIRS,
            controls: int = CONTROLS) -> list[Sample]:
    cat = load()
    faults = sorted(_runnable(cat), key=lambda f: f.id)
    out: list[Sample] = []
    for seed in seeds:
        rng = random.Random(seed * 7919)
        for f in faults:
            for _ in range(per_fault):
                out.append(Sample("single", (_draw(rng, f),), rng.randrange(1 << 30)))
        n = 0
        while n < pairs:
            a, b = rng.sample(faults, 2)
            if a.layer == b.layer or (a.injector in _EXCLUSIVE and b.injector in _EXCLUSIVE):
                continue
            out.append(Sample("pair", (_draw(rng, a), _draw(rng, b)), rng.randrange(1 << 30)))
            n += 1
        for _ in range(controls):
            out.append(Sample("control", (), rng.randrange(1 << 30), rng.choice(CONTROL_CARDS),
                              rng.choice(("balance", "purchase"))))
    return out


def run_sample(sample: Sample) -> Scored:
    from faults.runner import final_outcome, run_specs
    from hardware.clock import VirtualClock

    logging.disable(logging.WARNING)         # the host's log of refused requests is not the benchmark's output
    cat = load()
    scored = Scored(sample)
    try:
        specs = [spec_from(fid, cat, preset=preset, given=dict(values)) for fid, preset, values in sample.faults]
    except Exception as e:  # a drawn combination the grammar refuses is a benchmark bug: report it
        scored.error = f"spec: {type(e).__name__}: {e}"
        return scored
    clock = VirtualClock()

    async def go() -> None:
        with tempfile.TemporaryDirectory(prefix="posemu-acc-", dir=_scratch()) as tmp:
            ran = await run_specs(specs, clock=clock, state=Path(tmp), seed=sample.seed, card=sample.card,
                                  txn=sample.txn)
            try:
                rig = ran.run.rig
                assert rig is not None
                trace = list(rig.trace)
                final = final_outcome(ran.outcomes)
                screens = list(ran.run.screens)
                scored.screens = screens
                scored.visible = final is not None and (not final.approved or "REMOVE_CARD_FAILED" in screens
                                                        or "CARD_REMOVED_EARLY" in screens)
                scored.struck = ran.run.struck()
                scored.named = ran.diagnosis.groups
                scored.named_trace = diagnose(trace, ran.outcomes, {}).groups
            finally:
                await ran.run.close()

    try:
        with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            runner.run(go())
    except Exception as e:  # a crash is a failed run: counted and shown, never hidden
        scored.error = f"{type(e).__name__}: {e}"
        return scored
    for s in specs:
        if scored.struck.get(s.id, True) and s.fault.group not in scored.truth:
            scored.truth.append(s.fault.group)
            scored.layers.append(s.fault.layer)
    return scored


def _scratch() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_all(batch: list[Sample], workers: int | None = None) -> list[Scored]:
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1:
        return [run_sample(s) for s in batch]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run_sample, batch, chunksize=8))


@dataclass(slots=True)
class Tally:
    named: int = 0
    right: int = 0
    truth: int = 0
    found: int = 0
    top_n: int = 0
    top_ok: int = 0

    def add(self, truth: list[str], named: list[str], top: bool) -> None:
        self.named += len(named)
        self.right += len(set(named) & set(truth))
        self.truth += len(truth)
        self.found += len(set(truth) & set(named))
        if top:
            self.top_n += 1
            self.top_ok += bool(named) and named[0] in truth

    @property
    def precision(self) -> float:
        return self.right / self.named if self.named else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.truth if self.truth else 1.0

    @property
    def top1(self) -> float:
        return self.top_ok / self.top_n if self.top_n else 1.0


def score(results: list[Scored]) -> dict[str, Any]:
    full, trace, mild_full = Tally(), Tally(), Tally()
    per_layer: dict[str, Tally] = defaultdict(Tally)
    per_layer_trace: dict[str, Tally] = defaultdict(Tally)
    false_alarms = controls = errors = mild = 0
    for r in results:
        if r.error:
            errors += 1
            continue
        if r.sample.kind == "control":
            controls += 1
            false_alarms += bool(r.named)
            continue
        if not r.visible or not r.truth:
            mild += 1
            mild_full.add(r.truth, r.named, False)
            continue
        single = r.sample.kind == "single"
        full.add(r.truth, r.named, single)
        trace.add(r.truth, r.named_trace, single)
        if single:
            per_layer[r.layers[0]].add(r.truth, r.named, True)
            per_layer_trace[r.layers[0]].add(r.truth, r.named_trace, True)
    return {"full": full, "trace": trace, "mild": mild_full, "per_layer": dict(per_layer),
            "per_layer_trace": dict(per_layer_trace), "false_alarms": false_alarms, "controls": controls,
            "errors": errors, "mild_runs": mild, "runs": len(results)}


def run() -> list[BenchResult]:
    batch = samples()
    t0 = time.perf_counter()
    results = run_all(batch)
    wall = time.perf_counter() - t0
    s = score(results)
    full, trace = s["full"], s["trace"]
    out = [
        BenchResult(f"accuracy runs ({s['runs']}: singles, cross-layer pairs, controls; seeds "
                    f"{','.join(map(str, SEEDS))})", wall, "s wall",
                    note=f"{s['mild_runs']} too mild to show (counted apart), {s['errors']} errors"),
        BenchResult("diagnosis precision", full.precision, "", f">= {TARGETS['precision']}",
                    full.precision >= TARGETS["precision"], f"{full.right}/{full.named} named groups right"),
        BenchResult("diagnosis recall", full.recall, "", f">= {TARGETS['recall']}", full.recall >= TARGETS["recall"],
                    f"{full.found}/{full.truth} injected groups named"),
        BenchResult("diagnosis top-1 (single faults)", full.top1, "", f">= {TARGETS['top1']}",
                    full.top1 >= TARGETS["top1"], f"{full.top_ok}/{full.top_n}"),
        BenchResult("false alarms on no-fault controls", float(s["false_alarms"]), "runs", "0",
                    s["false_alarms"] == 0, f"of {s['controls']} controls"),
        BenchResult("trace-only precision", trace.precision, "", note=f"{trace.right}/{trace.named}"),
        BenchResult("trace-only recall", trace.recall, "", f">= {TARGETS['trace_recall']}",
                    trace.recall >= TARGETS["trace_recall"], f"{trace.found}/{trace.truth}"),
        BenchResult("trace-only top-1 (single faults)", trace.top1, "", note=f"{trace.top_ok}/{trace.top_n}"),
        BenchResult("precision on runs too mild to show", s["mild"].precision, "",
                    note=f"{s['mild'].right}/{s['mild'].named} named groups right in {s['mild_runs']} runs"),
    ]
    for layer in sorted(s["per_layer"]):
        t, tt = s["per_layer"][layer], s["per_layer_trace"][layer]
        out.append(BenchResult(f"  {layer}: precision / recall / top-1", t.precision, "",
                               note=f"recall {t.recall:.3f}, top-1 {t.top1:.3f} ({t.top_n} runs); trace-only "
                                    f"recall {tt.recall:.3f}, top-1 {tt.top1:.3f}"))
    return out


def _confusions(results: list[Scored], trace_only: bool = False) -> None:
    misses: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in results:
        if r.error:
            print("ERROR", r.sample.label, r.error)
            continue
        if r.sample.kind == "control":
            if r.named:
                print("FALSE ALARM", r.sample.label, r.named, r.screens[-4:])
            continue
        visible = r.visible and r.truth
        named = r.named_trace if trace_only else r.named
        for g in named:
            if g not in r.truth:
                key = f"{'/'.join(r.truth) or '-'} named {g}{'' if visible else ' (mild)'}"
                wrong[key] += 1
                examples.setdefault(key, f"{r.sample.label} seed {r.sample.seed} → {r.screens[-3:]}")
        if visible:
            for g in r.truth:
                if g not in named:
                    key = f"{g} missed (named {named})"
                    misses[key] += 1
                    examples.setdefault(key, f"{r.sample.label} seed {r.sample.seed} → {r.screens[-3:]}")
    print("\n== misses")
    for k, n in misses.most_common(40):
        print(f"{n:4d}  {k}\n        e.g. {examples[k]}")
    print("\n== wrong names")
    for k, n in wrong.most_common(40):
        print(f"{n:4d}  {k}\n        e.g. {examples[k]}")


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    batch = samples(seeds=(1,), per_fault=3, pairs=40, controls=10) if quick else samples()
    t0 = time.perf_counter()
    res = run_all(batch)
    print(f"{len(res)} runs in {time.perf_counter() - t0:.1f} s")
    if "--confusions" in sys.argv:
        _confusions(res, trace_only="--trace" in sys.argv)
    s = score(res)
    for name in ("full", "trace", "mild"):
        t = s[name]
        print(f"{name:6s} precision {t.precision:.3f} recall {t.recall:.3f} top-1 {t.top1:.3f}")
    print(f"false alarms {s['false_alarms']}/{s['controls']}, errors {s['errors']}, mild {s['mild_runs']}")
    for layer, t in sorted(s["per_layer"].items()):
        tt = s["per_layer_trace"][layer]
        print(f"  {layer:12s} P {t.precision:.2f} R {t.recall:.2f} T1 {t.top1:.2f}   trace R {tt.recall:.2f} "
              f"T1 {tt.top1:.2f}")
