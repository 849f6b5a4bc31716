"""A scripted cardholder at a virtual reader: reacts to the terminal's screens like a person.

Shown 请插卡或刷卡 it inserts a chip card (or swipes a stripe-only one); told to insert the chip
it does; told to swipe again it swipes; at 请拔卡 it takes the card out. Its habits are
parameters — swipe physics, forgetting the card, pulling it out early — so user faults are
just a different cardholder. Product code: the CLI and the regression suite use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.messages import Msg, Screen
from hardware.ports import SwipeResult, VirtualCard
from hardware.sim import SimReader

_PULL_AT = {"reading": Msg.READING_CARD, "pin": Msg.ENTER_PIN, "online": Msg.PROCESSING}


@dataclass(slots=True)
class Cardholder:
    """A scripted person at a ``sim://`` reader: answers the terminal's screens with the card, after ``reaction_s``."""

    reader: SimReader
    card: VirtualCard
    prefer_chip: bool = True
    removes_card: bool = True
    swipe_params: Any = None                  # hardware.magstripe.SwipeParams, when physics is wanted
    reaction_s: float = 1.5                   # a person reads the screen, then acts (event-loop clock)
    pulls_card_at: str = ""                   # "", "reading", "pin" or "online": takes the card out there
    actions: list[str] = field(default_factory=list)

    def _has_chip(self) -> bool:
        return bool(self.card.atr)

    def _insert(self) -> None:
        self.actions.append("insert")
        self.reader.insert(self.card)

    def _remove(self) -> None:
        if self.reader.card is not None:
            self.actions.append("remove")
            self.reader.remove()

    def _swipe(self) -> SwipeResult:
        self.actions.append("swipe")
        if self.swipe_params is not None:
            # each swipe is a new physical event: same habits, fresh randomness
            n = self.actions.count("swipe")
            return self.reader.swipe(self.card, params=self.swipe_params, seed=self.swipe_params.seed + n)
        return self.reader.swipe(self.card)

    def __call__(self, screen: Screen) -> None:
        if self._pull(screen):
            return
        if self.reaction_s > 0:
            import asyncio

            try:
                asyncio.get_running_loop().call_later(self.reaction_s, self._react, screen)
                return
            except RuntimeError:      # no running loop: act at once
                pass
        self._react(screen)

    def _pull(self, screen: Screen) -> bool:
        """An impatient or careless cardholder takes the card out at the screen of their habit."""
        at = _PULL_AT.get(self.pulls_card_at)
        if at is None or screen.msg is not at or self.reader.card is None:
            return False
        import asyncio

        delay = 0.0 if self.pulls_card_at == "online" else min(self.reaction_s, 0.5)
        try:
            asyncio.get_running_loop().call_later(delay, self._remove)
        except RuntimeError:
            self._remove()
        return True

    def _react(self, screen: Screen) -> None:
        m = screen.msg
        if m is Msg.INSERT_OR_SWIPE:
            if self.prefer_chip and self._has_chip():
                self._insert()
            else:
                self._swipe()
        elif m is Msg.INSERT_CHIP:
            self._insert()
        elif m is Msg.FALLBACK_SWIPE:
            self._remove()
            self._swipe()
        elif m is Msg.SWIPE_AGAIN:
            self._swipe()
        elif m is Msg.READER_ERROR and self.reader.card is not None:
            self._remove()          # "chip read failed": take it out and put it back
            self._insert()
        elif m is Msg.REMOVE_CARD and self.removes_card:
            self._remove()
