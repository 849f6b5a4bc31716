"""``--pcap FILE`` and ``--pcap-clear``: the options, and the capture around a command.

``inquiry``, ``purchase``, the transaction set (``void``, ``refund``, ``preauth``, ``complete``,
``settle``, ``sign-off``) and ``regress`` capture what every terminal they build sends and
receives (:func:`emulator.capture.tap_terminals`) and write the file when the command ends,
whatever the outcome; ``host`` writes each packet as it goes (:class:`StreamingPcapFile`).
Card numbers are masked unless ``--pcap-clear`` is given, which prints a warning. The file is
readable by its owner only (0600). Open it in Wireshark with the dissector
``posemu dissector install`` puts in place.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from emulator.capture import PcapRecorder, StreamingPcapFile, tap_terminals, write_pcap_file
from emulator.commands._paths import output_file, write_failed
from protocol.errors import UsageError
from protocol.pcap import PCAP_PREFIXES

F = TypeVar("F", bound=Callable[..., Any])

CLEAR_WARNING = ("WARNING: --pcap-clear: the capture holds full card numbers and track data as sent. "
                 "Keep it private and delete it when done.")


def pcap_options(fn: F) -> F:
    """Add ``--pcap FILE`` and ``--pcap-clear`` (passed as ``pcap_path`` and ``pcap_clear``)."""
    fn = click.option("--pcap-clear", "pcap_clear", is_flag=True,
                      help="Keep card numbers and track data in the --pcap capture as sent (a warning is "
                           "printed). Default: masked, 6 + 4 digits kept.")(fn)
    fn = click.option("--pcap", "pcap_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                      help="Write the host-link traffic to FILE as a pcap (Ethernet/IP/TCP synthesised around the "
                           "real bytes; mode 0600). Decode it with `posemu dissector install` + Wireshark.")(fn)
    return fn


def check_pcap(path: str | None, clear: bool) -> Path | None:
    """The capture file, checked before anything runs; the warning for ``--pcap-clear``."""
    if path is None:
        if clear:
            raise UsageError("--pcap-clear needs --pcap FILE")
        return None
    out = output_file(path, "pcap", replaces=PCAP_PREFIXES)
    if clear:
        click.echo(f"posemu: {CLEAR_WARNING}", err=True)
    return out


@contextlib.contextmanager
def capturing_terminals(out: Path | None, clear: bool) -> Iterator[PcapRecorder | None]:
    """Capture every host link created inside the block; write the file when it ends (also on
    an error or ``sys.exit``)."""
    if out is None:
        yield None
        return
    buf = bytearray()
    rec = PcapRecorder(buf.extend, clear=clear)
    try:
        with tap_terminals(rec):
            yield rec
    finally:
        rec.finish()
        try:
            write_pcap_file(out, bytes(buf))
        except OSError as e:
            raise write_failed("pcap", out, e) from None
        click.echo(f"posemu: pcap written to {out} ({rec.packets} packets, "
                   f"{'card data in clear' if clear else 'card numbers masked'})", err=True)
        _incomplete(rec)


@contextlib.contextmanager
def streaming_capture(out: Path | None, clear: bool) -> Iterator[PcapRecorder | None]:
    """A recorder writing straight to the file (for a server that runs until stopped)."""
    if out is None:
        yield None
        return
    try:
        sink = StreamingPcapFile(out)
    except OSError as e:
        raise write_failed("pcap", out, e) from None
    rec = PcapRecorder(sink.write, clear=clear)
    try:
        yield rec
    finally:
        rec.finish()
        sink.close()
        click.echo(f"posemu: pcap written to {out} ({rec.packets} packets)", err=True)
        _incomplete(rec)
        if rec.error is not None:
            raise write_failed("pcap", out, rec.error)


def _incomplete(rec: PcapRecorder) -> None:
    if rec.failed is not None:
        click.echo(f"posemu: WARNING: the capture stopped early ({rec.failed}); it holds the packets before",
                   err=True)


def terminal_pcap(fn: F) -> F:
    """``pcap_options`` for a command that runs terminals: the whole command runs captured."""

    @functools.wraps(fn)
    def wrapper(*args: Any, pcap_path: str | None = None, pcap_clear: bool = False, **kw: Any) -> Any:
        with capturing_terminals(check_pcap(pcap_path, pcap_clear), pcap_clear):
            return fn(*args, **kw)

    return pcap_options(wrapper)  # type: ignore[return-value]
