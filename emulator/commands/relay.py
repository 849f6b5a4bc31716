"""``posemu relay``: a real (or virtual) card presented in vpcd's reader with catalogue faults on the way
(docs/relay.md)."""

from __future__ import annotations

import os

import click

from emulator.commands._bridge import bridge_options, run_bridge
from emulator.commands._exit import exit_epilog
from faults.control import Controller
from hardware.vpcd import DEFAULT_HOST, DEFAULT_PORT, parse_endpoint
from protocol.errors import UsageError


def vpcd_target(text: str) -> tuple[str, int]:
    """``vpcd`` (slot 0: 35963, or ``$POSEMU_VPCD_PORT``), ``vpcd:PORT`` or ``vpcd:HOST:PORT``."""
    head, _, rest = text.partition(":")
    if head != "vpcd":
        raise UsageError(f"--to {text!r}: give vpcd, vpcd:PORT or vpcd:HOST:PORT")
    if not rest:
        env = os.environ.get("POSEMU_VPCD_PORT", "")
        return (DEFAULT_HOST, int(env) if env.isdigit() else DEFAULT_PORT)
    return parse_endpoint(rest)


def slot_reader(host: str, port: int) -> str | None:
    """The PC/SC reader name of a vpcd slot on this machine, when the port is a known slot."""
    from emulator.commands.card import slot_label

    label = slot_label(host, port)
    return label.split('"')[1] if '"' in label else None


@click.command("relay", epilog=exit_epilog("stopped (Ctrl-C, SIGTERM or --for)", None,
                                             environment="the source reader or vpcd (pcscd) unusable"))
@click.option("--from", "source", required=True, metavar="READER-URL",
              help="The card: pcsc://<index or name> (a real reader), or sim://<profile> (a posemu virtual card).")
@click.option("--to", "target", default="vpcd", show_default=True, metavar="vpcd[:[HOST:]PORT]",
              help="The vpcd slot that presents the card (35963 = \"Virtual PCD 00 00\", 35964 = \"… 00 01\"; "
                   "default slot 0, or $POSEMU_VPCD_PORT).")
@click.option("--target-reader", default=None, metavar="NAME",
              help="The PC/SC name of that slot, for announcing card resets (default: from the port).")
@click.option("--reinsert-after", type=click.FloatRange(0.5, 3600), default=1.0, show_default=True,
              help="Seconds a card that left (pulled, a contact that opened) stays out before it comes back.")
@bridge_options
def command(source: str, target: str, target_reader: str | None, reinsert_after: float, faults: tuple[str, ...],
            scenario: str | None, control: str | None, allow_remote: bool, trace_path: str | None,
            duration: float | None, seed: int, verbose: int) -> None:
    """Present a card to every PC/SC application through vpcd, with catalogue faults (by name, with
    onset) applied between the card and the application: dirty contacts, brown-outs, EMI and heat
    (the card resets: the application gets 0x80100068), a card pulled or a contact that opens
    mid-exchange (0x80100069), a dead, loose or blind reader, a slow chip. --fault takes faults
    that act on the reader, its surroundings or the cardholder (`posemu faults list`)."""
    from faults.relay import CardRelay
    from hardware.clock import RealClock
    from hardware.registry import open_reader

    host, port = vpcd_target(target)
    if not source.startswith(("pcsc://", "sim://")):
        raise UsageError(f"--from {source!r}: give pcsc://<reader> or sim://<profile>")
    url = source
    if url.startswith("sim://") and "present=" not in url:
        url += ("&" if "?" in url else "?") + "present=1"
    name = target_reader or slot_reader(host, port)
    if source.startswith("pcsc://") and name is not None and name.lower() in source.lower():
        raise UsageError(f"--from {source} and --to {target} are the same reader")
    clock = RealClock()
    reader = open_reader(url, clock=clock)

    def make() -> Controller:
        return CardRelay(reader, clock=clock, vpcd=(host, port), target_reader=name, seed=seed,
                         reinsert_after=reinsert_after)

    def banner(tool: Controller) -> str:
        return (f"posemu relay: {source} → vpcd {host}:{port}"
                + (f' (PC/SC reader "{name}")' if name else "") + "; Ctrl-C stops")

    run_bridge(make, faults=faults, scenario=scenario, control=control, allow_remote=allow_remote,
               trace_path=trace_path, duration=duration, verbose=verbose, banner=banner)
