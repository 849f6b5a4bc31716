"""``posemu serial-relay``: a real serial reader presented on a pty with line faults (docs/serial-relay.md)."""

from __future__ import annotations

import click

from emulator.commands._bridge import bridge_options, run_bridge
from emulator.commands._exit import exit_epilog
from faults.control import Controller
from protocol.errors import UsageError

LINE_HELP = ("Line faults (--line, or --fault line:…): drop=P and flip=P (a byte lost or one bit flipped, "
             "probability per byte), to=app|device|both, baud=N (the application's side runs at N bit/s: the "
             "bytes are re-read at the wrong rate), stall_after=N (the device says nothing after N more bytes). "
             "--fault software.port-conflict holds the port like another program.")


@click.command("serial-relay", epilog=exit_epilog("stopped (Ctrl-C, SIGTERM or --for)", None,
                                                    environment="the serial device cannot be opened"),
               help="Present a serial reader on a pseudo-terminal, with faults on the line. The program under "
                    "test opens the printed pty path (or --link) instead of the device. " + LINE_HELP)
@click.option("--from", "source", required=True, metavar="serial:///dev/ttyUSB0?baud=9600",
              help="The device (any pyserial port: a tty, a pty, socket://…).")
@click.option("--link", "link_path", default=None, type=click.Path(dir_okay=False), metavar="PATH",
              help="Also make PATH a symbolic link to the pty (for a program configured with a fixed path).")
@click.option("--line", "lines", multiple=True, metavar="k=v,…", help="A line fault from the start (repeatable).")
@bridge_options
def command(source: str, link_path: str | None, lines: tuple[str, ...], faults: tuple[str, ...],
            scenario: str | None, control: str | None, allow_remote: bool, trace_path: str | None,
            duration: float | None, seed: int, verbose: int) -> None:
    from faults.serial_relay import SerialRelay
    from hardware.clock import RealClock
    from hardware.links import SerialLink
    from hardware.registry import ReaderURL

    if not source.startswith("serial://"):
        raise UsageError(f"--from {source!r}: give serial:///dev/ttyUSB0?baud=9600")
    url = ReaderURL.parse(source)
    unknown = set(url.params) - {"baud"}
    if unknown:
        raise UsageError(f"--from {source!r}: unknown parameter(s) {', '.join(sorted(unknown))} (known: baud)")
    baud = url.int_param("baud", 9600)
    path = url.target if url.target.startswith("/") else "/" + url.target
    clock = RealClock()

    def make() -> Controller:
        return SerialRelay(SerialLink(path, clock=clock, baudrate=baud), clock=clock, device_baud=baud, seed=seed,
                           link_path=link_path)

    def banner(tool: Controller) -> str:
        pty = tool.status()["pty"]
        return f"posemu serial-relay: {path} ({baud} baud) → {pty}" + (f" (also {link_path})" if link_path else "")

    run_bridge(make, faults=tuple(f"line:{x}" for x in lines) + faults, scenario=scenario, control=control,
               allow_remote=allow_remote, trace_path=trace_path, duration=duration, verbose=verbose, banner=banner)
