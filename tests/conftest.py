"""Shared fixtures: a virtual clock, an event loop running on it, and a record of real-time waits.

The clock and the loop are the pytest plugin's own (``posemu_clock``, ``posemu_runner``:
:mod:`faults.pytest_plugin`, the ``pytest11`` entry point) under the suite's short names, so a
regression written by a user runs on exactly what the suite runs on.
"""

from __future__ import annotations

import asyncio
import selectors
import signal
from typing import Any

import pytest

from hardware.clock import VirtualClock


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT its default action again when the run inherited it ignored.

    A shell starts background jobs (``make test &``, ``nohup``) with SIGINT ignored, and an
    ignored signal stays ignored across ``exec``: the tests that stop a ``posemu host`` or
    ``posemu device`` child with SIGINT (Ctrl-C) would then wait for a child that never stops.
    A handled signal is reset to its default in a child, so the children start as from a terminal.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def vclock(posemu_clock: VirtualClock) -> VirtualClock:
    """The virtual clock: the pytest plugin's ``posemu_clock`` (:mod:`faults.pytest_plugin`)."""
    return posemu_clock


@pytest.fixture
def vrun(posemu_runner: asyncio.Runner) -> asyncio.Runner:
    """An asyncio runner whose loop runs on ``vclock``: the plugin's ``posemu_runner`` (``vrun.run(coro)``)."""
    return posemu_runner


@pytest.fixture
def real_waits(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The timeouts of every OS-level ``select`` of event loops created from now on.

    A virtual-clock loop that only ever polls (``0``) never waited in real time: its timers were
    jumped over. This is how a test shows that a long timeout costs no wall time without
    measuring wall time. Create the loop inside the test (``asyncio.Runner(loop_factory=…)``).
    """
    waits: list[float | None] = []
    base: Any = selectors.DefaultSelector

    class Recording(base):  # type: ignore[misc]
        def select(self, timeout: float | None = None) -> Any:
            waits.append(timeout)
            return super().select(timeout)

    monkeypatch.setattr(selectors, "DefaultSelector", Recording)
    return waits


# PC/SC test infrastructure (a real pcscd with the vsmartcard vpcd driver): the session fixture
# `pcscd`. Imported here so the private pcscd socket is chosen before any test touches PC/SC.
from tests.pcsc_fixtures import pcscd  # noqa: E402, F401
