"""Magnetic stripe: track codecs, F2F recording, a physical swipe model and a reader-ASIC decoder.

>>> from hardware.magstripe import SwipeParams, simulate_swipe
>>> stripe = ("B9900010000000019^TEST/DEMO^30121010000000000", "9900010000000019=30121010000000000", None)
>>> report = simulate_swipe(stripe, SwipeParams(speed_ips=10.0, seed=1))
>>> [t.status.name for t in report.result.tracks]
['OK', 'OK', 'NO_DATA']
>>> report.result.track(2).data == stripe[1]
True
>>> too_fast = simulate_swipe(stripe, SwipeParams(speed_ips=1000.0, seed=1))
>>> too_fast.result.track(1).ok, too_fast.result.track(2).ok
(False, False)

* :mod:`~hardware.magstripe.tracks` — ISO/IEC 7811/7813 and ISO 4909 track codecs.
* :mod:`~hardware.magstripe.f2f` — bits → flux-transition positions (Aiken biphase).
* :mod:`~hardware.magstripe.swipe` — the physics: motion, head, front end, noise, damage, ADC.
* :mod:`~hardware.magstripe.decoder` — the reader ASIC: the peak detector
  (:mod:`~hardware.magstripe.peaks`), adaptive clock recovery
  (:mod:`~hardware.magstripe.clock_recovery`), characters.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hardware.magstripe.clock_recovery import RecoveredClock
from hardware.magstripe.decoder import TrackDiagnostics, decode_signal
from hardware.magstripe.f2f import f2f_positions
from hardware.magstripe.peaks import Peaks
from hardware.magstripe.swipe import (
    Damage,
    ReaderModel,
    StripeMedium,
    SwipeParams,
    recorded_positions,
    seeded_rng,
    synthesize_tracks,
)
from hardware.magstripe.tracks import (
    TRACKS,
    TrackNumberError,
    TrackSpec,
    decode_track,
    encode_array,
    encode_track,
    lrc,
    mask_track,
    parse_track,
    read_track,
    track_spec,
)
from hardware.ports import SwipeResult, TrackRead, TrackStatus

__all__ = [
    "TRACKS",
    "Damage",
    "Peaks",
    "ReaderModel",
    "RecoveredClock",
    "StripeMedium",
    "SwipeParams",
    "SwipeReport",
    "TrackDiagnostics",
    "TrackNumberError",
    "TrackSpec",
    "decode_track",
    "encode_array",
    "encode_track",
    "f2f_positions",
    "lrc",
    "mask_track",
    "parse_track",
    "read_track",
    "simulate_swipe",
    "track_spec",
]


@dataclass(frozen=True, slots=True)
class SwipeReport:
    """One simulated swipe: what the reader returned, and per-track diagnostics for plotting.

    ``tracks[i]`` belongs to track ``i + 1`` and is ``None`` when the card has no such track.
    """

    result: SwipeResult
    tracks: tuple[TrackDiagnostics | None, ...]
    params: SwipeParams

    @property
    def duration_s(self) -> float:
        """Time from the first to the last transition that passed the head (any track)."""
        arrivals = [d.signal.arrivals_s for d in self.tracks if d is not None and d.signal.arrivals_s.size]
        if not arrivals:
            return 0.0
        return max(float(a[-1]) for a in arrivals) - min(float(a[0]) for a in arrivals)


def track_rng(seed: int, track: int) -> np.random.Generator:
    """The random stream of one track of a swipe: PCG64 keyed by a hash of the seed and the track
    (valid until the next call for the same track in the same thread)."""
    return seeded_rng(_track_key(seed, track), track)


@functools.lru_cache(maxsize=4096)
def _track_key(seed: int, track: int) -> bytes:
    return hashlib.blake2b(f"posemu.swipe:{seed}:track{track}".encode(), digest_size=32).digest()


def simulate_swipe(stripe: Sequence[str | None], params: SwipeParams | None = None) -> SwipeReport:
    """Swipe a card whose stripe holds ``stripe`` (tracks 1–3, ``None`` = absent) through the
    modelled reader; the outcome comes from the physics in :mod:`hardware.magstripe.swipe`.

    Each track gets its own random stream derived from ``params.seed`` (:func:`track_rng`), so a
    swipe is reproducible and adding a track does not change the others.
    Raises :class:`~protocol.errors.EncodeError` when a track's data cannot be recorded.
    """
    params = params or SwipeParams()
    if len(stripe) != 3:
        raise TypeError("stripe must give tracks 1, 2 and 3 (None for an absent track)")
    jobs = []
    for n, data in enumerate(stripe, start=1):
        if data is not None:
            jobs.append((n, recorded_positions(n, data), track_rng(params.seed, n)))
    signals = iter(synthesize_tracks(jobs, params))
    reads: list[TrackRead] = []
    diags: list[TrackDiagnostics | None] = []
    for n, data in enumerate(stripe, start=1):
        if data is None:
            reads.append(TrackRead(n, TrackStatus.NO_DATA, "", "track not recorded on this card"))
            diags.append(None)
            continue
        read, diag = decode_signal(next(signals), params.reader)
        reads.append(read)
        diags.append(diag)
    return SwipeReport(SwipeResult(tuple(reads)), tuple(diags), params)
