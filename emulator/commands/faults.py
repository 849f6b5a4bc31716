"""``posemu faults``: the fault catalogue."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from emulator.commands._exit import exit_epilog
from faults.catalogue import LAYERS

if TYPE_CHECKING:
    from faults.model import Fault, ParamDef, Preset


@click.group("faults", epilog=exit_epilog("listed or shown", None))
def command() -> None:
    """The fault catalogue: every cause from the two articles, triggerable by id.

    \b
    Ask for a fault as  ID[@PRESET][:name=value,…]  e.g.
      posemu inquiry --virtual-time --fault reader.dirty-contacts
      posemu inquiry --virtual-time --fault reader.dirty-contacts@mild:onset=online
    The defaults are the fault's typical severity: asked for by name, it bites.
    """


def _param_json(p: ParamDef) -> dict[str, Any]:
    out: dict[str, Any] = {"type": p.type.value, "default": p.default, "unit": p.unit, "help": p.help}
    if p.min is not None:
        out["min"], out["max"] = p.min, p.max
    if p.choices:
        out["choices"] = list(p.choices)
    return out


def _preset_json(s: Preset) -> dict[str, Any]:
    return {"name": s.name, "params": s.params, "expect": list(s.expect), "approved": s.approved,
            "diagnosis": list(s.diagnosis), "journal": s.journal, "onset": str(s.onset) if s.onset else None,
            "note": s.note}


def fault_json(f: Fault) -> dict[str, Any]:
    return {"id": f.id, "causes": list(f.causes), "group": f.group, "layer": f.layer,
            "title": {"zh": f.title_zh, "en": f.title_en}, "expect": list(f.expect), "injector": f.injector,
            "onset": str(f.onset), "params": {p.name: _param_json(p) for p in f.params},
            "presets": [_preset_json(s) for s in f.presets],
            "detect": {"zh": f.detect_zh, "en": f.detect_en}, "remedy": {"zh": f.fix_zh, "en": f.fix_en},
            "requires": list(f.requires)}


def _show_default(p: ParamDef) -> str:
    v = p.default
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


@command.command("list", epilog=exit_epilog("listed", None))
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: id, causes, group, layer, parameters, presets, expected codes.")
@click.option("--layer", type=click.Choice(LAYERS), default=None, help="Only faults of this layer.")
def list_cmd(as_json: bool, layer: str | None) -> None:
    """List the faults with the cause ids they reproduce, their group and the messages they produce."""
    from faults.catalogue import load

    cat = load()
    faults = [f for f in cat.faults.values() if layer is None or f.layer == layer]
    if as_json:
        click.echo(json.dumps(
            {"faults": [fault_json(f) for f in faults],
             "groups": {g.id: {"causes": list(g.causes), "title": {"zh": g.title_zh, "en": g.title_en}}
                        for g in cat.groups.values()}}, ensure_ascii=False, indent=1))
        return
    table = Table(title="posemu fault catalogue")
    for col in ("id", "causes", "group", "title", "screen codes", "parameters (defaults)", "presets"):
        table.add_column(col)
    for f in faults:
        params = ", ".join(f"{p.name}={_show_default(p)}{(' ' + p.unit) if p.unit else ''}" for p in f.params)
        table.add_row(f.id, " ".join(f.causes), f.group, f"{f.title_zh}\n{f.title_en}", " ".join(f.expect),
                      params, " ".join(s.name for s in f.presets))
    console = Console()
    console.print(table)
    covered = sorted({c for f in cat.faults.values() for c in f.causes}, key=lambda c: (c[0], int(c[1:])))
    console.print(f"{len(cat.faults)} faults in {len(cat.groups)} cause groups cover "
                  f"{len(covered)}/{len(cat.causes)} cause ids: {' '.join(covered)}")
    missing = cat.uncovered()
    if missing:
        console.print(f"[red]not covered: {' '.join(missing)}[/red]")


@command.command("show", epilog=exit_epilog("shown", None))
@click.argument("fault_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def show_cmd(fault_id: str, as_json: bool) -> None:
    """One fault: its causes and group, typed parameters, onset, the article's detection method and
    remedy, and its presets with what each must show."""
    from faults.catalogue import load

    cat = load()
    f = cat.get(fault_id.partition("@")[0])
    if as_json:
        click.echo(json.dumps(fault_json(f), ensure_ascii=False, indent=1))
        return
    g = cat.group_of(f)
    click.echo(f"{f.id} — {f.title_zh} / {f.title_en}  [{f.layer}]")
    for cid in f.causes:
        c = cat.causes[cid]
        click.echo(f"  {cid} {c.zh}: {c.en}")
    click.echo(f"  group {g.id}: {g.title_zh} / {g.title_en} (causes {' '.join(g.causes)})")
    click.echo(f"  detect 检测: {f.detect_zh} / {f.detect_en}")
    click.echo(f"  remedy 处理: {f.fix_zh} / {f.fix_en}")
    click.echo(f"  onset {f.onset} (override with :onset=…)")
    click.echo(f"  defaults → screens {' '.join(f.expect)}")
    for p in f.params:
        unit = f" {p.unit}" if p.unit else ""
        click.echo(f"  param {p.name} ({p.type.value}) = {_show_default(p)}{unit}  [{p.describe()}]  {p.help}"
                   .rstrip())
    for s in f.presets:
        onset = f", onset {s.onset}" if s.onset else ""
        click.echo(f"  preset @{s.name}: {s.params}{onset} → screens {' '.join(s.expect)}; "
                   f"approved={s.approved}; diagnosis {', '.join(s.diagnosis) or 'none'}")
    if f.requires:
        click.echo(f"  requires {', '.join(f.requires)}")
    if f.note:
        click.echo(f"  note: {f.note}")
