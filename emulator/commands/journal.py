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
from emulator.journal import Entry, Journal
from emulator.messages import format_amount
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
        click.echo(json.dumps([_doc(e) for e in entries], ensure_ascii=False))
        return
    console = Console()
    rows = [_row(e) for e in entries]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_HEADERS)]
    if sum(widths) + 3 * len(widths) + 1 <= console.width:
        table = Table(title=f"journal {path}")
        for h in _HEADERS:
            table.add_column(h, no_wrap=True)
        for r in rows:
            table.add_row(*r)
        console.print(table)
        return
    # too narrow for the table (80 columns): one record per entry, nothing cut
    click.echo(f"journal {path}")
    for e, r in zip(entries, rows, strict=True):
        click.echo(_record(e, dict(zip(_HEADERS, r, strict=True))))


_HEADERS = ("id", "time", "kind", "STAN", "PAN", "entry", "amount", "status", "rc", "RRN", "auth", "batch",
            "screen", "reversal")


def _row(e: Entry) -> tuple[str, ...]:
    rev = e.reversal.value + (f" ×{e.reversal_attempts}" if e.reversal_attempts else "")
    status = e.state + (f" by #{e.voided_by}" if e.voided_by is not None else "") + (
        f" by #{e.completed_by}" if e.completed_by is not None and e.voided_by is None else "") + (
        ", settled" if e.settled else "")
    return (str(e.id), e.created.replace("T", " ")[:19], e.kind, e.stan, e.pan_masked, e.entry,
            format_amount(e.amount, e.currency) if e.amount or e.kind not in ("balance", "settle") else "",
            status, e.rc or "", e.rrn or "", e.auth_code or "", e.batch, e.screen or "", rev)


def _record(e: Entry, r: dict[str, str]) -> str:
    """An entry as short lines (each well under 80 columns), every value whole."""
    head = f"#{r['id']}  {r['time']}  {r['kind']}  {r['amount']}".rstrip()
    lines = [head, f"    status {r['status']}" + (f"  rc {r['rc']}" if r["rc"] else "") + f"  screen {r['screen']}"]
    card = f"    card {r['PAN']} {r['entry']}".rstrip() if r["PAN"] else ""
    refs = "    " + "  ".join(f"{k} {r[k]}" for k in ("STAN", "batch", "RRN", "auth") if r[k])
    lines += [x for x in (card, refs) if x.strip()]
    if e.original_id is not None:
        lines.append(f"    original #{e.original_id}")
    if r["reversal"] != "none":
        lines.append(f"    reversal {r['reversal']}")
    return "\n".join(lines)


def _doc(e: Entry) -> dict[str, object]:
    return {"id": e.id, "created": e.created, "updated": e.updated, "kind": e.kind, "stan": e.stan,
            "date": e.date, "pan": e.pan_masked, "entry": e.entry, "amount": e.amount, "currency": e.currency,
            "status": e.status.value, "state": e.state, "rc": e.rc, "screen": e.screen, "rrn": e.rrn,
            "auth_code": e.auth_code, "batch": e.batch, "tid": e.tid, "mid": e.mid, "original_id": e.original_id,
            "voided_by": e.voided_by, "completed_by": e.completed_by, "settled": e.settled,
            "reversal": e.reversal.value, "reversal_attempts": e.reversal_attempts}
