"""``posemu host``: the bundled acquirer host simulator."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from emulator.commands._exit import exit_epilog
from emulator.commands._paths import output_file, state_folder
from emulator.config import parse_hostport
from emulator.host.rules import HostRule, HostRules
from emulator.host.server import HostServer
from emulator.sqlite_files import check_sqlite_file
from hardware.clock import RealClock
from protocol.errors import EnvironmentProblem
from protocol.specs import get_profile


@click.command("host", epilog=exit_epilog("stopped by Ctrl-C", None,
                                            environment="the address cannot be listened on"))
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (loopback by default; port 0 picks a free one).")
@click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default="cup", show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite database (default: host.sqlite3 in the user data folder); seeded on first start.")
@click.option("--rule", "rules", multiple=True, metavar="ACTION[:k=v,…]",
              help="Behaviour rule, e.g. respond:rc=96,every=2 · delay:delay=30 · no-response:mti=0200 · refuse.")
@click.option("--seed", default=0, show_default=True, help="Seed for the rules' randomness.")
@click.option("-v", "--verbose", count=True)
def command(listen: str, profile: str, db: str | None, rules: tuple[str, ...], seed: int, verbose: int) -> None:
    """Run the host simulator until interrupted (Ctrl-C)."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose + 1, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    host, port = parse_hostport(listen, allow_zero=True)
    prof = get_profile(profile)
    parsed = HostRules([HostRule.parse(r) for r in rules], seed=seed)
    db_path = output_file(db, "host database") if db else state_folder(None) / "host.sqlite3"
    check_sqlite_file(db_path, "host database")

    async def main() -> None:
        server = await HostServer.start(prof, clock=RealClock(), host=host, port=port, db=db_path, rules=parsed)
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
        raise EnvironmentProblem(f"cannot listen on {listen}: {e.strerror or e}") from None
