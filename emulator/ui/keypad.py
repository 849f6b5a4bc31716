"""The keypad flow: what each terminal key does on the page the terminal's screen shows.

One state machine for every key of the keypad (digits, ``00``, 确认, 取消, 更正, 菜单): while the
terminal asks for a PIN the keys go to its PIN pad (:class:`emulator.ui.pinpad.KeypadPinPad`, the
terminal's :class:`emulator.ports.PinPad` port); otherwise they choose from the menu or fill the
amount or password entry (the same :class:`emulator.ui.pinpad.DigitEntry` the PIN pad uses).
:meth:`KeypadFlow.press` changes the page and the entry and returns what the terminal must do
(a :class:`Command`); it does no I/O, so the flow is tested without a screen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from emulator.ui.face import MENU, Page
from emulator.ui.pinpad import PIN_MAX, DigitEntry, KeypadPinPad

AMOUNT_DIGITS = 10
"""Digits of an amount in cents (CNY 99,999,999.99 at most; ISO 8583 field 4 has 12)."""


class Do(enum.Enum):
    """What a key asks of the terminal (the screen carries it out)."""

    BELL = "bell"                    # the key is not taken here
    HELP = "help"
    CANCEL_ACTION = "cancel action"  # Esc while the terminal works (waiting for a card or the host)
    MENU = "menu"                    # a menu choice: ``arg`` is its digit
    PURCHASE = "purchase"            # ``arg`` is the amount in cents
    OPERATOR = "operator"            # ``arg`` is the operator password typed
    UNLOCK = "unlock"                # ``arg`` is the administrator password typed


@dataclass(frozen=True, slots=True)
class Command:
    """What a key asks of the terminal (``do``) with its argument (a menu digit, an amount in cents,
    a password typed); the screen carries it out."""

    do: Do
    arg: str = ""


@dataclass(slots=True)
class KeypadFlow:
    """The page (menu, amount or password entry, busy, result), the entry and the PIN pad."""

    pinpad: KeypadPinPad
    page: Page = Page.MENU
    entry: DigitEntry = field(default_factory=lambda: DigitEntry(AMOUNT_DIGITS, leading_zeros=False))
    after_operator: str | None = None      # what the operator password opens (``"settings"``)
    unlocking: bool = False                # the password entry is the administrator's (unlock)

    @property
    def amount(self) -> int:
        return int(self.entry.value or "0") if self.page is Page.AMOUNT else 0

    def shown_entry(self) -> str | None:
        """The entry line of the screen: asterisks for a PIN or a password, or ``None``."""
        if self.pinpad.active:
            return self.pinpad.masked
        if self.page is Page.OPERATOR:
            return self.entry.masked
        return None

    # --- pages ------------------------------------------------------------------------------------------
    def to_menu(self) -> None:
        self.page = Page.MENU
        self.entry.clear()
        self.unlocking = False

    def ask_amount(self) -> None:
        self.page = Page.AMOUNT
        self.entry = DigitEntry(AMOUNT_DIGITS, leading_zeros=False)

    def ask_password(self, *, then: str | None = None, admin: bool = False) -> None:
        self.page = Page.OPERATOR
        self.entry = DigitEntry(PIN_MAX)
        self.after_operator = then
        self.unlocking = admin

    def busy(self) -> None:
        self.page = Page.BUSY

    def idle(self) -> None:
        """The action ended: its screens stay on show until a key returns to the menu."""
        if self.page is Page.BUSY:
            self.page = Page.RESULT

    # --- keys -------------------------------------------------------------------------------------------
    def press(self, key: str, *, busy: bool) -> Command | None:
        """One key (``0``–``9``, ``00``, ``confirm``, ``cancel``, ``correct``, ``menu``, ``help``)."""
        if key == "help":
            return Command(Do.HELP)
        if self.pinpad.active:
            return self._pin_key(key)
        if busy:
            return Command(Do.CANCEL_ACTION) if key == "cancel" else Command(Do.BELL)
        if self.page in (Page.MENU, Page.RESULT):
            if key.isdigit() and len(key) == 1:
                return Command(Do.MENU, key) if key in dict(MENU) else Command(Do.BELL)
            if key in ("confirm", "cancel", "menu"):
                self.to_menu()
            return None
        if key in ("cancel", "menu"):
            self.to_menu()
        elif key == "correct":
            self.entry.pop()
        elif key.isdigit():
            if not all(self.entry.push(d) for d in key):
                return Command(Do.BELL)
        elif key == "confirm":
            return self._confirm()
        return None

    def _pin_key(self, key: str) -> Command | None:
        pad = self.pinpad
        ok = True
        if key.isdigit():
            ok = all(pad.digit(d) for d in key)
        elif key == "correct":
            ok = pad.backspace()
        elif key == "confirm":
            ok = pad.confirm()
        elif key == "cancel":
            ok = pad.cancel()
        return None if ok else Command(Do.BELL)

    def _confirm(self) -> Command | None:
        value = self.entry.value
        if self.page is Page.AMOUNT:
            if self.amount <= 0:
                return Command(Do.BELL)
            self.entry.clear()
            return Command(Do.PURCHASE, value)
        if self.page is Page.OPERATOR:
            self.entry.clear()
            return Command(Do.UNLOCK if self.unlocking else Do.OPERATOR, value)
        return None
