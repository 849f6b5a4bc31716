"""posemu on Locust (issue 13 item 2): one master and two workers, headless, on loopback, against
``posemu host --fleet`` started here; every ISO 8583 exchange is a Locust request named MTI/processing code."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "emulator" / "locustfile.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "POSEMU_DEBUG": ""}


def test_locust_user_module_imports_and_parses() -> None:
    """In a child process: importing locust monkey-patches sockets and threads with gevent."""
    code = ("import doctest, emulator.locust_user as m; "
            "assert m.parse_mix('balance=1,purchase=2') == [('balance', 1.0), ('purchase', 2.0)]; "
            "assert m.PosTerminalUser.abstract; "
            "r = doctest.testmod(m); assert r.attempted >= 2 and r.failed == 0, r; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.slow
def test_locust_master_and_two_workers_against_posemu_host(tmp_path: Path) -> None:
    host = subprocess.Popen([sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--db",
                             str(tmp_path / "host.sqlite3"), "--fleet", "300"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        assert m, line
        target = f"{m.group(1)}:{m.group(2)}"
        mport = _free_port()
        common = ["-f", str(LOCUSTFILE), "--pos-stride", "100"]
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "locust", *common, "--worker", "--master-host", "127.0.0.1",
                 "--master-port", str(mport)], cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"worker{i}.log", "w")))  # noqa: SIM115
        master = subprocess.run(
            [sys.executable, "-m", "locust", *common, "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(mport), "--expect-workers", "2", "--expect-workers-max-wait", "30",
             "--headless", "-u", "10", "-r", "5", "-t", "10s", "--host", target, "--csv", str(tmp_path / "run"),
             "--exit-code-on-error", "1"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=90)
        assert master.returncode == 0, master.stderr[-3000:]
        rows = list(csv.DictReader(open(tmp_path / "run_stats.csv")))  # noqa: SIM115
        by_name = {r["Name"]: r for r in rows}
        total = by_name["Aggregated"]
        assert int(total["Request Count"]) > 20 and int(total["Failure Count"]) == 0, rows
        assert {"0800", "0200/310000", "0200/000000"} <= set(by_name)
        assert all(r["Type"] == "ISO8583" for r in rows if r["Name"] != "Aggregated")
        assert int(by_name["0800"]["Request Count"]) == 10                  # each of the 10 terminals signed on
        assert "2 workers" in master.stderr or "(index 1)" in master.stderr   # both workers took part
    finally:
        deadline = time.monotonic() + 10
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        host.terminate()
        host.wait(10)
