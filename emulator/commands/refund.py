"""``posemu refund``: refund (退货) all or part of a purchase or completion, of any batch."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._inputs import amount_callback
from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import TXN_EPILOG, txn_options
from emulator.commands._txnset import original_options, pick, run_step
from emulator.terminal import Outcome, Terminal
from protocol.errors import UsageError


@click.command("refund", epilog=TXN_EPILOG)
@click.option("--amount", required=True, callback=amount_callback, metavar="AMOUNT",
              help="Amount to refund, at most the original's (e.g. 12.50).")
@click.option("--rrn", default=None, metavar="RRN",
              help="The original's retrieval reference number (37), for a sale not in this journal.")
@click.option("--date", "orig_date", default=None, metavar="MMDD", help="With --rrn: the original's date.")
@original_options
@txn_options
@terminal_pcap
def command(amount: int, rrn: str | None, orig_date: str | None, entry_id: int | None, stan: str | None, last: bool,
            **kw: Any) -> None:
    """Refund a purchase or completion (0220, 20xxxx, 60.1 25): named by its journal id, voucher
    number, --last, or --rrn (a sale of another batch or terminal). The host refunds at most what the
    original took, over all its refunds."""
    if rrn is not None and not (len(rrn) == 12 and rrn.isascii() and rrn.isalnum()):
        raise click.BadParameter("a retrieval reference number is 12 letters or digits", param_hint="--rrn")
    if orig_date is not None and not (len(orig_date) == 4 and orig_date.isascii() and orig_date.isdigit()):
        raise click.BadParameter("the original's date is MMDD", param_hint="--date")

    async def act(t: Terminal) -> Outcome:
        if rrn is not None:
            if entry_id is not None or stan is not None or last:
                raise UsageError("name the original with --rrn or with --id/--stan/--last, not both")
            return await t.refund(amount, rrn=rrn, date=orig_date)
        entry = pick(t.journal, entry_id=entry_id, stan=stan, last=last, kinds=("purchase", "completion"),
                     what="purchase to refund")
        return await t.refund(amount, original_id=entry.id)

    run_step("refund", amount, act, kw)
