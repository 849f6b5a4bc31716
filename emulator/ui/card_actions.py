"""What the user does with the card at the counter: insert, swipe (with speed and tilt), remove,
and the virtual cardholder typing the test card's PIN.

The swipe is set up as everywhere else: the cardholder's habits armed by a fault (speed, tilt,
noise, dirt) over the card slot's sliders through :func:`hardware.magstripe.swipe_params`, the
card's own stripe damage through :func:`hardware.sim.physical_swipe_report` — the same set-up
the regression runner's scripted cardholder and the sim reader use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from hardware.cards.profiles import load_profile
from hardware.magstripe import SwipeParams, SwipeReport, swipe_params
from hardware.sim import SimReader, physical_swipe_report
from protocol.errors import ConfigError, PosemuError

Severity = Literal["information", "warning", "error"]
Notify = Callable[[str, Severity], None]


@dataclass(frozen=True, slots=True)
class Swiped:
    """A swipe made: the physics used and what the head decoded (for the trace and the swipe view)."""

    params: SwipeParams
    report: SwipeReport

    @property
    def statuses(self) -> str:
        return ", ".join(f"T{t.track} {t.status.value}" for t in self.report.result.tracks)

    @property
    def track2_failed(self) -> str | None:
        """Track 2's status when a track 2 on the stripe did not read, else ``None``."""
        t2 = self.report.result.track(2)
        return t2.status.value if t2 is not None and not t2.ok else None


class CardActions:
    """The card slot's actions on the virtual reader (``sim``); ``notify`` tells the user why not."""

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.seed = 0

    def insert(self, sim: SimReader) -> bool:
        if sim.card is not None:
            self.notify("A card is already in the slot (r removes it).", "information")
            return False
        return self._do(sim.insert)

    def remove(self, sim: SimReader) -> bool:
        if sim.card is None:
            self.notify("The slot is empty.", "information")
            return False
        return self._do(sim.remove)

    def swipe(self, sim: SimReader, speed: str, tilt: str, habits: Mapping[str, float]) -> Swiped | None:
        """Swipe the selected card with the sliders' ``speed`` (in/s) and ``tilt`` (°); an armed
        fault's habits (``habits``) take over what they set."""
        card = sim.default_card
        if card is None:
            self.notify("No card selected.", "warning")
            return None
        try:
            base = SwipeParams(speed_ips=float(speed or "10"), skew_deg=float(tilt or "0"))
            params = swipe_params(habits, base, seed=self.seed)
        except ValueError:
            self.notify("Speed and tilt must be numbers.", "error")
            return None
        except ConfigError as e:
            self.notify(str(e), "error")
            return None
        self.seed += 1
        report = physical_swipe_report(card, params)
        if not self._do(lambda: sim.swipe(card, result=report.result)):
            return None
        return Swiped(report.params, report)

    def pin_of(self, profile: str) -> str | None:
        """The test card's PIN (the virtual cardholder knows it)."""
        try:
            return load_profile(profile).pin
        except PosemuError as e:
            self.notify(str(e), "error")
            return None

    def _do(self, fn: Callable[[], object]) -> bool:
        try:
            fn()
        except PosemuError as e:
            self.notify(str(e), "error")
            return False
        return True
