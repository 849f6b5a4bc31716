"""``posemu device msr --pty``: an emulated MSR605 magstripe reader/writer behind a pseudo-terminal.

Prints the pty's slave path; open it like a real reader, e.g.
``posemu inquiry --reader serial:///dev/pts/7``, or with any MSR605 tool. The emulator answers
every command of the MSR605 manual (:mod:`hardware.msr605_device`); reads, writes and erases act
on the card in the reader — the profile's card, or the card kept in ``--card-file F``: read from
F if it exists (else recorded from the profile and saved there), and every write or erase is
saved to F at once, so ``posemu swipe --card F`` swipes the card as written. When the host arms
an operation that waits for a card, the card passes the head:

* on a line typed on stdin (Enter or ``s``); ``bad 2`` swipes with track 2 unreadable,
  ``error`` swipes with status 31 (read/write error: nothing is written), ``q`` quits;
* on ``SIGUSR1`` (``kill -USR1 <pid>``), for scripts;
* automatically, ``--auto-swipe MS`` milliseconds after each such command. The default is
  off when stdin is a terminal (you swipe by hand) and 500 ms otherwise (in scripts and CI the
  "user" swipes half a second after the host asks, like a quick cashier).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from emulator.commands._exit import exit_epilog
from hardware.cards.profiles import load_profile
from hardware.clock import RealClock
from hardware.msr605_codec import Status
from hardware.msr605_device import Msr605Device, Msr605PtyServer
from hardware.msr605_stripe import Coercivity, MagStripe, load_card_file, save_card_file
from hardware.sim import card_for_profile

DEFAULT_AUTO_SWIPE_MS = 500


@click.group("device", epilog=exit_epilog("stopped by q, Ctrl-C or SIGTERM", None))
def command() -> None:
    """Emulated serial devices (card readers) for testing drivers and terminals."""


@command.command("msr", epilog=exit_epilog("stopped by q, Ctrl-C or SIGTERM", None,
                                           environment="no pseudo-terminal could be created"))
@click.option("--pty", "use_pty", is_flag=True, required=True, help="Create a pseudo-terminal (the only mode).")
@click.option("--profile", "profile_name", default="demo", show_default=True,
              help="Card profile whose stripe is in the reader (name or TOML path).")
@click.option("--card-file", "card_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Keep the card in this file: read from it if it exists (else recorded from --profile), "
                   "every write and erase saved to it. `posemu swipe --card FILE` swipes it.")
@click.option("--coercivity", type=click.Choice(["hi", "lo"]), default="hi", show_default=True,
              help="Coercivity of a card recorded from --profile (a Lo-Co writer cannot write a Hi-Co card).")
@click.option("--auto-swipe", "auto_ms", type=click.IntRange(0, 3_600_000), default=None, metavar="MS",
              help=f"Swipe MS ms after each command that waits for a card (read, write, erase); 0 = never. "
                   f"Default: off on a terminal, {DEFAULT_AUTO_SWIPE_MS} ms otherwise.")
@click.option("--chunk", type=click.IntRange(0, 65_536), default=0, show_default=True,
              help="Send replies in pieces of this many bytes (0 = whole); exercises short reads.")
def msr(use_pty: bool, profile_name: str, card_file: str | None, coercivity: str, auto_ms: int | None,
        chunk: int) -> None:
    """Emulate an MSR605 reader/writer on a new pty until Ctrl-C."""
    if card_file is not None and os.path.exists(card_file):
        stripe = load_card_file(card_file)
        source = f"card file {card_file}"
    else:
        stripe = MagStripe.from_iso(card_for_profile(load_profile(profile_name)).stripe, Coercivity(coercivity))
        source = f"profile {profile_name!r}"
        if card_file is not None:
            save_card_file(card_file, stripe)
            source += f", kept in {card_file}"
    interactive = sys.stdin.isatty()
    if auto_ms is None:
        auto_ms = 0 if interactive else DEFAULT_AUTO_SWIPE_MS

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = Msr605PtyServer(
            Msr605Device(), clock=RealClock(), card=stripe, card_file=card_file,
            auto_swipe=auto_ms / 1000 if auto_ms else None, write_chunk=chunk,
            on_event=lambda text: click.echo(f"msr605: {text}"),
        )
        path = await server.start()
        click.echo(f"posemu device: MSR605 emulator on {path} (card: {source}); open it as serial://{path}")
        if auto_ms:
            click.echo(f"posemu device: auto-swipe {auto_ms} ms after each command that waits for a card")
        click.echo("posemu device: Enter/s = swipe, 'bad N' = track N unreadable, 'error' = read error, "
                   "q = quit; SIGUSR1 = swipe")
        sys.stdout.flush()
        pending: set[asyncio.Task[bool]] = set()

        def swipe(status: Status | None = None, bad: frozenset[int] = frozenset()) -> None:
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
