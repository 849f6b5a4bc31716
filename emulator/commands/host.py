"""``posemu host``: the bundled acquirer host simulator."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys

import click

from emulator.commands._exit import exit_epilog
from emulator.commands._paths import output_file, state_folder
from emulator.commands._pcap import check_pcap, pcap_options, streaming_capture
from emulator.config import parse_hostport
from emulator.host.rules import HostRule, HostRules
from emulator.host.server import HostServer
from emulator.sqlite_files import check_sqlite_file
from hardware.clock import RealClock
from protocol.errors import EnvironmentProblem, UsageError
from protocol.specs import get_profile


@click.command("host", epilog=exit_epilog("stopped by Ctrl-C", None,
                                            environment="the address cannot be listened on"))
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (loopback by default; port 0 picks a free one). Any other address "
                   "needs --allow-remote.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --listen address other than loopback (the host simulator then answers other "
                   "machines; it holds test keys and cards only). A warning is printed.")
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
@pcap_options
def command(listen: str, allow_remote: bool, profile: str, db: str | None, rules: tuple[str, ...], seed: int,
            idle_timeout: float, max_connections: int, verbose: int, pcap_path: str | None = None,
            pcap_clear: bool = False) -> None:
    """Run the host simulator until interrupted (Ctrl-C)."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose + 1, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    host, port = parse_hostport(listen, allow_zero=True)
    if not is_loopback(host):
        if not allow_remote:
            raise UsageError(f"--listen {listen} is not a loopback address: other machines could reach the host "
                             "simulator. Add --allow-remote if that is what you want.")
        click.echo(f"posemu host: WARNING: listening on {listen}, reachable from other machines. The simulator "
                   "uses public test keys and test cards; keep it off untrusted networks.", err=True)
    prof = get_profile(profile)
    parsed = HostRules([HostRule.parse(r) for r in rules], seed=seed)
    db_path = output_file(db, "host database") if db else state_folder(None) / "host.sqlite3"
    check_sqlite_file(db_path, "host database")
    pcap_out = check_pcap(pcap_path, pcap_clear)

    async def main() -> None:
        server = await HostServer.start(prof, clock=RealClock(), host=host, port=port, db=db_path, rules=parsed,
                                        idle_timeout=idle_timeout, max_connections=max_connections)
        h, p = server.address
        click.echo(f"posemu host: profile {profile}, listening on {h}:{p}, database {db_path}", err=False)
        sys.stdout.flush()
        with streaming_capture(pcap_out, pcap_clear) as rec:
            if rec is not None:
                server.wire_observers.append(rec)
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


def is_loopback(host: str) -> bool:
    """Only this machine can connect: ``localhost``, 127.0.0.0/8, ``::1`` (and ``::ffff:127.x``).

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "10.0.0.1", "example")]
    [True, True, True, False, False, False, False]
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False      # a name that may resolve anywhere
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback
