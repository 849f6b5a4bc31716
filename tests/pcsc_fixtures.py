"""The ``pcscd`` fixture: a real pcscd with the vsmartcard vpcd driver for ``pcsc``-marked tests.

``make unit`` (:mod:`tests.testrun`) starts a private pcscd before pytest and exports where
it is; then the fixture just hands that over. Under a plain ``pytest`` run the fixture starts
one itself, once per session, on a socket chosen when this module is imported — before any
test touches PC/SC, because libpcsclite reads ``PCSCLITE_CSOCK_NAME`` only once per process.

When pcscd cannot run (not installed, no vpcd driver, no pyscard) the tests are **skipped** with
the reason — except under ``CI=true``, where that is a **failure**: CI installs pcscd, so a
missing one is a broken pipeline, not an excuse.

Imported by ``tests/conftest.py`` so that every test module can use the fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.testrun import (
    ENV_CLIENT_SOCKET,
    ENV_PORT,
    ENV_SKIP,
    ENV_SOCKET,
    PcscdStartError,
    PrivatePcscd,
    private_socket_path,
    start_pcscd,
    vpcd_reader_name,
)


def chip_profile() -> str | None:
    """A bundled card profile with a chip (its virtual card has an ATR), or ``None``.

    Ordinary cards are preferred over blocked/expired ones.
    """
    from hardware.cards.profiles import list_profiles, load_profile
    from hardware.sim import card_for_profile

    chips = [n for n in list_profiles() if card_for_profile(load_profile(n)).atr]
    chips.sort(key=lambda n: (any(w in n for w in ("block", "expir", "load")), n))
    return chips[0] if chips else None


def require_chip_profile() -> str:
    name = chip_profile()
    if name is None:
        pytest.skip("no bundled card profile has a chip yet (card_for_profile returns no ATR)")
    return name


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason`` — or fail, when running in CI."""
    if in_ci():
        pytest.fail(f"CI=true but the PC/SC test infrastructure is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _reserve_socket() -> Path | None:
    """Point this process's libpcsclite at a private socket path (pcscd is started lazily)."""
    if os.environ.get("POSEMU_HARDWARE_READER") or os.environ.get(ENV_SKIP):
        return None
    if os.environ.get(ENV_CLIENT_SOCKET):
        return None                   # make unit (or the user) already chose
    path = private_socket_path()                 # nothing is created until pcscd starts
    os.environ[ENV_CLIENT_SOCKET] = str(path)
    return path


_RESERVED = _reserve_socket()


@dataclass(frozen=True)
class Pcscd:
    """Where the test pcscd is: its client socket and vpcd's port pair (slot 0 = port, 1 = port+1)."""

    socket_path: Path
    vpcd_port: int
    instance: PrivatePcscd | None = None        # set when this session started it

    def reader_name(self, slot: int = 0) -> str:
        return vpcd_reader_name(slot)

    def slot_port(self, slot: int = 0) -> int:
        return self.vpcd_port + slot

    def env(self) -> dict[str, str]:
        """Environment for a child process that should use this pcscd."""
        return {ENV_CLIENT_SOCKET: str(self.socket_path), ENV_SOCKET: str(self.socket_path),
                ENV_PORT: str(self.vpcd_port)}


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    """A running pcscd with vpcd, or skip (fail in CI) with the reason."""
    sock, port = os.environ.get(ENV_SOCKET), os.environ.get(ENV_PORT)
    if sock and port:
        yield Pcscd(Path(sock), int(port))
        return
    reason = os.environ.get(ENV_SKIP)
    if reason:
        skip_or_fail(reason)
    if _RESERVED is None:
        skip_or_fail(
            "POSEMU_HARDWARE_READER is set or PCSCLITE_CSOCK_NAME points elsewhere: this run uses the system "
            "pcscd, so the vpcd tests are not run"
        )
    try:
        inst = start_pcscd(socket_path=_RESERVED)
    except (PcscdStartError, OSError) as e:
        skip_or_fail(str(e))
    os.environ.update({ENV_SOCKET: str(inst.socket_path), ENV_PORT: str(inst.vpcd_port)})
    try:
        yield Pcscd(inst.socket_path, inst.vpcd_port, inst)
    finally:
        inst.stop()
        os.environ.pop(ENV_SOCKET, None)
        os.environ.pop(ENV_PORT, None)
