"""``posemu complete``: complete (预授权完成) a pre-authorization."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._inputs import amount_callback
from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import TXN_EPILOG, txn_options
from emulator.commands._txnset import original_options, pick, run_step
from emulator.terminal import Outcome, Terminal


@click.command("complete", epilog=TXN_EPILOG)
@click.option("--amount", default=None, callback=amount_callback, metavar="AMOUNT",
              help="Amount to capture (default: the pre-authorized amount; at most 115 % of it).")
@original_options
@txn_options
@terminal_pcap
def command(amount: int | None, entry_id: int | None, stan: str | None, last: bool, **kw: Any) -> None:
    """Complete a pre-authorization (0200, 00xxxx, 60.1 20, with its authorization code in 38):
    the host captures the amount and releases the rest of the hold."""

    async def act(t: Terminal) -> Outcome:
        entry = pick(t.journal, entry_id=entry_id, stan=stan, last=last, kinds=("preauth",),
                     what="pre-authorization")
        return await t.complete(entry.id, amount)

    run_step("complete", amount, act, kw)
