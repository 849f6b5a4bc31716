"""Scoring a run: which of its faults struck — changed anything at all.

A fault struck when its injector acted (the reader's mechanisms were hit, the proxy or the resolver
changed something, a host rule applied) or what it changes was reached (a habit needs its moment, a
stripe a swipe, a refused host a request). This scores the diagnosis only (a fault that never struck
cannot be diagnosed); the diagnosis itself never reads it. :meth:`faults.world.Run.struck` asks
:func:`what_struck` with the run's parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emulator.trace import Kind, TraceEntry
from faults.injectors import HostRuleAction, HostStateAction, Points
from faults.network import FaultProxy, FaultyResolver
from faults.seam import Injection


def what_struck(injection: Injection, trace: Sequence[TraceEntry], points: Points | None, proxy: FaultProxy | None,
                resolver: FaultyResolver | None, requests: Sequence[tuple[float, str]]) -> dict[str, bool]:
    """Which of ``injection``'s faults changed anything in a run, from its ``trace``, its fault
    ``points``, its fault ``proxy`` and ``resolver``, and the ``requests`` (clock time, MTI) its bundled
    host decoded."""
    screens = {e.what for e in trace if e.kind is Kind.SCREEN}
    codes = {e.data.get("code") for e in trace}
    swiped = any(e.kind is Kind.READER and e.what == "swipe read" for e in trace)
    chip = any(e.kind is Kind.APDU for e in trace) or bool(codes & {"reader.atr_timeout", "reader.card_mute",
                                                                    "chip.fallback", "reader.card_reset"})
    stripe_errors = "SWIPE_AGAIN" in screens or any(isinstance(c, str) and c.startswith("stripe.") for c in codes)
    began = any(e.kind is Kind.TXN and e.what == "begin" and e.data.get("txn") not in ("sign_on", "sign_off")
                for e in trace)
    signed = any(e.kind is Kind.TXN and e.what == "begin" and e.data.get("txn") == "sign_on" for e in trace)
    out: dict[str, bool] = {}
    for spec in injection.specs:
        inj, v = spec.fault.injector, spec.values
        armed = spec in injection.ever
        if inj in ("reader", "environment"):
            hits = points.reader.hits if points and points.reader else {}
            hit = armed and any(hits.get(m, 0) for m in _mechanisms(v))
            if inj == "environment" and _num(v, "field_v") > 0 and swiped and stripe_errors:
                hit = True                          # the field reaches the magstripe head too
        elif inj == "link":
            refused = v.get("refuse") is True and "tcp.refused" in codes
            hit = armed and (bool(proxy and proxy.struck) or refused)
        elif inj == "dns":
            hit = armed and bool(resolver and resolver.struck)
        elif inj == "host-rule":
            hit = any(r.applied > 0 for a in injection.actions_of(spec) if isinstance(a, HostRuleAction)
                      for r in a.rules)
        elif inj == "host-state":
            times = [a.armed_at for a in injection.actions_of(spec)
                     if isinstance(a, HostStateAction) and a.armed_at is not None]
            hit = bool(times) and any(t >= min(times) and mti in ("0100", "0200", "0220")
                                      for t, mti in requests)
        elif inj == "stripe":
            hit = swiped and stripe_errors
        elif inj == "chip":
            hit = chip if v.get("declines_after_online") is not True else \
                "chip.declined_after_online" in codes
        elif inj == "habits":
            hit = _habit_struck(v, screens, swiped and stripe_errors)
        elif inj == "clock":
            hit = armed and "card.expired_local" in codes
        elif inj == "journal":
            hit = armed and began
        elif inj == "config":
            hit = signed or began
        elif inj == "steps":
            hit = _steps_struck(str(v.get("steps", "")), codes)
        else:                                   # port-busy, pcsc: they shape the whole run
            hit = True
        out[spec.id] = bool(hit)
    return out


def _steps_struck(steps: str, codes: set[Any]) -> bool:
    """Operator steps change something when their effect happened: a crash that left a purchase
    to recover, a transaction before the sign-on, wrong operator passwords."""
    if "crash_purchase" in steps:
        return "journal.recovered" in codes
    if "operator:" in steps:
        return bool(codes & {"operator.wrong_password", "terminal.locked"})
    if not steps.startswith("sign_on"):
        return "terminal.not_signed_on" in codes
    return True


def _habit_struck(v: dict[str, Any], screens: set[str], swiped: bool) -> bool:
    if any(k in v for k in ("speed_ips", "skew_deg")):
        return swiped
    if v.get("wrong_pins") or v.get("cancel_pin") is True:
        return "ENTER_PIN" in screens
    moments = {"reading": "READING_CARD", "pin": "ENTER_PIN", "online": "PROCESSING"}
    moment = moments.get(str(v.get("pulls_card_at")))
    if moment is not None:
        return moment in screens
    if v.get("removes_card") is False:
        return "REMOVE_CARD" in screens
    return True


def _num(values: dict[str, Any], key: str) -> float:
    x = values.get(key, 0)
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0.0


def _mechanisms(v: dict[str, Any]) -> set[str]:
    """How a reader or environment fault's settings can change what happens (the reader's
    :attr:`~faults.reader.FaultyReader.hits`)."""
    out: set[str] = set()
    if _num(v, "contact_ohms") > 1.0 or _num(v, "dirt_per_insert_ohms") > 0 or _num(v, "wear_per_insert_ohms") > 0:
        out |= {"brownout", "parity"}
    if _num(v, "bounce_probability") > 0:
        out.add("bounce")
    if ("supply_v" in v and _num(v, "supply_v") < 5.0) or _num(v, "sag_v") > 0 or _num(v, "supply_wear_v") > 0:
        out.add("brownout")
    if v.get("seating") not in (None, "ok"):
        out |= {"seating", "bounce"}
    for flag, mechanism in (("dead", "dead"), ("seat_stuck", "seat"), ("latch_stuck", "latch"),
                            ("sensor_dead", "sensor")):
        if v.get(flag) is True:
            out.add(mechanism)
    if _num(v, "flap_probability") > 0:
        out.add("flap")
    if _num(v, "wtx_s") > 0:
        out.add("wtx")
    if "temperature_c" in v:
        out.add("temperature")
    if _num(v, "field_v") > 0:
        out |= {"emi", "parity"}
    return out
