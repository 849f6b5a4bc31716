"""The terminal's user-facing ports: the PIN pad and the display.

The CLI, the UI and the regression suite each supply their own: a human at a keypad, or a
scripted cardholder. Both are product code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from emulator.messages import Screen
from hardware.clock import loop_sleep


class PinPad(Protocol):
    """The PIN entry port: a scripted cardholder (:class:`ScriptedPinPad`) or the UI's keypad."""

    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        """The PIN the cardholder entered; ``None`` if cancelled or timed out."""
        ...


Display = Callable[[Screen], None]


class ScriptedPinPad:
    """A cardholder who types the PINs given, in order (the last one repeats), taking
    ``seconds_per_digit`` per key plus one for 确认 (on the event loop's clock)."""

    def __init__(self, *pins: str, seconds_per_digit: float = 0.4) -> None:
        if not pins:
            raise ValueError("give at least one PIN")
        self._pins = list(pins)
        self.seconds_per_digit = seconds_per_digit
        self.prompts: list[Screen] = []

    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        self.prompts.append(prompt)
        pin = self._pins.pop(0) if len(self._pins) > 1 else self._pins[0]
        if self.seconds_per_digit:
            await loop_sleep(self.seconds_per_digit * (len(pin) + 1))
        return pin

    def __repr__(self) -> str:
        return f"ScriptedPinPad(<{len(self._pins)} PINs hidden>)"


class CancelPinPad:
    """A cardholder who presses Cancel at the PIN prompt."""

    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        return None
