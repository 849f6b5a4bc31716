"""``posemu host``: the bundled acquirer host simulator, and ``posemu host accounts`` to administer
its database (cards, balances, permissions, terminals and what the host asks of them)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import click

from emulator.commands._exit import exit_epilog
from emulator.commands._inputs import parse_amount
from emulator.commands._paths import output_file, state_folder
from emulator.commands._pcap import check_pcap, pcap_options, streaming_capture
from emulator.config import parse_hostport
from emulator.host.rules import HostRule, HostRules
from emulator.host.server import HostServer
from emulator.host.store import HostStore
from emulator.sqlite_files import check_sqlite_file
from hardware.clock import RealClock
from protocol.errors import ConfigError, EnvironmentProblem, UsageError
from protocol.specs import Profile, get_profile


@click.group("host", invoke_without_command=True,
             epilog=exit_epilog("stopped by Ctrl-C", None, environment="the address cannot be listened on"))
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (loopback by default; port 0 picks a free one). Any other address "
                   "needs --allow-remote.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --listen address other than loopback (the host simulator then answers other "
                   "machines; it holds test keys and cards only). A warning is printed.")
@click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default=None,
              help="ISO 8583 profile [default: cup, or the base of --config].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Speak the host dialect of this terminal config ([host]: spec, envelope, MAC, sign-on or static "
                   "keys) and serve its terminal.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite database (default: host.sqlite3 in the user data folder); seeded on first start.")
@click.option("--rule", "rules", multiple=True, metavar="ACTION[:k=v,…]",
              help="Behaviour rule, e.g. respond:rc=96,every=2 · delay:delay=30 · no-response:mti=0200 · refuse.")
@click.option("--seed", default=0, show_default=True, help="Seed for the rules' randomness.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=HostServer.DEFAULT_IDLE_TIMEOUT,
              show_default=True, help="Close a connection that completes no request for this many seconds (0: never).")
@click.option("--max-connections", type=click.IntRange(min=1), default=HostServer.DEFAULT_MAX_CONNECTIONS,
              show_default=True, help="Connections open at once; more are refused.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="Listen with TLS: the host's certificate chain (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
              help="The private key of --tls-cert (PEM, readable by its owner only).")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False), default=None,
              help="Require client certificates issued by this CA (PEM): mutual TLS.")
@click.option("-v", "--verbose", count=True,
              help="-v: one masked line per message in and out; -vv: debug.")
@click.option("--fleet", "fleet_size", type=click.IntRange(0, 99_999), default=0, show_default=True,
              help="Also serve a fleet of N terminals (PREFIX00001 …, each with its master key derived from the "
                   "demo TMK) and their cards (copies of --fleet-card under their own PANs): for `posemu fleet "
                   "--host` and the Locust user.")
@click.option("--fleet-prefix", default="FLT", show_default=True, help="Terminal ids of --fleet.")
@click.option("--fleet-card", default="cup_debit", show_default=True, help="Card profile the fleet's cards copy.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Host processes listening on one port (SO_REUSEPORT; the kernel spreads connections over them) "
                   "and sharing the database: money moves are serialised by SQLite's write lock, every worker sees "
                   "the others' changes (duplicates, reversals, sign-ons). Not with --rule or --pcap.")
@pcap_options
@click.pass_context
def command(ctx: click.Context, listen: str, allow_remote: bool, profile: str | None, config_file: str | None,
            db: str | None, rules: tuple[str, ...], seed: int, idle_timeout: float, max_connections: int,
            tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None, verbose: int,
            fleet_size: int = 0, fleet_prefix: str = "FLT", fleet_card: str = "cup_debit", workers: int = 1,
            pcap_path: str | None = None, pcap_clear: bool = False) -> None:
    """Run the host simulator until interrupted (Ctrl-C); `posemu host accounts …` administers its
    database. With --pcap over TLS, the capture holds the messages inside the TLS session."""
    if ctx.invoked_subcommand is not None:
        return
    logging.basicConfig(level=[logging.INFO, logging.DEBUG][min(verbose, 2) // 2],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("posemu.host.wire").setLevel(logging.INFO if verbose else logging.WARNING)
    host, port = parse_hostport(listen, allow_zero=True)
    if not is_loopback(host):
        if not allow_remote:
            raise UsageError(f"--listen {listen} is not a loopback address: other machines could reach the host "
                             "simulator. Add --allow-remote if that is what you want.")
        click.echo(f"posemu host: WARNING: listening on {listen}, reachable from other machines. The simulator "
                   "uses public test keys and test cards; keep it off untrusted networks.", err=True)
    cfg = None
    if config_file:
        from emulator import config as configmod

        cfg = configmod.load(config_file)
        if profile is not None and profile != cfg.profile:
            raise UsageError(f"--profile {profile} and the config's profile {cfg.profile} disagree; give one")
    prof: Profile = cfg.wire_profile() if cfg is not None else get_profile(profile or "cup")
    tls = tls_context(tls_cert, tls_key, tls_client_ca)
    parsed = HostRules([HostRule.parse(r) for r in rules], seed=seed)
    db_path = output_file(db, "host database") if db else state_folder(None) / "host.sqlite3"
    check_sqlite_file(db_path, "host database")
    pcap_out = check_pcap(pcap_path, pcap_clear)
    fleet: tuple[list[str], list[Any]] | None = None
    if fleet_size:
        from emulator.host import provision
        from hardware.cards.profiles import load_profile

        base = load_profile(fleet_card)
        fleet = (provision.fleet_tids(fleet_size, fleet_prefix),
                 [provision.fleet_card(base, i) for i in range(1, fleet_size + 1)])

    if workers > 1:
        if rules:
            raise UsageError("--rule needs one worker (--workers 1): rules count requests in arrival order")
        if pcap_out is not None:
            raise UsageError("--pcap needs one worker (--workers 1)")
    pool: WorkerPool | None = None

    async def main(worker: tuple[int, int] | None = None) -> None:
        server = await HostServer.start(prof, clock=RealClock(), host=host, port=port, db=db_path, rules=parsed,
                                        idle_timeout=idle_timeout, max_connections=max_connections, tls=tls,
                                        worker=worker)
        if cfg is not None:
            from emulator.app import fit_bundled_host

            fit_bundled_host(server, cfg)
        if fleet is not None and worker is None:      # workers: provisioned once before they start
            from emulator.host.provision import provision

            provision(server.store, *fleet)
        if worker is not None and worker[0] > 0:        # a child worker: serve until terminated
            try:
                if pool is not None:
                    pool.ready()
                    await pool.orphaned()
                else:
                    await asyncio.Event().wait()
            finally:
                await server.close()
            return
        if pool is not None:
            pool.wait_ready()
        h, p = server.address
        click.echo(f"posemu host: profile {prof.name}{' over TLS' if tls else ''}, listening on {h}:{p}, "
                   f"database {db_path}{f', {workers} workers' if workers > 1 else ''}", err=False)
        sys.stdout.flush()
        with streaming_capture(pcap_out, pcap_clear) as rec:
            if rec is not None:
                server.wire_observers.append(rec)
            try:
                await asyncio.Event().wait()
            finally:
                await server.close()

    try:
        if workers > 1:
            pool = WorkerPool(host, port, workers)
            port = pool.port
            _prepare_shared(db_path, fleet)
            try:
                pool.start(lambda k: asyncio.run(main((k, workers))))
                signal.signal(signal.SIGTERM, _terminated)     # worker 0 stops its children on the way out
                asyncio.run(main((0, workers)))
            finally:
                pool.stop()
        else:
            asyncio.run(main())
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except OSError as e:
        raise EnvironmentProblem(f"cannot listen on {listen}: {e.strerror or e}") from None


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _prepare_shared(db_path: Path, fleet: tuple[list[str], list[Any]] | None) -> None:
    """Seed (and provision the fleet in) the database the workers will share, once, before they start."""
    from emulator.host.logic import seed_demo

    store = HostStore(db_path, shared=True)
    try:
        if store.empty:
            seed_demo(store)
        if fleet is not None:
            from emulator.host.provision import provision

            provision(store, *fleet)
    finally:
        store.close()


class WorkerPool:
    """``--workers N``: this process is worker 0; N-1 forked children listen on the same port
    (``SO_REUSEPORT``). The port is reserved first (port 0: a free one is picked), the children report
    when they listen, and they are terminated when worker 0 stops."""

    def __init__(self, host: str, port: int, workers: int) -> None:
        import socket

        if not hasattr(socket, "SO_REUSEPORT"):
            raise EnvironmentProblem("--workers needs SO_REUSEPORT, which this platform does not have")
        self.workers = workers
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._reserve = socket.socket(family, socket.SOCK_STREAM)
        self._reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._reserve.bind((host, port))        # holds the port until the workers listen on it
        self.port = int(self._reserve.getsockname()[1])
        self._procs: list[Any] = []
        self._pipes: list[Any] = []
        self._child: Any = None

    def start(self, run: Any) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")    # before any event loop or database is open here
        for k in range(1, self.workers):
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=self._child_main, args=(run, k, child_end), daemon=True,
                               name=f"posemu-host-worker-{k}")
            proc.start()
            child_end.close()
            self._procs.append(proc)
            self._pipes.append(parent_end)

    def _child_main(self, run: Any, k: int, pipe: Any) -> None:
        self._child = pipe
        self._procs, self._pipes = [], []
        try:
            run(k)
        except KeyboardInterrupt:
            pass
        except Exception as e:
            with contextlib.suppress(OSError):
                pipe.send(f"worker {k}: {e}")
            raise

    async def orphaned(self) -> None:
        """In a child: return once worker 0 has gone (so no worker outlives it, even killed)."""
        parent = os.getppid()
        done = asyncio.get_running_loop().create_future()

        def check() -> None:
            if os.getppid() != parent:
                done.set_result(None)
            else:
                asyncio.get_running_loop().call_later(1.0, check)

        check()
        await done

    def ready(self) -> None:
        """In a child: tell worker 0 this one listens."""
        if self._child is not None:
            self._child.send("ready")
            self._child.close()
            self._child = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """In worker 0: wait until every child listens (or say which did not)."""
        for k, pipe in enumerate(self._pipes, start=1):
            if not pipe.poll(timeout):
                raise EnvironmentProblem(f"host worker {k} did not start within {timeout:g} s")
            try:
                msg = pipe.recv()
            except EOFError:
                msg = f"worker {k} exited"
            if msg != "ready":
                raise EnvironmentProblem(f"host {msg}")
        self._reserve.close()

    def stop(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(10)
        self._reserve.close()


def tls_context(cert: str | None, key: str | None, client_ca: str | None) -> ssl.SSLContext | None:
    """The listener's TLS context (TLS 1.2 or later), or ``None`` without ``--tls-cert``."""
    if cert is None:
        if key is not None or client_ca is not None:
            raise UsageError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    from emulator.dialect import check_private_file

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if key is not None:
        check_private_file(Path(key), "--tls-key")
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-cert/--tls-key {cert}: {getattr(e, 'reason', None) or e}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"--tls-client-ca {client_ca}: {getattr(e, 'reason', None) or e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


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


# --- posemu host accounts ------------------------------------------------------------------------------
_DB_OPTIONS = [
    click.option("--db", type=click.Path(dir_okay=False), default=None,
                 help="Host database (default: host.sqlite3 in the state folder)."),
    click.option("--state", "state_dir", default=None, help="State folder (default: the user data folder)."),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
]


def _db_options(fn: Any) -> Any:
    for opt in reversed(_DB_OPTIONS):
        fn = opt(fn)
    return fn


def _open_store(db: str | None, state_dir: str | None) -> HostStore:
    """The host database, created and seeded like `posemu host` does on its first start."""
    from emulator.host.logic import seed_demo

    path = output_file(db, "host database") if db else state_folder(state_dir) / "host.sqlite3"
    check_sqlite_file(path, "host database")
    store = HostStore(path)
    if store.empty:
        seed_demo(store)
    return store


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:       # one line each, nothing truncated whatever the width
        if r["type"] == "terminal":
            click.echo(f"terminal {r['tid']}  signed_on={'yes' if r['signed_on'] else 'no'}  "
                       f"sign_on_required={'yes' if r['require_sign_on'] else 'no'}  "
                       f"mac_required={'yes' if r['mac_required'] else 'no'}  "
                       f"sign_on_mac={'yes' if r['sign_on_mac'] else 'no'}  min_version={r['min_version']}  "
                       f"permissions={','.join(r['permissions']) or '-'}")
        else:
            from emulator.messages import format_amount

            click.echo(f"card {r['pan']}  {r['status']}  balance {format_amount(r['balance'], r['currency'])}  "
                       f"pin_tries={r['pin_tries_left']}/{r['pin_tries_max']}  expiry={r['expiry']}  "
                       f"permissions={','.join(r['permissions']) or '-'}")


@command.group("accounts", epilog=exit_epilog("done", None, environment="the host database cannot be used"))
def accounts() -> None:
    """Cards, balances and permissions, and what the host asks of each terminal (MAC, sign-on).

    A card is named by its card profile (demo, cup_debit…) or its PAN, a terminal by its id. Change
    the database while `posemu host` is stopped: a running host reads it at its next start."""


@accounts.command("list", epilog=exit_epilog("listed", None, environment="the host database cannot be used"))
@_db_options
def accounts_list(db: str | None, state_dir: str | None, as_json: bool) -> None:
    """Every terminal and card (PANs masked 6+4)."""
    from emulator.host import admin

    store = _open_store(db, state_dir)
    try:
        _print(admin.everything(store), as_json)
    finally:
        store.close()


@accounts.command("show", epilog=exit_epilog("shown", None, environment="the host database cannot be used"))
@click.argument("ref")
@_db_options
def accounts_show(ref: str, db: str | None, state_dir: str | None, as_json: bool) -> None:
    """One card (profile name or PAN) or terminal (id)."""
    from emulator.host import admin

    store = _open_store(db, state_dir)
    try:
        _print([admin.view(store, admin.find(store, ref))], as_json)
    finally:
        store.close()


@accounts.command("set", epilog=exit_epilog("changed", None, environment="the host database cannot be used"))
@click.argument("ref")
@click.option("--balance", default=None, metavar="AMOUNT", help="Card: the account's balance, e.g. 100.00.")
@click.option("--status", type=click.Choice(["active", "blocked", "restricted"]), default=None, help="Card status.")
@click.option("--pin-tries", type=int, default=None, help="Card: PIN tries left.")
@click.option("--permissions", default=None, metavar="LIST",
              help="Card or terminal: what it may do, e.g. balance,purchase,preauth,reversal.")
@click.option("--mac-required/--no-mac-required", default=None,
              help="Terminal: every request must carry a valid MAC once it holds a MAC key (A0 otherwise).")
@click.option("--sign-on-required/--no-sign-on-required", default=None, help="Terminal: must sign on first (77).")
@click.option("--sign-on-mac/--no-sign-on-mac", default=None,
              help="Terminal: the sign-on must carry a MAC under its master key.")
@click.option("--min-version", type=int, default=None, help="Terminal: lowest software version accepted (A4).")
@_db_options
def accounts_set(ref: str, balance: str | None, status: str | None, pin_tries: int | None, permissions: str | None,
                 mac_required: bool | None, sign_on_required: bool | None, sign_on_mac: bool | None,
                 min_version: int | None, db: str | None, state_dir: str | None, as_json: bool) -> None:
    """Change a card or a terminal; prints it afterwards."""
    from emulator.host import admin
    from emulator.host.store import TerminalRow

    perms = admin.parse_permissions(permissions) if permissions is not None else None
    amount = _amount(balance) if balance is not None else None
    store = _open_store(db, state_dir)
    try:
        row = admin.find(store, ref)
        if isinstance(row, TerminalRow):
            if any(v is not None for v in (balance, status, pin_tries)):
                raise UsageError(f"{ref} is a terminal: --balance, --status and --pin-tries are for cards")
            row = admin.set_terminal(store, row, mac_required=mac_required, require_sign_on=sign_on_required,
                                     sign_on_mac=sign_on_mac, permissions=perms, min_version=min_version)
        else:
            if any(v is not None for v in (mac_required, sign_on_required, sign_on_mac, min_version)):
                raise UsageError(f"{ref} is a card: --mac-required, --sign-on-required, --sign-on-mac and "
                                 "--min-version are for terminals")
            row = admin.set_card(store, row, balance=amount, status=status, permissions=perms, pin_tries=pin_tries)
        _print([admin.view(store, row)], as_json)
    finally:
        store.close()


def _amount(text: str) -> int:
    if text in ("0", "0.0", "0.00"):
        return 0
    try:
        return parse_amount(text)
    except click.BadParameter as e:
        raise UsageError(f"--balance: {e.message}") from None


@accounts.command("reset", epilog=exit_epilog("reset", None, environment="the host database cannot be used"))
@click.argument("refs", nargs=-1)
@_db_options
def accounts_reset(refs: tuple[str, ...], db: str | None, state_dir: str | None, as_json: bool) -> None:
    """Back to the seeded state: cards to their profile's balance, status, permissions and PIN tries;
    terminals without working keys and with the default rules. REFS: only these (default: all)."""
    from emulator.host import admin

    store = _open_store(db, state_dir)
    try:
        done = admin.reset(store, list(refs) or None)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(done))
    else:
        click.echo(f"reset {len(done)}: {' '.join(done)}")
