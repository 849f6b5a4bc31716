"""``posemu inquiry``: one balance inquiry through the terminal."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._pcap import terminal_pcap
from emulator.commands._txn import TXN_EPILOG, run_transaction, txn_options


@click.command("inquiry", epilog=TXN_EPILOG)
@txn_options
@terminal_pcap
def command(**kw: Any) -> None:
    """Run a balance inquiry (card → terminal → ISO 8583 → host → screen).

    With no --host the bundled host simulator starts in-process on a loopback port. Prints the
    screens in order and the result.
    """
    run_transaction("balance", None, **kw)
