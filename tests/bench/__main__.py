"""Run every benchmark module and print one table: ``python -m tests.bench [--quick] [name-substring …]``.

``--quick`` (or ``POSEMU_BENCH_QUICK=1``) asks the long benchmarks (the 1,000-terminal fleet) for a shorter run."""

from __future__ import annotations

import importlib
import pkgutil
import sys

from rich.console import Console
from rich.table import Table

import tests.bench
from tests.bench import BenchResult


def main(argv: list[str]) -> int:
    import os

    from tests.testrun import pcscd_for_run

    if "--quick" in argv:
        os.environ["POSEMU_BENCH_QUICK"] = "1"
        argv = [a for a in argv if a != "--quick"]

    # one private pcscd + vpcd for the whole run (the PC/SC figures and the regression suite's PC/SC
    # presets): libpcsclite reads its socket path once per process
    with pcscd_for_run():
        return _run(argv)


def _run(argv: list[str]) -> int:
    results: list[tuple[str, BenchResult]] = []
    # a log (CI, `make bench > file`) gets the whole table, not one squeezed to 80 columns
    console = Console() if sys.stdout.isatty() else Console(width=220)
    for mod in sorted(pkgutil.iter_modules(tests.bench.__path__), key=lambda m: m.name):
        if not mod.name.startswith("bench_") or (argv and not any(a in mod.name for a in argv)):
            continue
        console.print(f"[bold]running {mod.name}…[/bold]")
        module = importlib.import_module(f"tests.bench.{mod.name}")
        for r in module.run():
            results.append((mod.name, r))
    table = Table(title="posemu benchmarks (measured in this run)")
    for col in ("module", "benchmark", "value", "unit", "target", "met", "note"):
        table.add_column(col)
    for name, r in results:
        met = "" if r.met is None else ("yes" if r.met else "NO")
        table.add_row(name, r.name, f"{r.value:,.3f}", r.unit, r.target, met, r.note)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
