"""``posemu journal``: the terminal's transaction journal (PANs masked)."""

from __future__ import annotations

import json
import sqlite3

import click
from rich.console import Console
from rich.table import Table

from emulator import config as configmod
from emulator.commands._exit import exit_epilog
from emulator.commands._paths import existing_state_folder
from emulator.journal import Journal
from hardware.clock import RealClock
from protocol.errors import EnvironmentProblem


@click.command("journal", epilog=exit_epilog("listed", None, environment="no journal in the state folder"))
@click.option("--state", "state_dir", default=None, help="State folder. Default: the user data folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="Show the last LIMIT entries.")
@click.option("--json", "as_json", is_flag=True)
def command(state_dir: str | None, config_path: str | None, limit: int, as_json: bool) -> None:
    """List the journal: every transaction, its status and any reversal."""
    configmod.load(config_path)          # a bad --config is still reported
    path = existing_state_folder(state_dir) / "journal.sqlite3"
    if not path.exists():
        raise EnvironmentProblem(f"no journal at {path} (run a transaction first, or give --state)")
    j = Journal(path, clock=RealClock())   # listing only: reversal data stays sealed
    try:
        entries = j.entries(limit)
    except (sqlite3.Error, ValueError) as err:     # a page or row the header check cannot see
        raise EnvironmentProblem(f"cannot read the journal {path}: {err} (corrupt? restore it from a backup or "
                                 "move it away)") from None
    finally:
        j.close()
    if as_json:
        click.echo(json.dumps([{
            "id": e.id, "created": e.created, "kind": e.kind, "stan": e.stan, "pan": e.pan_masked,
            "amount": e.amount, "status": e.status.value, "rc": e.rc, "screen": e.screen,
            "reversal": e.reversal.value, "reversal_attempts": e.reversal_attempts} for e in entries]))
        return
    table = Table(title=f"journal {path}")
    for col in ("id", "created", "kind", "STAN", "PAN", "amount", "status", "rc", "screen", "reversal"):
        table.add_column(col)
    for e in entries:
        rev = e.reversal.value + (f" ×{e.reversal_attempts}" if e.reversal_attempts else "")
        table.add_row(str(e.id), e.created, e.kind, e.stan, e.pan_masked, f"{e.amount / 100:.2f}", e.status.value,
                      e.rc or "", e.screen or "", rev)
    Console().print(table)
