"""pytest plugin (entry point ``pytest11``): fixtures for writing fault regressions.

Fixtures are added as the fault injector grows (issue: fault injector and regression suite).
"""

from __future__ import annotations
