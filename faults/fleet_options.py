"""What a fleet run does: its options, and the ``--mix`` and ``--faults`` texts they are parsed from.

The transaction kinds a fleet can mix live in :data:`KINDS`, found by name (``register_kind`` adds one);
the faults that can strike a fleet's transactions at a rate are those whose injector acts on one running
terminal (:data:`FLEET_INJECTORS`). :mod:`faults.fleet` runs the fleet.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.config import TerminalConfig
from emulator.host.provision import FLEET_PREFIX
from emulator.journal import Entry, Reversal, Status
from emulator.terminal import Outcome, Terminal
from faults.catalogue import Catalogue, load
from faults.grammar import parse_spec
from faults.injectors import Plan
from faults.model import FaultSpec
from faults.seam import Injection
from protocol.errors import ConfigError, UsageError

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


# --- options ------------------------------------------------------------------------------------------------
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
