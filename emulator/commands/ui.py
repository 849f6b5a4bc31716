"""``posemu ui``: the desktop emulator (a Textual app)."""

from __future__ import annotations

from pathlib import Path

import click

from emulator.commands._exit import exit_epilog
from emulator.commands._paths import state_folder
from emulator.commands._txn import build_config


@click.command("ui", epilog=exit_epilog("the app was closed", None))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Terminal config (TOML). Default: terminal.toml in the state folder, if saved from the UI.")
@click.option("--host", default=None, metavar="HOST:PORT",
              help="Acquirer host; omitted: the bundled host runs in-process on a loopback port.")
@click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default=None, help="ISO 8583 profile.")
@click.option("--reader", default=None, metavar="URL", help="Reader URL (default sim://<card>).")
@click.option("--card", default="demo", show_default=True, help="Card profile in the virtual reader.")
@click.option("--lang", type=click.Choice(["zh", "en", "both"]), default=None, help="Screen language.")
@click.option("--state", "state_dir", default=None,
              help="State folder (journal, host database). Default: the user data folder.")
@click.option("--no-sign-on", is_flag=True, help="Do not sign on at start.")
@click.option("--light", is_flag=True, help="Light colour theme.")
def command(config_path: str | None, host: str | None, profile: str | None, reader: str | None, card: str,
            lang: str | None, state_dir: str | None, no_sign_on: bool, light: bool) -> None:
    """The desktop emulator: terminal face, keypad, card slot, trace, swipe view, faults, diagnosis.

    Starts on embedded defaults: the bundled host on a loopback port, the virtual reader with
    the demo card, state in the user data folder; it signs on by itself. Press b for a balance
    inquiry, w to swipe, type the PIN (or k) and Enter; ? shows every key.
    """
    state = state_folder(state_dir)
    saved = state / "terminal.toml"
    path = Path(config_path) if config_path else (saved if saved.is_file() else None)
    cfg = build_config(config_path=str(path) if path else None, host=host, profile=profile, reader=reader,
                       card=card, lang=lang)
    from emulator.ui import PosemuApp  # Textual is imported only for this command

    app = PosemuApp(cfg, state_dir=state, config_path=path or saved, card=card, auto_sign_on=not no_sign_on,
                    theme="textual-light" if light else None)
    app.run()
