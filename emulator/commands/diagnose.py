"""``posemu diagnose``: the terminal's self-test, or the root cause of a failed transaction."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emulator.commands._exit import ExitCode, exit_epilog
from emulator.trace import TraceEntry, read_trace
from protocol.errors import DecodeError, UsageError

if TYPE_CHECKING:
    from faults.catalogue import Fault
    from faults.diagnose import Diagnosis


@click.command("diagnose", epilog=exit_epilog("no fault found", "a fault was found (its causes are printed)"))
@click.option("--trace", "trace_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A trace (JSON lines, from --trace or regress --trace-dir) to find the root cause in.")
@click.option("--reader", default="sim://cup_debit", show_default=True, help="Reader URL for the self-test.")
@click.option("--host", default=None, metavar="HOST:PORT", help="Host to check (default: the bundled host).")
@click.option("--fault", "fault_specs", multiple=True, metavar="ID[:k=v,…]",
              help="Self-test with these faults active (to see what the technician would measure).")
@click.option("--lang", type=click.Choice(["zh", "en", "both"]), default="both")
def command(trace_path: str | None, reader: str, host: str | None, fault_specs: tuple[str, ...], lang: str) -> None:
    """Without --trace: run the articles' detection methods against the current setup (contact
    resistance and supply voltage, reader and service, network and DNS, sign-on and key check
    values, clock). With --trace: name the most likely causes of that failure, with evidence and
    the articles' remedies."""
    from faults.diagnose import diagnose

    if trace_path:
        diag = diagnose(_read_trace(Path(trace_path)), [])
        click.echo(diag.render(lang))
    else:
        m, diag = asyncio.run(_self_test(reader, host, list(fault_specs)))
        click.echo("self-test 自检:")
        for k, v in m.items():
            click.echo(f"  {k:22s} {v}")
        click.echo("diagnosis 诊断:")
        click.echo(diag.render(lang))
    sys.exit(ExitCode.FAILED if diag.findings else ExitCode.OK)


def _read_trace(path: Path) -> list[TraceEntry]:
    """The entries of a JSON-lines trace (:func:`emulator.trace.read_trace`); a file that is not one is
    a :class:`UsageError` naming it."""
    try:
        return read_trace(path)
    except DecodeError as e:
        raise UsageError(f"{path}: not a JSON-lines trace ({e})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the trace ({e.strerror})") from None


async def _self_test(reader_url: str, host: str | None, specs: list[str]) -> tuple[dict[str, Any], Diagnosis]:
    import tempfile
    from dataclasses import replace

    from emulator.app import open_rig
    from emulator.config import TerminalConfig
    from emulator.ports import ScriptedPinPad
    from faults.catalogue import load, parse_fault_spec
    from faults.diagnose import diagnose, self_test
    from faults.reader import FaultyReader, ReaderFaults
    from hardware.clock import RealClock
    from hardware.registry import open_reader

    chosen = []
    for spec in specs:
        fid, params = parse_fault_spec(spec)
        f = load().get(fid)
        _check_params(f, params)
        chosen.append((f, params))
    clock = RealClock()
    r = open_reader(reader_url, clock=clock)
    for f, params in chosen:
        if f.injector == "reader":
            known = {k: str(v) for k, v in {**f.defaults(), **params}.items() if k in ReaderFaults.__dataclass_fields__}
            r = FaultyReader(r, ReaderFaults.from_params(known), clock)
    with tempfile.TemporaryDirectory() as tmp:
        rig = await open_rig(replace(TerminalConfig(), host=host), clock=clock, state_dir=Path(tmp),
                             pinpad=ScriptedPinPad("0"), reader=r, auto_cardholder=False)
        try:
            so = await rig.terminal.sign_on()
            m = await self_test(rig)
            m["sign_on"] = "ok (working keys verified by check value)" if so.approved else \
                f"FAILED {so.detail.value if so.detail else ''}"
            m["reader"] = rig.reader.name
            return m, diagnose(list(rig.trace), [so], m)
        finally:
            await rig.close()


def _check_params(fault: Fault, params: dict[str, str]) -> None:
    """A parameter the catalogue declares is a finite number within its range (``contact_ohms=nan``
    or ``=-1`` would measure nonsense). The same rule as ``inquiry --fault``."""
    for k, v in params.items():
        p = fault.param(k)
        if p is None:
            continue
        try:
            num = float(v)
        except ValueError:
            num = math.nan
        if not (math.isfinite(num) and p.min <= num <= p.max):
            raise UsageError(f"{fault.id}: {k}={v!r} must be a number from {p.min:g} to {p.max:g} {p.unit}".rstrip())
