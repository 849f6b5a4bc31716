"""``posemu preauth``: a pre-authorization (预授权) that holds an amount on the cardholder's account."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._inputs import amount_callback
from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import TXN_EPILOG, txn_options
from emulator.commands._txnset import run_step
from emulator.terminal import Outcome, Terminal


@click.command("preauth", epilog=TXN_EPILOG)
@click.option("--amount", required=True, callback=amount_callback, metavar="AMOUNT",
              help="Amount to hold, e.g. 300.00 (checked before the card is read).")
@txn_options
@terminal_pcap
def command(amount: int, **kw: Any) -> None:
    """Pre-authorize an amount (0100, 03xxxx, 60.1 10): the host holds it until a completion
    (`posemu complete`) captures it or a void (`posemu void`) releases it."""

    async def act(t: Terminal) -> Outcome:
        return await t.preauth(amount)

    run_step("preauth", amount, act, kw)
