"""The set-up the README promises (issue 12 item 10): ``make`` installs the Debian packages pyscard
needs to build (python3-venv, python3-dev too), stops at once as non-root with the exact command
to run, and ``make run`` installs only what the emulator needs (no test tools)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _make(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None
    cmd = [MAKE, "-s", "-C", str(ROOT), *args]
    if user is not None:
        assert SETPRIV is not None
        cmd = [SETPRIV, f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "LC_ALL": "C"})


def test_system_packages_include_venv_and_dev_headers() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"^SYSTEM_PKGS\s*:=\s*(.+)$", text, re.M)
    assert m is not None
    pkgs = m.group(1).split()
    for p in ("python3-venv", "python3-dev", "pcscd", "vsmartcard-vpcd", "swig", "libpcsclite-dev", "gcc"):
        assert p in pkgs, p


@pytest.mark.skipif(SETPRIV is None or os.geteuid() != 0, reason="needs root to run make as another user")
def test_non_root_stops_at_once_with_the_exact_command() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian/Ubuntu system")
    r = _make("sysdeps", "SYSTEM_PKGS=python3-venv posemu-no-such-package", user=65534)
    assert r.returncode != 0
    assert "sudo apt-get install -y posemu-no-such-package" in r.stderr
    assert "python3-venv" not in r.stderr.split("sudo apt-get install -y", 1)[1]   # only what is missing


def test_make_run_installs_only_the_emulator(tmp_path: Path) -> None:
    venv = tmp_path / "venv"                      # does not exist: make -n shows every step it would run
    r = _make("-n", "run", f"VENV={venv}")
    assert r.returncode == 0, r.stderr
    installs = [line for line in r.stdout.splitlines() if "pip install" in line and " -e " in line]
    assert installs == [f"{venv}/bin/python -m pip install -q -e '.[pcsc]'"]
    assert not venv.exists()
    t = _make("-n", "test", f"VENV={venv}")
    assert "'.[test,dev]'" in t.stdout
