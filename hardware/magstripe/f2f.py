"""F2F (Aiken biphase) recording: bits → flux transitions along the stripe.

ISO/IEC 7811-2, encoding technique (F2F): every bit cell begins with a flux transition, and a 1 has one more in the
middle of the cell. The magnetisation alternates at each transition, so consecutive transitions
have opposite polarity and the head's readback pulses alternate in sign. Positions are in inches
from the card edge that passes the head first in a forward swipe.

>>> f2f_positions([0, 1, 0], bpi=100.0)
[0.0, 0.01, 0.015, 0.02, 0.03]
>>> f2f_bits([0.0, 0.01, 0.015, 0.02, 0.03])
[0, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocol.errors import EncodeError

SS_POSITION_IN = 0.293
"""Distance of the start sentinel's first bit from the card's leading edge (ISO/IEC 7811-2, location of the data)."""

CARD_LENGTH_IN = 3.370
"""ID-1 card length (ISO/IEC 7810: 85.60 mm)."""


def f2f_positions(bits: Sequence[int], bpi: float, origin_in: float = 0.0) -> list[float]:
    """Flux-transition positions (inches) for ``bits`` recorded at ``bpi`` from ``origin_in``.

    The returned list has ``len(bits) + ones + 1`` positions: one per cell edge (the closing edge
    of the last cell included) and one mid-cell per 1. Transition ``k`` has polarity ``(-1)**k``.
    """
    if bpi <= 0:
        raise EncodeError("recording density must be positive", field="bpi")
    cell = 1.0 / bpi
    half = cell / 2.0
    out = [origin_in]
    append = out.append
    x = origin_in
    for i, b in enumerate(bits):
        if b:
            append(x + half)
        x = origin_in + (i + 1) * cell
        append(x)
    return out


def f2f_array(bits: npt.NDArray[np.uint8], bpi: float, origin_in: float = 0.0) -> npt.NDArray[np.float64]:
    """:func:`f2f_positions` for a bit array, as an array (the swipe model's hot path).

    Slot ``2i`` of the half-cell grid is the edge opening cell ``i``, slot ``2i + 1`` its middle,
    kept only when bit ``i`` is a 1.
    """
    if bpi <= 0:
        raise EncodeError("recording density must be positive", field="bpi")
    half = 0.5 / bpi
    keep = np.ones(2 * len(bits) + 1, dtype=bool)
    keep[1::2] = bits
    return (origin_in + np.arange(keep.size, dtype=np.float64) * half)[keep]


def f2f_bits(positions: Sequence[float]) -> list[int]:
    """Ideal F2F decode of transition positions (no noise, constant density): the inverse of
    :func:`f2f_positions`, used to check it. The first interval defines the bit cell."""
    if len(positions) < 2:
        return []
    cell = positions[1] - positions[0]
    bits: list[int] = []
    i = 0
    n = len(positions) - 1
    while i < n:
        d = positions[i + 1] - positions[i]
        if d < 0.75 * cell and i + 1 < n:
            bits.append(1)
            cell = positions[i + 2] - positions[i]
            i += 2
        else:
            bits.append(0)
            cell = d
            i += 1
    return bits


def track_origin(lead_zeros: int, bpi: float) -> float:
    """Where bit 0 of a track starts so that its start sentinel sits at :data:`SS_POSITION_IN`."""
    return max(0.0, SS_POSITION_IN - lead_zeros / bpi)
