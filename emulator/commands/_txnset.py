"""Shared code of the transaction-set commands (``void``, ``refund``, ``preauth``, ``complete``,
``settle``, ``sign-off``): choosing the original in the journal and running the terminal's coroutine.

The original is named as a cashier names it: its journal id (``--id``), its voucher number — the
STAN printed on the receipt, 凭证号 (``--stan``) — or the last one (``--last``). An id or voucher
number the journal does not have is a usage error (exit 2), not a declined transaction.

With ``--fault`` the command runs as a fault scenario on scratch state (``posemu regress``'s
machinery): its own original first (a purchase before a void or refund, a pre-authorization before
a completion), then the command's transaction, every step under the fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click

from emulator.commands._txn import run_transaction
from emulator.journal import Entry, Journal
from emulator.terminal import Outcome, Terminal
from protocol.errors import UsageError


def original_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--id", "entry_id", type=click.IntRange(1), default=None, metavar="N",
                     help="The original's journal id (see `posemu journal`)."),
        click.option("--stan", default=None, metavar="NNNNNN",
                     help="The original's voucher number (凭证号: the STAN on its receipt)."),
        click.option("--last", is_flag=True, help="The last transaction that can be acted on."),
    ]):
        fn = opt(fn)
    return fn


def pick(journal: Journal, *, entry_id: int | None, stan: str | None, last: bool, kinds: tuple[str, ...],
         what: str) -> Entry:
    """The original the options name (exactly one of them), or a :class:`UsageError`."""
    given = sum(x is not None and x is not False for x in (entry_id, stan, last or None))
    if given != 1:
        raise UsageError(f"name the {what} with one of --id, --stan or --last")
    if entry_id is not None:
        try:
            entry = journal.get(entry_id)
        except KeyError:
            raise UsageError(f"no transaction #{entry_id} in the journal {journal.path}") from None
        return entry
    if stan is not None:
        if not (stan.isascii() and stan.isdigit() and len(stan) <= 6):
            raise UsageError(f"--stan {stan!r}: a voucher number is up to 6 digits")
        found = journal.find(stan=stan.zfill(6), kinds=kinds)
        if found is None:
            raise UsageError(f"no {what} with voucher number {stan.zfill(6)} in the journal {journal.path}")
        return found
    found = journal.last(kinds)
    if found is None:
        raise UsageError(f"no {what} in the journal {journal.path}")
    return found


def run_step(kind: str, amount: int | None, act: Callable[[Terminal], Awaitable[Outcome]], kw: dict[str, Any]) -> None:
    """Run ``act`` on a signed-on terminal (or, with ``--fault``, the scenario step ``kind``)."""
    if kw.get("fault_specs"):
        run_transaction(kind, amount, **kw)
        return
    run_transaction(kind, amount, action=act, **kw)
