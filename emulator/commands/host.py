"""``posemu host``: the bundled acquirer host simulator."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from emulator.app import default_state_dir
from emulator.config import parse_hostport
from emulator.host.rules import HostRule, HostRules
from emulator.host.server import HostServer
from emulator.keystore import private_dir
from hardware.clock import RealClock
from protocol.errors import PosemuError
from protocol.specs import get_profile


@click.command("host")
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (loopback by default; port 0 picks a free one).")
@click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default="cup", show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite database (default: host.sqlite3 in the user data folder); seeded on first start.")
@click.option("--rule", "rules", multiple=True, metavar="ACTION[:k=v,…]",
              help="Behaviour rule, e.g. respond:rc=96,every=2 · delay:delay=30 · no-response:mti=0200 · refuse.")
@click.option("--seed", default=0, show_default=True, help="Seed for the rules' randomness.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=HostServer.DEFAULT_IDLE_TIMEOUT,
              show_default=True, help="Close a connection that completes no request for this many seconds (0: never).")
@click.option("--max-connections", type=click.IntRange(min=1), default=HostServer.DEFAULT_MAX_CONNECTIONS,
              show_default=True, help="Connections open at once; more are refused.")
@click.option("-v", "--verbose", count=True)
def command(listen: str, profile: str, db: str | None, rules: tuple[str, ...], seed: int, idle_timeout: float,
            max_connections: int, verbose: int) -> None:
    """Run the host simulator until interrupted (Ctrl-C)."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose + 1, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        host, port = parse_hostport(listen, allow_zero=True)
        prof = get_profile(profile)
        parsed = HostRules([HostRule.parse(r) for r in rules], seed=seed)
    except PosemuError as e:
        raise click.ClickException(str(e)) from None
    db_path = Path(db) if db else default_state_dir() / "host.sqlite3"
    try:
        private_dir(db_path.parent)
    except PosemuError as e:
        raise click.ClickException(str(e)) from None

    async def main() -> None:
        server = await HostServer.start(prof, clock=RealClock(), host=host, port=port, db=db_path, rules=parsed,
                                        idle_timeout=idle_timeout, max_connections=max_connections)
        h, p = server.address
        click.echo(f"posemu host: profile {profile}, listening on {h}:{p}, database {db_path}", err=False)
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {listen}: {e}") from None
