"""``posemu device msr --pty``: an emulated MSR605 magstripe reader behind a pseudo-terminal.

Prints the pty's slave path; open it like a real reader, e.g.
``posemu inquiry --reader serial:///dev/pts/7``. The emulator answers the MSR605 commands; when
the host arms an ISO read, a swipe of the profile's card happens:

* on a line typed on stdin (Enter or ``s``); ``bad 2`` swipes with track 2 unreadable,
  ``error`` swipes with status 31 (read error), ``q`` quits;
* on ``SIGUSR1`` (``kill -USR1 <pid>``), for scripts;
* automatically, ``--auto-swipe MS`` milliseconds after each ISO read command. The default is
  off when stdin is a terminal (you swipe by hand) and 500 ms otherwise (in scripts and CI the
  "user" swipes half a second after the host asks, like a quick cashier).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from emulator.commands._exit import exit_epilog
from hardware.cards.profiles import load_profile
from hardware.clock import RealClock
from hardware.msr605 import Status
from hardware.msr605_device import Msr605Device, Msr605PtyServer
from hardware.sim import card_for_profile

DEFAULT_AUTO_SWIPE_MS = 500


@click.group("device", epilog=exit_epilog("stopped by q, Ctrl-C or SIGTERM", None))
def command() -> None:
    """Emulated serial devices (card readers) for testing drivers and terminals."""


@command.command("msr", epilog=exit_epilog("stopped by q, Ctrl-C or SIGTERM", None,
                                           environment="no pseudo-terminal could be created"))
@click.option("--pty", "use_pty", is_flag=True, required=True, help="Create a pseudo-terminal (the only mode).")
@click.option("--profile", "profile_name", default="demo", show_default=True,
              help="Card profile whose stripe is swiped (name or TOML path).")
@click.option("--auto-swipe", "auto_ms", type=click.IntRange(0, 3_600_000), default=None, metavar="MS",
              help=f"Swipe MS ms after each ISO read command; 0 = never. Default: off on a terminal, "
                   f"{DEFAULT_AUTO_SWIPE_MS} ms otherwise.")
@click.option("--chunk", type=click.IntRange(0, 65_536), default=0, show_default=True,
              help="Send replies in pieces of this many bytes (0 = whole); exercises short reads.")
def msr(use_pty: bool, profile_name: str, auto_ms: int | None, chunk: int) -> None:
    """Emulate an MSR605 reader on a new pty until Ctrl-C."""
    card = card_for_profile(load_profile(profile_name))
    interactive = sys.stdin.isatty()
    if auto_ms is None:
        auto_ms = 0 if interactive else DEFAULT_AUTO_SWIPE_MS

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = Msr605PtyServer(
            Msr605Device(), clock=RealClock(), stripe=card.stripe,
            auto_swipe=auto_ms / 1000 if auto_ms else None, write_chunk=chunk,
            on_event=lambda text: click.echo(f"msr605: {text}"),
        )
        path = await server.start()
        click.echo(f"posemu device: MSR605 emulator on {path} (profile {profile_name!r}); "
                   f"open it as serial://{path}")
        if auto_ms:
            click.echo(f"posemu device: auto-swipe {auto_ms} ms after each ISO read")
        click.echo("posemu device: Enter/s = swipe, 'bad N' = track N unreadable, 'error' = read error, "
                   "q = quit; SIGUSR1 = swipe")
        sys.stdout.flush()
        pending: set[asyncio.Task[bool]] = set()

        def swipe(status: Status = Status.OK, bad: frozenset[int] = frozenset()) -> None:
            task = loop.create_task(server.swipe(status=status, bad=bad))
            pending.add(task)
            task.add_done_callback(pending.discard)

        def on_line() -> None:
            line = sys.stdin.readline()
            if not line:                      # EOF: stop listening to stdin, keep serving
                loop.remove_reader(sys.stdin.fileno())
                return
            words = line.split()
            if not words or words[0] in ("s", "swipe"):
                swipe()
            elif words[0] in ("q", "quit", "exit"):
                stop.set()
            elif words[0] == "bad" and len(words) == 2 and words[1] in ("1", "2", "3"):
                swipe(bad=frozenset({int(words[1])}))
            elif words[0] == "error":
                swipe(status=Status.RW_ERROR)
            else:
                click.echo("msr605: commands: Enter/s, bad N, error, q")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, swipe)
        stdin_fd = sys.stdin.fileno() if sys.stdin and not sys.stdin.closed else -1
        if stdin_fd >= 0:
            try:
                loop.add_reader(stdin_fd, on_line)
            except (OSError, ValueError, PermissionError):
                stdin_fd = -1                 # e.g. stdin is a regular file: not watched
        try:
            await stop.wait()
        finally:
            if stdin_fd >= 0:
                loop.remove_reader(stdin_fd)
            await server.close()
            click.echo("posemu device: stopped")

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        click.echo("posemu device: stopped")
