"""Diagnosis: from what a terminal saw (its trace) and what a technician measures (the
self-test), name the most likely causes with their evidence and the articles' remedies.

Rules look only at terminal-visible evidence — screens, response codes, reader errors, swipe
statuses, TCP events, timings, the journal — and at self-test readings (contact resistance,
supply voltage, temperature, line noise, reader and service presence, DNS and TCP reachability),
never at the injected fault. The articles' detection methods are what the self-test does.

It also explains two classic confusions: a response that never matched its request (the host
answered another STAN or terminal id: field 11/41), and a reversal that was never acknowledged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from emulator.terminal import Outcome
from emulator.trace import Kind, TraceEntry


@dataclass(frozen=True, slots=True)
class Finding:
    causes: tuple[str, ...]
    title: str
    evidence: str
    score: float = 1.0


@dataclass(slots=True)
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)

    @property
    def cause_ids(self) -> set[str]:
        return {c for f in self.findings for c in f.causes}

    def render(self, lang: str = "both") -> str:
        from faults.catalogue import load

        cat = load()
        lines = []
        for f in sorted(self.findings, key=lambda f: -f.score):
            lines.append(f"• {f.title}  [{', '.join(f.causes)}]")
            lines.append(f"  evidence: {f.evidence}")
            for cid in f.causes:
                c = cat.causes[cid]
                faults = cat.covering(cid)
                fix = faults[0] if faults else None
                name = f"{c.zh} {c.en}" if lang == "both" else (c.zh if lang == "zh" else c.en)
                lines.append(f"  {cid} {name}")
                if fix is not None:
                    lines.append(f"     检测 detect: {fix.detect_zh} / {fix.detect_en}")
                    lines.append(f"     处理 remedy: {fix.fix_zh} / {fix.fix_en}")
        lines.extend(f"note: {x}" for x in self.explanations)
        return "\n".join(lines) if lines else "no fault found"


@dataclass(slots=True)
class Evidence:
    trace: Sequence[TraceEntry]
    outcomes: Sequence[Outcome]
    m: dict[str, Any]

    @property
    def screens(self) -> list[str]:
        return [e.what for e in self.trace if e.kind is Kind.SCREEN]

    def shown(self, *codes: str) -> bool:
        s = set(self.screens)
        return any(c in s for c in codes)

    def reader_errors(self) -> list[str]:
        out = []
        for e in self.trace:
            err = e.data.get("error")
            if isinstance(err, str) and e.kind in (Kind.READER, Kind.ERROR, Kind.NOTE):
                out.append(err)
        out.extend(o.error for o in self.outcomes if o.error)
        return out

    def any_error(self, *needles: str) -> str | None:
        for err in self.reader_errors():
            low = err.lower()
            if any(n in low for n in needles):
                return err
        return None

    def rcs(self) -> list[str]:
        out = []
        for e in self.trace:
            if e.kind is Kind.ISO_IN:
                rc = e.data.get("fields", {}).get("39")
                if isinstance(rc, str):
                    out.append(rc)
        return out

    def tcp(self, what: str) -> list[TraceEntry]:
        return [e for e in self.trace if e.kind is Kind.TCP and e.what == what]

    def swipes(self) -> list[list[dict[str, Any]]]:
        return [list(e.data.get("tracks", [])) for e in self.trace if e.kind is Kind.READER and e.what == "swipe read"]

    def response_times(self) -> list[float]:
        """Seconds from each request to its response, for financial requests."""
        out, sent = [], None
        for e in self.trace:
            if e.kind is Kind.ISO_OUT and e.what in ("0200", "0400"):
                sent = e.t
            elif e.kind is Kind.ISO_IN and sent is not None and e.what in ("0210", "0410"):
                out.append(e.t - sent)
                sent = None
        return out


Rule = Callable[[Evidence], Finding | None]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def _m(ev: Evidence, key: str, default: float | None = None) -> float | None:
    v = ev.m.get(key, default)
    return float(v) if isinstance(v, int | float) else default


# --- reader, contacts, power, environment ------------------------------------------------------
@rule
def contacts(ev: Evidence) -> Finding | None:
    ohms = _m(ev, "contact_ohms")
    err = ev.any_error("parity", "reset during", "no answer to reset: card supply", "atr unreadable")
    if ohms is not None and ohms > 5.0:
        what = err or (f"{ev.m.get('retransmissions')} characters repeated (parity errors)"
                       if ev.m.get("retransmissions") else "no read error yet")
        return Finding(("A1", "B2"), "dirty or worn contacts", f"contact resistance {ohms:g} Ω (clean < 1 Ω); {what}",
                       3.0 if err or ev.m.get("retransmissions") else 1.5)
    return None


@rule
def maintenance(ev: Evidence) -> Finding | None:
    ohms = _m(ev, "contact_ohms")
    inserted = _m(ev, "insertions", 0) or 0
    if ohms is not None and ohms > 5.0 and inserted >= 5:
        return Finding(("A16", "B16"), "contacts not maintained",
                       f"{inserted:g} insertions since the last cleaning; contact resistance {ohms:g} Ω", 2.0)
    return None


@rule
def aging(ev: Evidence) -> Finding | None:
    wear = _m(ev, "wear_ohms", 0) or 0
    if wear > 2.0:
        return Finding(("A2", "B17"), "aged hardware", f"contact wear {wear:g} Ω that cleaning does not remove", 2.0)
    return None


@rule
def power(ev: Evidence) -> Finding | None:
    v = _m(ev, "supply_v")
    err = ev.any_error("card supply", "reset during", "no answer to reset: card supply")
    ohms = _m(ev, "contact_ohms", 0.0) or 0.0
    if (v is not None and v < 4.75) or (err and ohms <= 5.0 and "reset" in err.lower()):
        return Finding(("A3", "B3"), "unstable or low power supply",
                       f"supply {v if v is not None else '?'} V at the reader; {err or 'card brown-out'}", 3.0)
    return None


@rule
def temperature(ev: Evidence) -> Finding | None:
    t = _m(ev, "temperature_c")
    if t is not None and not 0.0 <= t <= 45.0:
        return Finding(("B13",), "temperature out of range", f"ambient {t:g} °C (operating 0–45 °C)", 3.0)
    return None


@rule
def emi(ev: Evidence) -> Finding | None:
    noise = _m(ev, "line_noise_v", 0) or 0
    if noise > 0.1:
        return Finding(("A15", "B14"), "electromagnetic interference",
                       f"line noise {noise:g} V rms on the reader (oscilloscope); read errors", 3.0)
    return None


@rule
def reader_missing(ev: Evidence) -> Finding | None:
    if not ev.shown("NO_READER") and not ev.any_error("pcscd", "no such reader", "does not respond", "disappeared"):
        return None
    if ev.any_error("pcscd", "service", "no reader", "no such reader", "driver") or ev.m.get("service") is False:
        return Finding(("B5",), "reader driver or PC/SC service missing",
                       ev.any_error("pcscd", "service", "reader", "driver") or "no reader service", 3.0)
    if ev.any_error("disappeared"):
        return Finding(("B15", "B18"), "intermittent reader (knock, loose connection or incompatible port)",
                       ev.any_error("disappeared") or "", 3.0)
    return Finding(("B1", "B15", "A18"), "card reader damaged or dead", ev.any_error("does not respond") or "", 3.0)


@rule
def port_conflict(ev: Evidence) -> Finding | None:
    err = ev.any_error("held by another program", "sharing violation")
    if err:
        return Finding(("A6", "B18"), "another program holds the reader", err, 3.0)
    return None


@rule
def insertion(ev: Evidence) -> Finding | None:
    err = ev.any_error("does not touch the contacts")
    if err:
        return Finding(("B9",), "card inserted the wrong way or not fully", err, 3.0)
    return None


@rule
def chip_damaged(ev: Evidence) -> Finding | None:
    err = ev.any_error("chip does not respond")
    ohms = _m(ev, "contact_ohms", 0.0) or 0.0
    if err and ohms <= 5.0:
        return Finding(("B17", "A18"), "chip or reader electronics damaged", err, 2.5)
    return None


@rule
def seat_switch(ev: Evidence) -> Finding | None:
    if any(e.what == "card still detected after removal timeout" for e in ev.trace):
        present = ev.m.get("card_present")
        return Finding(("A18", "B1"), "card-seat sensor stuck: removal not detected",
                       f"card still reported present after the removal timeout (sensor reads present={present})", 3.0)
    return None


@rule
def sensor_dead(ev: Evidence) -> Finding | None:
    if ev.shown("TIMEOUT") and ev.any_error("no card presented in time") and ev.m.get("card_in_slot"):
        return Finding(("A18",), "card sensor failure: inserted card not detected",
                       "a card is in the slot but the reader never reported it", 3.0)
    return None


@rule
def card_pulled(ev: Evidence) -> Finding | None:
    if ev.shown("CARD_REMOVED_EARLY") or ev.any_error("removed during the transaction"):
        return Finding(("B19", "B10"), "card removed before the transaction finished",
                       ev.any_error("removed") or "card removed while reading", 3.0)
    return None


# --- magstripe ---------------------------------------------------------------------------------------
@rule
def swipe(ev: Evidence) -> Finding | None:
    swipes = ev.swipes()
    if not swipes or not ev.shown("SWIPE_AGAIN", "QUERY_CARD_FAILED", "TXN_FAILED"):
        return None
    bad = [s for s in swipes if any(t.get("status") != "ok" for t in s if t.get("track") == 2)]
    if not bad:
        return None
    noise = _m(ev, "line_noise_v", 0) or 0
    if noise > 0.1:
        return None   # EMI rule covers it
    last = bad[-1]
    statuses = {t.get("status") for t in last}
    details = " ".join(str(t.get("detail", "")) for t in last).lower()
    # a defect sits at one place on the card: repeated swipes break at the same time along the stripe

    where = []
    for sw in bad:
        for t in sw:
            if t.get("track") == 2:
                m = re.search(r"t=([\d.]+) ms", str(t.get("detail", "")))
                if m:
                    where.append(float(m.group(1)))
    if len(where) >= 2 and max(where) - min(where) < 0.1 * max(where) and min(where) > 5.0:
        return Finding(("A10",), "damaged magnetic stripe", f"{len(where)} swipes broke at the same spot "
                       f"(≈{sum(where) / len(where):.0f} ms into the swipe): a local defect on the stripe", 2.5)
    if re.search(r"\b0 samples", details):
        return Finding(("A13",), "swipe too fast", "the reader got no sample inside a half bit cell: the card "
                       "passed the head faster than the reader can sample", 2.5)
    tilt = [sw for sw in swipes if any(t.get("track") == 1 and t.get("status") != "ok" for t in sw)
            and any(t.get("track") == 2 and t.get("status") == "ok" for t in sw)]
    if tilt or statuses <= {"no data"}:
        return Finding(("A14", "A13"), "card tilted (or swiped too slowly)",
                       "the high-density track fails first / no flux transitions reach the head: azimuth loss",
                       2.0)
    return Finding(("A13", "A14", "A10"), "unreadable swipe", f"tracks {sorted(str(x) for x in statuses)}; "
                   f"{details[:160]}", 1.5)


@rule
def stripe_incomplete(ev: Evidence) -> Finding | None:
    err = ev.any_error("not iso/iec 7813 format")
    if err and all(all(t.get("status") == "ok" for t in s if t.get("track") == 2) for s in ev.swipes()):
        return Finding(("A11",), "magstripe data incomplete", "track 2 reads with a good LRC but its data is cut "
                       "short (no separator, expiry or service code)", 3.0)
    return None


# --- cardholder and operator ---------------------------------------------------------------------------
@rule
def wrong_pin(ev: Evidence) -> Finding | None:
    rcs = ev.rcs()
    if "55" in rcs or "75" in rcs or ev.shown("PIN_RETRY", "PIN_BLOCKED"):
        codes = [r for r in rcs if r in ("55", "75")]
        evidence = f"host answered {', '.join(codes)}" if codes else "the card refused the PIN (offline)"
        return Finding(("A12", "A20"), "wrong PIN", evidence, 3.0)
    return None


@rule
def cancelled(ev: Evidence) -> Finding | None:
    if ev.shown("CANCELLED"):
        return Finding(("A17", "B19"), "the flow was abandoned (training, handling)",
                       "PIN entry cancelled or timed out", 2.0)
    return None


@rule
def out_of_order(ev: Evidence) -> Finding | None:
    if ev.shown("SIGN_ON_REQUIRED"):
        return Finding(("B10", "A17", "B19"), "steps out of order", "a transaction was started before sign-on", 3.0)
    return None


@rule
def locked(ev: Evidence) -> Finding | None:
    if ev.shown("TERMINAL_LOCKED"):
        return Finding(("B12",), "operator password forgotten: terminal locked",
                       "operator password failed until the terminal locked", 3.0)
    return None


# --- host, account, network ----------------------------------------------------------------------------
@rule
def permissions(ev: Evidence) -> Finding | None:
    rcs = [r for r in ev.rcs() if r in ("57", "58", "62")]
    if rcs:
        return Finding(("A21", "B8"), "not permitted for this card or terminal", f"host answered {', '.join(rcs)}", 3.0)
    return None


@rule
def host_busy(ev: Evidence) -> Finding | None:
    rcs = [r for r in ev.rcs() if r in ("91", "96")]
    slow = [t for t in ev.response_times() if t > 10.0]
    if rcs or slow:
        evidence = (f"host answered {', '.join(rcs)}" if rcs else "") + (
            f"; responses took {', '.join(f'{t:.0f}' for t in slow)} s" if slow else "")
        return Finding(("A8", "B11"), "host overloaded / peak time", evidence.strip("; "), 2.5)
    return None


@rule
def version(ev: Evidence) -> Finding | None:
    if "A4" in ev.rcs() or ev.shown("VERSION_REJECTED"):
        return Finding(("A4",), "terminal software too old", "host refused the terminal's software version (A4)", 3.0)
    return None


@rule
def card_type_config(ev: Evidence) -> Finding | None:
    if ev.shown("CARD_NOT_SUPPORTED"):
        return Finding(("B6", "A5"), "card type or track settings wrong", ev.any_error("disabled") or "", 3.0)
    return None


@rule
def dns(ev: Evidence) -> Finding | None:
    if ev.shown("DNS_FAILED"):
        return Finding(("A9",), "DNS resolution failed", ev.any_error("resolve") or "host name not resolved", 3.0)
    slow = [e for e in ev.tcp("resolved") if e.data.get("seconds", 0) > 3]
    if slow or (ev.m.get("dns_seconds") or 0) > 3:
        return Finding(("A9",), "DNS resolution slow", f"resolving the host took {ev.m.get('dns_seconds')} s", 2.5)
    return None


@rule
def link_down(ev: Evidence) -> Finding | None:
    if ev.shown("CONNECT_FAILED"):
        wrong = ev.m.get("config_host_reachable") is False and ev.m.get("dns_ok", True)
        causes = ("B7", "A22") + (("A5",) if wrong else ())
        return Finding(causes, "network link down or host unreachable",
                       "; ".join(str(e.data.get("error", e.what)) for e in ev.tcp("connect failed"))[:200] or
                       "no TCP connection", 2.5)
    return None


@rule
def unstable_network(ev: Evidence) -> Finding | None:
    if ev.shown("TIMEOUT", "LINK_LOST") and (ev.tcp("response timeout") or ev.tcp("connection closed by peer")
                                              or ev.tcp("read error")):
        ev_txt = ", ".join(sorted({e.what for e in ev.trace if e.kind is Kind.TCP and e.what != "resolved"}))
        return Finding(("A7", "A22", "B7"), "unstable network (weak WiFi, interference, drops)", ev_txt, 2.0)
    times = ev.response_times()
    if len(times) >= 1 and max(times) > 3.0 and ev.rcs():
        return Finding(("A7", "A22"), "slow network", f"response times {', '.join(f'{t:.1f}' for t in times)} s", 1.5)
    return None


@rule
def mac_error(ev: Evidence) -> Finding | None:
    if ev.shown("MAC_ERROR") or "A0" in ev.rcs():
        return Finding(("A19", "A5"), "message corrupted or wrong keys (MAC failed)",
                       "MAC check failed on the terminal or the host", 2.5)
    return None


@rule
def keys_unreadable(ev: Evidence) -> Finding | None:
    err = ev.any_error("check value", "working keys")
    refused = [e for e in ev.trace if e.kind is Kind.ISO_IN and e.what == "0810"
               and e.data.get("fields", {}).get("39") == "A0"]
    if refused and not err:
        err = "the host refused the sign-on's MAC under the terminal master key (A0): the keys differ"
    if err and ev.shown("SIGN_ON_FAILED"):
        return Finding(("B17", "A5"), "keys unreadable or wrong master key", err, 3.0)
    return None


@rule
def incompatible(ev: Evidence) -> Finding | None:
    closed = ev.tcp("connection closed by peer")
    if closed and not ev.tcp("read error") and not ev.rcs() and not ev.tcp("response timeout"):
        return Finding(("B18", "A19"), "the host drops our requests: message specification mismatch",
                       "the host closed the connection on every request without answering (it could not parse "
                       "them); TCP itself works", 2.5)
    if ev.any_error("undecodable", "format") or "30" in ev.rcs() or ev.shown("FORMAT_ERROR"):
        return Finding(("B18", "A19"), "incompatible installation or corrupted data",
                       ev.any_error("undecodable", "format") or "format error (30)", 2.0)
    return None


@rule
def crash_recovered(ev: Evidence) -> Finding | None:
    if any(e.kind is Kind.JOURNAL and e.what == "recovered pending reversals" for e in ev.trace):
        return Finding(("B4",), "application crashed mid-transaction",
                       "the journal held an unfinished purchase at start-up", 3.0)
    return None


@rule
def consumer_protected(ev: Evidence) -> Finding | None:
    acked = [e for e in ev.trace if e.kind is Kind.JOURNAL and e.what == "reversal acknowledged"]
    if acked:
        return Finding(("B20",), "failed purchase reversed: the cardholder is not charged",
                       f"{len(acked)} reversal(s) sent and acknowledged; journal shows the transaction and its "
                       "reversal", 1.0)
    return None


def diagnose(trace: Sequence[TraceEntry], outcomes: Sequence[Outcome], measurements: dict[str, Any] | None = None
             ) -> Diagnosis:
    ev = Evidence(trace, outcomes, dict(measurements or {}))
    d = Diagnosis(measurements=ev.m)
    for r in RULES:
        f = r(ev)
        if f is not None:
            d.findings.append(f)
    unmatched = [e for e in trace if e.kind is Kind.ERROR and e.what == "unmatched response"]
    for e in unmatched:
        d.explanations.append(
            f"a response never matched its request: the host answered STAN {e.data.get('stan')} / terminal "
            f"{e.data.get('tid')} while the terminal waited for STAN {e.data.get('expected_stan')} / "
            f"{e.data.get('expected_tid')} (fields 11/41): the terminal ignored it and timed out")
    not_acked = [e for e in trace if e.kind is Kind.JOURNAL and e.what == "reversal not acknowledged"]
    if not_acked:
        d.explanations.append(f"{len(not_acked)} reversal attempt(s) were not acknowledged: the purchase stays "
                              "pending in the journal and the reversal is resent until the host acknowledges it")
    return d


async def self_test(rig: Any) -> dict[str, Any]:
    """The articles' detection methods against the current setup: measure the contacts and the
    supply, check the reader and its service, the card seat, the network path and DNS, the
    configuration and keys, and the clock."""
    import asyncio

    from faults.reader import FaultyReader

    m: dict[str, Any] = {}
    reader = rig.reader
    r: Any = reader
    while r is not None:
        if isinstance(r, FaultyReader):
            m.update(r.measure())
            m["insertions"] = r.insertions
            m["retransmissions"] = r.stats.get("retransmissions", 0)
            m["wear_ohms"] = r.insertions * r.faults.wear_per_insert_ohms
            m["line_noise_v"] = r.faults.emi_v
            break
        r = getattr(r, "inner", None)
    try:
        m["card_present"] = await reader.card_present()
    except Exception as e:  # a dead reader is a finding, not a crash
        m["card_present"] = None
        m["reader_error"] = str(e)
    sim = reader
    while sim is not None and not hasattr(sim, "card"):
        sim = getattr(sim, "inner", None)
    m["card_in_slot"] = getattr(sim, "card", None) is not None
    link = rig.terminal.link
    t0 = rig.clock.now()
    try:
        async with asyncio.timeout(10):
            await link.resolver(link.host, link.port)
        m["dns_ok"] = True
    except Exception:
        m["dns_ok"] = False
    m["dns_seconds"] = round(rig.clock.now() - t0, 3)
    m["signed_on"] = rig.terminal.signed_on
    m["software_version"] = rig.terminal.cfg.software_version
    m["profile"] = rig.terminal.cfg.profile
    m["config_host_reachable"] = link.connected or None
    m["clock"] = rig.clock.wall().isoformat()
    return m
