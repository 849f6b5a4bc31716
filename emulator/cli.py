"""The ``posemu`` command line.

Subcommands live one per module in :mod:`emulator.commands`; each module exposes ``command``
(a :class:`click.Command`) and is discovered here, so adding a command touches no other file.

Errors become exit codes here, once (:mod:`emulator.commands._exit`): a command raises the
project's errors (:class:`~protocol.errors.UsageError` → 2,
:class:`~protocol.errors.EnvironmentProblem` → 3, any other ``PosemuError`` → 1) and the group
prints them as one line, without a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

import emulator.commands
from emulator.commands._exit import debug_tracebacks, exit_code_for, exit_epilog, mapped


class PosemuGroup(click.Group):
    """The ``posemu`` group: maps the project's errors to exit codes with a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            code = exit_code_for(e)
            if code is None or debug_tracebacks():
                raise
            raise mapped(e, code) from None


@click.group(cls=PosemuGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=exit_epilog("success", "the operation failed (see each command's --help)"))
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
