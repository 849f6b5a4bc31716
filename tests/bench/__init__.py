"""Benchmarks (``make bench``). Each ``bench_*.py`` module exposes ``run() -> list[BenchResult]``.

Targets are printed next to the measured figures; nothing here asserts on time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchResult:
    name: str
    value: float
    unit: str
    target: str = ""      # e.g. "<= 1.2x", ">= 23000 msg/s"
    met: bool | None = None
    note: str = ""
