"""Shared fixtures: a virtual clock and an event loop running on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

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


# PC/SC test infrastructure (a real pcscd with the vsmartcard vpcd driver): the session fixture
# `pcscd`. Imported here so the private pcscd socket is chosen before any test touches PC/SC.
from tests.pcsc_fixtures import pcscd  # noqa: E402, F401
