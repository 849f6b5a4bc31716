"""``posemu dissector path|install``: the Wireshark dissector for posemu's ISO 8583 traffic.

``path`` prints where the shipped Lua file is (for ``tshark -X lua_script:$(posemu dissector
path)``); ``install`` copies it into Wireshark's personal Lua plugin folder — the one ``tshark -G
folders`` names, or the platform default — or into ``--dest``. Wireshark loads it at its next
start; captures from ``posemu … --pcap FILE`` then decode on any port.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click

from emulator.commands._exit import exit_epilog
from emulator.wireshark import DISSECTOR_FILE, dissector_path, install, personal_plugin_dir


@click.group("dissector", epilog=exit_epilog("done", None,
                                              environment="the plugin folder cannot be written"))
def command() -> None:
    """The Wireshark dissector for posemu's ISO 8583 (cup and iso87ascii)."""


@command.command("path", epilog=exit_epilog("the path was printed", None,
                                            environment="the dissector is not a file on disk (zipped install)"))
def path_cmd() -> None:
    """Print the path of the shipped dissector (posemu_iso8583.lua).

    Use it once without installing: tshark -X lua_script:"$(posemu dissector path)" -r capture.pcap
    """
    click.echo(str(dissector_path()))


def _wireshark_folders() -> str | None:
    """``tshark -G folders`` output, when tshark is installed and answers."""
    exe = shutil.which("tshark")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-G", "folders"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@command.command("install", epilog=exit_epilog("installed", None, environment="the folder cannot be written"))
@click.option("--dest", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Install into DIR instead of Wireshark's personal Lua plugin folder.")
def install_cmd(dest: str | None) -> None:
    """Copy the dissector into Wireshark's personal Lua plugin folder (or --dest).

    Wireshark and tshark load it at their next start. Do not also pass it with -X lua_script:
    the protocol would be registered twice.
    """
    folder = Path(dest) if dest else personal_plugin_dir(_wireshark_folders())
    target = install(folder)
    click.echo(f"installed {DISSECTOR_FILE} in {folder}")
    click.echo(f"{target}")
