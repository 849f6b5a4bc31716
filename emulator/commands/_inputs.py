"""Cardholder and cashier inputs given on the command line, checked when the options are parsed —
before the card is read, the PIN "typed" or anything is sent (exit 2 when wrong)."""

from __future__ import annotations

import re

import click

#: an amount in major units: digits, optionally a point and 1 or 2 decimals. No sign, no exponent
#: ("1e3" is not 1000.00), no grouping, ASCII digits only.
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?", re.ASCII)
#: ISO 8583 field 4 holds 12 digits of minor units
MAX_AMOUNT_MINOR = 10**12 - 1
#: ISO 9564-1 PIN length
PIN_MIN, PIN_MAX = 4, 12


def parse_amount(text: str) -> int:
    """``"12.50"`` → 1250 minor units; anything else is a :class:`click.BadParameter`.

    >>> parse_amount("12.50"), parse_amount("7"), parse_amount("0.05")
    (1250, 700, 5)
    """
    t = text.strip()
    if not _AMOUNT.fullmatch(t):
        raise click.BadParameter(f"{text!r} is not an amount: digits with at most 2 decimals, e.g. 12.50 "
                                 "(no sign, exponent or thousands separator)")
    whole, _, frac = t.partition(".")
    minor = int(whole) * 100 + int(frac.ljust(2, "0") or "0")
    if minor <= 0:
        raise click.BadParameter("the amount must be more than 0")
    if minor > MAX_AMOUNT_MINOR:
        raise click.BadParameter(f"{text!r} is too large: at most {MAX_AMOUNT_MINOR // 100:,}."
                                 f"{MAX_AMOUNT_MINOR % 100:02d} (12 digits in ISO 8583 field 4)")
    return minor


def check_pin(pin: str) -> str:
    """A PIN is 4 to 12 ASCII digits (ISO 9564-1 §5.3.2); anything else is a :class:`click.BadParameter`."""
    if not (pin.isascii() and pin.isdigit() and PIN_MIN <= len(pin) <= PIN_MAX):
        raise click.BadParameter(f"a PIN is {PIN_MIN} to {PIN_MAX} digits 0-9")
    return pin


def amount_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else parse_amount(value)


def pin_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else check_pin(value)
