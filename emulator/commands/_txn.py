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
from protocol.errors import UsageError

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
                 help="Terminal config (TOML; the host's dialect in [host]). Default: terminal.toml in the state "
                      "folder, if there is one (`posemu config init` writes it, the UI saves it)."),
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

        from emulator.commands.config import config_path as saved_or_given

        # the scratch folder has no saved config: the user's saved one (or --config) still applies
        given = saved_or_given(config_path, None)
        with tempfile.TemporaryDirectory(prefix="posemu-scratch-") as scratch:
            run_transaction(kind, amount, card=card, pin=pin, host=host, profile=profile, reader=reader,
                            config_path=given, state_dir=scratch, lang=lang, virtual_time=True,
                            trace_path=trace_path, as_json=as_json, verbose=verbose, extra_setup=extra_setup,
                            action=action)
        return
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # every fault spec is parsed (grammar, ids, presets, parameters, ranges) before anything runs
    specs = _parse_faults(fault_specs)
    sim_card = reader.removeprefix("sim://").split("?")[0] if reader and reader.startswith("sim://") else ""
    if sim_card and card is not None and card != sim_card:
        raise UsageError(f"--card {card} and --reader {reader} name different cards; give one of them")
    card = card or sim_card or None
    if specs and card is None and not reader:
        card = specs[0].fault.card
    card = card or "demo"
    from emulator.commands.config import config_path as saved_or_given

    cfg = build_config(config_path=saved_or_given(config_path, state_dir), host=host, profile=profile, reader=reader,
                       card=card, lang=lang)
    the_pin = pin if pin is not None else load_profile(card).pin
    # paths are checked before the card is read: a bad one is an error now, not a lost result later
    state = state_folder(state_dir) if state_dir or not specs else None
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

    def display(s: Screen) -> None:
        if not as_json:
            click.echo(f"  [{s.code}] {render(s, language)}")  # type: ignore[arg-type]

    if specs:
        from faults.runner import base_config

        with base_config(cfg):       # the run's own bundled host speaks the configured dialect
            _run_with_faults(kind, amount, specs, cfg=cfg, card=card, pin=pin, reader=reader, clock=clock,
                             display=display, state_dir=state_dir, trace_path=trace_path, as_json=as_json,
                             lang=language)
        return

    trace_error: list[OSError] = []
    diagnosis: list[Any] = []

    async def main() -> Outcome:
        assert state is not None
        rig: Rig = await open_rig(cfg, clock=clock, state_dir=state, pinpad=ScriptedPinPad(the_pin), display=display)
        try:
            if extra_setup is not None:
                extra_setup(rig)
            out = await _sign_on_then(rig, kind, amount, action)
            if not out.approved:         # what the trace alone says (`posemu diagnose` adds the self-test)
                from faults.diagnose import diagnose

                diagnosis.append(diagnose(list(rig.trace)))
            return out
        finally:
            if trace_path:
                try:
                    rig.trace.export(trace_path)
                except OSError as e:      # reported after the result: the transaction is not lost
                    trace_error.append(e)
            await rig.close()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        out = runner.run(main())
    _print_result(out, diagnosis[0] if diagnosis else None, as_json=as_json, lang=language)
    if trace_error and trace_path:
        raise write_failed("trace", trace_path, trace_error[0])
    sys.exit(outcome_exit_code(out))


async def _sign_on_then(rig: Rig, kind: str, amount: int | None,
                        action: Callable[[Terminal], Awaitable[Outcome]] | None = None) -> Outcome:
    """Sign on (a failed sign-on is the result), then the transaction (or ``action``)."""
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


def _print_result(out: Outcome | None, diagnosis: Any, *, as_json: bool, lang: str,
                  extra: dict[str, Any] | None = None) -> None:
    """The ``result:`` line (key=value pairs, :func:`result_line`) or the JSON document
    (:func:`outcome_doc`), with what the diagnosis found."""
    if as_json:
        doc: dict[str, Any] = outcome_doc(out) if out is not None else {"approved": False, "screens": []}
        doc.update(extra or {})
        doc["diagnosis"] = diagnosis.to_json() if diagnosis is not None else None
        click.echo(json.dumps(doc, ensure_ascii=False))
        return
    if diagnosis is not None and (diagnosis.findings or diagnosis.explanations):
        click.echo("diagnosis 诊断:")
        click.echo(diagnosis.render(lang))
    if out is None:
        click.echo("result: FAILED (no transaction ran)")
        return
    click.echo(result_line(out, ok=outcome_exit_code(out) == ExitCode.OK))


#: outcomes that say the machine, not the card or the host, stopped the transaction
_ENVIRONMENT_CODES = frozenset({Msg.NO_READER})


def outcome_exit_code(out: Outcome | None) -> int:
    """0 approved; 3 when the reader (device or service) was unusable, 2 when its URL is malformed;
    1 for any other failure — including an approval whose card then could not be taken out (拔出卡失败)."""
    if out is None:
        return ExitCode.FAILED
    if out.approved and out.headline is not Msg.REMOVE_CARD_FAILED:
        return ExitCode.OK
    if "reader.url_malformed" in out.evidence:      # the reader URL given is wrong: a usage error
        return ExitCode.USAGE
    if out.headline in _ENVIRONMENT_CODES or out.detail in _ENVIRONMENT_CODES:
        return ExitCode.ENVIRONMENT
    return ExitCode.FAILED


TXN_EPILOG = exit_epilog("approved", "declined or failed (the message code is printed)",
                         environment="no card reader: the screen shows NO_READER")


def _parse_faults(texts: tuple[str, ...]) -> list[Any]:
    if not texts:
        return []
    from faults.catalogue import load
    from faults.grammar import parse_spec

    cat = load()
    return [parse_spec(t, cat) for t in texts]


def _run_with_faults(kind: str, amount: int | None, specs: list[Any], *, cfg: configmod.TerminalConfig, card: str,
                     pin: str | None, reader: str | None, clock: Clock, display: Any, state_dir: str | None,
                     trace_path: str | None, as_json: bool, lang: str) -> None:
    """One transaction with faults: the same seam and runner as ``posemu regress``, composed with every
    other option (card, PIN, reader, host, profile, config, amount); what cannot combine is an error."""
    import tempfile

    from faults.runner import final_outcome, run_specs

    reader_url = reader if reader and not reader.startswith("sim://") else None


    async def main() -> tuple[Outcome | None, Any, list[str]]:
        with tempfile.TemporaryDirectory(prefix="posemu-fault-") as tmp:
            state = Path(state_dir) if state_dir else Path(tmp)
            ran = await run_specs(specs, clock=clock, state=state, card=card, txn=kind,
                                  reader_url=reader_url, cfg=replace(cfg, host=None), amount=amount,
                                  external_host=cfg.host, display=display, pin=pin)
            try:
                if trace_path and ran.run.rig is not None:
                    ran.run.rig.trace.export(trace_path)
                return final_outcome(ran.outcomes), ran.diagnosis, ran.run.screens
            finally:
                await ran.run.close()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        out, diagnosis, screens = runner.run(main())
    if not as_json:
        click.echo(f"faults: {', '.join(str(s) for s in specs)}")
        click.echo(f"message codes: {' '.join(screens)}")
    _print_result(out, diagnosis, as_json=as_json, lang=lang,
                  extra={"faults": [str(s) for s in specs], "all_screens": screens})
    sys.exit(outcome_exit_code(out))
