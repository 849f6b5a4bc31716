"""``posemu purchase``: one purchase through the terminal."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._inputs import amount_callback
from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import TXN_EPILOG, run_transaction, txn_options


@click.command("purchase", epilog=TXN_EPILOG)
@click.option("--amount", required=True, callback=amount_callback, metavar="AMOUNT",
              help="Amount in major units with at most 2 decimals, e.g. 12.50 (checked before the card is read).")
@txn_options
@terminal_pcap
def command(amount: int, **kw: Any) -> None:
    """Run a purchase; an unknown outcome becomes a reversal sent until acknowledged."""
    run_transaction("purchase", amount, **kw)
