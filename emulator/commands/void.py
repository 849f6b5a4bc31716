"""``posemu void``: void (撤销) a purchase, pre-authorization or completion of the open batch."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import TXN_EPILOG, txn_options
from emulator.commands._txnset import original_options, pick, run_step
from emulator.terminal import Outcome, Terminal


@click.command("void", epilog=TXN_EPILOG)
@original_options
@txn_options
@terminal_pcap
def command(entry_id: int | None, stan: str | None, last: bool, **kw: Any) -> None:
    """Void a transaction of the open batch: a purchase (消费撤销), a pre-authorization (预授权撤销) or a
    completion (预授权完成撤销). The card is read again and must be the original's; a voided, reversed
    or settled original is refused on the terminal's screen (exit 1). A void whose answer is lost is
    reversed, like a purchase."""

    async def act(t: Terminal) -> Outcome:
        entry = pick(t.journal, entry_id=entry_id, stan=stan, last=last, kinds=("purchase", "preauth", "completion"),
                     what="transaction to void")
        return await t.void(entry.id)

    run_step("void", None, act, kw)
