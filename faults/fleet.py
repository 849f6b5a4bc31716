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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emulator.app import fit_bundled_host
from emulator.cardholder import Cardholder
from emulator.config import TerminalConfig, parse_hostport
from emulator.host.logic import seed_demo
from emulator.host.provision import FLEET_PREFIX, fleet_card, fleet_tids, fleet_tmk, provision
from emulator.host.server import HostServer
from emulator.host.store import TxRow
from emulator.hostlink import HostLink
from emulator.journal import Entry, Journal, Reversal, Status
from emulator.keystore import LocalKey
from emulator.messages import Screen
from emulator.ports import ScriptedPinPad
from emulator.terminal import Outcome, Terminal
from emulator.trace import Kind, Trace, TraceEntry
from faults.catalogue import Catalogue, load
from faults.diagnose import diagnose
from faults.environment import Environment, SkewedClock
from faults.grammar import parse_spec
from faults.injectors import Plan, Points
from faults.model import FaultSpec
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.reader import FaultyReader
from faults.runner import journal_money
from faults.seam import Injection
from hardware.cards.profiles import CardProfile, load_profile
from hardware.clock import Clock
from hardware.sim import SimReader, card_for_profile
from protocol.errors import ConfigError, PosemuError, UsageError

HOST_NAME = "acquirer.fleet"
"""The host name every fleet terminal is configured with; its resolver sends it to the host or its fault proxy."""

# --- the transaction mix ------------------------------------------------------------------------------------
KindFn = Callable[[Terminal, random.Random, "FleetOptions"], Awaitable[Outcome]]


def _balance(t: Terminal, rng: random.Random, opts: FleetOptions) -> Awaitable[Outcome]:
    return t.balance_inquiry()


def _purchase(t: Terminal, rng: random.Random, opts: FleetOptions) -> Awaitable[Outcome]:
    return t.purchase(rng.randint(*opts.amounts))


def _voidable(t: Terminal) -> Entry | None:
    """This terminal's latest approved purchase of the open batch that was not voided or reversed."""
    e = t.journal.last(("purchase",))
    if e is None or e.status is not Status.APPROVED or e.voided_by is not None or e.settled \
            or e.reversal is Reversal.DONE:
        return None
    return e


def _void(t: Terminal, rng: random.Random, opts: FleetOptions) -> Awaitable[Outcome]:
    """Void 撤销 the terminal's latest approved purchase; a terminal with none to void buys first (a
    void needs a sale of the open batch)."""
    e = _voidable(t)
    return t.void(e.id) if e is not None else t.purchase(rng.randint(*opts.amounts))


def _refund(t: Terminal, rng: random.Random, opts: FleetOptions) -> Awaitable[Outcome]:
    """Refund 退货 part of the terminal's latest approved purchase (at most its amount); a terminal
    with none buys first."""
    e = _voidable(t)
    if e is None:
        return t.purchase(rng.randint(*opts.amounts))
    return t.refund(max(1, rng.randint(1, e.amount)), original_id=e.id)


KINDS: dict[str, KindFn] = {"balance": _balance, "purchase": _purchase, "void": _void, "refund": _refund}
"""Transaction kinds a fleet can mix, by name: each runs one terminal coroutine."""


def register_kind(name: str, fn: KindFn) -> None:
    """Make ``name`` usable in ``--mix`` (a new terminal transaction: ``void``, ``refund`` …)."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"transaction kind {name!r}: lowercase letters, digits, '-' or '_'")
    KINDS[name] = fn


def parse_mix(text: str) -> dict[str, float]:
    """``balance=70,purchase=30`` → relative weights (any positive numbers; they need not add up to 100).

    >>> parse_mix("balance=70, purchase=30")
    {'balance': 70.0, 'purchase': 30.0}
    """
    out: dict[str, float] = {}
    available = ", ".join(sorted(KINDS))
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, eq, weight = item.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise UsageError(f"--mix: unknown transaction kind {name!r}; available: {available}")
        if name in out:
            raise UsageError(f"--mix: {name} given twice")
        try:
            w = float(weight.strip().removesuffix("%")) if eq else 1.0
        except ValueError:
            raise UsageError(f"--mix: {item!r}: the weight must be a number, e.g. {name}=70") from None
        if not math.isfinite(w) or w < 0:
            raise UsageError(f"--mix: {item!r}: the weight must be a number ≥ 0")
        out[name] = w
    if not out or sum(out.values()) <= 0:
        raise UsageError(f"--mix needs at least one kind with a weight > 0, e.g. balance=70,purchase=30 "
                         f"(available: {available})")
    return out


FLEET_INJECTORS = frozenset({"reader", "environment", "link", "dns"})
"""Injectors that act on one running terminal's fault points, so they can strike one transaction of one
terminal: its reader, its surroundings, its network path, its name resolution. (Host rules and host
state act on the host every terminal shares; build-time faults change a terminal before power-on.)"""


@dataclass(frozen=True, slots=True)
class FaultRate:
    """A catalogue fault that strikes each transaction with probability ``rate``."""

    spec: FaultSpec
    rate: float

    def __str__(self) -> str:
        return f"{self.spec}={self.rate * 100:g}%"


_RATE = re.compile(r"^(?P<spec>.+)=\s*(?P<pct>\d+(?:\.\d+)?)\s*%$")


def parse_fault_rates(texts: Sequence[str], catalogue: Catalogue | None = None) -> list[FaultRate]:
    """``reader.dirty-contacts=2%,network.weak-wifi:loss=0.5=1%`` → faults with their rates. A spec is
    ``ID[@PRESET][:name=value,…]`` (as everywhere); its rate follows ``=`` and ends with ``%``. Commas
    inside a spec's parameters are kept: an item ends at its ``=N%``."""
    cat = catalogue or load()
    out: list[FaultRate] = []
    for text in texts:
        pending: list[str] = []
        for token in text.split(","):
            pending.append(token)
            joined = ",".join(pending).strip()
            m = _RATE.match(joined)
            if m is None:
                continue
            pending = []
            pct = float(m.group("pct"))
            if not 0 < pct <= 100:
                raise UsageError(f"--faults {joined!r}: the rate must be more than 0% and at most 100%")
            try:
                spec = parse_spec(m.group("spec").strip(), cat)
            except ConfigError as e:
                raise UsageError(f"--faults {joined!r}: {e}") from None
            if spec.fault.injector not in FLEET_INJECTORS:
                ok = sorted(f.id for f in cat.faults.values() if f.injector in FLEET_INJECTORS)
                raise UsageError(f"--faults {spec.id}: its injector ({spec.fault.injector}) does not act on one "
                                 f"running terminal; at a rate in a fleet: {', '.join(ok)}")
            # the fleet's terminals keep their own policy (magstripe fallback as configured); a fault that
            # needs another kind of connection (kept open, to go half-open) cannot strike them
            plan = Plan(cfg=TerminalConfig())
            Injection([spec]).prepare(plan)
            if plan.cfg.persistent_connection:
                raise UsageError(f"--faults {spec}: it needs a kept-open connection to the host, which the fleet's "
                                 "terminals do not use")
            out.append(FaultRate(spec, pct / 100))
        rest = ",".join(pending).strip()
        if rest:
            raise UsageError(f"--faults {rest!r}: each item is ID[@PRESET][:params]=RATE%, e.g. "
                             "reader.dirty-contacts=2%")
    return out


# --- options and results --------------------------------------------------------------------------------------
@dataclass(slots=True)
class FleetOptions:
    """What a fleet run does."""

    terminals: int = 10
    duration: float = 60.0                      # clock seconds of load after the ramp-up starts
    mix: dict[str, float] = field(default_factory=lambda: {"balance": 70.0, "purchase": 30.0})
    think: float = 5.0                          # mean think time between a terminal's transactions (closed loop)
    rate: float | None = None                   # open loop: transactions per second over the whole fleet
    faults: list[FaultRate] = field(default_factory=list)
    card: str = "cup_debit"
    shared_card: bool = False                   # every terminal uses the card profile itself (any host knows it)
    prefix: str = FLEET_PREFIX
    seed: int = 1
    ramp: float | None = None                   # sign-ons spread over this many seconds (default: min(10, d/4))
    amounts: tuple[int, int] = (100, 20_000)    # purchase amounts, minor units
    reaction_s: float = 0.5                     # the cardholder reads the screen, then acts
    pin_digit_s: float = 0.2                    # … and types a PIN digit
    txn_deadline: float = 300.0                 # no transaction takes longer than this (clock seconds)
    journals: Path | None = None                # journals on disk here (default: in memory)
    host: str | None = None                     # HOST:PORT of another host; None: the bundled host in-process


@dataclass(slots=True)
class Exchange:
    """One ISO 8583 exchange a terminal made: when it left (clock s since the start), its name, round trip."""

    t: float
    name: str
    rtt: float | None          # None: no answer


@dataclass(slots=True)
class TxnRecord:
    t: float
    tid: str
    kind: str
    approved: bool
    rc: str | None
    headline: str
    duration: float
    faults: tuple[str, ...] = ()


@dataclass(slots=True)
class FaultTally:
    injected: int = 0
    failed: int = 0            # the transaction it struck did not succeed
    diagnosed: int = 0         # … and the diagnosis named the fault's cause group
    top: int = 0               # … first


@dataclass(slots=True)
class FleetStats:
    """Counters kept while the fleet runs (the live progress reads them)."""

    started: int = 0
    done: int = 0
    approved: int = 0
    errors: int = 0                           # a transaction that raised or hit its deadline (a bug or a hang)
    sign_ons: int = 0
    sign_on_failures: int = 0
    queued: int = 0                           # open loop: arrivals that waited for their terminal
    screens: Counter[str] = field(default_factory=Counter)
    rcs: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    reversals_sent: int = 0
    reversals_acked: int = 0
    exchanges: list[Exchange] = field(default_factory=list)
    txns: list[TxnRecord] = field(default_factory=list)
    faults: dict[str, FaultTally] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Reconciliation:
    """Journal rows and money, terminal side against host side, after the fleet drained."""

    checked_host: bool
    terminal_rows: int = 0
    host_rows: int = 0
    pending: int = 0                      # journal rows still pending (a transaction or its reversal)
    duplicated_terminal: int = 0
    duplicated_host: int = 0
    lost: int = 0                         # the terminal's outcome and the host's log disagree
    charged_terminal: int = 0             # approved, unreversed purchases by the journals (minor units)
    charged_host_log: int = 0             # … by the host's log
    balance_moved: int = 0                # … by the cards' balances
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        money = not self.checked_host or (self.charged_terminal == self.charged_host_log == self.balance_moved)
        return money and not (self.pending or self.duplicated_terminal or self.duplicated_host or self.lost)


@dataclass(slots=True)
class FleetReport:
    options: FleetOptions
    stats: FleetStats
    reconciliation: Reconciliation
    elapsed_clock: float
    elapsed_wall: float
    memory_per_terminal_kib: float | None
    host_label: str

    def percentiles(self, ps: Sequence[float] = (50, 90, 95, 99, 99.9)) -> dict[str, float]:
        """Host round-trip percentiles in milliseconds (answered exchanges)."""
        xs = sorted(e.rtt for e in self.stats.exchanges if e.rtt is not None)
        return {f"p{p:g}": (xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1e3 if xs else float("nan")) for p in ps}

    def to_json(self) -> dict[str, Any]:
        s, o, r = self.stats, self.options, self.reconciliation
        by_name: dict[str, list[float]] = {}
        unanswered: Counter[str] = Counter()
        for e in s.exchanges:
            if e.rtt is None:
                unanswered[e.name] += 1
            else:
                by_name.setdefault(e.name, []).append(e.rtt)
        return {
            "options": {"terminals": o.terminals, "duration_s": o.duration, "mix": o.mix, "think_s": o.think,
                        "rate_tps": o.rate, "faults": [str(f) for f in o.faults], "card": o.card,
                        "shared_card": o.shared_card, "seed": o.seed, "host": self.host_label},
            "elapsed": {"clock_s": round(self.elapsed_clock, 3), "wall_s": round(self.elapsed_wall, 3)},
            "transactions": {"started": s.started, "done": s.done, "approved": s.approved, "errors": s.errors,
                             "by_kind": dict(s.kinds), "queued_arrivals": s.queued,
                             "rate_tps": round(s.done / self.elapsed_clock, 3) if self.elapsed_clock else 0.0},
            "sign_ons": {"approved": s.sign_ons, "failed": s.sign_on_failures},
            "screens": dict(s.screens.most_common()),
            "response_codes": dict(s.rcs.most_common()),
            "latency_ms": {k: round(v, 3) for k, v in self.percentiles().items()},
            "exchanges": {name: {"count": len(v), "p50_ms": round(_pct(v, 50) * 1e3, 3),
                                 "p99_ms": round(_pct(v, 99) * 1e3, 3), "unanswered": unanswered[name]}
                          for name, v in sorted(by_name.items())},
            "reversals": {"sent": s.reversals_sent, "acknowledged": s.reversals_acked},
            "faults": {k: {"injected": v.injected, "failed": v.failed, "diagnosed": v.diagnosed, "top": v.top}
                       for k, v in s.faults.items()},
            "reconciliation": {"ok": r.ok, "host_checked": r.checked_host, "terminal_rows": r.terminal_rows,
                               "host_rows": r.host_rows, "pending": r.pending,
                               "duplicated_terminal": r.duplicated_terminal, "duplicated_host": r.duplicated_host,
                               "lost": r.lost, "charged_terminal": r.charged_terminal,
                               "charged_host_log": r.charged_host_log, "balance_moved": r.balance_moved,
                               "problems": r.problems[:20]},
            "memory_per_terminal_kib": None if self.memory_per_terminal_kib is None
            else round(self.memory_per_terminal_kib, 1),
            "errors": s.error_samples[:20],
        }


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(p / 100 * len(ys)))]


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
        if self.host is None:
            return {}
        store = self.host.store
        out: dict[int, int] = {}
        for c in cards:
            row = store.card(c.pan)
            if row is not None:
                out[row.account_id] = store.balance(row.account_id)[0]
        return out

    def _reconcile(self, cards: Sequence[CardProfile], balances0: dict[int, int]) -> Reconciliation:
        rec = Reconciliation(checked_host=self.host is not None)
        term_rows: dict[tuple[str, str], Entry] = {}
        for ft in self.terminals:
            entries = ft.journal.entries(10**9)
            for e in entries:
                if e.kind in ("sign_on", "sign_off"):
                    continue
                rec.terminal_rows += 1
                key = (ft.tid, e.stan)
                if key in term_rows:
                    rec.duplicated_terminal += 1
                    rec.problems.append(f"{ft.tid} STAN {e.stan}: twice in its journal")
                term_rows[key] = e
                if e.status is Status.PENDING or e.reversal is Reversal.PENDING:
                    rec.pending += 1
                    rec.problems.append(f"{ft.tid} STAN {e.stan}: still pending ({e.status.value}/{e.reversal.value})")
            rec.charged_terminal -= journal_money(ft.journal, entries)
        if self.host is None:
            return rec
        store = self.host.store
        fleet_tids_set = {ft.tid for ft in self.terminals}
        host_rows: dict[tuple[str, str], TxRow] = {}
        for tx in store.transactions():
            if tx.tid not in fleet_tids_set or tx.mti not in ("0100", "0200", "0220"):
                continue
            rec.host_rows += 1
            key = (tx.tid, tx.stan)
            if key in host_rows:
                rec.duplicated_host += 1
                rec.problems.append(f"{tx.tid} STAN {tx.stan}: twice in the host's log")
            host_rows[key] = tx
            if tx.rc == "00" and not tx.reversed:
                rec.charged_host_log -= tx.effect
        for key, entry in term_rows.items():
            logged = host_rows.get(key)
            if entry.status in (Status.APPROVED, Status.DECLINED) and logged is None:
                rec.lost += 1
                rec.problems.append(f"{key[0]} STAN {key[1]}: {entry.status.value} at the terminal, not in the "
                                    "host's log")
            elif entry.status is Status.APPROVED and logged is not None and entry.kind == "purchase" \
                    and (logged.rc != "00" or logged.reversed) and entry.reversal is not Reversal.DONE:
                rec.lost += 1
                rec.problems.append(f"{key[0]} STAN {key[1]}: approved at the terminal, {logged.rc}"
                                    f"{' reversed' if logged.reversed else ''} at the host")
        for key, logged in host_rows.items():
            mine = term_rows.get(key)
            if mine is None:
                rec.lost += 1
                rec.problems.append(f"{key[0]} STAN {key[1]}: in the host's log ({logged.kind} {logged.rc}), not "
                                    "in the terminal's journal")
            elif logged.kind == "purchase" and logged.rc == "00" and not logged.reversed \
                    and mine.status is not Status.APPROVED:
                rec.lost += 1
                rec.problems.append(f"{key[0]} STAN {key[1]}: charged at the host, {mine.status.value}/"
                                    f"{mine.reversal.value} at the terminal")
        after = self._balances(cards)
        rec.balance_moved = sum(balances0[a] - after.get(a, balances0[a]) for a in balances0)
        return rec


def _rss_kib() -> float | None:
    """The process's resident set now (Linux /proc), else its peak (getrusage), in KiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 1024
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
