"""The keypad-driven PIN pad: the :class:`emulator.ports.PinPad` port for the desktop emulator.

The terminal awaits :meth:`KeypadPinPad.get_pin`; the UI feeds it the keys the user presses on
the on-screen keypad or the keyboard (digits, 确认/Enter, 取消/Esc, 更正/Backspace). Only the
number of digits is ever exposed (:attr:`KeypadPinPad.masked`), never the digits themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from emulator.messages import Screen

PIN_MIN = 4
PIN_MAX = 12
"""ISO 9564-1 §5.2.2: a PIN has 4 to 12 digits."""


class DigitEntry:
    """The digits typed on the keypad for one entry (a PIN, an amount, a password): the one entry
    buffer of the UI's keypad, with its limit; ``masked`` shows one asterisk per digit.

    >>> e = DigitEntry(limit=3, leading_zeros=False)
    >>> [e.push(d) for d in "01234"], e.value
    ([True, True, True, True, False], '123')
    """

    def __init__(self, limit: int, *, leading_zeros: bool = True) -> None:
        self.limit = limit
        self.leading_zeros = leading_zeros
        self._digits: list[str] = []

    def __len__(self) -> int:
        return len(self._digits)

    @property
    def value(self) -> str:
        return "".join(self._digits)

    @property
    def masked(self) -> str:
        return "*" * len(self._digits)

    def push(self, d: str) -> bool:
        """One digit; ``False`` when it is not taken (the entry is full)."""
        if len(d) != 1 or not d.isdigit():
            raise ValueError("a keypad digit is one digit")
        if not self.leading_zeros and not self._digits and d == "0":
            return True                     # an amount's leading zero: taken, changes nothing
        if len(self._digits) >= self.limit:
            return False
        self._digits.append(d)
        return True

    def pop(self) -> bool:
        """更正: remove the last digit."""
        if not self._digits:
            return False
        self._digits.pop()
        return True

    def set(self, digits: str) -> None:
        self._digits = list(digits[: self.limit])

    def clear(self) -> None:
        self._digits.clear()


class KeypadPinPad:
    """A PIN pad whose keys come from the UI.

    ``on_change`` is called whenever what the screen should show changes (entry started, a digit
    typed or removed, entry finished). ``get_pin`` returns ``None`` when the user cancels or the
    timeout (seconds on the running loop) passes first.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._on_change = on_change
        self._digits = DigitEntry(PIN_MAX)
        self._future: asyncio.Future[str | None] | None = None
        self.prompt: Screen | None = None

    def __repr__(self) -> str:  # the digits are a PIN: never in a repr
        return f"KeypadPinPad(active={self.active}, digits=<{len(self._digits)} hidden>)"

    def _pending(self) -> asyncio.Future[str | None] | None:
        fut = self._future
        return fut if fut is not None and not fut.done() else None

    @property
    def active(self) -> bool:
        """The terminal is waiting for a PIN."""
        return self._pending() is not None

    @property
    def length(self) -> int:
        return len(self._digits)

    @property
    def masked(self) -> str:
        """What the screen shows: one asterisk per digit typed."""
        return self._digits.masked

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    async def get_pin(self, prompt: Screen, timeout: float) -> str | None:
        loop = asyncio.get_running_loop()
        if self.active:
            raise RuntimeError("a PIN entry is already in progress")
        self._future = loop.create_future()
        self._digits.clear()
        self.prompt = prompt
        self._changed()
        try:
            async with asyncio.timeout(timeout):
                return await self._future
        except TimeoutError:
            return None
        finally:
            self._future = None
            self._digits.clear()
            self.prompt = None
            self._changed()

    # --- keys -------------------------------------------------------------------------------
    def digit(self, d: str) -> bool:
        """A digit key; ``False`` when it was not taken (no entry, or the PIN is full)."""
        if len(d) != 1 or not d.isdigit():
            raise ValueError("a PIN key is one digit")
        if not self.active or not self._digits.push(d):
            return False
        self._changed()
        return True

    def backspace(self) -> bool:
        """更正: remove the last digit."""
        if not self.active or not self._digits.pop():
            return False
        self._changed()
        return True

    def confirm(self) -> bool:
        """确认: hand the PIN to the terminal; ``False`` while it is shorter than 4 digits."""
        fut = self._pending()
        if fut is None or len(self._digits) < PIN_MIN:
            return False
        fut.set_result(self._digits.value)
        return True

    def cancel(self) -> bool:
        """取消: the cardholder cancels PIN entry."""
        fut = self._pending()
        if fut is None:
            return False
        fut.set_result(None)
        return True

    def type_pin(self, pin: str) -> bool:
        """A virtual cardholder types ``pin`` (digits only) and confirms."""
        if not self.active or not pin.isdigit():
            return False
        self._digits.set(pin)
        self._changed()
        return self.confirm()
