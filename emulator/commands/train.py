"""``posemu train``: training mode — random faults, the trainee names the remedy, scored (A17, B19)."""

from __future__ import annotations

import random
import sys

import click

from emulator.commands._exit import ExitCode, exit_epilog
from emulator.messages import Msg, Screen, render

CHOICES = 4


def _answers(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    out = []
    for a in value.split(","):
        a = a.strip()
        if not (a.isascii() and a.isdigit() and 1 <= int(a) <= CHOICES):
            raise click.BadParameter(f"{a!r}: each answer is a choice 1…{CHOICES}, e.g. 2,1,4")
        out.append(int(a))
    return out


@click.command("train", epilog=exit_epilog("every remedy named right", "a remedy named wrong"))
@click.option("--rounds", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many faulty transactions to diagnose.")
@click.option("--seed", default=None, type=int, help="Seed (default: random); the same seed gives the same quiz.")
@click.option("--answers", default=None, callback=_answers,
              help="Answers as 1-based choices, comma-separated (non-interactive).")
@click.option("--lang", type=click.Choice(["zh", "en", "both"]), default="both")
def command(rounds: int, seed: int | None, answers: list[int] | None, lang: str) -> None:
    """Run transactions with a random fault each; after each, pick the remedy from four. Scored.

    Practice without a real terminal: the articles' remedy for staff unfamiliar with the flow
    (培训不到位) is training with simulated transactions.
    """
    from faults.catalogue import load
    from faults.regress import Case, run_cases

    rng = random.Random(seed)
    cat = load()
    faults = [f for f in cat.faults.values() if f.injector not in ("pcsc", "port-busy")]
    given = answers
    score = 0
    for i in range(rounds):
        fault = rng.choice(faults)
        local = [s for s in fault.presets if s.reader != "vpcd"] or list(fault.presets)
        preset = next((s for s in local if s.approved is False), local[0])
        result = run_cases([Case(f"{fault.id}[{preset.name}]", preset, fault, seed=rng.randrange(1000))])[0]
        click.echo(f"\n— round {i + 1}/{rounds} —")
        for code in result.codes:
            click.echo(f"  screen: {render(Screen(Msg(code)), lang)}")  # type: ignore[arg-type]
        # the wrong answers come from other cause groups: causes the evidence cannot tell apart are
        # not a fair quiz
        others = rng.sample([f for f in cat.faults.values()
                             if f.group != fault.group and not set(f.causes) & set(fault.causes)], 3)
        options = [fault, *others]
        rng.shuffle(options)
        for n, f in enumerate(options, 1):
            text = {"zh": f.fix_zh, "en": f.fix_en, "both": f"{f.fix_zh} / {f.fix_en}"}[lang]
            click.echo(f"  {n}. {text}")
        if given is not None:
            choice = given[i] if i < len(given) else 0
        else:
            choice = click.prompt("  your remedy", type=click.IntRange(1, CHOICES))
        right = options.index(fault) + 1
        if choice == right:
            score += 1
            click.echo("  ✓ correct")
        else:
            click.echo(f"  ✗ the answer was {right}: {fault.title_zh} / {fault.title_en} "
                       f"({', '.join(fault.causes)})")
    click.echo(f"\nscore: {score}/{rounds}")
    sys.exit(ExitCode.OK if score == rounds else ExitCode.FAILED)

