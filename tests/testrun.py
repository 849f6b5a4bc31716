"""``make unit``: run the test suite (``python -m tests.testrun -- [pytest args]``).

Starts the daemons the suite needs for the duration of the run and stops them after.

PC/SC: a **private** ``pcscd -f`` for this run
---------------------------------------------
The ``pcsc``-marked tests talk to a real pcscd with the vsmartcard ``vpcd`` driver. To stay out
of the way of a system pcscd (a desktop's real readers) and of a second test run on the same
machine, this run starts its own pcscd as a child process:

* its client socket is a fresh path in a temporary folder, handed to pcscd by systemd-style
  socket activation (``LISTEN_FDS=1``, the socket on fd 3 — pcscd ≥ 1.8 built with libsystemd,
  as Debian's is); clients find it through ``PCSCLITE_CSOCK_NAME``, which libpcsclite reads;
* its reader configuration (``pcscd -c DIR``) holds one vpcd entry on a free TCP port pair
  (``P`` for "Virtual PCD 00 00", ``P+1`` for "… 00 01") instead of the default 35963/35964.

The run exports ``PCSCLITE_CSOCK_NAME``, ``POSEMU_PCSCD_SOCKET`` and ``POSEMU_VPCD_PORT`` to the
tests (and to any process they start), or ``POSEMU_PCSCD_SKIP=<reason>`` when pcscd could not be
started (not installed, vpcd driver missing, pyscard missing). The ``pcscd`` fixture
(``tests/pcsc_fixtures.py``) turns that reason into a skip — or a failure when ``CI=true``.

Root is not needed: a socket-activated pcscd only fails to write its pid file. Run as root, the
private pcscd drops to the ``nobody`` user before it starts, so it cannot touch a system pcscd's
``/run/pcscd`` files (``/run/pcscd`` is still created if missing, for a system pcscd later).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
RUN_DIR = Path("/run/pcscd")
ENV_SOCKET = "POSEMU_PCSCD_SOCKET"
ENV_PORT = "POSEMU_VPCD_PORT"
ENV_SKIP = "POSEMU_PCSCD_SKIP"
ENV_CLIENT_SOCKET = "PCSCLITE_CSOCK_NAME"
DAEMON_USER = "nobody"           # the private pcscd's user when the tests run as root


class PcscdStartError(Exception):
    """pcscd could not be started for the tests (the message is the skip/fail reason).

    Test infrastructure only — never raised by product code, so it stays outside the
    product's error tree.
    """


def private_socket_path() -> Path:
    """A fresh, unused path for a private pcscd socket (nothing is created)."""
    return Path(tempfile.gettempdir()) / f"posemu-pcscd-{os.getpid()}-{secrets.token_hex(4)}.comm"


def vpcd_reader_name(slot: int = 0) -> str:
    """The PC/SC reader name of vpcd's slot ``slot`` (0 → "Virtual PCD 00 00")."""
    return f"Virtual PCD 00 {slot:02d}"


def pcscd_unavailable_reason() -> str | None:
    """Why a private pcscd cannot be started here, or ``None`` if it can be tried."""
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        return "pcscd is not installed (Debian: apt-get install pcscd vsmartcard-vpcd; `make test` does it)"
    if not VPCD_DRIVER.exists():
        return f"the vsmartcard vpcd driver is missing ({VPCD_DRIVER}; apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install 'posemu[pcsc]')"
    return None


def _free_port_pair(attempts: int = 50) -> int:
    """A TCP port P such that P and P+1 are both free on all interfaces (vpcd binds INADDR_ANY)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        ok = True
        for p in (port, port + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise PcscdStartError("could not find two free consecutive TCP ports for vpcd")


_TRAMPOLINE = """
import ctypes, os, pwd, signal, sys
fd, parent, pcscd, conf, user = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if user and os.geteuid() == 0:                 # stay off the system pcscd's /run/pcscd files
    try:
        pw = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except (KeyError, OSError):
        pass
try:                                           # after setuid: a credential change clears it
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))   # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit("posemu testrun: the test process is gone; not starting pcscd")
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(pcscd, [pcscd, "-f", "-c", conf])
"""


def _pcscd_binary() -> str:
    return shutil.which("pcscd") or "/usr/sbin/pcscd"


@dataclass
class PrivatePcscd:
    """A pcscd child process with its own socket and a vpcd reader on a private port pair."""

    workdir: Path
    socket_path: Path
    vpcd_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(repr=False, default=None)

    def reader_name(self, slot: int = 0) -> str:
        return vpcd_reader_name(slot)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def env(self) -> dict[str, str]:
        return {
            ENV_CLIENT_SOCKET: str(self.socket_path),
            ENV_SOCKET: str(self.socket_path),
            ENV_PORT: str(self.vpcd_port),
        }

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate pcscd (SIGTERM, then SIGKILL) and remove its folder."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        log = self._log
        if log is not None:
            log.close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pcscd(socket_path: Path | None = None, *, ready_timeout: float = 10.0) -> PrivatePcscd:
    """Start a private ``pcscd -f``; return when it answers PC/SC calls and lists vpcd's readers.

    ``socket_path`` is where clients connect (default: a new temporary folder). The caller
    must make ``PCSCLITE_CSOCK_NAME`` point there *before* its process first uses PC/SC:
    libpcsclite reads the variable once. Call from the main thread: pcscd is tied to the
    calling thread's life (``PR_SET_PDEATHSIG``).
    """
    reason = pcscd_unavailable_reason()
    if reason:
        raise PcscdStartError(reason)
    if os.geteuid() == 0 and not RUN_DIR.exists():
        RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="posemu-pcscd-"))
    sock_path = socket_path or workdir / "pcscd.comm"
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    workdir.chmod(0o755)                       # the daemon may run as DAEMON_USER
    conf = workdir / "reader.conf.d"
    conf.mkdir(mode=0o755)
    port = _free_port_pair()
    (conf / "vpcd").write_text(
        f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:0x{port:04X}\n'
        f"LIBPATH      {VPCD_DRIVER}\nCHANNELID    0x{port:04X}\n"
    )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o777)
    listener.listen(64)
    fd = listener.fileno()
    log_path = workdir / "pcscd.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in PrivatePcscd.stop
    # Socket activation (sd_listen_fds): the socket must be fd 3 and LISTEN_PID pcscd's own pid.
    # A small Python trampoline arranges both, drops root, and asks the kernel to SIGTERM pcscd
    # if this process dies without stopping it (PR_SET_PDEATHSIG): a killed run leaves no daemon.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "PCSCLITE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRAMPOLINE, str(fd), str(os.getpid()), _pcscd_binary(), str(conf),
         DAEMON_USER],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    listener.close()
    inst = PrivatePcscd(workdir, sock_path, port, proc, log_path, log)
    try:
        _wait_ready(inst, ready_timeout)
    except BaseException:
        inst.stop()
        raise
    return inst


def _wait_ready(inst: PrivatePcscd, timeout: float) -> None:
    """Poll (in a child process, so this process's libpcsclite is untouched) until vpcd is listed."""
    probe = (
        "import sys\n"
        "from smartcard import scard as s\n"
        "hr, ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)\n"
        "if hr != s.SCARD_S_SUCCESS: sys.exit(2)\n"
        "hr, readers = s.SCardListReaders(ctx, [])\n"
        "s.SCardReleaseContext(ctx)\n"
        "sys.exit(0 if hr == s.SCARD_S_SUCCESS and any(r.startswith('Virtual PCD') for r in readers) else 3)\n"
    )
    env = {**os.environ, **inst.env()}
    attempts = max(1, int(timeout / 0.1))
    for _ in range(attempts):
        if not inst.running:
            raise PcscdStartError(f"pcscd exited at start (code {inst.proc.returncode}): {inst.log_tail(800)}")
        try:
            r = subprocess.run(
                [sys.executable, "-c", probe], env=env, timeout=timeout, capture_output=True, check=False
            )
        except subprocess.TimeoutExpired:
            break
        if r.returncode == 0:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            inst.proc.wait(timeout=0.1)  # real-time: bounded pause between readiness probes
    raise PcscdStartError(f"pcscd did not list the vpcd readers within {timeout:.0f} s: {inst.log_tail(800)}")


@contextlib.contextmanager
def pcscd_for_run() -> Iterator[PrivatePcscd | None]:
    """Start pcscd for a test run, export its location, stop it after. Yields ``None`` on skip."""
    if os.environ.get("POSEMU_HARDWARE_READER"):
        os.environ[ENV_SKIP] = (
            "POSEMU_HARDWARE_READER is set: this run talks to the system pcscd and its physical reader, "
            "so the vpcd tests are not run"
        )
        yield None
        return
    try:
        inst = start_pcscd()
    except (PcscdStartError, OSError) as e:
        os.environ[ENV_SKIP] = str(e)
        print(f"posemu testrun: PC/SC tests will not run: {e}", file=sys.stderr)
        yield None
        return
    os.environ.update(inst.env())
    os.environ.pop(ENV_SKIP, None)
    print(
        f"posemu testrun: started pcscd (pid {inst.proc.pid}, socket {inst.socket_path}, "
        f"vpcd ports {inst.vpcd_port}/{inst.vpcd_port + 1})",
        file=sys.stderr,
    )
    try:
        yield inst
    finally:
        inst.stop()
        for k in inst.env():
            os.environ.pop(k, None)
        print("posemu testrun: stopped pcscd", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--"]
    with pcscd_for_run():
        code = pytest.main(["-p", "no:cacheprovider", *args])
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
