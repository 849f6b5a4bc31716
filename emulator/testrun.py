"""``make unit``: run the test suite (``python -m emulator.testrun -- [pytest args]``).

Starts the daemons the suite needs for the duration of the run and stops them after
(the PC/SC part is added by the reader-layer work).
"""

from __future__ import annotations

import sys

import pytest


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--"]
    code = pytest.main(["-p", "no:cacheprovider", *args])
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
