"""Shared fixtures: a virtual clock, an event loop running on it, and a record of real-time waits."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Iterator
from typing import Any

import pytest

from hardware.clock import VirtualClock


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def vrun(vclock: VirtualClock) -> Iterator[asyncio.Runner]:
    """An asyncio runner whose loop runs on the virtual clock: ``vrun.run(coro)``."""
    with asyncio.Runner(loop_factory=vclock.new_event_loop) as runner:
        yield runner


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
