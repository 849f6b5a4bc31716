"""``posemu fleet``: many virtual terminals against one host, with a transaction mix and faults at rates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from emulator.commands._exit import ExitCode, exit_epilog
from emulator.commands._paths import output_file, output_folder, write_failed
from hardware.clock import Clock, RealClock, VirtualClock
from protocol.errors import UsageError

if TYPE_CHECKING:
    from faults.fleet import Fleet, FleetReport

JSON_PREFIXES = (b"{",)
HTML_PREFIXES = (b"<!doctype html>",)


@click.command("fleet", epilog=exit_epilog(
    "the run ended with no transaction errors and the journals reconciled with the host",
    "a transaction raised or hung, or the journals and the host's log (or money) disagree"))
@click.option("-n", "--terminals", type=click.IntRange(1, 99_999), default=10, show_default=True,
              help="Virtual terminals, each with its own terminal id, keys (it signs on), card, journal and "
                   "reversal queue.")
@click.option("--duration", type=click.FloatRange(min=0.001), default=60.0, show_default=True,
              help="Seconds of load (on the run's clock).")
@click.option("--mix", "mix_text", default="balance=70,purchase=30", show_default=True, metavar="KIND=WEIGHT,…",
              help="Transaction mix: relative weights of the transaction kinds (see the error for the kinds known).")
@click.option("--think", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Mean think time between one terminal's transactions, seconds (exponential; closed loop).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Open loop instead: transactions per second over the whole fleet (Poisson arrivals at random "
                   "terminals, queued behind their current transaction).")
@click.option("--faults", "fault_texts", multiple=True, metavar="ID[:params]=RATE%,…",
              help="Catalogue faults striking transactions at these rates, e.g. "
                   "reader.dirty-contacts=2%,network.weak-wifi=1% (repeatable).")
@click.option("--card", default="cup_debit", show_default=True,
              help="Card profile each terminal's cardholder uses (each terminal gets its own copy under its own PAN).")
@click.option("--shared-card", is_flag=True,
              help="Every terminal uses the card profile itself (for a host that knows only the bundled cards).")
@click.option("--host", default=None, metavar="HOST:PORT",
              help="Another host (e.g. `posemu host --fleet N`); omitted: the bundled host runs in-process on "
                   "127.0.0.1 and money is reconciled against its store.")
@click.option("--profile", type=click.Choice(["cup", "iso87ascii"]), default=None, help="ISO 8583 profile.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Terminal config (TOML): the host's dialect and the base master key the fleet's keys derive from.")
@click.option("--prefix", default="FLT", show_default=True, help="Terminal ids: PREFIX00001, PREFIX00002 …")
@click.option("--seed", default=1, show_default=True, help="Seed for every random choice of the run.")
@click.option("--ramp", type=click.FloatRange(min=0), default=None,
              help="Sign-ons spread over this many seconds [default: min(10, duration/4)].")
@click.option("--journals", "journals_dir", default=None, metavar="DIR",
              help="Keep each terminal's journal on disk in DIR/<terminal id>/ (default: in memory).")
@click.option("--virtual-time", is_flag=True, help="Run on the virtual clock (think times cost no wall time).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the summary as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write an HTML report with latency-over-time and histogram plots (needs plotly).")
@click.option("-q", "--quiet", is_flag=True, help="No live progress.")
def command(terminals: int, duration: float, mix_text: str, think: float, rate: float | None,
            fault_texts: tuple[str, ...], card: str, shared_card: bool, host: str | None, profile: str | None,
            config_path: str | None, prefix: str, seed: int, ramp: float | None, journals_dir: str | None,
            virtual_time: bool, json_path: str | None, html_path: str | None, quiet: bool) -> None:
    """Run a fleet of virtual terminals against the bundled host (or --host) and report screens,
    response codes, latency, reversals, faults injected vs diagnosed, and the reconciliation."""
    from emulator import config as configmod
    from emulator.config import parse_hostport
    from emulator.host.provision import fleet_tid
    from faults.fleet import Fleet, FleetOptions, parse_fault_rates, parse_mix
    from hardware.cards.profiles import load_profile

    mix = parse_mix(mix_text)
    faults = parse_fault_rates(fault_texts)
    load_profile(card)                      # an unknown card is a usage error now
    fleet_tid(terminals, prefix)            # the ids fit
    if host is not None:
        parse_hostport(host)
    cfg = configmod.load(config_path)
    if profile is not None:
        cfg = replace(cfg, profile=profile).validate()
    out_json = output_file(json_path, "JSON summary", replaces=JSON_PREFIXES) if json_path else None
    out_html = output_file(html_path, "HTML report", replaces=HTML_PREFIXES) if html_path else None
    journals = output_folder(journals_dir, "journal folder") if journals_dir else None
    _more_files(terminals)
    opts = FleetOptions(terminals=terminals, duration=duration, mix=mix, think=think, rate=rate, faults=faults,
                        card=card, shared_card=shared_card, prefix=prefix, seed=seed, ramp=ramp, journals=journals,
                        host=host)
    clock: Clock = VirtualClock() if virtual_time else RealClock()
    fleet = Fleet(opts, clock=clock, base=cfg)
    console = Console(stderr=True)
    live = not quiet and console.is_terminal

    async def main() -> FleetReport:
        if not live:
            return await fleet.run()
        with Live(_progress(fleet), console=console, refresh_per_second=4, transient=True) as lv:
            task = asyncio.ensure_future(fleet.run())
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                lv.update(_progress(fleet))
            return task.result()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        report = runner.run(main())
    doc = report.to_json()
    _print_summary(report, doc)
    if out_json is not None:
        _write(out_json, "JSON summary", json.dumps(doc, indent=1, ensure_ascii=False))
    if out_html is not None:
        _write(out_html, "HTML report", _html(report))
    ok = report.reconciliation.ok and report.stats.errors == 0
    sys.exit(ExitCode.OK if ok else ExitCode.FAILED)


def _write(path: Path, what: str, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise write_failed(what, path, e) from None


def _html(report: Any) -> str:
    from emulator.commands._fleet_report import render_html

    return render_html(report)


def _more_files(terminals: int) -> None:
    """Each terminal holds a socket (and a journal file): raise the soft open-files limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 6 * terminals + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY
                                                        else want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 3 * terminals:
        raise UsageError(f"{terminals} terminals need about {3 * terminals} open files; this process may open {soft} "
                         "(ulimit -n)")


def _progress(fleet: Fleet) -> Group:
    st = fleet.stats
    now = fleet.clock.now() - fleet.t0 if fleet.phase == "running" else 0.0
    line = Text.assemble(
        (f"{fleet.phase} ", "bold"), f"{min(now, fleet.options.duration):.1f}/{fleet.options.duration:g} s  ",
        f"terminals {len(fleet.terminals)}  signed on {st.sign_ons}  ",
        (f"txns {st.done} ", "cyan"), (f"approved {st.approved} ", "green"),
        (f"errors {st.errors} ", "red" if st.errors else ""),
        f"reversals {st.reversals_acked}/{st.reversals_sent}  ",
        f"faults {sum(f.injected for f in st.faults.values())}")
    top = Text("  " + "  ".join(f"{k}:{v}" for k, v in st.screens.most_common(8)), style="dim")
    return Group(line, top)


def _print_summary(report: FleetReport, doc: dict[str, Any]) -> None:
    console = Console()
    tx = doc["transactions"]
    console.print(f"[bold]posemu fleet[/bold]: {report.options.terminals} terminals, {report.host_label}; "
                  f"{tx['done']} transactions in {doc['elapsed']['clock_s']:.1f} s ({tx['rate_tps']:.1f}/s), "
                  f"{tx['approved']} approved, {tx['errors']} errors; by kind {tx['by_kind']}; "
                  f"sign-ons {doc['sign_ons']['approved']} ok, {doc['sign_ons']['failed']} failed")
    counts = Table(title="Screens and response codes")
    counts.add_column("screen")
    counts.add_column("count", justify="right")
    counts.add_column("rc")
    counts.add_column("count", justify="right")
    screens = list(doc["screens"].items())
    rcs = list(doc["response_codes"].items())
    for i in range(max(len(screens), len(rcs))):
        s = screens[i] if i < len(screens) else ("", "")
        r = rcs[i] if i < len(rcs) else ("", "")
        counts.add_row(s[0], str(s[1]), r[0], str(r[1]))
    console.print(counts)
    lat = Table(title="Host round trip by message (MTI/processing code), ms")
    for col in ("message", "count", "p50", "p99", "unanswered"):
        lat.add_column(col, justify="right" if col != "message" else "left")
    for name, v in doc["exchanges"].items():
        lat.add_row(name, str(v["count"]), f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}", str(v["unanswered"]))
    console.print(lat)
    console.print("all exchanges: " + ", ".join(f"{k} {v:.2f} ms" for k, v in doc["latency_ms"].items()))
    console.print(f"reversals: {doc['reversals']['sent']} sent (attempts), {doc['reversals']['acknowledged']} "
                  "acknowledged")
    if doc["faults"]:
        ft = Table(title="Faults injected vs diagnosed")
        for col in ("fault", "injected", "failed txn", "diagnosed", "top-1"):
            ft.add_column(col, justify="right" if col != "fault" else "left")
        for k, v in doc["faults"].items():
            ft.add_row(k, str(v["injected"]), str(v["failed"]), str(v["diagnosed"]), str(v["top"]))
        console.print(ft)
    rec = doc["reconciliation"]
    verdict = "[green]reconciled[/green]" if rec["ok"] else "[red]NOT reconciled[/red]"
    money = (f"charged: journals {rec['charged_terminal']}, host log {rec['charged_host_log']}, balances moved "
             f"{rec['balance_moved']}") if rec["host_checked"] else "money: not checked (another host)"
    console.print(f"{verdict}: {rec['terminal_rows']} journal rows, {rec['host_rows']} host rows, "
                  f"{rec['pending']} pending, {rec['lost']} lost, duplicated {rec['duplicated_terminal']} (terminal) "
                  f"/ {rec['duplicated_host']} (host); {money}")
    for p in rec["problems"]:
        console.print(f"  {p}")
    for e in doc["errors"]:
        console.print(f"  [red]error[/red] {e}")
    if doc["memory_per_terminal_kib"] is not None:
        console.print(f"memory: about {doc['memory_per_terminal_kib']:.0f} KiB per terminal")
