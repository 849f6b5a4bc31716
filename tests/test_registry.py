"""Reader URL schemes are found by name through the ``posemu.readers`` entry points (pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from faults.reader import FaultyReader
from hardware import registry
from hardware.clock import Clock, VirtualClock
from hardware.ports import CardReader
from hardware.registry import ENTRY_POINT_GROUP, ReaderURL, known_schemes, open_reader
from hardware.sim import SimReader
from protocol.errors import ConfigError

SEEN: list[ReaderURL] = []
"""The URLs :func:`open_spy` was given; each test that uses it installs its own list (monkeypatch)."""


def open_spy(url: ReaderURL, clock: Clock) -> CardReader:
    """A wrapping scheme for the test: records the URL it was given and opens the inner one."""
    SEEN.append(url)
    return open_reader(url.scheme.partition("+")[2] + "://" + url.target, clock=clock)


def test_the_installed_entry_points_name_every_scheme() -> None:
    assert {"sim", "pcsc", "serial", "fault"} <= set(known_schemes())


def test_fault_scheme_is_found_by_name_without_importing_faults_first(vclock: VirtualClock) -> None:
    reader = open_reader("fault+sim://demo?contact_ohms=12&seed=7", clock=vclock)
    assert isinstance(reader, FaultyReader) and isinstance(reader.inner, SimReader)
    assert reader.faults.contact_ohms == 12


@pytest.mark.parametrize(("url", "words"), [
    ("nosuch://x", "unknown reader scheme 'nosuch'; known: "),
    ("sim+pcsc://0", "sim:// does not wrap another reader"),
    ("fault://demo", "fault+ wraps another reader URL"),
])
def test_bad_schemes_are_clear_errors(vclock: VirtualClock, url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("+", r"\+")):
        open_reader(url, clock=vclock)


def test_a_name_plus_inner_scheme_goes_to_the_name_entry(vclock: VirtualClock,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    eps = {"spy": EntryPoint("spy", f"{__name__}:open_spy", ENTRY_POINT_GROUP),
           "broken": EntryPoint("broken", "posemu_no_such_module:factory", ENTRY_POINT_GROUP)}
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    seen: list[ReaderURL] = []
    monkeypatch.setattr(f"{__name__}.SEEN", seen)       # the entry point loads this very module
    reader = open_reader("spy+sim://demo", clock=vclock)
    assert isinstance(reader, SimReader)
    assert [(u.scheme, u.target) for u in seen] == [("spy+sim", "demo")]
    assert known_schemes() == ["broken", "pcsc", "serial", "sim", "spy"]
    with pytest.raises(ConfigError, match="its entry point 'posemu_no_such_module:factory' does not load"):
        open_reader("broken://x", clock=vclock)


def test_without_installed_metadata_the_builtin_schemes_still_open(vclock: VirtualClock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_entry_points", dict)
    assert isinstance(open_reader("sim://demo", clock=vclock), SimReader)
    with pytest.raises(ConfigError, match="is posemu installed"):
        open_reader("fault+sim://demo", clock=vclock)
