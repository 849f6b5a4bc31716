"""Clean errors, nothing lost: bad paths, unwritable and read-only folders, corrupt and truncated
databases, bad config and trace paths, across commands — a clear one-line message, the right exit
code, no traceback, and every file that was there before left byte for byte as it was.

Read-only folders are real: a read-only bind mount in a private mount namespace
(``unshare --user --map-root-user --mount``), which stops root as well as a user — permission
bits do not stop root. Where user namespaces are not allowed those cases skip, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main
from emulator.trace import Trace

ROOT = Path(__file__).parent.parent


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"traceback from {args}: {res.exception!r}\n{res.output}")
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def snapshot(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_untouched(before: dict[Path, str]) -> None:
    for p, digest in before.items():
        assert p.exists(), f"{p} was removed"
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest, f"{p} was changed"


@pytest.fixture(scope="module")
def good_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder after an approved purchase: a journal and a host database."""
    state = tmp_path_factory.mktemp("good") / "state"
    code, out = run("purchase", "--amount", "1.00", "--virtual-time", "--state", str(state))
    assert code == 0, out
    assert {"journal.sqlite3", "host.sqlite3"} <= {p.name for p in state.iterdir()}
    return state


def corrupt(p: Path) -> None:
    p.write_bytes(os.urandom(8192))


def truncate_half(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def truncate_odd(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:1000])


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path, Path], list[str]]     # (tmp, copy of the good state) → argv
    code: int
    message: str


def _file(tmp: Path) -> Path:
    f = tmp / "a-file"
    f.write_text("not a folder\n", encoding="utf-8")
    return f


def _damaged(which: str, how: Callable[[Path], None], argv: Callable[[Path], list[str]]
             ) -> Callable[[Path, Path], list[str]]:
    def setup(tmp: Path, state: Path) -> list[str]:
        how(state / which)
        return argv(state)
    return setup


INQ = ["inquiry", "--virtual-time", "--state"]
CASES = [
    # state folders that cannot be used: 3, before anything runs
    Case("inquiry --state FILE", lambda t, s: [*INQ, str(_file(t))], 3, "is not a folder"),
    Case("inquiry --state FILE/sub", lambda t, s: [*INQ, str(_file(t) / "sub")], 3, "cannot create the state folder"),
    Case("purchase --state FILE/sub", lambda t, s: ["purchase", "--amount", "1", "--virtual-time", "--state",
                                                    str(_file(t) / "sub")], 3, "cannot create the state folder"),
    Case("journal --state FILE", lambda t, s: ["journal", "--state", str(_file(t))], 3, "is not a folder"),
    Case("journal --state MISSING", lambda t, s: ["journal", "--state", str(t / "missing")], 3, "does not exist"),
    Case("journal --state EMPTY", lambda t, s: ["journal", "--state", str(t)], 3, "no journal at"),
    Case("ui --state FILE/sub", lambda t, s: ["ui", "--state", str(_file(t) / "sub")], 3, "cannot create"),
    # corrupt and truncated databases: 3, and the file is left as it was
    Case("inquiry, corrupt journal", _damaged("journal.sqlite3", corrupt, lambda s: [*INQ, str(s)]), 3,
         "journal .* is not a SQLite database"),
    Case("inquiry, truncated journal", _damaged("journal.sqlite3", truncate_half, lambda s: [*INQ, str(s)]), 3,
         "journal .* is truncated"),
    Case("inquiry, journal cut mid-page", _damaged("journal.sqlite3", truncate_odd, lambda s: [*INQ, str(s)]), 3,
         "journal .* is truncated"),
    Case("journal, corrupt journal", _damaged("journal.sqlite3", corrupt, lambda s: ["journal", "--state", str(s)]),
         3, "is not a SQLite database"),
    Case("journal, truncated journal", _damaged("journal.sqlite3", truncate_half,
                                                lambda s: ["journal", "--state", str(s)]), 3, "is truncated"),
    Case("inquiry, corrupt host database", _damaged("host.sqlite3", corrupt, lambda s: [*INQ, str(s)]), 3,
         "host database .* is not a SQLite database"),
    Case("inquiry, truncated host database", _damaged("host.sqlite3", truncate_half, lambda s: [*INQ, str(s)]), 3,
         "host database .* is truncated"),
    Case("host --db corrupt", _damaged("host.sqlite3", corrupt,
                                       lambda s: ["host", "--listen", "127.0.0.1:0", "--db", str(s / "host.sqlite3")]),
         3, "is not a SQLite database"),
    Case("host --db truncated", _damaged("host.sqlite3", truncate_odd,
                                         lambda s: ["host", "--listen", "127.0.0.1:0", "--db",
                                                    str(s / "host.sqlite3")]), 3, "is truncated"),
    Case("host --db FILE/h.db", lambda t, s: ["host", "--listen", "127.0.0.1:0", "--db", str(_file(t) / "h.db")], 3,
         "is not a folder"),
    Case("host --db FOLDER", lambda t, s: ["host", "--listen", "127.0.0.1:0", "--db", str(t)], 2, "is a directory"),
    # output paths: checked before the card is read
    Case("inquiry --trace FILE/t.jsonl", lambda t, s: [*INQ, str(s), "--trace", str(_file(t) / "t.jsonl")], 3,
         "cannot write the trace .*is not a folder"),
    Case("inquiry --trace FOLDER", lambda t, s: [*INQ, str(s), "--trace", str(t)], 2, "is a directory"),
    Case("inquiry --trace NOT-A-TRACE", lambda t, s: [*INQ, str(s), "--trace", str(_file(t))], 2,
         "exists and is not a trace from posemu; not overwriting it"),
    Case("regress --junit NOT-A-REPORT", lambda t, s: ["regress", "--fault", "user.wrong-pin", "--junit",
                                                       str(_file(t))], 2, "not overwriting it"),
    Case("regress --junit FILE/r.xml", lambda t, s: ["regress", "--fault", "user.wrong-pin", "--junit",
                                                     str(_file(t) / "r.xml")], 3, "cannot write the JUnit report"),
    Case("regress --trace-dir FILE", lambda t, s: ["regress", "--fault", "user.wrong-pin", "--trace-dir",
                                                   str(_file(t))], 3, "trace folder .* is not a folder"),
    # bad config, profile and trace files: 2
    Case("inquiry --config MISSING", lambda t, s: [*INQ, str(s), "--config", str(t / "none.toml")], 2,
         "does not exist"),
    Case("inquiry --config FILE/x", lambda t, s: [*INQ, str(s), "--config", str(_file(t) / "x.toml")], 2,
         "config file"),
    Case("inquiry --config BINARY", lambda t, s: [*INQ, str(s), "--config", str(_binary(t))], 2, "not UTF-8"),
    Case("journal --config BAD", lambda t, s: ["journal", "--state", str(s), "--config", str(_file(t))], 2,
         "not valid TOML"),
    Case("inquiry --card BINARY", lambda t, s: [*INQ, str(s), "--card", str(_binary(t))], 2, "not UTF-8"),
    Case("swipe --card FILE", lambda t, s: ["swipe", "--card", str(_file(t))], 2, "card profile"),
    Case("card serve --profile FILE/x", lambda t, s: ["card", "serve", "--profile", str(_file(t) / "x"),
                                                      "--wait", "0"], 2, "unknown card profile"),
    Case("regress --scenario BINARY", lambda t, s: ["regress", "--scenario", str(_binary(t))], 2, "not UTF-8"),
    Case("regress --replay BINARY", lambda t, s: ["regress", "--replay", str(_binary(t))], 2, "not a posemu trace"),
    Case("diagnose --trace BINARY", lambda t, s: ["diagnose", "--trace", str(_binary(t))], 2, "not UTF-8"),
]


def _binary(tmp: Path) -> Path:
    p = tmp / "binary.toml"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    return p


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_paths_and_files(case: Case, good_state: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(good_state, state)
    argv = case.setup(tmp_path, state)
    before = snapshot(tmp_path)
    code, out = run(*argv)
    last = out.strip().splitlines()[-1]
    assert code == case.code, out
    assert last.startswith("Error: "), out
    assert re.search(case.message, last), last
    assert_untouched(before)


def test_trace_into_a_folder_that_does_not_exist_is_created(tmp_path: Path) -> None:
    trace = tmp_path / "new" / "folder" / "t.jsonl"
    code, out = run(*INQ, str(tmp_path / "s"), "--trace", str(trace))
    assert code == 0 and "result: APPROVED" in out
    assert trace.read_text(encoding="utf-8").strip()


def test_a_trace_that_cannot_be_written_at_the_end_loses_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up after the transaction: the result is printed, then the error, exit 3."""
    def full(self: Trace, path: str | Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trace, "export", full)
    code, out = run("purchase", "--amount", "2.00", "--virtual-time", "--state", str(tmp_path),
                    "--trace", str(tmp_path / "t.jsonl"))
    assert code == 3
    lines = out.strip().splitlines()
    assert lines[-2].startswith("result: APPROVED APPROVED rc=00 kind=purchase amount=2.00 ")
    assert lines[-1] == f"Error: cannot write the trace {tmp_path / 't.jsonl'}: No space left on device"
    code, out = run("journal", "--state", str(tmp_path), "--json")
    assert code == 0 and '"status": "approved"' in out          # the purchase is journalled


# --- read-only folders (a read-only bind mount in a private mount namespace) ------------------------

UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]


def _readonly_works() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run([*UNSHARE, "sh", "-c", "mount --bind -o ro / / 2>&1 || mount -o remount,bind,ro / 2>&1"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        return f"no read-only bind mount here: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


def run_readonly(readonly: Path, *args: str) -> tuple[int, str]:
    """``posemu ARGS`` in a subprocess that sees ``readonly`` as a read-only bind mount."""
    script = 'mount --bind -o ro "$1" "$1" || exit 99; shift; exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POSEMU_DEBUG": ""}
    proc = subprocess.run([*UNSHARE, "sh", "-c", script, "sh", str(readonly), sys.executable, "-m", "emulator.cli",
                           *args], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode != 99, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    return proc.returncode, out


@pytest.fixture(scope="module")
def readonly_ok() -> None:
    reason = _readonly_works()
    if reason:
        pytest.skip(reason)


def test_readonly_state_folder(readonly_ok: None, good_state: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    shutil.copytree(good_state, ro)
    (tmp_path / "empty").mkdir()
    before = snapshot(tmp_path)
    code, out = run_readonly(ro, *INQ, str(ro))
    assert code == 3 and f"Error: state folder {ro} is not writable" in out, out
    code, out = run_readonly(ro, "purchase", "--amount", "1", "--virtual-time", "--state", str(ro))
    assert code == 3 and "is not writable" in out, out
    code, out = run_readonly(ro, "journal", "--state", str(ro))
    assert code == 3 and f"Error: cannot open the journal {ro / 'journal.sqlite3'}" in out, out
    code, out = run_readonly(ro, "host", "--listen", "127.0.0.1:0", "--db", str(ro / "new.sqlite3"))
    assert code == 3 and "not writable" in out, out
    code, out = run_readonly(tmp_path / "empty", *INQ, str(tmp_path / "empty" / "sub"))
    assert code == 3 and "cannot create the state folder" in out and "Read-only file system" in out, out
    assert_untouched(before)


def test_readonly_output_paths(readonly_ok: None, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    code, out = run_readonly(ro, *INQ, str(tmp_path / "s"), "--trace", str(ro / "t.jsonl"))
    assert code == 3 and "cannot write the trace" in out and "result:" not in out, out   # before the card
    code, out = run_readonly(ro, "regress", "--fault", "user.wrong-pin", "--junit", str(ro / "r.xml"))
    assert code == 3 and "cannot write the JUnit report" in out and "passed" not in out, out
    code, out = run_readonly(ro, "regress", "--fault", "user.wrong-pin", "--trace-dir", str(ro / "traces"))
    assert code == 3 and "cannot create the trace folder" in out, out
    assert list(ro.iterdir()) == []


def test_an_earlier_trace_and_report_are_overwritten(tmp_path: Path) -> None:
    trace, junit = tmp_path / "t.jsonl", tmp_path / "r.xml"
    for _ in range(2):
        assert run(*INQ, str(tmp_path / "s"), "--trace", str(trace))[0] == 0
        assert run("regress", "--fault", "user.wrong-pin", "--junit", str(junit))[0] == 0
    assert trace.read_text(encoding="utf-8").startswith("{") and junit.read_bytes().startswith(b"<?xml")
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    assert run(*INQ, str(tmp_path / "s"), "--trace", str(empty))[0] == 0
    assert run(*INQ, str(tmp_path / "s"), "--trace", os.devnull)[0] == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)            # written into, not replaced by a file


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    """write_private (traces, captures, configs) on a path that is no regular file writes into it."""
    from emulator.keystore import write_private

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_private(fifo, b'{"t": 0}\n')
    reader.join(30)
    assert got == [b'{"t": 0}\n'] and stat.S_ISFIFO(os.stat(fifo).st_mode)
