"""A fleet of virtual terminals against one host: a transaction mix, a pace, faults at rates.

Each terminal is a whole posemu terminal (:class:`emulator.terminal.Terminal`): its own terminal id,
master key (it signs on for its working keys), card, journal, reversal queue, trace and scripted
cardholder at a virtual reader, all on one clock and one event loop. The terminals run a transaction
mix (``balance=70,purchase=30``), each kind a terminal coroutine found by name in :data:`KINDS`, at
a closed-loop pace (exponential think time per terminal) or at an open-loop arrival rate (Poisson,
each arrival at a random terminal, queued behind its current transaction).

Faults from the catalogue strike transactions at given rates, through the one seam
(:class:`faults.seam.Injection`, as the regression runner uses it): the fault is prepared, attached to
that terminal's fault points (its reader wrapper, environment, resolver, and a fault proxy on its path
to the host, made the first time it is needed), armed at its catalogue onset and undone after the
transaction. A failed transaction with a fault is diagnosed from its own trace (:mod:`faults.diagnose`),
so the report compares faults injected with faults diagnosed.

At the end every terminal sends what it still owes (pending reversals), and the fleet is reconciled:
journal rows against the host's transaction log (nothing lost, nothing duplicated, nothing pending) and,
against the bundled host, money (every card's balance moved by exactly the approved, unreversed
purchases).

This module is the engine; the options and the ``--mix``/``--faults`` parsing are in
:mod:`faults.fleet_options`, the counters, the report and the reconciliation in :mod:`faults.fleet_report`
(their names are importable from here too).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from emulator.app import fit_bundled_host
from emulator.cardholder import Cardholder
from emulator.config import TerminalConfig, parse_hostport
from emulator.host.logic import seed_demo
from emulator.host.provision import fleet_card, fleet_tids, fleet_tmk, provision
from emulator.host.server import HostServer
from emulator.hostlink import HostLink
from emulator.journal import Journal
from emulator.keystore import LocalKey
from emulator.messages import Screen
from emulator.ports import ScriptedPinPad
from emulator.terminal import Outcome, Terminal
from emulator.trace import Kind, Trace, TraceEntry
from faults.catalogue import Catalogue, load
from faults.diagnose import diagnose
from faults.environment import Environment, SkewedClock
from faults.fleet_options import (
    FLEET_INJECTORS,
    KINDS,
    FaultRate,
    FleetOptions,
    KindFn,
    parse_fault_rates,
    parse_mix,
    register_kind,
)
from faults.fleet_report import (
    Exchange,
    FaultTally,
    FleetReport,
    FleetStats,
    Reconciliation,
    TxnRecord,
    balances,
    reconcile,
)
from faults.injectors import Plan, Points
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.reader import FaultyReader
from faults.seam import Injection
from hardware.cards.profiles import CardProfile, load_profile
from hardware.clock import Clock
from hardware.sim import SimReader, card_for_profile
from protocol.errors import PosemuError, UsageError

__all__ = [
    "FLEET_INJECTORS",
    "HOST_NAME",
    "KINDS",
    "Exchange",
    "FaultRate",
    "FaultTally",
    "Fleet",
    "FleetOptions",
    "FleetReport",
    "FleetStats",
    "FleetTerminal",
    "KindFn",
    "Reconciliation",
    "TxnRecord",
    "parse_fault_rates",
    "parse_mix",
    "reconcile",
    "register_kind",
]

HOST_NAME = "acquirer.fleet"
"""The host name every fleet terminal is configured with; its resolver sends it to the host or its fault proxy."""


# --- one terminal of the fleet --------------------------------------------------------------------------------
class FleetTerminal:
    """One terminal of the fleet and its fault points."""

    def __init__(self, fleet: Fleet, index: int, tid: str, card: CardProfile, target: tuple[str, int]) -> None:
        opts = fleet.options
        self.fleet = fleet
        self.tid = tid
        self.card = card
        self.target = target
        self.rng = random.Random(f"{opts.seed}:{tid}")
        clock = fleet.clock
        self.cfg = replace(fleet.base, terminal_id=tid, tmk=fleet_tmk(tid, fleet.base.tmk),
                           host=f"{HOST_NAME}:{target[1]}", reader=f"sim://{opts.card}").validate()
        self.trace = Trace(clock)
        self.environment = Environment()
        self.sim = SimReader(clock)
        self.sim.default_card = card_for_profile(card)
        self.reader = FaultyReader(self.sim, None, clock, self.environment)
        self.proxy: FaultProxy | None = None
        self.via_proxy = False
        self.resolver = FaultyResolver(self._resolve, clock)
        journal_path: str | Path = ":memory:"
        if opts.journals is not None:
            journal_path = opts.journals / tid / "journal.sqlite3"
        self.journal = Journal(journal_path, clock=clock, local_key=LocalKey.ephemeral())
        prof = self.cfg.wire_profile()
        self.link = HostLink(HOST_NAME, target[1], prof, clock=clock, trace=self.trace,
                             connect_timeout=self.cfg.timeouts.connect, response_timeout=self.cfg.timeouts.response,
                             resolver=self.resolver, external_peer=fleet.external)
        self.pinpad = ScriptedPinPad(card.pin, seconds_per_digit=opts.pin_digit_s)
        self.terminal = Terminal(self.cfg, clock=clock, reader=self.reader, pinpad=self.pinpad, journal=self.journal,
                                 link=self.link, trace=self.trace)
        self.cardholder = Cardholder(self.sim, self.sim.default_card, reaction_s=opts.reaction_s)
        self.terminal.add_display(self.cardholder)
        self.terminal.add_display(self._screen)
        self.points = Points(environment=self.environment, clock=SkewedClock(clock), reader=self.reader,
                             link=None, resolver=self.resolver, host=None, journal=self.journal, card_pan=card.pan,
                             terminal_id=tid)
        self.lock = asyncio.Lock()
        self._out: tuple[float, str] | None = None
        self.trace.subscribe(self._on_trace)

    async def _resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        if self.via_proxy and self.proxy is not None:
            return [("127.0.0.1", self.proxy.port)]
        return [self.target]

    def _screen(self, s: Screen) -> None:
        self.fleet.stats.screens[s.code] += 1

    def _on_trace(self, e: TraceEntry) -> None:
        st = self.fleet.stats
        if e.kind is Kind.ISO_OUT:
            self._close_exchange(None)
            fields = e.data.get("fields", {})
            proc = fields.get("3") if isinstance(fields, dict) else None
            name = e.what + (f"/{proc}" if isinstance(proc, str) else "")
            if e.what == "0400":
                st.reversals_sent += 1
            self._out = (self.fleet.clock.now(), name)
        elif e.kind is Kind.ISO_IN and self._out is not None:
            self._close_exchange(self.fleet.clock.now() - self._out[0])
        elif e.kind is Kind.JOURNAL and e.what == "reversal acknowledged":
            st.reversals_acked += 1
        elif e.kind is Kind.TXN and e.what == "end":
            self._close_exchange(None)

    def _close_exchange(self, rtt: float | None) -> None:
        if self._out is not None:
            t, name = self._out
            self._out = None
            self.fleet.stats.exchanges.append(Exchange(t - self.fleet.t0, name, rtt))

    async def _ensure_proxy(self) -> FaultProxy:
        if self.proxy is None:
            self.proxy = await FaultProxy.start(self.target, LinkFaults(seed=self.rng.randrange(1 << 30)),
                                                self.fleet.clock, external=self.fleet.external)
            self.points.link = self.proxy
        return self.proxy

    async def sign_on(self) -> bool:
        async with self.lock:
            try:
                async with asyncio.timeout(self.fleet.options.txn_deadline):
                    out = await self.terminal.sign_on()
            except (TimeoutError, PosemuError) as e:
                self.fleet.note_error(self.tid, "sign_on", e)
                return False
            finally:
                self.trace.entries.clear()
            st = self.fleet.stats
            if out.rc is not None:
                st.rcs[out.rc] += 1
            if out.approved:
                st.sign_ons += 1
            else:
                st.sign_on_failures += 1
            return out.approved

    async def transact(self, kind: str) -> None:
        fleet = self.fleet
        opts, st, clock = fleet.options, fleet.stats, fleet.clock
        async with self.lock:
            if not self.terminal.signed_on:
                await self._sign_on_locked()
                if not self.terminal.signed_on:
                    return
            struck = [f for f in opts.faults if self.rng.random() < f.rate]
            injection: Injection | None = None
            st.started += 1
            st.kinds[kind] += 1
            t0 = clock.now()
            out: Outcome | None = None
            try:
                if struck:
                    injection = Injection([f.spec for f in struck], seed=self.rng.randrange(1 << 30))
                    injection.prepare(Plan(cfg=self.cfg, card=opts.card, txn=kind, seed=injection.seed))
                    if any(f.spec.fault.injector == "link" for f in struck):
                        await self._ensure_proxy()
                        self.via_proxy = True
                        self.link.external_peer = False    # the proxy gives an external host its real time
                    injection.attach(self.points, self.trace)
                async with asyncio.timeout(opts.txn_deadline):
                    out = await KINDS[kind](self.terminal, self.rng, opts)
            except (TimeoutError, PosemuError) as e:
                fleet.note_error(self.tid, kind, e)
            finally:
                if injection is not None:
                    injection.undo()
                self.via_proxy = False
                self.link.external_peer = fleet.external
            st.done += 1
            if out is not None:
                if out.approved:
                    st.approved += 1
                if out.rc is not None:
                    st.rcs[out.rc] += 1
                st.txns.append(TxnRecord(t0 - fleet.t0, self.tid, kind, out.approved, out.rc, out.headline.value,
                                         clock.now() - t0, tuple(f.spec.id for f in struck)))
            if struck:
                diag = diagnose(list(self.trace.entries), [out] if out is not None else [],
                                catalogue=fleet.catalogue) if out is None or not out.approved else None
                for f in struck:
                    tally = st.faults.setdefault(f.spec.id, FaultTally())
                    tally.injected += 1
                    if diag is not None:
                        tally.failed += 1
                        groups = diag.groups
                        if f.spec.fault.group in groups:
                            tally.diagnosed += 1
                            if groups[0] == f.spec.fault.group:
                                tally.top += 1
            self.trace.entries.clear()

    async def _sign_on_locked(self) -> None:
        try:
            async with asyncio.timeout(self.fleet.options.txn_deadline):
                out = await self.terminal.sign_on()
        except (TimeoutError, PosemuError) as e:
            self.fleet.note_error(self.tid, "sign_on", e)
            return
        finally:
            self.trace.entries.clear()
        st = self.fleet.stats
        if out.approved:
            st.sign_ons += 1
        else:
            st.sign_on_failures += 1

    async def drain(self) -> None:
        """Send what the terminal still owes: its pending reversals."""
        async with self.lock:
            with contextlib.suppress(PosemuError, TimeoutError):
                async with asyncio.timeout(self.fleet.options.txn_deadline):
                    for _ in range(3):
                        if not self.journal.pending_reversals():
                            break
                        await self.terminal.send_pending_reversals()
            self.trace.entries.clear()

    async def close(self) -> None:
        self.trace.unsubscribe(self._on_trace)
        await self.terminal.close()
        self.journal.close()
        if self.proxy is not None:
            await self.proxy.close()


# --- the fleet ---------------------------------------------------------------------------------------------------
class Fleet:
    """``await Fleet(options, clock=…).run()`` → :class:`FleetReport`. ``progress`` is polled by a front end."""

    def __init__(self, options: FleetOptions, *, clock: Clock, base: TerminalConfig | None = None,
                 catalogue: Catalogue | None = None) -> None:
        self.options = options
        self.clock = clock
        self.base = base or TerminalConfig()
        self.catalogue = catalogue or load()
        self.stats = FleetStats()
        self.terminals: list[FleetTerminal] = []
        self.host: HostServer | None = None
        self.external = options.host is not None
        self.t0 = clock.now()
        self.phase = "starting"
        self._tasks: set[asyncio.Task[None]] = set()
        if not options.mix or sum(options.mix.values()) <= 0:
            raise UsageError("the transaction mix is empty")
        unknown = sorted(set(options.mix) - set(KINDS))
        if unknown:
            raise UsageError(f"unknown transaction kind {', '.join(unknown)}; available: {', '.join(sorted(KINDS))}")
        if options.rate is not None and not (options.rate > 0 and math.isfinite(options.rate)):
            raise UsageError("--rate must be a number of transactions per second > 0")
        if options.think < 0 or options.duration <= 0:
            raise UsageError("--think must be ≥ 0 and --duration > 0")

    def note_error(self, tid: str, kind: str, e: BaseException) -> None:
        self.stats.errors += 1
        if len(self.stats.error_samples) < 50:
            what = "no end within the deadline" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            self.stats.error_samples.append(f"{tid} {kind}: {what}")

    def _cards(self, n: int) -> list[CardProfile]:
        base = load_profile(self.options.card)
        if self.options.shared_card:
            return [base] * n
        return [fleet_card(base, i) for i in range(1, n + 1)]

    async def _start_host(self, tids: list[str], cards: list[CardProfile]) -> tuple[str, int]:
        opts = self.options
        if opts.host is not None:
            return parse_hostport(opts.host)
        prof = self.base.wire_profile()
        self.host = await HostServer.start(prof, clock=self.clock, db=":memory:", seed=False,
                                           max_connections=max(HostServer.DEFAULT_MAX_CONNECTIONS, 2 * len(tids) + 64))
        seed_demo(self.host.store, profiles=[opts.card], load_terminals=False)
        provision(self.host.store, tids, [c for c in cards if c.pan != load_profile(opts.card).pan],
                  mid=self.base.merchant_id, base_tmk=self.base.tmk)
        for tid in tids:      # the dialect: static keys, MAC or not, as the base configuration says
            fit_bundled_host(self.host, replace(self.base, terminal_id=tid, tmk=fleet_tmk(tid, self.base.tmk)))
        return self.host.address

    async def run(self) -> FleetReport:
        opts = self.options
        wall0 = time.perf_counter()
        rss0 = _rss_kib()
        tids = fleet_tids(opts.terminals, opts.prefix)
        cards = self._cards(len(tids))
        target = await self._start_host(tids, cards)
        balances0 = self._balances(cards)
        try:
            self.phase = "building terminals"
            for i, (tid, card) in enumerate(zip(tids, cards, strict=True), start=1):
                self.terminals.append(FleetTerminal(self, i, tid, card, target))
            rss1 = _rss_kib()
            self.t0 = self.clock.now()
            self.phase = "running"
            ramp = opts.ramp if opts.ramp is not None else min(10.0, opts.duration / 4)
            end = self.t0 + opts.duration
            if opts.rate is None:
                workers = [self._closed_loop(ft, ramp, end) for ft in self.terminals]
                await asyncio.gather(*workers)
            else:
                await asyncio.gather(*(self._signed_on_at(ft, ramp) for ft in self.terminals))
                await self._open_loop(end)
            rss2 = _rss_kib()
            self.phase = "draining"
            await asyncio.gather(*(ft.drain() for ft in self.terminals))
            elapsed = self.clock.now() - self.t0
            self.phase = "reconciling"
            rec = self._reconcile(cards, balances0)
        finally:
            for ft in self.terminals:
                await ft.close()
            if self.host is not None:
                await self.host.close()
        per = None
        if rss0 is not None and rss2 is not None and rss1 is not None and self.terminals:
            per = max(rss2, rss1) - rss0
            per /= len(self.terminals)
        self.phase = "done"
        label = opts.host or f"bundled host {target[0]}:{target[1]} (in-process)"
        return FleetReport(opts, self.stats, rec, elapsed, time.perf_counter() - wall0, per, label)

    def _pick(self, rng: random.Random) -> str:
        kinds = list(self.options.mix)
        return rng.choices(kinds, weights=[self.options.mix[k] for k in kinds])[0]

    async def _signed_on_at(self, ft: FleetTerminal, ramp: float) -> None:
        await self.clock.sleep(ft.rng.uniform(0, ramp) if ramp > 0 else 0.0)
        await ft.sign_on()

    async def _closed_loop(self, ft: FleetTerminal, ramp: float, end: float) -> None:
        await self._signed_on_at(ft, ramp)
        think = self.options.think
        while self.clock.now() < end:
            await ft.transact(self._pick(ft.rng))
            pause = ft.rng.expovariate(1 / think) if think > 0 else 0.0
            if self.clock.now() + pause >= end:
                break
            await self.clock.sleep(pause)

    async def _open_loop(self, end: float) -> None:
        rate = self.options.rate
        assert rate is not None
        rng = random.Random(f"{self.options.seed}:arrivals")
        while True:
            gap = rng.expovariate(rate)
            if self.clock.now() + gap >= end:
                break
            await self.clock.sleep(gap)
            ft = rng.choice(self.terminals)
            if ft.lock.locked():
                self.stats.queued += 1
            task = asyncio.ensure_future(ft.transact(self._pick(ft.rng)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*list(self._tasks))

    def _balances(self, cards: Sequence[CardProfile]) -> dict[int, int]:
        return balances(self.host.store if self.host is not None else None, cards)

    def _reconcile(self, cards: Sequence[CardProfile], balances0: dict[int, int]) -> Reconciliation:
        return reconcile([(ft.tid, ft.journal) for ft in self.terminals],
                         self.host.store if self.host is not None else None, cards, balances0)


def _rss_kib() -> float | None:
    """The process's resident set now (Linux /proc), else its peak (getrusage), in KiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 1024
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
