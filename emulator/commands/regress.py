"""``posemu regress``: the fault-regression suite."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from emulator.commands._exit import ExitCode, exit_epilog
from emulator.commands._paths import JUNIT_PREFIXES, output_file, output_folder, write_failed
from emulator.commands._pcap import terminal_pcap

if TYPE_CHECKING:
    from faults.runner import RunResult


@click.command("regress", epilog=exit_epilog("every scenario passed (or the replay matched)",
                                               "a scenario failed (or the replay differed)"))
@click.option("--fault", "only", multiple=True, metavar="ID[@PRESET]",
              help="Only these faults, or one preset of a fault (repeatable).")
@click.option("--scenario", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also run this scenario file (TOML, repeatable).")
@click.option("--no-bundled-scenarios", is_flag=True, help="Skip the bundled scenario files.")
@click.option("--seed", default=7, show_default=True, help="Seed for every random choice in the runs.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), default=None, help="Write JUnit XML.")
@click.option("--trace-dir", default=None,
              help="Write each run's trace (JSON lines; replay with --replay).")
@click.option("--replay", "replay_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run the scenario a trace file recorded again and compare the event sequence.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Terminal config (TOML) the scenarios start from, its [host] dialect spoken by each run's own "
                   "bundled host. Default: the saved terminal.toml of the user data folder, if there is one.")
@click.option("-v", "--verbose", is_flag=True, help="Print the diagnosis of every run.")
@terminal_pcap
def command(only: tuple[str, ...], files: tuple[str, ...], no_bundled_scenarios: bool, seed: int,
            junit_path: str | None, trace_dir: str | None, replay_path: str | None, config_file: str | None,
            verbose: bool) -> None:
    """Run every fault's scenarios through the real stack on the virtual clock and check screens,
    diagnosis, journal and money."""
    from emulator import config as configmod
    from emulator.commands.config import config_path
    from faults.runner import base_config

    cfg_path = config_path(config_file, None)
    cfg = configmod.load(cfg_path) if cfg_path else None
    with base_config(cfg):
        _regress(only, files, no_bundled_scenarios, seed, junit_path, trace_dir, replay_path, verbose, cfg_path)


def _regress(only: tuple[str, ...], files: tuple[str, ...], no_bundled_scenarios: bool, seed: int,
             junit_path: str | None, trace_dir: str | None, replay_path: str | None, verbose: bool,
             cfg_path: str | None) -> None:
    from faults import regress

    console = Console()
    if cfg_path:
        console.print(f"terminal config: {cfg_path}", soft_wrap=True, highlight=False, markup=False)
    junit_file = output_file(junit_path, "JUnit report", replaces=JUNIT_PREFIXES) if junit_path else None
    traces = output_folder(trace_dir, "trace folder") if trace_dir else None
    cat = regress.load()
    if replay_path:
        result, diffs = regress.replay(Path(replay_path), cat)
        console.print(f"replayed {result.name}: {'ok' if result.ok else 'FAILED'}; "
                      f"{'same event sequence' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:20]:
            console.print(f"  {d}")
        sys.exit(ExitCode.OK if result.ok and not diffs else ExitCode.FAILED)
    cases = regress.catalogue_cases(cat, list(only) or None, seed)
    if not only and not no_bundled_scenarios:
        cases += regress.bundled_scenario_files(cat)
    cases += [regress.load_scenario_file(f, cat) for f in files]
    t0 = time.perf_counter()
    try:
        results = regress.run_cases(cases, trace_dir=traces)
    except OSError as e:
        raise write_failed("trace", traces or "", e) from None
    wall = time.perf_counter() - t0
    table = Table(title="posemu regress")
    for col in ("run", "causes", "result", "virtual s", "screens / failed checks"):
        table.add_column(col)
    for r in results:
        bad = [f"{c.name}: {c.detail}" for c in r.checks if not c.ok] + ([r.error] if r.error else [])
        if r.skipped:
            bad = [r.skipped]
        status = "[yellow]skipped[/yellow]" if r.skipped else ("[green]ok[/green]" if r.ok else "[red]FAIL[/red]")
        table.add_row(r.name, " ".join(_causes(r)), status, f"{r.virtual_s:.1f}",
                      "\n".join(bad) if bad else " ".join(r.codes[-4:]))
    console.print(table)
    if verbose:
        for r in results:
            if r.diagnosis is not None:
                console.print(f"[bold]{r.name}[/bold]\n{r.diagnosis.render()}")
    skipped = [r for r in results if r.skipped]
    failed = [r for r in results if not r.ok and not r.skipped]
    virtual = sum(r.virtual_s for r in results)
    covered = sorted({c for r in results if r.ok for c in _causes(r)}, key=lambda c: (c[0], int(c[1:])))
    console.print(f"{len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed"
                  + (f", {len(skipped)} skipped" if skipped else ""))
    console.print(f"wall {wall:.2f} s for {virtual:.0f} s of simulated time; causes checked: {len(covered)}")
    if junit_file is not None:
        try:
            regress.junit(results, junit_file)
        except OSError as e:
            raise write_failed("JUnit report", junit_file, e) from None
    sys.exit(ExitCode.FAILED if failed else ExitCode.OK)


def _causes(r: RunResult) -> list[str]:
    """The cause ids a run's faults reproduce, in catalogue order."""
    return sorted({c for s in r.specs for c in s.fault.causes}, key=lambda c: (c[0], int(c[1:])))
