"""Shared code of ``posemu inquiry`` and ``posemu purchase``: run one transaction and print it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from emulator import config as configmod
from emulator.app import Rig, open_rig
from emulator.commands._exit import ExitCode, exit_epilog
from emulator.commands._inputs import pin_callback
from emulator.commands._paths import TRACE_PREFIXES, output_file, state_folder, write_failed
from emulator.commands._result import outcome_doc, result_line
from emulator.messages import Msg, Screen, render
from emulator.ports import ScriptedPinPad
from emulator.sqlite_files import check_sqlite_file
from emulator.terminal import Outcome, Terminal
from hardware.cards.profiles import load_profile
from hardware.clock import Clock, RealClock, VirtualClock
from protocol.errors import PosemuError

TXN_OPTIONS = [
    click.option("--card", "card", default=None,
                 help="Card profile (bundled name or TOML path). Default: demo, or the fault's own card."),
    click.option("--pin", default=None, callback=pin_callback,
                 help="PIN the cardholder types, 4 to 12 digits (default: the profile's PIN)."),
    click.option("--host", default=None, metavar="HOST:PORT",
                 help="Acquirer host; omitted: the bundled host runs in-process on a loopback port."),
    click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default=None, help="ISO 8583 profile."),
    click.option("--reader", default=None, metavar="URL", help="Reader URL (default sim://<card>)."),
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="Terminal config (TOML)."),
    click.option("--state", "state_dir", default=None,
                 help="State folder (journal, host database). Default: the user data folder; with --virtual-time "
                      "a scratch folder removed afterwards."),
    click.option("--lang", type=click.Choice(["zh", "en", "both"]), default=None, help="Screen language."),
    click.option("--virtual-time", is_flag=True, help="Run on the virtual clock (timeouts cost no wall time)."),
    click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
                 help="Write the masked event trace (JSON lines)."),
    click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON."),
    click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug)."),
    click.option("--fault", "fault_specs", multiple=True, metavar="ID[:param=value,…]",
                 help="Run with this fault active (repeatable; see `posemu faults list`). Uses the bundled host."),
]


def txn_options(fn: Any) -> Any:
    for opt in reversed(TXN_OPTIONS):
        fn = opt(fn)
    return fn


def build_config(*, config_path: str | None, host: str | None, profile: str | None, reader: str | None,
                 card: str, lang: str | None) -> configmod.TerminalConfig:
    cfg = configmod.load(config_path)
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if profile is not None:
        changes["profile"] = profile
    if lang is not None:
        changes["language"] = lang
    if reader is not None:
        changes["reader"] = reader
    elif cfg.reader.startswith("sim://"):
        changes["reader"] = f"sim://{card}"
    return replace(cfg, **changes).validate()


def run_transaction(kind: str, amount: int | None, *, card: str | None, pin: str | None, host: str | None,
                    profile: str | None, reader: str | None, config_path: str | None, state_dir: str | None,
                    lang: str | None, virtual_time: bool, trace_path: str | None, as_json: bool, verbose: int,
                    fault_specs: tuple[str, ...] = (), extra_setup: Any = None,
                    action: Callable[[Terminal], Awaitable[Outcome]] | None = None) -> None:
    """Run one transaction and print it; ``action`` runs another coroutine of the terminal than a
    balance inquiry or purchase (void, refund, settlement…), after the sign-on.

    With ``--virtual-time`` and no ``--state`` the run uses a scratch state folder (removed after):
    a CI run never writes the user's journal or moves money in the desktop host (issue 12 item 5)."""
    if virtual_time and not state_dir and not fault_specs:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="posemu-scratch-") as scratch:
            run_transaction(kind, amount, card=card, pin=pin, host=host, profile=profile, reader=reader,
                            config_path=config_path, state_dir=scratch, lang=lang, virtual_time=True,
                            trace_path=trace_path, as_json=as_json, verbose=verbose, extra_setup=extra_setup,
                            action=action)
        return
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if fault_specs and card is None:
        from faults.catalogue import load as load_catalogue
        from faults.catalogue import parse_fault_spec

        card = load_catalogue().get(parse_fault_spec(fault_specs[0])[0]).card
    card = card or "demo"
    cfg = build_config(config_path=config_path, host=host, profile=profile, reader=reader, card=card, lang=lang)
    the_pin = pin if pin is not None else load_profile(card).pin
    # paths are checked before the card is read: a bad one is an error now, not a lost result later
    state = state_folder(state_dir) if state_dir or not fault_specs else None
    if state is not None:
        check_sqlite_file(state / "journal.sqlite3", "journal")
        if cfg.host is None:
            check_sqlite_file(state / "host.sqlite3", "host database")
    if trace_path:
        output_file(trace_path, "trace", replaces=TRACE_PREFIXES)
    # the virtual clock starts at the real date and time, so runs that keep a --state folder get
    # timestamps that move on from run to run (and within a run, as virtual time passes)
    clock: Clock = VirtualClock(dt.datetime.now(dt.UTC).replace(microsecond=0)) if virtual_time else RealClock()
    language = cfg.language
    printed: list[str] = []

    def display(s: Screen) -> None:
        line = render(s, language)  # type: ignore[arg-type]
        printed.append(line)
        if not as_json:
            click.echo(f"  [{s.code}] {line}")

    if fault_specs:
        _run_with_faults(kind, amount, fault_specs, card=card, reader=reader, clock=clock, display=display,
                         state_dir=state_dir, trace_path=trace_path, as_json=as_json, lang=language)
        return

    trace_error: list[OSError] = []

    async def main() -> Outcome:
        assert state is not None
        rig: Rig = await open_rig(cfg, clock=clock, state_dir=state, pinpad=ScriptedPinPad(the_pin), display=display)
        try:
            if extra_setup is not None:
                extra_setup(rig)
            if not rig.terminal.signed_on:
                so = await rig.terminal.sign_on()
                if not so.approved:
                    return so
            if action is not None:
                return await action(rig.terminal)
            if kind == "balance":
                return await rig.terminal.balance_inquiry()
            assert amount is not None
            return await rig.terminal.purchase(amount)
        finally:
            if trace_path:
                try:
                    rig.trace.export(trace_path)
                except OSError as e:      # reported after the result: the transaction is not lost
                    trace_error.append(e)
            await rig.close()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        out = runner.run(main())
    if as_json:
        click.echo(json.dumps(outcome_doc(out), ensure_ascii=False))
    else:
        click.echo(result_line(out))
    if trace_error and trace_path:
        raise write_failed("trace", trace_path, trace_error[0])
    sys.exit(outcome_exit_code(out))


#: outcomes that say the machine, not the card or the host, stopped the transaction
_ENVIRONMENT_CODES = frozenset({Msg.NO_READER})


def outcome_exit_code(out: Outcome) -> int:
    """0 approved; 3 when the reader (device or service) was unusable, 2 when its URL is malformed;
    1 for any other failure."""
    if out.approved:
        return ExitCode.OK
    if "reader.url_malformed" in out.evidence:      # the reader URL given is wrong: a usage error
        return ExitCode.USAGE
    if out.headline in _ENVIRONMENT_CODES or out.detail in _ENVIRONMENT_CODES:
        return ExitCode.ENVIRONMENT
    return ExitCode.FAILED


TXN_EPILOG = exit_epilog("approved", "declined or failed (the message code is printed)",
                         environment="no card reader: the screen shows NO_READER")


def _run_with_faults(kind: str, amount: int | None, specs: tuple[str, ...], *, card: str, reader: str | None,
                     clock: Clock, display: Any, state_dir: str | None, trace_path: str | None, as_json: bool,
                     lang: str) -> None:
    """One transaction with faults active: the same machinery as ``posemu regress``."""
    import tempfile

    from faults.catalogue import load, parse_fault_spec
    from faults.runner import combine, run_setup

    try:
        cat = load()
        chosen = []
        for spec in specs:
            fid, params = parse_fault_spec(spec)
            fault = cat.get(fid)
            for k, v in params.items():
                p = fault.param(k)
                if p is not None:
                    try:
                        num = float(v)
                    except ValueError:
                        raise click.BadParameter(f"{fid}: {k}={v!r} is not a number") from None
                    if not p.min <= num <= p.max:
                        raise click.BadParameter(f"{fid}: {k}={v} outside {p.min:g}…{p.max:g} {p.unit}")
            chosen.append((fault, dict(params)))
        setup = combine(chosen, card=card, txn=kind, reader_url=reader if reader and not reader.startswith("sim")
                        else None)
        if amount is not None:
            setup.amount = amount
    except PosemuError:
        raise  # mapped to an exit code by the posemu group

    async def main() -> tuple[list[Outcome], str, list[str]]:
        with tempfile.TemporaryDirectory(prefix="posemu-fault-") as tmp:
            state = Path(state_dir) if state_dir else Path(tmp)
            run, outcomes, diag = await run_setup(setup, clock=clock, state=state, display=display)
            try:
                if trace_path and run.rig is not None:
                    run.rig.trace.export(trace_path)
                return outcomes, diag.render(lang), run.screens
            finally:
                await run.close()

    try:
        with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            outcomes, diagnosis, screens = runner.run(main())
    except PosemuError:
        raise  # mapped to an exit code by the posemu group
    out = outcomes[-1] if outcomes else None
    ok = out is not None and out.approved
    if as_json:
        click.echo(json.dumps({"approved": ok, "screens": screens, "faults": list(specs),
                               "headline": out.headline.value if out else None,
                               "detail": out.detail.value if out and out.detail else None,
                               "diagnosis": diagnosis}, ensure_ascii=False))
    else:
        click.echo(f"message codes: {' '.join(screens)}")
        click.echo("diagnosis 诊断:")
        click.echo(diagnosis)
        if out is not None:
            detail = f" ({out.detail.value})" if out.detail else ""
            click.echo(f"result: {'APPROVED' if ok else 'FAILED'} {out.headline.value}{detail}")
    if not ok:
        sys.exit(1)
