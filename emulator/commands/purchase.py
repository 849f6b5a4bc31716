"""``posemu purchase``: one purchase through the terminal."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import click

from emulator.commands._txn import TXN_EPILOG, run_transaction, txn_options


def _minor(text: str) -> int:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount") from None
    if d <= 0 or d != d.quantize(Decimal("0.01")):
        raise click.BadParameter("amount must be positive with at most 2 decimals")
    return int(d * 100)


@click.command("purchase", epilog=TXN_EPILOG)
@click.option("--amount", required=True, help="Amount in major units, e.g. 12.50.")
@txn_options
def command(amount: str, **kw: Any) -> None:
    """Run a purchase; an unknown outcome becomes a reversal sent until acknowledged."""
    run_transaction("purchase", _minor(amount), **kw)
