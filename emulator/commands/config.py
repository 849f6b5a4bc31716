"""``posemu config``: the terminal configuration (TOML) — a commented template, the configuration in
effect with its secrets hidden, and sealed keys.

Which file a command reads: ``--config FILE`` when given, else ``terminal.toml`` in the state
folder (``--state``, or the user data folder) when it exists — where the desktop UI saves its
settings and where ``posemu config init`` writes — else the built-in defaults.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import click
import tomli_w

from emulator import config as configmod
from emulator.app import default_state_dir
from emulator.commands._exit import exit_epilog
from emulator.config import KEY_PURPOSES
from emulator.keystore import user_key, write_private
from protocol.errors import EnvironmentProblem, UsageError

SAVED_NAME = "terminal.toml"


def saved_config(state_dir: str | Path | None) -> Path:
    """Where the saved configuration lives: ``terminal.toml`` in the state folder."""
    return (Path(state_dir) if state_dir else default_state_dir()) / SAVED_NAME


def config_path(given: str | None, state_dir: str | Path | None) -> str | None:
    """The config file a command reads: ``--config``, else the saved one if it exists, else none."""
    if given:
        return given
    saved = saved_config(state_dir)
    return str(saved) if saved.is_file() else None


def template() -> str:
    """The commented template ``posemu config init`` writes (every key at its default)."""
    return (resources.files("emulator") / "config_template.toml").read_text(encoding="utf-8")


@click.group("config", epilog=exit_epilog("done", None))
def command() -> None:
    """Terminal configuration (TOML): init, show, and sealed keys.

    Commands read --config FILE, else terminal.toml in the state folder (where the UI saves and
    `config init` writes), else the defaults. Every key: docs/config.md."""


@command.command("init", epilog=exit_epilog("the template was written", None,
                                             environment="the file cannot be written"))
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--state", "state_dir", default=None,
              help="State folder whose terminal.toml to write (default: the user data folder).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str | None, state_dir: str | None, force: bool) -> None:
    """Write a commented configuration template (every key at its default) to PATH, or to
    terminal.toml in the state folder, which every command then reads."""
    target = Path(path) if path else saved_config(state_dir)
    if target.is_dir():
        raise UsageError(f"{target} is a folder; give a file name")
    if target.exists() and not force:
        raise UsageError(f"{target} exists; add --force to overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise EnvironmentProblem(f"cannot create {target.parent}: {e.strerror or e}") from None
    write_private(target, template().encode("utf-8"))
    click.echo(f"wrote {target}")


@command.command("show", epilog=exit_epilog("the configuration is valid and was printed", None))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: terminal.toml in the state folder, if there is one).")
@click.option("--state", "state_dir", default=None, help="State folder (default: the user data folder).")
def show(config_file: str | None, state_dir: str | None) -> None:
    """Print the configuration in effect (defaults + file) as TOML, keys and passwords hidden
    (a key shows its check value only). A bad file is an error naming the key."""
    path = config_path(config_file, state_dir)
    cfg = configmod.load(path)
    doc = configmod.to_dict(cfg, hide_secrets=True)
    prof = cfg.wire_profile()
    click.echo(f"# posemu configuration in effect: {path or 'built-in defaults (no config file)'}")
    click.echo(f"# host: {cfg.host or 'the bundled host simulator, in-process'}"
               + (f", backup {cfg.dialect.backup}" if cfg.dialect.backup else ""))
    click.echo(f"# wire profile: {prof.name} ({prof.description}); MAC "
               f"{prof.mac_alg.value if cfg.dialect.mac_enabled else 'none'}; sign-on "
               f"{'on' if cfg.dialect.sign_on else 'off (static keys)'}; "
               f"{'TLS' if cfg.dialect.tls_on else 'plain TCP'}")
    click.echo("# secrets are hidden: this output is for reading, not for loading")
    click.echo(tomli_w.dumps(doc), nl=False)


@command.command("seal-key", epilog=exit_epilog("the sealed key is printed", None))
@click.option("--hex", "hex_key", default=None, metavar="HEX",
              help="The key in hex (omitted: read from standard input, not echoed). Prefer stdin: "
                   "a key on the command line lands in the shell history.")
@click.option("--key", "which", type=click.Choice(["tmk", "pik", "mak"]), default="tmk", show_default=True,
              help="Which key of [keys]: the terminal master key, or a static PIN or MAC key (a host "
                   "without sign-on).")
def seal_key(hex_key: str | None, which: str) -> None:
    """Seal a key under your local key; prints a `tmk_sealed = "v1:…"` line (or pik_sealed,
    mak_sealed) for [keys].

    The sealed value opens only on this machine, for this user (the local key is
    local.key in the posemu state folder, mode 0600)."""
    if hex_key is None:
        hex_key = click.prompt(f"{which} (hex)", hide_input=True) if sys.stdin.isatty() \
            else sys.stdin.readline()
    text = hex_key.strip().replace(" ", "")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError("the key must be hex digits") from None
    if len(key) not in (8, 16, 24):
        raise UsageError("a DES key is 8, 16 or 24 bytes (16, 32 or 48 hex digits)")
    sealed = user_key().seal_text(key, KEY_PURPOSES[which])
    click.echo(f'{which}_sealed = "{sealed}"')
