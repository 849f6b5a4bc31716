"""The screen message catalogue: stable codes, Chinese and English text (``messages.toml``).

The terminal shows :class:`Screen` values (a code and its parameters); rendering to text
happens only at the edge (CLI, UI), in the language the user picked.

>>> render(Screen(Msg.QUERY_CARD_FAILED), "both")
'查询卡信息失败 / Failed to query card information'
>>> render(Screen(Msg.APPROVED_BALANCE, {"balance": "CNY 12,345.67"}), "en")
'Approved  balance: CNY 12,345.67'

A message with an amount form shows it when the terminal passes an amount (a purchase keeps the
amount on screen from the card prompt to the approval):

>>> render(Screen(Msg.INSERT_OR_SWIPE, {"amount": "CNY 12.50"}), "en")
'Amount: CNY 12.50  Insert or swipe card'
>>> render(Screen(Msg.INSERT_OR_SWIPE), "zh")
'请插卡或刷卡'
"""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal

Lang = Literal["zh", "en", "both"]


class Msg(enum.Enum):
    """Every screen the terminal can show, by its stable code; the texts are in ``messages.toml``."""

    WELCOME = "WELCOME"
    SIGNING_ON = "SIGNING_ON"
    SIGN_ON_OK = "SIGN_ON_OK"
    SIGN_ON_FAILED = "SIGN_ON_FAILED"
    SIGN_ON_REQUIRED = "SIGN_ON_REQUIRED"
    INSERT_OR_SWIPE = "INSERT_OR_SWIPE"
    READING_CARD = "READING_CARD"
    INSERT_CHIP = "INSERT_CHIP"
    FALLBACK_SWIPE = "FALLBACK_SWIPE"
    SWIPE_AGAIN = "SWIPE_AGAIN"
    CARD_NOT_SUPPORTED = "CARD_NOT_SUPPORTED"
    ENTER_PIN = "ENTER_PIN"
    PIN_RETRY = "PIN_RETRY"
    PIN_BLOCKED = "PIN_BLOCKED"
    CONNECTING = "CONNECTING"
    PROCESSING = "PROCESSING"
    APPROVED_BALANCE = "APPROVED_BALANCE"
    APPROVED = "APPROVED"
    APPROVED_NO_BALANCE = "APPROVED_NO_BALANCE"     # a balance inquiry approved without a balance (host dialect)
    QUERY_CARD_FAILED = "QUERY_CARD_FAILED"
    TXN_FAILED = "TXN_FAILED"
    REMOVE_CARD = "REMOVE_CARD"
    REMOVE_CARD_FAILED = "REMOVE_CARD_FAILED"
    CARD_REMOVED_EARLY = "CARD_REMOVED_EARLY"
    TIMEOUT = "TIMEOUT"
    CONNECT_FAILED = "CONNECT_FAILED"
    DNS_FAILED = "DNS_FAILED"
    LINK_LOST = "LINK_LOST"
    DECLINED = "DECLINED"
    WRONG_PIN = "WRONG_PIN"
    PIN_TRIES_EXCEEDED = "PIN_TRIES_EXCEEDED"
    EXPIRED_CARD = "EXPIRED_CARD"
    INVALID_CARD = "INVALID_CARD"
    RESTRICTED_CARD = "RESTRICTED_CARD"
    NOT_PERMITTED = "NOT_PERMITTED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    HOST_BUSY = "HOST_BUSY"
    MAC_ERROR = "MAC_ERROR"
    VERSION_REJECTED = "VERSION_REJECTED"
    FORMAT_ERROR = "FORMAT_ERROR"
    REVERSAL_PENDING = "REVERSAL_PENDING"
    REVERSAL_DONE = "REVERSAL_DONE"
    READER_ERROR = "READER_ERROR"
    NO_READER = "NO_READER"
    TERMINAL_LOCKED = "TERMINAL_LOCKED"
    OPERATOR_PASSWORD = "OPERATOR_PASSWORD"
    CANCELLED = "CANCELLED"
    STEP_OUT_OF_ORDER = "STEP_OUT_OF_ORDER"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CARD_BLOCKED = "CARD_BLOCKED"
    CARD_RESET = "CARD_RESET"
    CARD_DECLINED = "CARD_DECLINED"
    JOURNAL_FULL = "JOURNAL_FULL"
    DUPLICATE = "DUPLICATE"
    SIGNING_OFF = "SIGNING_OFF"
    SIGN_OFF_OK = "SIGN_OFF_OK"
    SIGN_OFF_FAILED = "SIGN_OFF_FAILED"
    SIGNING_ON_AGAIN = "SIGNING_ON_AGAIN"
    # the standard transaction set (void, refund, pre-authorization, completion, settlement)
    TXN_REFUSED = "TXN_REFUSED"
    ORIGINAL_NOT_FOUND = "ORIGINAL_NOT_FOUND"
    ORIGINAL_NOT_APPROVED = "ORIGINAL_NOT_APPROVED"
    CANNOT_VOID = "CANNOT_VOID"
    ALREADY_VOIDED = "ALREADY_VOIDED"
    ALREADY_REVERSED = "ALREADY_REVERSED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    ALREADY_SETTLED = "ALREADY_SETTLED"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    CARD_MISMATCH = "CARD_MISMATCH"
    SETTLING = "SETTLING"
    BATCH_UPLOAD = "BATCH_UPLOAD"
    SETTLE_OK = "SETTLE_OK"
    SETTLE_FAILED = "SETTLE_FAILED"
    READER_PROBLEM = "READER_PROBLEM"       # the detail under NO_READER / READER_ERROR: reason, code, remedy
    # the desktop emulator's own screens (posemu ui)
    MAIN_MENU = "MAIN_MENU"
    MENU_SIGN_ON = "MENU_SIGN_ON"
    MENU_BALANCE = "MENU_BALANCE"
    MENU_PURCHASE = "MENU_PURCHASE"
    MENU_JOURNAL = "MENU_JOURNAL"
    MENU_SETTINGS = "MENU_SETTINGS"
    MENU_OPERATOR = "MENU_OPERATOR"
    MENU_REVERSAL = "MENU_REVERSAL"
    MENU_MORE = "MENU_MORE"                # 8: the rest of the transaction set (void, refund, …)
    MENU_REPRINT = "MENU_REPRINT"          # 9: the receipt of the last transaction
    MENU_VOID = "MENU_VOID"
    MENU_REFUND = "MENU_REFUND"
    MENU_PREAUTH = "MENU_PREAUTH"
    MENU_COMPLETION = "MENU_COMPLETION"
    MENU_SETTLE = "MENU_SETTLE"
    MENU_SIGN_OFF = "MENU_SIGN_OFF"
    ENTER_AMOUNT = "ENTER_AMOUNT"
    ENTER_AMOUNT_OR_ORIGINAL = "ENTER_AMOUNT_OR_ORIGINAL"
    ENTER_VOUCHER = "ENTER_VOUCHER"
    ENTER_VOUCHER_OR_RRN = "ENTER_VOUCHER_OR_RRN"
    NOTHING_TO_PRINT = "NOTHING_TO_PRINT"
    OPERATOR_OK = "OPERATOR_OK"
    NO_PENDING_REVERSAL = "NO_PENDING_REVERSAL"


@dataclass(frozen=True, slots=True)
class Screen:
    """One screen the terminal shows: a message code and its parameters."""

    msg: Msg
    params: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.msg.value


@cache
def _loaded() -> dict[str, dict[str, str]]:
    text = (resources.files("emulator") / "messages.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {k: {lk: str(lv) for lk, lv in v.items()} for k, v in data.items()}


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """The catalogue as loaded from ``messages.toml``: code → {"zh": …, "en": …}."""
    return {k: {"zh": v["zh"], "en": v["en"]} for k, v in _loaded().items()}


def text(msg: Msg, lang: Literal["zh", "en"], params: dict[str, str] | None = None) -> str:
    """The message in one language, its ``{placeholders}`` filled; the amount form when ``params``
    has an amount and the message has one. The lines of a multi-line message are joined by two
    spaces (a display that shows lines renders :func:`lines`)."""
    return "  ".join(lines(msg, lang, params))


def lines(msg: Msg, lang: Literal["zh", "en"], params: dict[str, str] | None = None) -> list[str]:
    """The message as the lines of a terminal display (the amount form puts the amount first)."""
    entry = _loaded()[msg.value]
    template = entry[lang]
    if params and "amount" in params and f"{lang}_amount" in entry:
        template = entry[f"{lang}_amount"]
    filled = template.format_map(_Params(params or {}))
    return filled.split("\n")


class _Params(dict[str, str]):
    """Placeholders the terminal did not fill show as nothing, never as ``{name}``."""

    def __missing__(self, key: str) -> str:
        return ""


def render(screen: Screen, lang: Lang = "both") -> str:
    if lang == "both":
        return f"{text(screen.msg, 'zh', screen.params)} / {text(screen.msg, 'en', screen.params)}"
    return text(screen.msg, lang, screen.params)


def format_amount(minor: int, currency: str = "156") -> str:
    """Minor units as money: ``CNY 12,345.67`` (ISO 4217 numeric 156 → CNY).

    >>> format_amount(1234567)
    'CNY 12,345.67'
    >>> format_amount(-5, "840")
    'USD -0.05'
    """
    names = {"156": "CNY", "840": "USD", "978": "EUR", "344": "HKD", "392": "JPY"}
    sign = "-" if minor < 0 else ""
    major, cents = divmod(abs(minor), 100)
    return f"{names.get(currency, currency)} {sign}{major:,}.{cents:02d}"
