"""Exit codes of every ``posemu`` command, and how errors map to them.

===  =====================================================================================
0    approved, clean, nothing found
1    the transaction was declined or failed; a regression scenario failed; ``diagnose``
     found a fault; a swipe misread
2    usage error: a bad option value, an unknown id or card, a bad config, profile,
     scenario or trace file (:class:`protocol.errors.UsageError`, :class:`ConfigError`)
3    environment error: the state folder, a database, an output path or the reader
     service is unusable (:class:`protocol.errors.EnvironmentProblem`, reader service
     and device errors, ``OSError``, ``sqlite3.Error``)
===  =====================================================================================

The mapping is applied once, by the ``posemu`` group (:mod:`emulator.cli`): commands raise the
project's errors and never translate them to ``click.ClickException`` themselves.
"""

from __future__ import annotations

import enum
import os
import sqlite3

import click

from hardware.errors import LinkError, NoReaderError, ServiceUnavailableError, SharingViolationError
from protocol.errors import EnvironmentProblem, PosemuError, UsageError


class ExitCode(enum.IntEnum):
    """The four exit codes every command ends with (README, "Exit codes")."""

    OK = 0
    FAILED = 1
    USAGE = 2
    ENVIRONMENT = 3


#: (error class, exit code), first match wins: more specific classes first.
EXIT_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (UsageError, ExitCode.USAGE),                       # includes ConfigError
    (EnvironmentProblem, ExitCode.ENVIRONMENT),
    (ServiceUnavailableError, ExitCode.ENVIRONMENT),    # pcscd down
    (NoReaderError, ExitCode.ENVIRONMENT),              # no such reader / device
    (SharingViolationError, ExitCode.ENVIRONMENT),      # another program holds the reader
    (LinkError, ExitCode.ENVIRONMENT),                  # serial port missing, busy, not permitted
    (sqlite3.Error, ExitCode.ENVIRONMENT),              # a database the code did not translate
    (OSError, ExitCode.ENVIRONMENT),                    # a path or socket the code did not translate
    (PosemuError, ExitCode.FAILED),                     # anything else the operation hit
)


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code for an error, or ``None`` when it is not one we map (a bug: let it show)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return None


def one_line(exc: BaseException) -> str:
    """The error as one clean line (no traceback, no class name unless there is no message)."""
    if isinstance(exc, OSError) and not isinstance(exc, PosemuError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    elif isinstance(exc, sqlite3.Error):
        text = f"database error: {exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class MappedError(click.ClickException):
    """A project error as click shows it: ``Error: <one line>``, with the mapped exit code."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(one_line(exc))


class _Failed(MappedError):
    exit_code = ExitCode.FAILED


class _Usage(MappedError):
    exit_code = ExitCode.USAGE


class _Environment(MappedError):
    exit_code = ExitCode.ENVIRONMENT


_MAPPED: dict[ExitCode, type[MappedError]] = {
    ExitCode.FAILED: _Failed, ExitCode.USAGE: _Usage, ExitCode.ENVIRONMENT: _Environment}


def mapped(exc: BaseException, code: ExitCode) -> MappedError:
    """The click exception that prints ``exc`` as one line and exits with ``code``."""
    return _MAPPED[code](exc)


def exit_epilog(ok: str, failed: str | None, *, environment: str = "") -> str:
    """The "Exit codes" paragraph of a command's ``--help`` (``\\b`` keeps click from rewrapping)."""
    lines = ["\b", "Exit codes:", f"  0  {ok}"]
    if failed:
        lines.append(f"  1  {failed}")
    lines += ["  2  usage error: bad option, unknown id or card, bad config or file",
              "  3  environment error: state folder, database, output path or reader unusable"]
    if environment:
        lines.append(f"     (also: {environment})")
    return "\n".join(lines)


def debug_tracebacks() -> bool:
    """``POSEMU_DEBUG=1`` lets mapped errors propagate with their traceback (for bug reports)."""
    return os.environ.get("POSEMU_DEBUG", "") not in ("", "0")
