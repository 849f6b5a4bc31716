"""``posemu settle``: settlement (结算) of the open batch, with a batch upload when the totals differ."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._exit import exit_epilog
from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import txn_options
from emulator.commands._txnset import run_step
from emulator.terminal import Outcome, Terminal


@click.command("settle", epilog=exit_epilog("settled: the batch is closed and a new one opened",
                                             "not settled (the message code is printed); the batch stays open",
                                             environment="the reader or state folder is unusable"))
@txn_options
@terminal_pcap
def command(**kw: Any) -> None:
    """Settle the open batch: 0500 with the debit and credit totals in field 48; if the host's totals
    differ (95) every transaction is uploaded (0320) and the 0500 sent again. Afterwards the batch's
    transactions can no longer be voided (refund them instead) and a new batch opens. Safe to repeat
    when an answer was lost."""

    async def act(t: Terminal) -> Outcome:
        return await t.settle()

    run_step("settle", None, act, kw)
