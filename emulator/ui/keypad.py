"""The keypad flow: what each terminal key does on the page the terminal's screen shows.

One state machine for every key of the keypad (digits, ``00``, 确认, 取消, 更正, 菜单): while the
terminal asks for a PIN the keys go to its PIN pad (:class:`emulator.ui.pinpad.KeypadPinPad`, the
terminal's :class:`emulator.ports.PinPad` port); otherwise they choose from the menu or fill the
amount, voucher or password entry (the same :class:`emulator.ui.pinpad.DigitEntry` the PIN pad uses).
Main menu 8 opens the menu of the rest of the transaction set: a void asks for the original's voucher
number (凭证号, its STAN), a completion for the pre-authorization's voucher and then the amount
(Enter alone: the pre-authorized amount), a refund for the original's voucher — or, for a sale of
another batch, its 12-digit reference number (参考号) — and then the amount, a pre-authorization for
the amount; settlement and sign-off start at once.
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
VOUCHER_DIGITS = 6
"""A voucher number (凭证号) is the original's STAN: up to 6 digits (leading zeros may be left out)."""
RRN_DIGITS = 12
"""A retrieval reference number (参考号, field 37): 12 digits; a refund of another batch's sale names it."""


class Txn(enum.Enum):
    """What the amount and voucher pages collect for."""

    PURCHASE = "purchase"
    PREAUTH = "preauth"
    VOID = "void"
    REFUND = "refund"
    COMPLETION = "completion"

    @property
    def needs_amount(self) -> bool:
        """An amount must be typed (a refund or completion of a journal row may take the original's)."""
        return self in (Txn.PURCHASE, Txn.PREAUTH)


class Do(enum.Enum):
    """What a key asks of the terminal (the screen carries it out)."""

    BELL = "bell"                    # the key is not taken here
    HELP = "help"
    CANCEL_ACTION = "cancel action"  # Esc while the terminal works (waiting for a card or the host)
    MENU = "menu"                    # a menu choice: ``arg`` is its digit
    PURCHASE = "purchase"            # ``arg`` is the amount in cents
    PREAUTH = "preauth"              # ``arg`` is the amount in cents
    VOID = "void"                    # ``voucher`` (or ``original_id``) names the original
    REFUND = "refund"                # ``voucher`` (6 digits) or reference number (12) and ``amount``
    COMPLETE = "complete"            # ``voucher`` of the pre-authorization and ``amount``
    SETTLE = "settle"
    SIGN_OFF = "sign off"
    OPERATOR = "operator"            # ``arg`` is the operator password typed
    UNLOCK = "unlock"                # ``arg`` is the administrator password typed


@dataclass(frozen=True, slots=True)
class Command:
    """What a key asks of the terminal (``do``) with its argument (a menu digit, an amount in cents,
    a password typed) and, for a transaction against an original, the original (its voucher number
    or reference number as typed, or its journal row when it was picked in the journal) and the
    amount (``None``: the original's); the screen carries it out."""

    do: Do
    arg: str = ""
    voucher: str = ""
    original_id: int | None = None
    amount: int | None = None


@dataclass(slots=True)
class KeypadFlow:
    """The page (menu, amount or password entry, busy, result), the entry and the PIN pad."""

    pinpad: KeypadPinPad
    page: Page = Page.MENU
    entry: DigitEntry = field(default_factory=lambda: DigitEntry(AMOUNT_DIGITS, leading_zeros=False))
    after_operator: str | None = None      # what the operator password opens (``"settings"``)
    unlocking: bool = False                # the password entry is the administrator's (unlock)
    txn: Txn = Txn.PURCHASE                # what the amount and voucher pages collect for
    voucher: str = ""                      # the original's voucher or reference number, once typed
    original_id: int | None = None         # the original's journal row, when picked in the journal

    @property
    def amount(self) -> int:
        return int(self.entry.value or "0") if self.page is Page.AMOUNT else 0

    @property
    def by_rrn(self) -> bool:
        """The refund names its original by reference number (another batch's sale)."""
        return len(self.voucher) == RRN_DIGITS

    def shown_entry(self) -> str | None:
        """The entry line of the screen: asterisks for a PIN or a password, the digits of a voucher
        number, or ``None``."""
        if self.pinpad.active:
            return self.pinpad.masked
        if self.page is Page.OPERATOR:
            return self.entry.masked
        if self.page is Page.VOUCHER:
            return self.entry.value
        return None

    # --- pages ------------------------------------------------------------------------------------------
    def to_menu(self) -> None:
        self.page = Page.MENU
        self.entry.clear()
        self.unlocking = False
        self.voucher, self.original_id = "", None

    def ask_more(self) -> None:
        """Main menu 8: the menu of the rest of the transaction set."""
        self.page = Page.MORE
        self.entry.clear()

    def ask_amount(self, txn: Txn = Txn.PURCHASE, *, voucher: str = "", original_id: int | None = None) -> None:
        """The amount of ``txn`` (a refund's or completion's original named already)."""
        self.page = Page.AMOUNT
        self.txn = txn
        self.voucher, self.original_id = voucher, original_id
        self.entry = DigitEntry(AMOUNT_DIGITS, leading_zeros=False)

    def ask_voucher(self, txn: Txn) -> None:
        """The original's voucher number (a refund's may be a 12-digit reference number)."""
        self.page = Page.VOUCHER
        self.txn = txn
        self.voucher, self.original_id = "", None
        self.entry = DigitEntry(RRN_DIGITS if txn is Txn.REFUND else VOUCHER_DIGITS)

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
        if self.page is Page.MORE:
            return self._more_key(key)
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

    def _more_key(self, key: str) -> Command | None:
        """A key on the menu of more transactions (:data:`emulator.ui.face.MORE_MENU`)."""
        if key in ("cancel", "menu"):
            self.to_menu()
            return None
        choice = {"1": Txn.VOID, "2": Txn.REFUND, "4": Txn.COMPLETION}
        if key in choice:
            self.ask_voucher(choice[key])
        elif key == "3":
            self.ask_amount(Txn.PREAUTH)
        elif key == "5":
            return Command(Do.SETTLE)
        elif key == "6":
            return Command(Do.SIGN_OFF)
        else:
            return Command(Do.BELL)             # not one of the menu's digits (MORE_MENU)
        return None

    def _confirm(self) -> Command | None:
        value = self.entry.value
        if self.page is Page.VOUCHER:
            if not value or (self.txn is Txn.REFUND and len(value) not in (*range(1, VOUCHER_DIGITS + 1), RRN_DIGITS)):
                return Command(Do.BELL)         # a voucher number has up to 6 digits, a reference number 12
            voucher = value if len(value) == RRN_DIGITS else value.zfill(VOUCHER_DIGITS)
            if self.txn is Txn.VOID:
                self.entry.clear()
                return Command(Do.VOID, voucher=voucher)
            self.ask_amount(self.txn, voucher=voucher)
            return None
        if self.page is Page.AMOUNT:
            amount = self.amount
            if amount <= 0 and (self.txn.needs_amount or self.by_rrn):
                return Command(Do.BELL)
            self.entry.clear()
            if self.txn is Txn.PURCHASE:
                return Command(Do.PURCHASE, value)
            if self.txn is Txn.PREAUTH:
                return Command(Do.PREAUTH, value)
            do = Do.REFUND if self.txn is Txn.REFUND else Do.COMPLETE
            return Command(do, voucher=self.voucher, original_id=self.original_id, amount=amount or None)
        if self.page is Page.OPERATOR:
            self.entry.clear()
            return Command(Do.UNLOCK if self.unlocking else Do.OPERATOR, value)
        return None
