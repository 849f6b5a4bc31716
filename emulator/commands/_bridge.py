"""What ``posemu proxy``, ``posemu relay`` and ``posemu serial-relay`` share: the options that arm
faults (``--fault``, ``--scenario``), the HTTP control API (``--control``), loopback-only listening
(``--allow-remote``), the masked trace written as it happens (``--trace``), and the run loop —
start the tool, arm, serve until Ctrl-C, SIGTERM or ``--for`` seconds, stop, close the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import click

from emulator.commands._paths import TRACE_PREFIXES, output_file, write_failed
from emulator.config import parse_hostport
from emulator.trace import Kind, TraceEntry
from faults.control import Controller, Schedule, ToxicSet, check_schedule, load_schedule, run_schedule
from protocol.errors import ConfigError, EnvironmentProblem, UsageError


def bridge_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--fault``, ``--scenario``, ``--control``, ``--allow-remote``, ``--trace``, ``--for``, ``-v``."""
    for opt in reversed([
        click.option("--fault", "faults", multiple=True, metavar="SPEC",
                     help="A fault to switch on from the start (repeatable): a catalogue fault "
                          "ID[@PRESET][:k=v,…] (`posemu faults list`), or this tool's own vocabulary (see above)."),
        click.option("--scenario", "scenario", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="A TOML schedule: [[at]] t = seconds, then arm/disarm/enable/disable/reset."),
        click.option("--control", "control", default=None, metavar="HOST:PORT",
                     help="Serve the HTTP+JSON control API here (loopback; port 0 picks one): switch faults on "
                          "and off while the tool runs (docs/proxy.md)."),
        click.option("--allow-remote", is_flag=True,
                     help="Allow listen and control addresses other than loopback (a warning is printed)."),
        click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
                     help="Write the masked trace as JSON lines while running (`posemu diagnose --trace FILE`)."),
        click.option("--for", "duration", type=click.FloatRange(min=0.0, min_open=True), default=None,
                     metavar="SECONDS", help="Stop after this many seconds (default: run until Ctrl-C)."),
        click.option("--seed", default=7, show_default=True, help="Seed for the faults' randomness."),
        click.option("-v", "--verbose", count=True, help="Print the traffic as it passes (masked)."),
    ]):
        fn = opt(fn)
    return fn


def loopback_only(address: str, what: str, allow_remote: bool, *, allow_zero: bool = True) -> tuple[str, int]:
    """``HOST:PORT`` checked: anything but loopback needs ``--allow-remote`` (then a warning)."""
    from emulator.commands.host import is_loopback

    host, port = parse_hostport(address, allow_zero=allow_zero)
    if not is_loopback(host):
        if not allow_remote:
            raise UsageError(f"{what} {address} is not a loopback address: other machines could reach it. "
                             "Add --allow-remote if that is what you want.")
        click.echo(f"posemu: WARNING: {what} {address} is reachable from other machines.", err=True)
    return host, port


class TraceFile:
    """A trace written entry by entry (mode 0600), so a killed tool still leaves what it saw."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        self._f: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8")
        self.error: OSError | None = None

    def __call__(self, e: TraceEntry) -> None:
        if self._f is None or self.error is not None:
            return
        try:
            self._f.write(e.to_json() + "\n")
            self._f.flush()
        except OSError as err:
            self.error = err

    def close(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None


def _printer(e: TraceEntry) -> None:
    if e.kind in (Kind.ISO_OUT, Kind.ISO_IN):
        fields = e.data.get("fields", {})
        shown = " ".join(f"{k}={v}" for k, v in fields.items() if k in ("3", "4", "11", "39", "41"))
        click.echo(f"{e.t:9.3f} {'→' if e.kind is Kind.ISO_OUT else '←'} {e.what} {shown}")
    elif e.kind is not Kind.TXN:
        extra = f" [{e.data['code']}]" if "code" in e.data else ""
        click.echo(f"{e.t:9.3f} {e.kind.value:7s} {e.what}{extra}")


def check_faults(toxics: ToxicSet, faults: tuple[str, ...], scenario: str | None) -> Schedule | None:
    """Every ``--fault`` and the scenario's arms parse for this tool: a mistake is exit 2 before anything runs."""
    for f in faults:
        toxics.parse(f)
    if scenario is None:
        return None
    schedule = load_schedule(scenario)
    check_schedule(schedule, toxics)
    return schedule


def run_bridge(make: Callable[[], Controller], *, faults: tuple[str, ...], scenario: str | None,
               control: str | None, allow_remote: bool, trace_path: str | None, duration: float | None,
               verbose: int, banner: Callable[[Controller], str],
               setup: Callable[[Controller], Awaitable[None]] | None = None,
               finish: Callable[[Controller], None] | None = None) -> None:
    """Run a tool until interrupted: the shared life of the three commands (real clock)."""
    from hardware.clock import RealClock

    ctl_addr = loopback_only(control, "--control", allow_remote) if control else None
    trace_out = output_file(trace_path, "trace", replaces=TRACE_PREFIXES) if trace_path else None
    clock = RealClock()

    async def main() -> None:
        tool = make()
        toxic_set: ToxicSet = tool.toxic_set  # type: ignore[attr-defined]
        schedule = check_faults(toxic_set, faults, scenario)
        sink: TraceFile | None = None
        if trace_out is not None:
            try:
                sink = TraceFile(trace_out)
            except OSError as e:
                raise write_failed("trace", trace_out, e) from None
            tool.subscribe(sink)
        if verbose:
            tool.subscribe(_printer)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        server = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            try:
                await tool.start()
            except OSError as e:
                raise EnvironmentProblem(f"cannot start the {tool.kind}: {e.strerror or e}") from None
            if setup is not None:
                await setup(tool)
            for f in faults:
                tool.arm(f)
            if ctl_addr is not None:
                from emulator.control_http import ControlServer

                try:
                    server = await ControlServer.start(tool, *ctl_addr)
                except OSError as e:
                    raise EnvironmentProblem(f"cannot serve the control API on {control}: {e.strerror or e}") \
                        from None
            click.echo(banner(tool))
            if server is not None:
                h, p = server.address
                click.echo(f"posemu {tool.kind}: control API on http://{h}:{p}/")
            sys.stdout.flush()
            if schedule is not None:
                def bad_step(step: Any, e: Exception) -> None:
                    click.echo(f"posemu {tool.kind}: scenario step at {step.t:g} s: {e}", err=True)

                tasks.append(asyncio.ensure_future(run_schedule(tool, schedule, clock, on_error=bad_step)))
            if duration is not None:
                tasks.append(asyncio.ensure_future(_later(clock, duration, stop)))
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            if server is not None:
                await server.close()
            await tool.stop()
            if finish is not None:
                finish(tool)
            if sink is not None:
                sink.close()
                if sink.error is not None:
                    raise write_failed("trace", sink.path, sink.error)
                click.echo(f"posemu {tool.kind}: trace written to {sink.path}", err=True)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except ConfigError:
        raise


async def _later(clock: Any, seconds: float, stop: asyncio.Event) -> None:
    await clock.sleep(seconds)
    stop.set()
