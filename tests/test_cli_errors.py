"""Exit codes of every command (0 ok, 1 failed, 2 usage, 3 environment), documented in --help,
and errors printed as one line without a traceback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from emulator.cli import main
from emulator.commands._exit import ExitCode, exit_code_for
from hardware.errors import NoReaderError, PortBusyError, ServiceUnavailableError
from protocol.errors import ConfigError, DecodeError, EnvironmentProblem, PosemuError, UsageError


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    """Exit code and output; fails the test on any traceback (an exception that is not an exit)."""
    res = invoke(*args, input=input)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"traceback from {args}: {res.exception!r}\n{res.output}")
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the mapping ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "code"), [
    (UsageError("x"), ExitCode.USAGE),
    (ConfigError("x"), ExitCode.USAGE),
    (EnvironmentProblem("x"), ExitCode.ENVIRONMENT),
    (ServiceUnavailableError("pcscd"), ExitCode.ENVIRONMENT),
    (NoReaderError("none"), ExitCode.ENVIRONMENT),
    (PortBusyError("busy"), ExitCode.ENVIRONMENT),
    (PermissionError(13, "Permission denied"), ExitCode.ENVIRONMENT),
    (DecodeError("bad"), ExitCode.FAILED),
    (PosemuError("x"), ExitCode.FAILED),
    (KeyError("bug"), None),
])
def test_error_classes_map_to_exit_codes(exc: BaseException, code: ExitCode | None) -> None:
    assert exit_code_for(exc) == code


def test_a_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the project's errors (and OS/database errors) are mapped: a bug is not hidden."""
    from emulator.commands import readers

    def boom() -> list[str]:
        raise KeyError("bug")

    monkeypatch.setattr(readers, "sim_lines", boom)
    res = invoke("readers")
    assert isinstance(res.exception, KeyError)


def test_posemu_debug_shows_the_traceback_of_a_mapped_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSEMU_DEBUG", "1")
    res = invoke("faults", "show", "nope")
    assert isinstance(res.exception, ConfigError)


# --- every command, documented -------------------------------------------------------------------

def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, cmd in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


ALL_COMMANDS = [(), *_all_commands(main)]


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "posemu")
def test_every_help_documents_the_exit_codes(path: tuple[str, ...]) -> None:
    code, out = run(*path, "--help")
    assert code == 0
    section = out[out.index("Exit codes:"):]
    for n in ("0", "2", "3"):
        assert re.search(rf"\n +{n}  \w", section), (path, section)
    assert "usage error" in section and "environment error" in section


def test_readme_documents_the_exit_codes() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Exit codes"):]
    for line in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
        assert line in section


# --- per command ---------------------------------------------------------------------------------

def test_inquiry_exit_codes(tmp_path: Path) -> None:
    assert run("inquiry", "--virtual-time", "--state", str(tmp_path / "a"))[0] == 0
    assert run("inquiry", "--virtual-time", "--state", str(tmp_path / "a"), "--pin", "000000")[0] == 1
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "a"), "--card", "no-such-card")
    assert code == 2 and last_line(out).startswith("Error: unknown card profile 'no-such-card'")
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "a"), "--config", str(tmp_path / "no.toml"))
    assert code == 2 and "does not exist" in out
    code, out = run("inquiry", "--virtual-time", "--fault", "nope")
    assert code == 2 and "unknown fault 'nope'" in out
    # the reader is not there: an environment problem, not a decline
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "a"),
                    "--reader", f"serial://{tmp_path}/no-such-tty")
    assert code == 3 and "NO_READER" in out


def test_purchase_exit_codes(tmp_path: Path) -> None:
    state = str(tmp_path)
    assert run("purchase", "--amount", "1.00", "--virtual-time", "--state", state)[0] == 0
    assert run("purchase", "--amount", "1.00", "--virtual-time", "--state", state, "--pin", "000000")[0] == 1
    assert run("purchase", "--amount", "abc", "--virtual-time", "--state", state)[0] == 2
    assert run("purchase", "--amount", "1.00", "--virtual-time", "--state", state, "--profile", "x")[0] == 2


def test_host_exit_codes(tmp_path: Path) -> None:
    code, out = run("host", "--listen", "nowhere", "--db", str(tmp_path / "h.db"))
    assert code == 2 and "HOST:PORT" in out
    code, out = run("host", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "h.db"), "--rule", "explode")
    assert code == 2 and "unknown host rule action" in out
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = run("host", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "h.db"))
    assert code == 3 and f"cannot listen on 127.0.0.1:{port}" in out


def test_journal_exit_codes(tmp_path: Path) -> None:
    code, out = run("journal", "--state", str(tmp_path))
    assert code == 3 and "no journal at" in out
    assert run("inquiry", "--virtual-time", "--state", str(tmp_path))[0] == 0
    assert run("journal", "--state", str(tmp_path))[0] == 0
    assert run("journal", "--state", str(tmp_path), "--limit", "0")[0] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("terminal_id = [", encoding="utf-8")
    code, out = run("journal", "--state", str(tmp_path), "--config", str(bad))
    assert code == 2 and str(bad) in out


def test_diagnose_exit_codes(tmp_path: Path) -> None:
    code, out = run("diagnose", "--lang", "en")
    assert code == 0, out
    code, out = run("diagnose", "--lang", "en", "--fault", "reader.dirty-contacts")
    assert code == 1 and "[A1" in out
    trace = tmp_path / "t.jsonl"
    assert run("inquiry", "--virtual-time", "--state", str(tmp_path), "--pin", "000000", "--trace", str(trace))[0] == 1
    code, out = run("diagnose", "--trace", str(trace), "--lang", "en")
    assert code == 1 and "[A12, A20]" in out               # it found the fault: 1, like a failed check
    ok_trace = tmp_path / "ok.jsonl"
    assert run("inquiry", "--virtual-time", "--state", str(tmp_path), "--trace", str(ok_trace))[0] == 0
    assert run("diagnose", "--trace", str(ok_trace))[0] == 0
    for text in ("not json\n", "[1, 2]\n", '{"kind": "nope", "t": 0, "what": "x"}\n', '{"kind": "error"}\n',
                 '{"kind": "error", "t": "inf", "what": "x"}\n'):
        trace.write_text(text, encoding="utf-8")
        code, out = run("diagnose", "--trace", str(trace))
        assert code == 2 and str(trace) in out, text
    trace.write_bytes(b"\xff\xfe\x00")
    assert run("diagnose", "--trace", str(trace))[0] == 2
    assert run("diagnose", "--reader", "nope")[0] == 2


def test_faults_exit_codes() -> None:
    assert run("faults", "list")[0] == 0
    assert run("faults", "list", "--layer", "network")[0] == 0
    assert run("faults", "list", "--layer", "nope")[0] == 2
    assert run("faults", "show", "reader.dirty-contacts")[0] == 0
    code, out = run("faults", "show", "nope")
    assert code == 2 and last_line(out) == "Error: unknown fault 'nope'; see `posemu faults list`"


def test_regress_exit_codes(tmp_path: Path) -> None:
    code, out = run("regress", "--fault", "nope")
    assert code == 2 and "unknown fault 'nope'" in out       # a typo is not a failed scenario
    bad = tmp_path / "s.toml"
    bad.write_text("[[fault]\n", encoding="utf-8")
    code, out = run("regress", "--fault", "user.wrong-pin", "--scenario", str(bad))
    assert code == 2 and str(bad) in out
    not_a_trace = tmp_path / "t.jsonl"
    not_a_trace.write_text("{}\n", encoding="utf-8")
    assert run("regress", "--replay", str(not_a_trace))[0] == 2
    # 0 and 1 (a passing run, a failing scenario): tests/test_faults_regression.py


def test_swipe_exit_codes() -> None:
    assert run("swipe", "--speed", "30")[0] == 0
    assert run("swipe", "--damage", "0:4")[0] == 1
    assert run("swipe", "--card", "no-such-card")[0] == 2
    assert run("swipe", "--speed", "-3")[0] == 2
    assert run("swipe", "--damage", "oops")[0] == 2


def test_train_exit_codes() -> None:
    code, out = run("train", "--rounds", "1", "--seed", "1", "--answers", "1", "--lang", "en")
    right = code == 0
    assert code in (0, 1) and ("correct" in out) == right
    assert run("train", "--rounds", "1", "--seed", "1", "--answers", "a")[0] == 2
    assert run("train", "--rounds", "1", "--seed", "1", "--answers", "5")[0] == 2
    assert run("train", "--rounds", "0")[0] == 2


def test_train_scores_a_wrong_answer_one(tmp_path: Path) -> None:
    codes = {run("train", "--rounds", "1", "--seed", "1", "--answers", str(n))[0] for n in (1, 2, 3, 4)}
    assert codes == {0, 1}


def test_card_serve_exit_codes(free_port: int) -> None:
    code, out = run("card", "serve", "--profile", "demo", "--vpcd", f"127.0.0.1:{free_port}", "--wait", "0")
    assert code == 2 and "has no chip" in out
    code, out = run("card", "serve", "--profile", "cup_debit", "--vpcd", "127.0.0.1:x", "--wait", "0")
    assert code == 2 and "not a number" in out
    code, out = run("card", "serve", "--profile", "cup_debit", "--vpcd", f"127.0.0.1:{free_port}", "--wait", "0")
    assert code == 3, out
    assert run("card", "serve", "--profile", "cup_debit", "--wait", "-1")[0] == 2


def test_device_msr_exit_codes() -> None:
    assert run("device", "msr", "--pty", "--profile", "no-such-card")[0] == 2
    assert run("device", "msr", "--pty", "--chunk", "-1")[0] == 2
    assert run("device", "msr", "--pty", "--auto-swipe", "-5")[0] == 2


def test_readers_exit_code() -> None:
    assert run("readers")[0] == 0


def test_ui_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run("ui", "--state", str(tmp_path), "--profile", "cup", "--host", "nowhere")
    assert code == 2 and "HOST:PORT" in out


# --- inputs checked before the card is read (issue 12 item 7) --------------------------------------

@pytest.mark.parametrize("amount", ["1e3", "1E3", "1e-2", "nan", "inf", "Infinity", "-5", "+5", "0", "0.00",
                                    "1.234", "1,000", "1_000", "１２", "12.", ".5", "", " ", "0x10", "10000000000.00"])
def test_bad_amounts_are_refused_before_the_card_is_read(tmp_path: Path, amount: str) -> None:
    state = tmp_path / "never-created"
    code, out = run("purchase", "--amount", amount, "--virtual-time", "--state", str(state))
    assert code == 2, out
    assert "Invalid value for '--amount'" in out and "[INSERT_OR_SWIPE]" not in out
    assert not state.exists()                       # nothing ran: no host, no journal


@pytest.mark.parametrize(("text", "minor"), [("12.50", 1250), ("12.5", 1250), ("7", 700), ("0.01", 1),
                                             ("007.10", 710), (" 3.00 ", 300), ("9999999999.99", 10**12 - 1)])
def test_good_amounts(text: str, minor: int) -> None:
    from emulator.commands._inputs import parse_amount

    assert parse_amount(text) == minor


@pytest.mark.parametrize("pin", ["12ab", "123", "1234567890123", "１２３４", "²²²²", "", "12 34", "-1234"])
def test_bad_pins_are_refused_before_the_card_is_read(tmp_path: Path, pin: str) -> None:
    state = tmp_path / "never-created"
    for cmd in (["inquiry"], ["purchase", "--amount", "1.00"]):
        code, out = run(*cmd, "--pin", pin, "--virtual-time", "--state", str(state))
        assert code == 2, out
        assert "Invalid value for '--pin'" in out and "4 to 12 digits" in out and "[INSERT_OR_SWIPE]" not in out
        assert not state.exists()


def test_a_valid_wrong_pin_still_reaches_the_host(tmp_path: Path) -> None:
    code, out = run("inquiry", "--pin", "9999", "--virtual-time", "--state", str(tmp_path), "--lang", "en")
    assert code == 1 and "rc=55" in out


# --- posemu host --listen beyond loopback (issue 8 item 6) -----------------------------------------

@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "10.1.2.3:5000", "acquirer.example:5000",
                                    "[::ffff:10.0.0.1]:0"])
def test_a_non_loopback_listen_needs_allow_remote(tmp_path: Path, listen: str) -> None:
    code, out = run("host", "--listen", listen, "--db", str(tmp_path / "h.db"))
    assert code == 2 and "not a loopback address" in out and "--allow-remote" in out
    assert not (tmp_path / "h.db").exists()


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_allow_remote_warns_and_starts(tmp_path: Path, listen: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is not really started on a public address (tests stay on 127.0.0.1): HostServer.start
    is replaced by one that records where it was asked to listen and then stops like Ctrl-C."""
    from emulator.host.server import HostServer

    asked: list[tuple[str, int]] = []

    async def start(*args: object, host: str, port: int, **kw: object) -> None:
        asked.append((host, port))
        raise KeyboardInterrupt

    monkeypatch.setattr(HostServer, "start", start)
    code, out = run("host", "--listen", listen, "--allow-remote", "--db", str(tmp_path / "h.db"))
    assert code == 0, out
    assert f"WARNING: listening on {listen}, reachable from other machines" in out
    assert asked == [(listen.rpartition(":")[0].strip("[]"), 0)]


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.2:0", "localhost:0", "[::1]:0", ":0"])
def test_loopback_needs_no_flag_and_no_warning(tmp_path: Path, listen: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator.host.server import HostServer

    async def start(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(HostServer, "start", start)
    code, out = run("host", "--listen", listen, "--db", str(tmp_path / "h.db"))
    assert code == 0 and "WARNING" not in out, out


def test_the_host_really_listens_on_loopback(tmp_path: Path) -> None:
    """No monkeypatching: the real server starts on 127.0.0.1 and is stopped by SIGINT."""
    proc = subprocess.Popen([sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--db",
                             str(tmp_path / "h.db")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "WARNING" not in err and "Traceback" not in err


@pytest.mark.parametrize("args", [("--speed", "1e300"), ("--speed", "1e-300"), ("--speed", "nan"),
                                  ("--accel", "1e300"), ("--dirt", "1e300"), ("--noise", "1e300")])
def test_swipe_settings_beyond_the_model_are_usage_errors(args: tuple[str, str]) -> None:
    """1e300 in/s or 1e300 in/s² divided by zero in the swipe model (a traceback before)."""
    code, out = run("swipe", *args)
    assert code == 2 and f"Invalid value for '{args[0]}'" in out


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "1e9", "lots"])
def test_diagnose_fault_parameters_are_checked(value: str) -> None:
    code, out = run("diagnose", "--fault", f"reader.dirty-contacts:contact_ohms={value}")
    assert code == 2 and "contact_ohms" in out and ("is outside 0…1000 Ω" in out or "must be a number" in out)


def test_card_serve_wait_nan() -> None:
    code, out = run("card", "serve", "--profile", "cup_debit", "--wait", "nan")
    assert code == 2 and "Invalid value for '--wait'" in out
