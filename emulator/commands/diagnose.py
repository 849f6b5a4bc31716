"""``posemu diagnose``: the terminal's self-test, or the root cause of a failed transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from protocol.errors import DecodeError, PosemuError


@click.command("diagnose")
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
    from emulator.trace import read_trace
    from faults.diagnose import diagnose

    if trace_path:
        try:
            entries = read_trace(trace_path)
        except DecodeError as e:
            raise click.ClickException(f"{trace_path}: {e}") from None
        click.echo(diagnose(entries, []).render(lang))
        return
    try:
        m, diag = asyncio.run(_self_test(reader, host, list(fault_specs)))
    except PosemuError as e:
        raise click.ClickException(str(e)) from None
    click.echo("self-test 自检:")
    for k, v in m.items():
        click.echo(f"  {k:22s} {v}")
    click.echo("diagnosis 诊断:")
    click.echo(diag)


async def _self_test(reader_url: str, host: str | None, specs: list[str]) -> tuple[dict[str, Any], str]:
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

    clock = RealClock()
    r = open_reader(reader_url, clock=clock)
    for spec in specs:
        fid, params = parse_fault_spec(spec)
        f = load().get(fid)
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
            return m, diagnose(list(rig.trace), [so], m).render()
        finally:
            await rig.close()
