"""``posemu diagnose``: the terminal's self-test, or the root cause of a failed transaction."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emulator.commands._exit import ExitCode, exit_epilog
from emulator.trace import TraceEntry, read_trace
from protocol.errors import DecodeError, UsageError

if TYPE_CHECKING:
    from emulator.config import TerminalConfig
    from faults.diagnose import Diagnosis


@click.command("diagnose", epilog=exit_epilog("no fault found", "a fault was found (its causes are printed)"))
@click.option("--trace", "trace_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A trace (JSON lines, from --trace or regress --trace-dir) to find the root cause in.")
@click.option("--reader", default="sim://cup_debit", show_default=True, help="Reader URL for the self-test.")
@click.option("--host", default=None, metavar="HOST:PORT", help="Host to check (default: the bundled host).")
@click.option("--fault", "fault_specs", multiple=True, metavar="ID[:k=v,…]",
              help="Self-test with these faults active (to see what the technician would measure).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Terminal config for the self-test (default: terminal.toml in the state folder, if any).")
@click.option("--state", "state_dir", default=None,
              help="State folder whose terminal.toml the self-test reads (default: the user data folder).")
@click.option("--lang", type=click.Choice(["zh", "en", "both"]), default="both")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: the readings and the ranked cause groups (confidence, evidence codes).")
def command(trace_path: str | None, reader: str, host: str | None, fault_specs: tuple[str, ...],
            config_file: str | None, state_dir: str | None, lang: str, as_json: bool) -> None:
    """Without --trace: run the articles' detection methods against the current setup (contact
    resistance and supply voltage, reader and service, network and DNS, sign-on and key check
    values, clock). With --trace: name the most likely causes of that failure, with evidence and
    the articles' remedies."""
    from faults.diagnose import diagnose

    if trace_path:
        diag = diagnose(_read_trace(Path(trace_path)), [])
        if as_json:
            click.echo(json.dumps({"diagnosis": diag.to_json()}, ensure_ascii=False, indent=1))
        else:
            click.echo(diag.render(lang))
    else:
        from emulator import config as configmod
        from emulator.commands.config import config_path

        cfg_file = config_path(config_file, state_dir)
        cfg = configmod.load(cfg_file) if cfg_file else None
        m, diag = _self_test(reader, host, list(fault_specs), cfg)
        if as_json:
            click.echo(json.dumps({"readings": m, "diagnosis": diag.to_json()}, ensure_ascii=False, indent=1,
                                  default=str))
            sys.exit(ExitCode.FAILED if diag.named else ExitCode.OK)
        click.echo("self-test 自检:")
        for k, v in m.items():
            click.echo(f"  {k:22s} {v}")
        click.echo("diagnosis 诊断:")
        click.echo(diag.render(lang))
    sys.exit(ExitCode.FAILED if diag.named else ExitCode.OK)


def _read_trace(path: Path) -> list[TraceEntry]:
    """The entries of a JSON-lines trace (:func:`emulator.trace.read_trace`); a file that is not one is
    a :class:`UsageError` naming it."""
    try:
        return read_trace(path)
    except DecodeError as e:
        raise UsageError(f"{path}: not a JSON-lines trace ({e})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the trace ({e.strerror})") from None


def _self_test(reader_url: str, host: str | None, specs: list[str],
               cfg: TerminalConfig | None = None) -> tuple[dict[str, Any], Diagnosis]:
    """Power on (with the faults, all from power-on), sign on, take every reading. The same world
    the regression suite builds; on the virtual clock when nothing real is involved."""
    import tempfile
    from dataclasses import replace

    from faults.catalogue import load
    from faults.grammar import parse_spec
    from faults.model import Onset, OnsetKind
    from faults.runner import run_specs
    from hardware.clock import Clock, RealClock, VirtualClock

    cat = load()
    chosen = [replace(parse_spec(text, cat), onset=Onset(OnsetKind.POWER_ON)) for text in specs]
    sim = reader_url.startswith("sim://")
    card = reader_url.removeprefix("sim://").split("?")[0] or None if sim else None
    clock: Clock = VirtualClock() if sim and host is None else RealClock()

    async def main() -> tuple[dict[str, Any], Diagnosis]:
        with tempfile.TemporaryDirectory(prefix="posemu-selftest-") as tmp:
            ran = await run_specs(chosen, clock=clock, state=Path(tmp), steps=["sign_on"], card=card,
                                  reader_url=None if sim else reader_url, external_host=host, cfg=cfg)
            try:
                m = dict(ran.readings)
                so = ran.outcomes[0] if ran.outcomes else None
                rig = ran.run.rig
                signs_on = rig is None or rig.cfg.dialect.sign_on
                if not signs_on:
                    m["sign_on"] = "off in the config (static working keys)"
                elif so and so.approved:
                    m["sign_on"] = "ok (working keys verified by check value)"
                else:
                    m["sign_on"] = f"FAILED {so.detail.value if so and so.detail else ''}".rstrip()
                if rig is not None:
                    m["reader"] = rig.reader.name
                    m["terminal.id"] = rig.cfg.terminal_id
                    m["host.profile"] = rig.cfg.profile
                return m, ran.diagnosis
            finally:
                await ran.run.close()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        return runner.run(main())
