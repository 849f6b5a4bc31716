"""``posemu receipt``: print or export the receipt (签购单) of a journal entry — a reprint."""

from __future__ import annotations

import sqlite3

import click

from emulator import config as configmod
from emulator.commands._exit import exit_epilog
from emulator.commands._paths import existing_state_folder, output_file, write_failed
from emulator.journal import Entry, Journal
from emulator.receipt import RECEIPT_KINDS, Copy, Merchant, pdf_bytes, receipt_text
from hardware.clock import RealClock
from protocol.errors import EnvironmentProblem, UsageError

#: what an earlier receipt starts with (a PDF, or the text of a sales slip or settlement slip)
_RECEIPT_PREFIXES = (b"%PDF", "POS签购单".encode(), "结算总计单".encode())
_COPIES = {"both": (Copy.MERCHANT, Copy.CARDHOLDER), "merchant": (Copy.MERCHANT,),
           "cardholder": (Copy.CARDHOLDER,)}


@click.command("receipt", epilog=exit_epilog("printed or written", None,
                                              environment="no journal, or the output or font cannot be used"))
@click.option("--state", "state_dir", default=None, help="State folder. Default: the user data folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Terminal config (TOML): the operator number printed on the slip.")
@click.option("--last", is_flag=True, help="The last transaction (the default).")
@click.option("--id", "entry_id", type=click.IntRange(1), default=None, metavar="N",
              help="The journal entry to reprint (see `posemu journal`).")
@click.option("--copy", "which", type=click.Choice(list(_COPIES)), default="both", show_default=True,
              help="Which copies: merchant (商户存根), cardholder (持卡人存根) or both.")
@click.option("--text", "text_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the receipt as UTF-8 text to FILE instead of printing it.")
@click.option("--pdf", "pdf_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the receipt as a PDF (one 80 mm page per copy; needs a CJK font, e.g. fonts-wqy-microhei).")
def command(state_dir: str | None, config_path: str | None, last: bool, entry_id: int | None, which: str,
            text_path: str | None, pdf_path: str | None) -> None:
    """Print the receipt (签购单) of the last transaction or of any journal entry, in the usual two
    copies: the merchant's (with the signature line) and the cardholder's. A reprint is marked
    重打印 / DUPLICATE; a transaction that was not approved says so on the slip."""
    cfg = configmod.load(config_path)
    if last and entry_id is not None:
        raise UsageError("give --last or --id, not both")
    if text_path and pdf_path:
        raise UsageError("give --text or --pdf, not both")
    path = existing_state_folder(state_dir) / "journal.sqlite3"
    if not path.exists():
        raise EnvironmentProblem(f"no journal at {path} (run a transaction first, or give --state)")
    out_file = output_file(text_path or pdf_path or "", "receipt", replaces=_RECEIPT_PREFIXES) \
        if (text_path or pdf_path) else None
    j = Journal(path, clock=RealClock())       # reading only: reversal data stays sealed
    try:
        entry = _entry(j, entry_id)
    except (sqlite3.Error, ValueError) as err:
        raise EnvironmentProblem(f"cannot read the journal {path}: {err} (corrupt? restore it from a backup or "
                                 "move it away)") from None
    finally:
        j.close()
    copies = _COPIES[which]
    merchant = Merchant(operator=cfg.operator)
    if pdf_path and out_file is not None:
        data = pdf_bytes(entry, copies=copies, merchant=merchant, reprint=True)
        try:
            out_file.write_bytes(data)
        except OSError as e:
            raise write_failed("receipt", out_file, e) from None
        click.echo(f"receipt of #{entry.id} ({entry.kind}, voucher {entry.stan}) written to {out_file}")
        return
    text = receipt_text(entry, copies=copies, merchant=merchant, reprint=True)
    if out_file is not None:
        try:
            out_file.write_text(text, encoding="utf-8")
        except OSError as e:
            raise write_failed("receipt", out_file, e) from None
        click.echo(f"receipt of #{entry.id} ({entry.kind}, voucher {entry.stan}) written to {out_file}")
        return
    click.echo(text, nl=False)


def _entry(j: Journal, entry_id: int | None) -> Entry:
    if entry_id is not None:
        try:
            return j.get(entry_id)
        except KeyError:
            raise UsageError(f"no transaction #{entry_id} in the journal {j.path}") from None
    found = j.last(RECEIPT_KINDS)
    if found is None:
        raise UsageError(f"no transaction in the journal {j.path}")
    return found
