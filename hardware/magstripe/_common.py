"""What the reader-ASIC decoder's stages share (:mod:`hardware.magstripe.decoder`).

The limits of the fast paths' speculation — a decision this close to its threshold, or this
many restarts, hands a track to the sequential reference rule — and the frozen result objects
whose tuples are made from numpy arrays on first access.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_TIE = 1e-9                  # a decision this close (relative) to its threshold goes to the reference rule
_MAX_RESTARTS = 8            # speculation restarts before a track is left to the sequential rule


class _Frozen:
    """Read-only attributes set once in ``__init__`` (a frozen dataclass's contract)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


def _tuple_of(cache: dict[str, Any], name: str, arr: npt.NDArray[Any]) -> tuple[Any, ...]:
    t: tuple[Any, ...] | None = cache.get(name)
    if t is None:
        t = cache[name] = tuple(arr.tolist())
    return t


def _ready(value: Any) -> Any:
    return value() if callable(value) else value
