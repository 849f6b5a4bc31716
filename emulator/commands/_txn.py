"""Shared code of ``posemu inquiry`` and ``posemu purchase``: run one transaction and print it."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from emulator import config as configmod
from emulator.app import Rig, default_state_dir, open_rig
from emulator.messages import Screen, render
from emulator.ports import ScriptedPinPad
from emulator.terminal import Outcome
from hardware.cards.profiles import load_profile
from hardware.clock import Clock, RealClock, VirtualClock
from protocol.errors import PosemuError

TXN_OPTIONS = [
    click.option("--card", "card", default="demo", show_default=True, help="Card profile (bundled name or TOML path)."),
    click.option("--pin", default=None, help="PIN the cardholder types (default: the profile's PIN)."),
    click.option("--host", default=None, metavar="HOST:PORT",
                 help="Acquirer host; omitted: the bundled host runs in-process on a loopback port."),
    click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default=None, help="ISO 8583 profile."),
    click.option("--reader", default=None, metavar="URL", help="Reader URL (default sim://<card>)."),
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="Terminal config (TOML)."),
    click.option("--state", "state_dir", type=click.Path(file_okay=False), default=None,
                 help="State folder (journal, host database). Default: the user data folder."),
    click.option("--lang", type=click.Choice(["zh", "en", "both"]), default=None, help="Screen language."),
    click.option("--virtual-time", is_flag=True, help="Run on the virtual clock (timeouts cost no wall time)."),
    click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
                 help="Write the masked event trace (JSON lines)."),
    click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON."),
    click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug)."),
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


def run_transaction(kind: str, amount: int | None, *, card: str, pin: str | None, host: str | None,
                    profile: str | None, reader: str | None, config_path: str | None, state_dir: str | None,
                    lang: str | None, virtual_time: bool, trace_path: str | None, as_json: bool, verbose: int,
                    extra_setup: Any = None) -> None:
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = build_config(config_path=config_path, host=host, profile=profile, reader=reader, card=card, lang=lang)
        the_pin = pin if pin is not None else load_profile(card).pin
    except PosemuError as e:
        raise click.ClickException(str(e)) from None
    clock: Clock = VirtualClock() if virtual_time else RealClock()
    language = cfg.language
    printed: list[str] = []

    def display(s: Screen) -> None:
        line = render(s, language)  # type: ignore[arg-type]
        printed.append(line)
        if not as_json:
            click.echo(f"  [{s.code}] {line}")

    async def main() -> Outcome:
        rig: Rig = await open_rig(cfg, clock=clock, state_dir=Path(state_dir) if state_dir else default_state_dir(),
                                  pinpad=ScriptedPinPad(the_pin), display=display)
        try:
            if extra_setup is not None:
                extra_setup(rig)
            if not rig.terminal.signed_on:
                so = await rig.terminal.sign_on()
                if not so.approved:
                    return so
            if kind == "balance":
                return await rig.terminal.balance_inquiry()
            assert amount is not None
            return await rig.terminal.purchase(amount)
        finally:
            if trace_path:
                rig.trace.export(trace_path)
            await rig.close()

    try:
        with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            out = runner.run(main())
    except PosemuError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps({
            "kind": out.kind, "approved": out.approved, "headline": out.headline.value,
            "detail": out.detail.value if out.detail else None, "rc": out.rc, "balance": out.balance,
            "currency": out.currency, "screens": out.codes, "journal_id": out.journal_id,
        }, ensure_ascii=False))
    else:
        status = "APPROVED" if out.approved else "FAILED"
        detail = f" ({out.detail.value})" if out.detail else ""
        click.echo(f"result: {status} {out.headline.value}{detail}" + (f" rc={out.rc}" if out.rc else ""))
    if not out.approved:
        sys.exit(1)
