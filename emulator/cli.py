"""The ``posemu`` command line.

Subcommands live one per module in :mod:`emulator.commands`; each module exposes ``command``
(a :class:`click.Command`) and is discovered here, so adding a command touches no other file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

import emulator.commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="posemu")
def main() -> None:
    """posemu — a POS payment-terminal emulator with real card readers and a fault injector."""


def _discover() -> None:
    for mod in sorted(pkgutil.iter_modules(emulator.commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"emulator.commands.{mod.name}")
        cmd = getattr(module, "command", None)
        if isinstance(cmd, click.Command):
            main.add_command(cmd)


_discover()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
