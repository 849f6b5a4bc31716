"""The terminal's user-facing ports: the PIN pad and the display.

The CLI, the UI and the regression suite each supply their own: a human at a keypad, or a
scripted cardholder. Both are product code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from emulator.messages import Screen


class PinPad(Protocol):
    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        """The PIN the cardholder entered; ``None`` if cancelled or timed out."""
        ...


Display = Callable[[Screen], None]


class ScriptedPinPad:
    """A cardholder who types the PINs given, in order (the last one repeats)."""

    def __init__(self, *pins: str) -> None:
        if not pins:
            raise ValueError("give at least one PIN")
        self._pins = list(pins)
        self.prompts: list[Screen] = []

    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        self.prompts.append(prompt)
        return self._pins.pop(0) if len(self._pins) > 1 else self._pins[0]

    def __repr__(self) -> str:
        return f"ScriptedPinPad(<{len(self._pins)} PINs hidden>)"


class CancelPinPad:
    """A cardholder who presses Cancel at the PIN prompt."""

    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        return None
