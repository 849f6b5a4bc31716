"""``posemu sign-off``: sign off (签退): the host drops the terminal's working keys."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._exit import exit_epilog
from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import txn_options
from emulator.commands._txnset import run_step
from emulator.terminal import Outcome, Terminal


@click.command("sign-off", epilog=exit_epilog("signed off", "the host did not confirm (the message code is printed)",
                                               environment="the state folder is unusable"))
@txn_options
@terminal_pcap
def command(**kw: Any) -> None:
    """Sign on, then sign off (cup: 0820 with 60.3 002; iso87ascii: 0800 with field 70 002): the
    host forgets the working keys, so the next transaction needs a new sign-on."""

    async def act(t: Terminal) -> Outcome:
        return await t.sign_off()

    run_step("sign_off", None, act, kw)
