"""``posemu swipe``: one simulated magstripe swipe through the physical model, track by track.

``--card`` names a card profile or a magstripe card file written by ``posemu device msr
--card-file`` (:mod:`hardware.msr605_stripe`): its tracks are swiped as they were written. A
written track that holds no ISO/IEC 7811 characters (raw data) is reported with what a reader
decodes from it.

Exits 0 when every track on the card read correctly, 1 otherwise (2 and 3: see ``--help``).
Card data is shown masked:
PAN as first 6 + last 4, name and discretionary data hidden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import click

from emulator.commands._exit import exit_epilog
from hardware.cards.profiles import load_profile
from hardware.magstripe import Damage, SwipeParams, SwipeReport, TrackDiagnostics, mask_track, simulate_swipe
from hardware.magstripe.measure import geometric, sweep, tolerated
from hardware.magstripe.tracks import track_spec
from hardware.msr605_stripe import is_card_file, load_card_file
from hardware.ports import TrackRead
from hardware.sim import card_for_profile
from protocol.errors import PosemuError


@dataclasses.dataclass(frozen=True, slots=True)
class _Sweep:
    unit: str
    get: Callable[[SwipeParams], float]
    set: Callable[[SwipeParams, float, int], SwipeParams]     # (base, value, seed offset)
    values: tuple[float, ...]


SWEEPS: dict[str, _Sweep] = {
    "speed": _Sweep("in/s", lambda p: p.speed_ips,
                    lambda p, v, i: dataclasses.replace(p, speed_ips=v, seed=p.seed + i),
                    tuple(geometric(1.0, 1000.0, 31))),
    "skew": _Sweep("°", lambda p: p.skew_deg,
                   lambda p, v, i: dataclasses.replace(p, skew_deg=v, seed=p.seed + i),
                   tuple(k / 4 for k in range(61))),
    "noise": _Sweep("σ", lambda p: p.noise,
                    lambda p, v, i: dataclasses.replace(p, noise=v, seed=p.seed + i),
                    tuple(k / 200 for k in range(21))),
    "dirt": _Sweep("µm", lambda p: p.dirt_um,
                   lambda p, v, i: dataclasses.replace(p, dirt_um=v, seed=p.seed + i),
                   tuple(k * 2.5 for k in range(25))),
}


def _damage(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[Damage, ...]:
    try:
        return tuple(Damage.parse(v) for v in values)
    except PosemuError as e:
        raise click.BadParameter(str(e)) from None


#: what a hand can do at the counter, with room to spare; beyond these the swipe model's arithmetic
#: breaks down (a speed of 1e300 in/s or an acceleration of 1e300 in/s² divide by zero)
MIN_SPEED, MAX_SPEED = 0.01, 10_000.0
MAX_ACCEL = 10_000.0
MAX_DIRT = 10_000.0
MAX_NOISE = 1_000.0


def _speed(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if 0 < value < MIN_SPEED or value > MAX_SPEED or value != value:
        raise click.BadParameter(f"speed must be {MIN_SPEED:g} … {MAX_SPEED:g} in/s")
    return value          # zero or negative: the swipe model's own message (speed must be positive)


@click.command("swipe", epilog=exit_epilog("every track on the card read correctly (or the sweep ran)",
                                             "a track misread"))
@click.option("--card", "card", default="demo", show_default=True,
              help="Card profile (name or TOML path), or a card file written by `posemu device msr --card-file`.")
@click.option("--speed", type=float, default=10.0, show_default=True, callback=_speed,
              help=f"Swipe speed, in/s ({MIN_SPEED:g} … {MAX_SPEED:g}).")
@click.option("--accel", type=click.FloatRange(-MAX_ACCEL, MAX_ACCEL), default=0.0, show_default=True,
              help="Acceleration, in/s².")
@click.option("--skew", type=float, default=0.0, show_default=True, help="Head/card tilt, degrees.")
@click.option("--dirt", type=click.FloatRange(max=MAX_DIRT), default=0.0, show_default=True,
              help="Dirt between head and stripe, µm.")
@click.option("--noise", type=click.FloatRange(max=MAX_NOISE), default=0.0, show_default=True,
              help="EMI noise σ, in units of a clean 10 in/s pulse.")
@click.option("--damage", multiple=True, callback=_damage, metavar="START:END[:SEVERITY]",
              help="Demagnetised stretch of the stripe, inches from the leading edge; severity 0–1 "
                   "(default 1). Repeatable.")
@click.option("--reverse", is_flag=True, help="Swipe the card the other way round.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (noise, jitter).")
@click.option("-v", "--verbose", is_flag=True, help="Show the decoder's diagnostics per track.")
@click.option("--sweep", type=click.Choice(sorted(SWEEPS)), default=None,
              help="Instead of one swipe, measure the read rate over a range of one setting "
                   "(the other options are the base).")
@click.option("--swipes", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Swipes per value with --sweep (seeds SEED, SEED+1, …).")
def command(card: str, speed: float, accel: float, skew: float, dirt: float, noise: float,
            damage: tuple[Damage, ...], reverse: bool, seed: int, verbose: bool, sweep: str | None,
            swipes: int) -> None:
    """Swipe a card through the simulated reader and show what each track read.

    With --sweep, swipe many times per value of one setting and print how often each track read
    exactly, and the range around the base value where every swipe read.
    """
    name, stripe, unreadable = _card(card)
    params = SwipeParams(speed_ips=speed, accel_ips2=accel, skew_deg=skew, dirt_um=dirt, noise=noise,
                         damage=damage, reverse=reverse, seed=seed)
    if sweep is not None:
        _sweep(stripe, params, sweep, swipes)
        return
    report = simulate_swipe(stripe, params)
    click.echo(_headline(name, params, report))
    all_ok = True
    for n, data in enumerate(stripe, start=1):
        read = report.result.track(n)
        if read is None:
            continue
        status = read.status.value.upper()
        if data is None and n in unreadable:
            all_ok = False
            raw = unreadable[n]
            click.echo(f"track {n}  {raw.status.value.upper():<18} written, but not as ISO/IEC 7811 characters "
                       f"({raw.detail})")
            continue
        if data is None:
            click.echo(f"track {n}  {'-':<18} not recorded on this card")
            continue
        if read.ok:
            shown = mask_track(n, read.data) if read.data == data else "(data differs from the card!)"
            note = f"  ({read.detail})" if read.detail else ""
            click.echo(f"track {n}  {status:<18} {shown}{note}")
        else:
            all_ok = False
            click.echo(f"track {n}  {status:<18} {read.detail}")
        diag = report.tracks[n - 1]
        if verbose and diag is not None:
            click.echo(_diagnostics(diag))
        all_ok = all_ok and read.ok and read.data == data
    click.get_current_context().exit(0 if all_ok else 1)


def _card(card: str) -> tuple[str, tuple[str | None, str | None, str | None], dict[int, TrackRead]]:
    """The card's name, its stripe's ISO content, and what a reader decodes from written tracks
    that hold no ISO characters (a card file only)."""
    if is_card_file(card):
        mag = load_card_file(card)
        unreadable = {n: mag.read(n) for n in (1, 2, 3) if mag.track(n) is not None and not mag.read(n).ok}
        return card, mag.iso(), unreadable
    profile = load_profile(card)
    return profile.name, card_for_profile(profile).stripe, {}


def _sweep(stripe: Sequence[str | None], base: SwipeParams, what: str, swipes: int) -> None:
    spec = SWEEPS[what]
    unit = spec.unit
    around = spec.get(base)
    values = sorted({*spec.values, around})

    def setting(value: float, i: int) -> SwipeParams:
        return spec.set(base, value, i)

    rates = sweep(stripe, values, setting, swipes)
    tracks = [n for n in (1, 2, 3) if stripe[n - 1] is not None]
    click.echo(f"read rate over {swipes} swipes per value ({what} in {unit}; other settings as given)")
    click.echo(f"{what:>10}  " + "  ".join(f"track {n}" for n in tracks))
    for r in rates:
        click.echo(f"{r.value:>10g}  " + "  ".join(f"{r.rate(n):>7.2f}" for n in tracks))
    for n in tracks:
        lo, hi = tolerated(rates, n, around)
        span = "none (the base value does not read every time)" if lo != lo else f"{lo:g} … {hi:g} {unit}"
        click.echo(f"track {n}: every swipe read over {span}")


def _headline(name: str, p: SwipeParams, report: SwipeReport) -> str:
    motion = f"{p.speed_ips:g} in/s" + (f" {p.accel_ips2:+g} in/s²" if p.accel_ips2 else "")
    parts = [f"card {name}", motion, f"skew {p.skew_deg:g}°"]
    if p.dirt_um:
        parts.append(f"dirt {p.dirt_um:g} µm")
    if p.noise:
        parts.append(f"noise {p.noise:g}")
    for d in p.damage:
        parts.append(f"damage {d.start_in:g}–{d.end_in:g} in ×{d.severity:g}")
    if p.reverse:
        parts.append("reversed")
    parts.append(f"seed {p.seed}")
    return "swipe: " + ", ".join(parts) + f" — {report.duration_s * 1e3:.1f} ms across the head"


def _diagnostics(d: TrackDiagnostics) -> str:
    fs = d.adc_rate_hz
    lines = [f"         {len(d.peaks.samples)} peaks accepted of {len(d.signal_samples)} "
             f"({d.noise_peaks} from noise), {d.missed_transitions} of {len(d.arrivals_s)} transitions missed"]
    clock = d.clock
    if clock.periods:
        bpi = track_spec(d.track).bpi
        first, last = clock.periods[0], clock.periods[-1]
        lines.append(f"         clock locked at {clock.boundaries[0] / fs * 1e3:.2f} ms, {len(clock.bits)} bits; "
                     f"bit cell {first / fs * 1e6:.0f}→{last / fs * 1e6:.0f} µs "
                     f"(speed seen {fs / (first * bpi):.1f}→{fs / (last * bpi):.1f} in/s)")
    if d.break_reason:
        where = f" at {d.break_sample / fs * 1e3:.2f} ms" if d.break_sample is not None else ""
        lines.append(f"         broke{where}: {d.break_reason}")
    return "\n".join(lines)
