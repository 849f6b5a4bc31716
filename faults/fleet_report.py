"""What a fleet run counts and reports: the live counters, the per-fault tallies, the report (its
percentiles and JSON), and the reconciliation of the terminals' journals against the host.

:func:`reconcile` takes its inputs explicitly — each terminal's id and journal, the bundled host's store
(``None``: another host, whose log and balances cannot be read) and the cards' balances before the run —
so it is checked apart from a running fleet. :mod:`faults.fleet` fills these while it runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from emulator.host.store import HostStore, TxRow
from emulator.journal import Entry, Journal, Reversal, Status
from faults.checks import journal_money
from faults.fleet_options import FleetOptions
from hardware.cards.profiles import CardProfile


# --- counters and results ------------------------------------------------------------------------------------
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


# --- reconciliation ------------------------------------------------------------------------------------------
def balances(store: HostStore | None, cards: Sequence[CardProfile]) -> dict[int, int]:
    """Each card's account balance at the bundled host (by account id); ``{}`` without one."""
    if store is None:
        return {}
    out: dict[int, int] = {}
    for c in cards:
        row = store.card(c.pan)
        if row is not None:
            out[row.account_id] = store.balance(row.account_id)[0]
    return out


def reconcile(journals: Sequence[tuple[str, Journal]], store: HostStore | None, cards: Sequence[CardProfile],
              balances0: dict[int, int]) -> Reconciliation:
    """The terminals' journal rows (``(terminal id, journal)`` each) against the bundled host's log
    (``store``; ``None``: only the journals are checked) and, against that host, money: the cards'
    balances now against ``balances0`` (:func:`balances` before the run)."""
    rec = Reconciliation(checked_host=store is not None)
    term_rows: dict[tuple[str, str], Entry] = {}
    for tid, journal in journals:
        entries = journal.entries(10**9)
        for e in entries:
            if e.kind in ("sign_on", "sign_off"):
                continue
            rec.terminal_rows += 1
            key = (tid, e.stan)
            if key in term_rows:
                rec.duplicated_terminal += 1
                rec.problems.append(f"{tid} STAN {e.stan}: twice in its journal")
            term_rows[key] = e
            if e.status is Status.PENDING or e.reversal is Reversal.PENDING:
                rec.pending += 1
                rec.problems.append(f"{tid} STAN {e.stan}: still pending ({e.status.value}/{e.reversal.value})")
        rec.charged_terminal -= journal_money(journal, entries)
    if store is None:
        return rec
    fleet_tids_set = {tid for tid, _ in journals}
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
    after = balances(store, cards)
    rec.balance_moved = sum(balances0[a] - after.get(a, balances0[a]) for a in balances0)
    return rec
