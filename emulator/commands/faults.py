"""``posemu faults``: the fault catalogue."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from emulator.commands._exit import exit_epilog
from faults.catalogue import LAYERS


@click.group("faults", epilog=exit_epilog("listed or shown", None))
def command() -> None:
    """The fault catalogue: every cause from the two articles, triggerable by id."""


@command.command("list", epilog=exit_epilog("listed", None))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: id, cause ids, layer, expected codes.")
@click.option("--layer", type=click.Choice(LAYERS), default=None, help="Only faults of this layer.")
def list_cmd(as_json: bool, layer: str | None) -> None:
    """List the faults with the cause ids they reproduce and the messages they produce."""
    from faults.catalogue import load

    cat = load()
    faults = [f for f in cat.faults.values() if layer is None or f.layer == layer]
    if as_json:
        click.echo(json.dumps([{
            "id": f.id, "causes": list(f.causes), "layer": f.layer, "title": {"zh": f.title_zh, "en": f.title_en},
            "expect": list(f.expect), "injector": f.injector,
            "params": {p.name: {"unit": p.unit, "min": p.min, "max": p.max, "default": p.default} for p in f.params},
            "scenarios": [s.name for s in f.scenarios]} for f in faults], ensure_ascii=False, indent=1))
        return
    table = Table(title="posemu fault catalogue")
    for col in ("id", "causes", "layer", "title", "screen codes", "parameters"):
        table.add_column(col)
    for f in faults:
        params = ", ".join(f"{p.name}={p.default:g} {p.unit}" for p in f.params)
        table.add_row(f.id, " ".join(f.causes), f.layer, f"{f.title_zh}\n{f.title_en}", " ".join(f.expect), params)
    console = Console()
    console.print(table)
    covered = sorted({c for f in cat.faults.values() for c in f.causes}, key=lambda c: (c[0], int(c[1:])))
    console.print(f"{len(cat.faults)} faults cover {len(covered)}/{len(cat.causes)} cause ids: {' '.join(covered)}")
    missing = cat.uncovered()
    if missing:
        console.print(f"[red]not covered: {' '.join(missing)}[/red]")


@command.command("show", epilog=exit_epilog("shown", None))
@click.argument("fault_id")
def show_cmd(fault_id: str) -> None:
    """One fault: its causes, parameters, the article's detection method and remedy, its scenarios."""
    from faults.catalogue import load

    cat = load()
    f = cat.get(fault_id)
    click.echo(f"{f.id} — {f.title_zh} / {f.title_en}  [{f.layer}]")
    for cid in f.causes:
        c = cat.causes[cid]
        click.echo(f"  {cid} {c.zh}: {c.en}")
    click.echo(f"  detect 检测: {f.detect_zh} / {f.detect_en}")
    click.echo(f"  remedy 处理: {f.fix_zh} / {f.fix_en}")
    for p in f.params:
        click.echo(f"  param {p.name} = {p.default:g} {p.unit} (range {p.min:g}…{p.max:g}) {p.help}")
    for s in f.scenarios:
        click.echo(f"  scenario {s.name}: params {s.params} → screens {list(s.expect)}, approved={s.approved}, "
                   f"diagnosis {list(s.diagnosis)}")
    if f.note:
        click.echo(f"  note: {f.note}")
