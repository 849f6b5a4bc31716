"""``posemu inquiry``: one balance inquiry through the terminal."""

from __future__ import annotations

from typing import Any

import click

from emulator.commands._txn import run_transaction, txn_options


@click.command("inquiry")
@txn_options
def command(**kw: Any) -> None:
    """Run a balance inquiry (card → terminal → ISO 8583 → host → screen).

    With no --host the bundled host simulator starts in-process on a loopback port. Prints the
    screens in order and the result; exits 0 on approval, 1 otherwise (the message code is
    printed).
    """
    run_transaction("balance", None, **kw)
