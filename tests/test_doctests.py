"""The examples in the docstrings are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

SKIP = ("emulator.ui", "faults.pytest_plugin",
        "emulator.locust_user", "emulator.locustfile")   # importing locust monkey-patches the process (gevent)


def _modules() -> list[str]:
    names = []
    for pkg in ("protocol", "hardware", "emulator", "faults"):
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, prefix=pkg + "."):
            if not info.name.startswith(SKIP):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
