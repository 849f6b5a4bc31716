"""Paths the CLI is given, checked before anything runs.

A state folder or output file that cannot be used is an
:class:`~protocol.errors.EnvironmentProblem` (exit 3) naming the path and the reason, found
*before* the card is read or a scenario runs — not a traceback after the transaction, with
the result line lost.

Writability is asked of the kernel with :func:`os.access`, which also answers "no" for root on
a read-only file system (``EROFS``); permission bits do not stop root, and then the folder is
in fact writable.
"""

from __future__ import annotations

import os
from pathlib import Path

from emulator.app import default_state_dir
from emulator.keystore import may_tighten
from protocol.errors import EnvironmentProblem, UsageError


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def state_folder(given: str | None) -> Path:
    """The state folder (``--state`` or the user data folder), created if missing, and writable."""
    path = Path(given) if given else default_state_dir()
    if path.exists() and not path.is_dir():
        raise EnvironmentProblem(f"state folder {path} is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.stat().st_mode & 0o077 and may_tighten(path):
            path.chmod(0o700)               # state folders are private (keys, journal, host database)
    except OSError as e:
        raise EnvironmentProblem(f"cannot create the state folder {path}: {_reason(e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"state folder {path} is not writable (read-only file system or permissions)")
    return path


def existing_state_folder(given: str | None) -> Path:
    """A state folder that must already exist (to read what earlier runs left)."""
    path = Path(given) if given else default_state_dir()
    if not path.exists():
        raise EnvironmentProblem(f"state folder {path} does not exist (run a transaction first, or give --state)")
    if not path.is_dir():
        raise EnvironmentProblem(f"state folder {path} is not a folder")
    return path


def output_file(given: str, what: str, *, replaces: tuple[bytes, ...] = ()) -> Path:
    """A file the command will write at the end (``--trace``, ``--junit``): its folder is created
    if missing; a path that cannot be written is refused now, before anything runs.

    With ``replaces``, an existing non-empty regular file is overwritten only if it starts with
    one of those prefixes (an earlier trace or report) — ``--trace ~/.bashrc`` is refused."""
    path = Path(given)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file name")
    if replaces and path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(64).lstrip()
        except OSError as e:
            raise EnvironmentProblem(f"cannot write the {what} {path}: {_reason(e)}") from None
        if head and not head.startswith(replaces):
            raise UsageError(f"{what} {path} exists and is not a {what} from posemu; not overwriting it")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise EnvironmentProblem(f"cannot write the {what} {path}: {folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(f"cannot write the {what} {path}: cannot create {folder} ({_reason(e)})") from None
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise EnvironmentProblem(f"cannot write the {what} {path}: not writable (read-only file system or "
                                 "permissions)")
    return path


#: what an earlier trace (JSON lines) or JUnit report (XML) starts with
TRACE_PREFIXES = (b"{",)
JUNIT_PREFIXES = (b"<?xml", b"<testsuite")


def output_folder(given: str, what: str) -> Path:
    """A folder the command will write files into (``--trace-dir``), created now and writable."""
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise EnvironmentProblem(f"{what} {path} is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(f"cannot create the {what} {path}: {_reason(e)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"{what} {path} is not writable (read-only file system or permissions)")
    return path


def write_failed(what: str, path: str | Path, e: OSError) -> EnvironmentProblem:
    """The error for an output that could not be written after all (disk full, removed folder)."""
    return EnvironmentProblem(f"cannot write the {what} {path}: {_reason(e)}")
