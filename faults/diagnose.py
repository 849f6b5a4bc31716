"""Diagnosis: from the failed transaction's evidence codes and the self-test's readings, a ranked list
of cause groups, each with a confidence and the evidence for it, and the articles' remedies.

Rules match **evidence codes** (:mod:`faults.evidence`) and **readings** (:mod:`faults.instruments`)
— never message wording, never a fault's parameters. Each rule speaks for one cause group of the
catalogue (causes the evidence cannot tell apart, e.g. weak WiFi / unstable network / broken link)
and adds weighted clues; a group's confidence is ``1 − e^(−Σ weights)``, and the groups at or above
:data:`THRESHOLD` are what the diagnosis *names*. A clue of weight 3 alone gives 0.95, of weight 1
alone 0.63; the threshold is met by one strong clue or two medium ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from emulator.trace import TraceEntry
from faults.catalogue import Catalogue, load
from faults.evidence import Evidence, gather
from faults.model import Group

THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class Clue:
    """One piece of evidence for a cause group: its weight and the evidence code or reading it rests on."""

    weight: float
    code: str                 # the evidence code or reading it rests on
    text: str


@dataclass(frozen=True, slots=True)
class Finding:
    """A cause group with the confidence its clues give it."""

    group: Group
    confidence: float
    clues: tuple[Clue, ...]

    @property
    def causes(self) -> tuple[str, ...]:
        return self.group.causes

    @property
    def evidence(self) -> str:
        return "; ".join(c.text for c in self.clues)


@dataclass(slots=True)
class Diagnosis:
    """The ranked findings for one failure, the groups named above the threshold, explanations and
    the measurements taken."""

    findings: list[Finding] = field(default_factory=list)       # ranked, best first (all with some clue)
    explanations: list[str] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    threshold: float = THRESHOLD

    @property
    def named(self) -> list[Finding]:
        return [f for f in self.findings if f.confidence >= self.threshold]

    @property
    def top(self) -> Finding | None:
        named = self.named
        return named[0] if named else None

    @property
    def cause_ids(self) -> set[str]:
        return {c for f in self.named for c in f.causes}

    @property
    def groups(self) -> list[str]:
        return [f.group.id for f in self.named]

    def to_json(self) -> dict[str, Any]:
        return {"groups": [{"group": f.group.id, "causes": list(f.causes), "confidence": round(f.confidence, 3),
                            "named": f.confidence >= self.threshold, "title": f.group.title_en,
                            "evidence": [{"code": c.code, "weight": c.weight, "text": c.text} for c in f.clues]}
                           for f in self.findings],
                "threshold": self.threshold, "explanations": list(self.explanations)}

    def render(self, lang: str = "both") -> str:
        cat = load()
        lines = []
        for f in self.named:
            lines.append(f"• {f.group.title(lang)}  [{', '.join(f.causes)}]  confidence {f.confidence:.2f}")
            for c in f.clues:
                lines.append(f"  evidence: {c.text}  ({c.code})")
            shown = set()
            for cid in f.causes:
                cause = cat.causes[cid]
                name = f"{cause.zh} {cause.en}" if lang == "both" else (cause.zh if lang == "zh" else cause.en)
                lines.append(f"  {cid} {name}")
                fault = next((x for x in cat.covering(cid) if x.group == f.group.id), None)
                if fault is not None and fault.id not in shown:
                    shown.add(fault.id)
                    lines.append(f"     检测 detect: {fault.detect_zh} / {fault.detect_en}")
                    lines.append(f"     处理 remedy: {fault.fix_zh} / {fault.fix_en}")
        weak = [f for f in self.findings if f.confidence < self.threshold]
        if weak:
            lines.append("also considered (below the threshold): " + ", ".join(
                f"{f.group.id} {f.confidence:.2f}" for f in weak))
        lines.extend(f"note: {x}" for x in self.explanations)
        return "\n".join(lines) if self.named or self.explanations else "no fault found" + (
            "\n" + lines[0] if weak else "")

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)


Rule = Callable[[Evidence], list[Clue]]
RULES: dict[str, Rule] = {}


def rule(group: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        if group in RULES:
            raise ValueError(f"two rules for group {group}")
        RULES[group] = fn
        return fn

    return register


# --- shared predicates --------------------------------------------------------------------------------
CHIP_TROUBLE = ("reader.atr_timeout", "reader.atr_parity", "reader.parity_failed", "reader.card_mute",
                "reader.card_reset", "pcsc.0x80100068", "pcsc.0x80100066", "reader.transmission", "chip.fallback")
STRIPE_TROUBLE = "stripe.t2."
NET_FAIL = ("tcp.response_timeout", "tcp.reset", "tcp.closed", "tcp.refused", "tcp.unreachable",
            "tcp.connect_timeout", "tcp.connect_failed")


def _health_off(ev: Evidence) -> str | None:
    """What the terminal's own sensors say is wrong (trace evidence), if anything."""
    v, t = ev.health.get("supply_v"), ev.health.get("temperature_c")
    if v is not None and v < 4.75:
        return "supply"
    if t is not None and not 0 <= t <= 45:
        return "temperature"
    return None


def _ohms(ev: Evidence) -> tuple[float | None, float | None]:
    return ev.num("multimeter.contact_ohms"), ev.num("multimeter.after_cleaning_ohms")


def _env_nominal(ev: Evidence) -> bool:
    t, f = ev.num("thermometer.c"), ev.num("fieldmeter.v")
    return (t is None or 0 <= t <= 45) and (f is None or f < 0.15)


def _ping_ok(ev: Evidence) -> bool | None:
    replies, rtt = ev.num("ping.replies"), ev.num("ping.rtt_s")
    if replies is None:
        return None
    return replies >= 4 and (rtt is None or rtt < 0.5)


def _stripe_failures(ev: Evidence) -> list[str]:
    return [c for c in ev.has_prefix(STRIPE_TROUBLE) if c != "stripe.t2.format"]


# --- hardware: contacts, wear, power, environment -----------------------------------------------------
@rule("contacts")
def _contacts(ev: Evidence) -> list[Clue]:
    ohms, after = _ohms(ev)
    if not ev.measured:
        # from the trace alone: chip read errors and contacts that open mid-command are most often the
        # contacts (the multimeter, voltmeter, thermometer and field meter tell the rest apart)
        trouble = [c for c in (*CHIP_TROUBLE, "pcsc.0x80100069") if ev.has(c) and c != "chip.fallback"]
        if not trouble or (ev.has("slot.empty") and ev.has("reader.card_removed")) or _health_off(ev):
            return []
        return [Clue(1.2, trouble[0], f"chip read errors ({', '.join(trouble)}); measure to tell contacts, supply, "
                     "temperature, interference and the card apart")]
    if ohms is None or ohms <= 5.0 or (after is not None and after > 5.0):
        return []
    out = [Clue(2.0, "multimeter.contact_ohms", f"contacts read {ohms:g} Ω (clean < 1 Ω)"
                + (f", {after:g} Ω after cleaning" if after is not None else ""))]
    trouble = [c for c in (*CHIP_TROUBLE, "pcsc.0x80100069") if ev.has(c)]
    if trouble:
        out.append(Clue(1.0, trouble[0], f"chip read errors ({', '.join(trouble)})"))
    elif (ev.num("reader.counter.retransmissions") or 0) > 0:
        out.append(Clue(0.5, "reader.counter.retransmissions",
                        f"{ev.num('reader.counter.retransmissions'):g} characters repeated (parity errors)"))
    return out


@rule("aging")
def _aging(ev: Evidence) -> list[Clue]:
    ohms, after = _ohms(ev)
    if ohms is None or after is None or after <= 5.0:
        return []
    return [Clue(2.5, "multimeter.after_cleaning_ohms",
                 f"contacts read {ohms:g} Ω and still {after:g} Ω after cleaning: worn, not dirty")]


@rule("power")
def _power(ev: Evidence) -> list[Clue]:
    supply, minv = ev.num("voltmeter.supply_v"), ev.num("voltmeter.min_card_v")
    if not ev.measured:
        trouble = [c for c in CHIP_TROUBLE if ev.has(c)]
        if trouble and _health_off(ev) == "supply":
            return [Clue(2.0, "terminal.health", f"the terminal's supply monitor read {ev.health['supply_v']:g} V "
                         f"(nominal 5 V) and the chip failed ({', '.join(trouble)})")]
        return []
    ohms, _ = _ohms(ev)
    if supply is not None and supply < 4.75:
        out = [Clue(2.5, "voltmeter.supply_v", f"supply {supply:g} V at the reader (nominal 5 V)")]
        trouble = [c for c in CHIP_TROUBLE if ev.has(c)]
        if trouble:
            out.append(Clue(0.5, trouble[0], "the card browned out"))
        return out
    if minv is not None and minv < 4.5 and (ohms is None or ohms < 2.0) and _env_nominal(ev):
        return [Clue(2.0, "voltmeter.min_card_v",
                     f"the card's supply dipped to {minv:g} V during the transaction (class A needs 4.5 V)")]
    return []


@rule("temperature")
def _temperature(ev: Evidence) -> list[Clue]:
    t = ev.num("thermometer.c")
    if not ev.measured:
        trouble = [c for c in CHIP_TROUBLE if ev.has(c)]
        if trouble and _health_off(ev) == "temperature":
            return [Clue(2.0, "terminal.health", f"the terminal's case sensor read {ev.health['temperature_c']:g} °C "
                         f"(operating 0–45 °C) and the chip failed ({', '.join(trouble)})")]
        return []
    if t is None or 0 <= t <= 45:
        return []
    return [Clue(2.5, "thermometer.c", f"ambient {t:g} °C (operating 0–45 °C)")]


@rule("emi")
def _emi(ev: Evidence) -> list[Clue]:
    f = ev.num("fieldmeter.v")
    if f is None or f < 0.15:
        return []
    out = [Clue(2.0, "fieldmeter.v", f"field {f:g} V rms at the reader (quiet < 0.05 V)")]
    errs = _stripe_failures(ev) + [c for c in CHIP_TROUBLE if ev.has(c)]
    if errs:
        out.append(Clue(0.5, errs[0], "read errors"))
    return out


@rule("insertion")
def _insertion(ev: Evidence) -> list[Clue]:
    seating = ev.r("inspection.seating")
    if seating in (None, "ok"):
        return []
    return [Clue(3.0, "inspection.seating", f"the card sits {seating} in the slot: the chip misses the contacts")]


@rule("chip")
def _chip(ev: Evidence) -> list[Clue]:
    ohms, _ = _ohms(ev)
    supply = ev.num("voltmeter.supply_v")
    mute = [c for c in ("reader.card_mute", "reader.atr_timeout", "chip.fallback") if ev.has(c)]
    if not mute or ev.r("testcard.ok") is not True:
        return []
    if (ohms is not None and ohms > 2) or (supply is not None and supply < 4.75) or not _env_nominal(ev):
        return []
    if ev.r("inspection.seating") not in (None, "ok"):
        return []
    return [Clue(2.5, "testcard.ok", "the customer's chip gives no answer to reset; a test card reads in the same "
                 "reader, contacts and supply are fine")]


@rule("reader-dead")
def _reader_dead(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("reader.no_response", "reader.lost") if ev.has(c)]
    if ev.r("reader.responds") is False and ev.r("reader.error") in ("reader.no_response", "reader.lost"):
        codes.append("reader.responds")
    if codes:
        return [Clue(2.5, codes[0], "the reader stops answering (" + ", ".join(codes) + ")")]
    lost = ev.num("reader.counter.lost") or 0
    if lost > 0:
        return [Clue(2.5, "reader.counter.lost", f"the reader dropped off the bus {lost:g} times (loose connection)")]
    return []


@rule("sensor")
def _sensor(ev: Evidence) -> list[Clue]:
    out = []
    if not ev.measured:
        if ev.has("reader.removal_unconfirmed"):
            out.append(Clue(1.5, "reader.removal_unconfirmed", "the reader never reported the card out: its seat "
                            "switch or latch (inspect the slot to tell)"))
        if ev.has("reader.no_card"):
            out.append(Clue(1.5, "reader.no_card", "the reader never reported a card in: its card-present sensor"))
        return out
    if ev.has("reader.removal_unconfirmed"):
        if ev.r("latch.releases") is False:
            out.append(Clue(3.0, "latch.releases", "the latch does not release the card"))
        elif ev.r("seat.empty_reads_present") is True:
            out.append(Clue(3.0, "seat.empty_reads_present",
                            "with the slot empty the reader still reports a card: the seat switch is stuck"))
    if ev.has("reader.no_card") and ev.r("slot.card_in") is True and ev.r("slot.reader_says_present") is False:
        out.append(Clue(3.0, "slot.reader_says_present", "a card is in the slot but the reader never saw it: "
                        "the card-present sensor is dead"))
    return out


@rule("card-pulled")
def _card_pulled(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("reader.card_removed", "pcsc.0x80100069") if ev.has(c)]
    ohms, _ = _ohms(ev)
    # the terminal found the slot empty afterwards (a card that only *seemed* to leave is still in)
    if not codes or not ev.has("slot.empty") or (ohms is not None and ohms > 5):
        return []
    return [Clue(2.5, codes[0], "the card left the reader before the transaction finished, and it is out of the "
                 "slot now")]


# --- magstripe --------------------------------------------------------------------------------------
@rule("stripe-data")
def _stripe_data(ev: Evidence) -> list[Clue]:
    if not ev.has("stripe.t2.format"):
        return []
    return [Clue(3.0, "stripe.t2.format", "track 2 reads with a good LRC but its data is cut short "
                 "(no separator, expiry or service code)")]


@rule("stripe-damaged")
def _stripe_damaged(ev: Evidence) -> list[Clue]:
    fails = _stripe_failures(ev)
    if not fails or ev.r("swipe.careful_ok") is not False or not _env_nominal(ev):
        return []
    return [Clue(2.5, "swipe.careful_ok", "the technician's own slow, level swipe of the card fails too: "
                 "the stripe is damaged")]


@rule("swipe")
def _swipe(ev: Evidence) -> list[Clue]:
    fails = _stripe_failures(ev)
    if not ev.measured:
        return [Clue(1.2, fails[0], "the swipes fail (most often the way the card is swiped; a careful swipe by "
                     "the technician tells a damaged stripe apart)")] if fails else []
    if not fails or ev.r("swipe.careful_ok") is not True or not _env_nominal(ev):
        return []
    return [Clue(2.5, fails[0], "the cardholder's swipes fail but the technician's slow, level swipe of the same "
                 "card reads: too fast or tilted")]


# --- cardholder and operator -------------------------------------------------------------------------
@rule("pin")
def _pin(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("host.rc.55", "host.rc.75", "chip.pin_blocked", "screen.PIN_RETRY") if ev.has(c)]
    return [Clue(3.0, codes[0], "the PIN did not match (" + ", ".join(codes) + ")")] if codes else []


@rule("procedure")
def _procedure(ev: Evidence) -> list[Clue]:
    out = []
    if ev.has("terminal.not_signed_on"):
        out.append(Clue(2.5, "terminal.not_signed_on", "a transaction was started before sign-on"))
    if ev.has("pin.cancelled"):
        out.append(Clue(2.0, "pin.cancelled", "PIN entry was cancelled or abandoned"))
    return out


@rule("locked")
def _locked(ev: Evidence) -> list[Clue]:
    if ev.has("terminal.locked") or ev.r("terminal.locked") is True:
        n = ev.codes.get("operator.wrong_password", 0)
        return [Clue(3.0, "terminal.locked", "the terminal is locked"
                     + (f" after {n} wrong operator passwords" if n else ""))]
    return []


# --- host, account, configuration -------------------------------------------------------------------
@rule("permission")
def _permission(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("host.rc.57", "host.rc.58", "host.rc.62") if ev.has(c)]
    if codes:
        return [Clue(3.0, codes[0], "the host does not permit this card or terminal (" + ", ".join(codes) + ")")]
    if ev.has("host.rc.14") and ev.txn != "sign_on":
        return [Clue(2.0, "host.rc.14", "the host does not take this card (14: blocked or unknown at the issuer)")]
    return []


@rule("version")
def _version(ev: Evidence) -> list[Clue]:
    if ev.has("host.rc.A4") or ev.r("config.version_ok") is False:
        return [Clue(3.0, "host.rc.A4", "the host refuses the terminal's software version")]
    return []


@rule("config-card-type")
def _card_type(ev: Evidence) -> list[Clue]:
    codes = ev.has_prefix("config.entry_disabled.")
    return [Clue(3.0, codes[0], "the configuration switches this card entry off")] if codes else []


@rule("config-host")
def _config_host(ev: Evidence) -> list[Clue]:
    fails = [c for c in ("tcp.refused", "tcp.unreachable", "tcp.connect_timeout", "tcp.connect_failed") if ev.has(c)]
    if not ev.measured:
        return [Clue(1.0, "tcp.refused", "the host refuses the connection: a wrong address or port in the settings "
                     "is as likely as a link that is down")] if ev.has("tcp.refused") else []
    if not fails or ev.r("config.host_matches") is not False:
        return []
    return [Clue(3.0, "config.host_matches", "the terminal is set to another host address than the acquirer's "
                 "parameter sheet; connecting fails (" + ", ".join(fails) + ")")]


@rule("keys")
def _keys(ev: Evidence) -> list[Clue]:
    refused = ev.txn == "sign_on" and (ev.has("host.rc.A0") or ev.has("keys.check_value"))
    if refused and not ev.measured:
        return [Clue(1.5, "host.rc.A0" if ev.has("host.rc.A0") else "keys.check_value",
                     "the sign-on is refused for its MAC or key check value: the terminal master key is most "
                     "likely not the acquirer's (compare the key check values)")]
    if not refused or ev.r("keys.kcv_match") is not False:
        return []
    return [Clue(3.0, "keys.kcv_match", "the terminal master key's check value differs from the acquirer's key "
                 "sheet; the sign-on is refused")]


@rule("keys-rotated")
def _keys_rotated(ev: Evidence) -> list[Clue]:
    refused = ev.has("host.rc.77") or (ev.txn != "sign_on" and ev.has("host.rc.A0"))
    if refused and not ev.measured:
        return [Clue(1.5, "host.rc.77" if ev.has("host.rc.77") else "host.rc.A0",
                     "the host refuses the working keys in a transaction after a good sign-on: it changed them")]
    if not refused or ev.r("keys.kcv_match") is not True or (ev.num("echo.failures") or 0) > 0:
        return []
    return [Clue(2.5, "host.rc.77" if ev.has("host.rc.77") else "host.rc.A0",
                 "the host no longer takes the working keys (77/A0) although the master key is right: the host "
                 "rotated its keys; the terminal signs on again")]


@rule("port-conflict")
def _port_conflict(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("serial.busy", "reader.busy", "pcsc.0x8010000B") if ev.has(c)]
    return [Clue(3.0, codes[0], "another program holds the reader")] if codes else []


@rule("driver")
def _driver(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("pcsc.0x8010001D", "pcsc.0x8010002E", "pcsc.0x80100009", "pcsc.0x80100017",
                         "reader.service_down", "reader.absent") if ev.has(c)]
    return [Clue(3.0, codes[0], "the reader's driver or PC/SC service is missing (" + ", ".join(codes) + ")")] \
        if codes else []


@rule("crash")
def _crash(ev: Evidence) -> list[Clue]:
    if ev.context.get("journal.recovered") or ev.has("journal.recovered"):
        return [Clue(3.0, "journal.recovered", "the journal held an unfinished purchase at start-up: the application "
                     "stopped in the middle of a transaction")]
    return []


@rule("storage")
def _storage(ev: Evidence) -> list[Clue]:
    if ev.has("journal.full") or ev.r("storage.free_pages") == 0:
        return [Clue(3.0, "journal.full", "the terminal's storage is full: nothing can be journalled, nothing is sent")]
    return []


@rule("clock")
def _clock(ev: Evidence) -> list[Clue]:
    skew = ev.num("clock.skew_s")
    noted = ev.facts.get("clock.host_skew", {}).get("skew_s")
    if skew is None and isinstance(noted, int | float):
        skew = float(noted)
    if not ev.has("card.expired_local") or skew is None or abs(skew) < 86_400:
        return []
    return [Clue(3.0, "clock.skew_s", f"the terminal's clock is {abs(skew) / 86_400:.0f} days "
                 f"{'ahead' if skew > 0 else 'behind'}: a valid card looks expired")]


@rule("card-declined")
def _card_declined(ev: Evidence) -> list[Clue]:
    if ev.has("chip.declined_after_online"):
        return [Clue(3.0, "chip.declined_after_online", "the card declined (AAC) after the host approved: reversed")]
    return []


# --- network -------------------------------------------------------------------------------------------
@rule("dns")
def _dns(ev: Evidence) -> list[Clue]:
    codes = [c for c in ("dns.nxdomain", "dns.timeout", "dns.failed") if ev.has(c)]
    if codes:
        return [Clue(3.0, codes[0], "the host name does not resolve")]
    secs = ev.num("dns.seconds")
    if ev.r("dns.ok") is False:
        return [Clue(2.0, "dns.ok", "a DNS lookup of the host fails")]
    if secs is not None and secs > 3.0:
        return [Clue(2.5, "dns.seconds", f"resolving the host takes {secs:g} s")]
    return []


@rule("network")
def _network(ev: Evidence) -> list[Clue]:
    replies = ev.num("ping.replies")
    fails = [c for c in NET_FAIL if ev.has(c)]
    out = []
    if not ev.measured:
        broken = [c for c in ("tcp.reset", "tcp.unreachable", "tcp.connect_timeout", "tcp.refused") if ev.has(c)]
        if broken:
            return [Clue(1.2, broken[0], "the connection to the host breaks or cannot be made (" + ", ".join(broken)
                         + "); ping and the configured address tell the link and the settings apart")]
        return []
    if ev.has("tcp.reset"):
        out.append(Clue(2.0, "tcp.reset", "the connection was reset in the middle of an exchange"))
    if replies is not None and replies < 4:
        w = 2.0 if fails else 1.0
        out.append(Clue(w, "ping.replies", f"ping: {replies:g} of 4 replies" + (f" ({', '.join(fails)})" if fails
                                                                                  else "")))
    return out


@rule("congestion")
def _congestion(ev: Evidence) -> list[Clue]:
    rtt = ev.num("ping.rtt_s")
    slow = [t for t in ev.response_s if t > 3.0]
    if not ev.measured:
        return [Clue(1.2, "response.seconds", f"answers took {', '.join(f'{t:g}' for t in slow)} s")] if slow else []
    if rtt is None or rtt < 1.0 or not (slow or ev.has("tcp.response_timeout")):
        return []
    return [Clue(2.5, "ping.rtt_s", f"round trip {rtt:g} s on the link" + (
        f"; answers took {', '.join(f'{t:g}' for t in slow)} s" if slow else "; the answer timed out"))]


@rule("host-busy")
def _host_busy(ev: Evidence) -> list[Clue]:
    out = []
    codes = [c for c in ("host.rc.91", "host.rc.96") if ev.has(c)]
    if codes:
        out.append(Clue(2.5, codes[0], "the host answers busy / malfunction (" + ", ".join(codes) + ")"))
    slow = [t for t in ev.response_s if t > 10]
    rtt = ev.num("ping.rtt_s")
    if slow and rtt is not None and rtt < 1.0:
        out.append(Clue(2.0, "response.seconds", f"the link is fine but the host took {max(slow):g} s to answer"))
    elif _ping_ok(ev) and ev.has("tcp.response_timeout") and not ev.has("iso.unmatched"):
        echo_slow = ev.r("echo.ok") is False or (ev.num("echo.seconds") or 0) > 5 or ev.r("echo.rc") in ("91", "96")
        if echo_slow:
            out.append(Clue(2.0, "echo.seconds", "the link is fine but the host is slow to answer even an echo test"))
    if ev.r("echo.rc") in ("91", "96") and not codes:
        out.append(Clue(1.0, "echo.rc", f"the echo test is answered {ev.r('echo.rc')}"))
    return out


@rule("lost-answer")
def _lost_answer(ev: Evidence) -> list[Clue]:
    if not ev.measured:
        only_timeout = ev.has("tcp.response_timeout") and not ev.has(*(c for c in NET_FAIL
                                                                           if c != "tcp.response_timeout"))
        if not only_timeout or ev.has("iso.unmatched", "host.rc.91", "host.rc.96"):
            return []
        return [Clue(1.2, "tcp.response_timeout", "the request left and no answer came on an open connection "
                     "(an echo test tells a lost answer from a slow host or link)")]
    if not ev.has("tcp.response_timeout") or not _ping_ok(ev) or ev.has("iso.unmatched"):
        return []
    if ev.r("echo.ok") is True and ev.r("echo.rc") == "00" and (ev.num("echo.seconds") or 0) < 2:
        return [Clue(2.5, "tcp.response_timeout", "no answer came although the link and the host answer an echo "
                     "test at once: the answer was lost on the way")]
    return []


@rule("data-errors")
def _data_errors(ev: Evidence) -> list[Clue]:
    structural = [c for c in ("iso.undecodable", "iso.unmatched", "iso.no_rc", "host.rc.30") if ev.has(c)]
    if ev.has("tcp.closed") and not ev.has("tcp.reset"):
        structural.append("tcp.closed")
    macs = [c for c in ("mac.mismatch", "mac.missing", "mac.misplaced") if ev.has(c)]
    if ev.txn != "sign_on" and ev.has("host.rc.A0"):
        macs.append("host.rc.A0")
    if ev.r("keys.kcv_match") is False or ev.r("config.profile_matches") is False or ev.has("host.rc.77"):
        return []
    if not ev.measured and ev.txn == "sign_on":
        return []                   # a sign-on nobody can read is a specification mismatch (incompatible)
    if structural:
        return [Clue(2.0, structural[0], "answers arrive damaged or not as sent (" + ", ".join(structural) + ")")]
    # MAC failures alone: damaged bytes, or keys the host changed — repeated echo tests tell them apart
    if macs and (ev.num("echo.failures") or 0) > 0:
        return [Clue(2.0, macs[0], f"MAC failures ({', '.join(macs)}), and {ev.num('echo.failures'):g} of "
                     f"{ev.num('echo.count'):g} echo tests fail too: the line damages messages")]
    return []


@rule("incompatible")
def _incompatible(ev: Evidence) -> list[Clue]:
    if not ev.measured:
        codes = [c for c in ("iso.undecodable", "tcp.closed", "host.rc.30") if ev.has(c)]
        if ev.txn == "sign_on" and codes:
            return [Clue(1.5, codes[0], "the host cannot read the sign-on or the terminal its answer ("
                         + ", ".join(codes) + "): they speak different message specifications")]
        return []
    if ev.r("config.profile_matches") is not False:
        return []
    codes = [c for c in ("iso.undecodable", "tcp.closed", "host.rc.30", "tcp.response_timeout") if ev.has(c)]
    if not codes:
        return []
    return [Clue(3.0, "config.profile_matches", "the terminal speaks another message specification than the host "
                 "(" + ", ".join(codes) + ")")]


# --- what a failed transaction must show for a measured problem to be its cause -----------------------
_CHIP_SYMPTOMS = (*CHIP_TROUBLE, "pcsc.0x80100069", "reader.card_removed")
_NET_SYMPTOMS = (*NET_FAIL, "dns.nxdomain", "dns.timeout", "dns.failed", "iso.undecodable", "iso.unmatched")
SYMPTOMS: dict[str, Callable[[Evidence], bool]] = {
    "contacts": lambda ev: ev.has(*_CHIP_SYMPTOMS),
    "aging": lambda ev: ev.has(*_CHIP_SYMPTOMS),
    "power": lambda ev: ev.has(*_CHIP_SYMPTOMS),
    "temperature": lambda ev: ev.has(*_CHIP_SYMPTOMS),
    "insertion": lambda ev: ev.has(*_CHIP_SYMPTOMS),
    "emi": lambda ev: ev.has(*_CHIP_SYMPTOMS) or bool(_stripe_failures(ev)),
    "dns": lambda ev: ev.has(*_NET_SYMPTOMS),
    "network": lambda ev: ev.has(*_NET_SYMPTOMS),
    "version": lambda ev: ev.has("host.rc.A4"),
    "locked": lambda ev: ev.has("terminal.locked"),
    "storage": lambda ev: ev.has("journal.full"),
    "host-busy": lambda ev: ev.has("host.rc.91", "host.rc.96", "tcp.response_timeout")
    or any(t > 10 for t in ev.response_s),
}
"""For the groups whose rules can rest on a measurement alone: the trace evidence that ties the
measured problem to the failed transaction. Without it the problem is real but not this failure's
cause: it is listed below the threshold (the technician still sees it)."""
LATENT = 0.2
"""How much a measured problem with no symptom in the failed transaction counts."""


def diagnose(trace: Sequence[TraceEntry], outcomes: Sequence[object] = (), measurements: dict[str, Any] | None = None,
             *, catalogue: Catalogue | None = None) -> Diagnosis:
    """The ranked cause groups for the failed transaction in ``trace`` given the self-test's readings.

    With a failed transaction, a group is named only with evidence from that transaction (a
    measurement alone makes it a candidate); with none (a self-test after a good sign-on), the
    measurements speak for themselves."""
    cat = catalogue or load()
    ev = gather(trace, measurements)
    failed = ev.approved is False
    found = []
    for gid, fn in RULES.items():
        clues = tuple(fn(ev))
        score = sum(c.weight for c in clues)
        if failed and gid in SYMPTOMS and not SYMPTOMS[gid](ev) and not any(c.code in ev.codes for c in clues):
            score *= LATENT
        if score > 0 and gid in cat.groups:
            found.append(Finding(cat.groups[gid], 1.0 - math.exp(-score), clues))
    found.sort(key=lambda f: (-f.confidence, f.group.id))
    explanations = list(ev.explanations)
    if ev.has("screen.REVERSAL_DONE") or any(c == "journal.reversal_done" for c in ev.codes):
        explanations.append("the purchase was reversed and the host acknowledged it: the cardholder is not charged "
                            "(B20), and the journal shows the transaction and its reversal")
    return Diagnosis(found, explanations, dict(ev.readings))
