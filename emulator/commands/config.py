"""``posemu config``: the terminal configuration and its secrets."""

from __future__ import annotations

import sys

import click

from emulator.commands._exit import exit_epilog
from emulator.config import TMK_PURPOSE
from emulator.keystore import user_key
from protocol.errors import UsageError


@click.group("config", epilog=exit_epilog("done", None))
def command() -> None:
    """Terminal configuration (TOML) and its keys."""


@command.command("seal-key", epilog=exit_epilog("the sealed key is printed", None))
@click.option("--hex", "hex_key", default=None, metavar="HEX",
              help="The key in hex (omitted: read from standard input, not echoed). Prefer stdin: "
                   "a key on the command line lands in the shell history.")
def seal_key(hex_key: str | None) -> None:
    """Seal a terminal master key under your local key; prints a `tmk_sealed = "v1:…"` line for [keys].

    The sealed value opens only on this machine, for this user (the local key is
    local.key in the posemu state folder, mode 0600)."""
    if hex_key is None:
        hex_key = click.prompt("terminal master key (hex)", hide_input=True) if sys.stdin.isatty() \
            else sys.stdin.readline()
    text = hex_key.strip().replace(" ", "")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError("the key must be hex digits") from None
    if len(key) not in (8, 16, 24):
        raise UsageError("a terminal master key is 8, 16 or 24 bytes (16, 32 or 48 hex digits)")
    sealed = user_key().seal_text(key, TMK_PURPOSE)
    click.echo(f'tmk_sealed = "{sealed}"')
