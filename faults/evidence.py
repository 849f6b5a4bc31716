"""Evidence: what the diagnosis may look at, gathered from a trace and the self-test's readings.

From the trace it takes the **failed transaction** (the last one that failed, or the last one if
none did) — the entries between its ``txn begin`` and ``txn end`` — plus what happened outside any
transaction (a journal recovered after a crash), never earlier transactions of the session. From
those entries it keeps **evidence codes** (the ``code`` each error carries, ``host.rc.NN`` of each
answer, ``screen.X`` of each screen), the swipes' track statuses and timings, and two
explanations a technician wants spelled out (a response that matched no request; a reversal that
was never acknowledged). No message wording is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from emulator.trace import Kind, TraceEntry


@dataclass(slots=True)
class Evidence:
    """What the diagnosis may read: evidence codes of the last transaction (and, apart, of the session
    around it), the instruments' readings and the transaction's outcome — never the injected faults."""

    codes: Counter[str] = field(default_factory=Counter)
    context: Counter[str] = field(default_factory=Counter)     # codes recorded outside any transaction
    readings: dict[str, Any] = field(default_factory=dict)
    txn: str | None = None
    approved: bool | None = None
    headline: str | None = None
    detail: str | None = None
    screens: list[str] = field(default_factory=list)
    response_s: list[float] = field(default_factory=list)
    swipes: list[list[dict[str, Any]]] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)        # standing conditions noted anywhere in the session
    health: dict[str, float] = field(default_factory=dict)     # the terminal's own sensors at the transaction

    @property
    def measured(self) -> bool:
        """Were the technician's readings taken (else: the trace alone)?"""
        return bool(self.readings)

    def has(self, *codes: str) -> bool:
        return any(c in self.codes for c in codes)

    def has_prefix(self, *prefixes: str) -> list[str]:
        return sorted(c for c in self.codes if c.startswith(prefixes))

    def r(self, key: str) -> Any:
        return self.readings.get(key)

    def num(self, key: str) -> float | None:
        v = self.readings.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _slice(trace: Sequence[TraceEntry]) -> tuple[list[TraceEntry], list[TraceEntry], TraceEntry | None]:
    """(entries of the failed transaction, entries outside any transaction, its end entry)."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, e in enumerate(trace):
        if e.kind is Kind.TXN and e.what == "begin":
            start = i
        elif e.kind is Kind.TXN and e.what == "end" and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(trace) - 1))
    inside = {i for a, b in spans for i in range(a, b + 1)}
    outside = [e for i, e in enumerate(trace) if i not in inside]
    if not spans:
        return list(trace), outside, None
    failed = [s for s in spans if trace[s[1]].kind is Kind.TXN and trace[s[1]].data.get("approved") is False]
    a, b = (failed or spans)[-1]
    end = trace[b] if trace[b].kind is Kind.TXN and trace[b].what == "end" else None
    return list(trace[a:b + 1]), outside, end


def gather(trace: Sequence[TraceEntry], readings: dict[str, Any] | None = None) -> Evidence:
    entries, outside, end = _slice(trace)
    ev = Evidence(readings=dict(readings or {}))
    if end is not None:
        ev.txn = str(end.data.get("txn"))
        ev.approved = bool(end.data.get("approved"))
        ev.headline = end.data.get("headline")
        ev.detail = end.data.get("detail")
    sent: float | None = None
    for e in entries:
        code = e.data.get("code")
        if isinstance(code, str):
            ev.codes[code] += 1
        if code == "terminal.health":          # the worst the terminal's sensors saw in the transaction
            for k, v in e.data.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    old = ev.health.get(k)
                    if old is None or abs(float(v) - NOMINAL.get(k, 0.0)) > abs(old - NOMINAL.get(k, 0.0)):
                        ev.health[k] = float(v)
        if e.kind is Kind.SCREEN:
            ev.screens.append(e.what)
            ev.codes[f"screen.{e.what}"] += 1
        elif e.kind is Kind.ISO_OUT and e.what[:3] in ("020", "040", "010", "022", "050", "032"):
            sent = e.t
        elif e.kind is Kind.ISO_IN:
            rc = e.data.get("fields", {}).get("39")
            if isinstance(rc, str):
                ev.codes[f"host.rc.{rc}"] += 1
            if sent is not None:
                ev.response_s.append(round(e.t - sent, 3))
                sent = None
        elif e.kind is Kind.READER and e.what == "swipe read":
            tracks = e.data.get("tracks")
            if isinstance(tracks, list):
                ev.swipes.append([t for t in tracks if isinstance(t, dict)])
        _explain(e, ev)
    for e in outside:
        code = e.data.get("code")
        if isinstance(code, str):
            ev.context[code] += 1
        _explain(e, ev)
    for e in trace:                 # standing conditions: what the terminal noted about itself, any time
        if e.data.get("code") in SESSION_FACTS:
            ev.facts[str(e.data["code"])] = {k: v for k, v in e.data.items() if k != "code"}
    return ev


NOMINAL = {"supply_v": 5.0, "temperature_c": 25.0}
"""The terminal sensors' nominal values (the worst deviation in a transaction is kept)."""

SESSION_FACTS = frozenset({"clock.host_skew"})
"""Codes that describe the terminal, not one transaction (its clock against the host's, from the
sign-on answer): the diagnosis of a later transaction may use them."""


def _explain(e: TraceEntry, ev: Evidence) -> None:
    """The two things a technician wants spelled out (from the event, never from message wording)."""
    if e.kind is Kind.ERROR and e.what == "unmatched response":
        text = (f"a response never matched its request: the host answered STAN {e.data.get('stan')} / terminal "
                f"{e.data.get('tid')} while the terminal waited for STAN {e.data.get('expected_stan')} / "
                f"{e.data.get('expected_tid')} (fields 11/41): the terminal ignored it")
    elif e.kind is Kind.JOURNAL and e.what == "reversal not acknowledged":
        text = ("a reversal was not acknowledged: the purchase stays pending in the journal and the reversal goes "
                "again until the host acknowledges it")
    else:
        return
    if text not in ev.explanations:
        ev.explanations.append(text)
