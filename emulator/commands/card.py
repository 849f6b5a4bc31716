"""``posemu card serve``: present a virtual card to PC/SC through vsmartcard's vpcd.

Any PC/SC application on this machine (posemu's ``pcsc://`` reader, ``pcsc_scan``, OpenSC, a
browser) then sees the profile's chip card in the reader "Virtual PCD 00 00" (port 35963) or
"… 00 01" (35964). Ctrl-C pulls the card out. Prints the slot it serves — never card data.

"serving" is printed only once vpcd has talked to the card (its first power-on or ATR request):
connecting alone proves nothing, because vpcd serves one card per slot and keeps a second
connection waiting, unread, until the first card leaves. While that lasts the command says the
slot is busy, and prints "serving" when it takes over.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from typing import TypeVar

import click

from emulator.commands._exit import exit_epilog
from hardware.cards.profiles import load_profile
from hardware.clock import RealClock
from hardware.sim import card_for_profile
from hardware.vpcd import DEFAULT_HOST, DEFAULT_PORT, VpcdClient, parse_endpoint
from protocol.errors import UsageError

T = TypeVar("T")
MAX_RECONNECTS = 10_000
BUSY_NOTICE_S = 3.0
"""Seconds without a message from vpcd after connecting before the slot is reported busy
(pcscd polls a vpcd slot with an ATR request about every 0.4 s)."""


def slot_label(host: str, port: int) -> str:
    """How a user recognises the slot: the PC/SC reader name, when the port is a known slot."""
    bases = [DEFAULT_PORT]
    env_port = os.environ.get("POSEMU_VPCD_PORT", "")
    if env_port.isdigit():
        bases.insert(0, int(env_port))
    if host in ("127.0.0.1", "localhost", "::1"):
        for base in bases:
            if port in (base, base + 1):
                return f'PC/SC reader "Virtual PCD 00 {port - base:02d}"'
    return "the vpcd slot on that port"


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value != value:      # nan passes FloatRange: every comparison with it is false
        raise click.BadParameter("must be a number of seconds")
    return value


@click.group("card", epilog=exit_epilog("the card was served until Ctrl-C", None,
                                         environment="vpcd (pcscd) not reachable"))
def command() -> None:
    """Virtual cards for PC/SC applications."""


@command.command("serve", epilog=exit_epilog("the card was served until Ctrl-C", None,
                                             environment="vpcd (pcscd) not reachable"))
@click.option("--profile", "profile_name", required=True, help="Card profile with a chip (name or TOML path).")
@click.option("--vpcd", "endpoint", default=f"{DEFAULT_HOST}:{DEFAULT_PORT}", show_default=True,
              envvar="POSEMU_VPCD_PORT", metavar="[HOST:]PORT",
              help="vpcd slot to connect to (35963 = slot 0, 35964 = slot 1). Default from "
                   "$POSEMU_VPCD_PORT when set (the test run's private pcscd).")
@click.option("--wait", "wait_s", type=click.FloatRange(0, 86_400), default=60.0, callback=_finite, show_default=True,
              help="Seconds to keep retrying while vpcd (pcscd) is not up.")
def serve(profile_name: str, endpoint: str, wait_s: float) -> None:
    """Insert the card into vpcd's reader and keep it there until Ctrl-C."""
    host, port = parse_endpoint(endpoint)
    profile = load_profile(profile_name)
    if profile.emv is None:
        raise UsageError(f"card profile {profile_name!r} has no chip, so vpcd cannot present it; "
                         "use a chip card profile (e.g. cup_debit)")
    card = card_for_profile(profile)
    clock = RealClock()
    client = VpcdClient(card, clock=clock, host=host, port=port, connect_timeout=wait_s)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async def until_stopped(aw: Awaitable[T]) -> tuple[bool, T | None]:
                """Run ``aw`` unless Ctrl-C comes first: ``(finished, its result)``."""
                stopped = asyncio.ensure_future(stop.wait())
                work = asyncio.ensure_future(aw)
                await asyncio.wait({stopped, work}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not work.done():
                    work.cancel()
                    return False, None
                return True, work.result()

            served = False
            for _ in range(MAX_RECONNECTS):
                await client.insert()
                done, talked = await until_stopped(client.wait_active(BUSY_NOTICE_S))
                if not done:
                    return
                if not talked and client.inserted:
                    click.echo(f"posemu card: connected to vpcd {host}:{port} but vpcd does not talk to the card: "
                               f"the slot is busy (another card is being served on {slot_label(host, port)}); "
                               "waiting for it to be free", err=True)
                    done, talked = await until_stopped(client.wait_active())
                    if not done:
                        return
                if talked:
                    verb = "re-inserted" if served else "serving"
                    served = True
                    click.echo(f"posemu card: {verb} profile {profile_name!r} on vpcd {host}:{port} "
                               f"({slot_label(host, port)}); Ctrl-C removes the card")
                    if not (await until_stopped(client.wait_removed()))[0]:
                        return
                if stop.is_set():
                    return
                click.echo("posemu card: vpcd closed the connection (pcscd stopped?); reconnecting", err=True)
                if not (await until_stopped(clock.sleep(client.retry_interval)))[0]:
                    return
        finally:
            await client.remove()
            click.echo("posemu card: card removed")

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        click.echo("posemu card: card removed")
