"""Injectors: how each kind of fault is put into a terminal, by wrapping, never editing.

A fault's parameters (typed by the catalogue) become a typed setting — :class:`ReaderFaults`,
:class:`LinkFaults`, :class:`Habits`, :class:`HostRule` … — and then one of two things happens:

* **before power-on** the :class:`Plan` changes: what card is in the customer's hand, how the
  terminal is configured, which reader backend it has, what steps the operator takes;
* **at the fault's onset** an :class:`Action` is armed on the running rig's fault points
  (:class:`Points`: the reader wrapper, the link proxy, the resolver, the bundled host, the
  environment, the terminal's clock, its journal, the cardholder) — and disarmed on undo.

:mod:`faults.seam` decides when; this module decides what.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from emulator.config import TerminalConfig
from emulator.host.rules import HostRule
from emulator.host.server import HostServer
from emulator.host.store import HostStore, TerminalRow
from emulator.journal import Journal
from faults.card import DeadChip
from faults.environment import Environment, SkewedClock
from faults.model import FaultSpec, ParamValue
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.reader import FaultyReader, ReaderFaults
from hardware.cards.profiles import CardProfile, ChipStatus, DamageRegion
from hardware.ports import VirtualCard
from protocol.errors import ConfigError


# --- what is built before power-on ------------------------------------------------------------------
@dataclass(slots=True)
class Habits:
    """How the customer and the operator behave (the scripted cardholder and PIN pad)."""

    prefer_chip: bool = True
    removes_card: bool = True
    pulls_card_at: str = ""                 # "", "reading", "pin", "online"
    swipe: dict[str, float] | None = None    # SwipeParams fields (speed_ips, skew_deg, …)
    pins: list[str] | None = None            # PINs typed, in order ("" = the card's own; the last repeats)
    cancel_pin: bool = False


@dataclass(slots=True)
class Plan:
    """The world before power-on: config, card, reader, host, steps."""

    cfg: TerminalConfig
    card: str = "demo"
    txn: str = "balance"
    amount: int = 10_00
    steps: list[str] | None = None
    reader_url: str | None = None
    hold_port: bool = False                  # another program holds the serial port
    pcsc_service: bool = True
    habits: Habits = field(default_factory=Habits)
    profile_changes: list[Callable[[CardProfile], CardProfile]] = field(default_factory=list)
    card_wrappers: list[Callable[[VirtualCard], VirtualCard]] = field(default_factory=list)
    stripe_keep: int | None = None           # the stripe holds only this many characters per track
    host_changes: list[Callable[[HostStore, str], None]] = field(default_factory=list)   # before the terminal starts
    host_override: str | None = None         # the terminal is configured with another host address
    needs_bundled_host: bool = False
    seed: int = 7


# --- what acts on the running rig ---------------------------------------------------------------------
@dataclass(slots=True)
class Points:
    """The fault points of one running rig (``None``: that point does not exist here)."""

    environment: Environment
    clock: SkewedClock
    reader: FaultyReader | None = None
    link: FaultProxy | None = None
    resolver: FaultyResolver | None = None
    host: HostServer | None = None
    messages: RuleSink | None = None         # a message proxy in front of someone else's host
    journal: Journal | None = None
    card_pan: str = ""
    terminal_id: str = ""


class RuleSink(Protocol):
    """Where host rules act when there is no bundled host: a proxy that understands the messages
    (:class:`faults.wire.MessageProxy`) answers, delays or drops them on the host's behalf."""

    def add(self, rule: HostRule) -> None: ...

    def remove(self, rule: HostRule) -> None: ...


class Action(Protocol):
    """What an injector arms on a running rig's points and disarms again (last armed, first disarmed)."""

    def arm(self, pts: Points) -> None: ...

    def disarm(self, pts: Points) -> None: ...


def _num(values: dict[str, ParamValue], key: str, default: float = 0.0) -> float:
    v = values.get(key, default)
    return float(v) if isinstance(v, int | float) else default


def _flag(values: dict[str, ParamValue], key: str) -> bool:
    return values.get(key) is True


def _need(point: object, what: str) -> Any:
    if point is None:
        raise ConfigError(f"it acts on {what}, which this setup does not have")
    return point


@dataclass(slots=True)
class ReaderAction:
    """Reader faults armed on the :class:`FaultyReader` around the card reader."""

    settings: ReaderFaults

    def arm(self, pts: Points) -> None:
        _need(pts.reader, "the card reader").arm(self.settings)

    def disarm(self, pts: Points) -> None:
        if pts.reader is not None:
            pts.reader.disarm(self.settings)


@dataclass(slots=True)
class EnvironmentAction:
    """A temperature or an electromagnetic field around the terminal (restored on disarm)."""

    temperature_c: float | None = None
    field_v: float | None = None
    _saved: tuple[float, float] | None = None

    def arm(self, pts: Points) -> None:
        env = pts.environment
        self._saved = (env.temperature_c, env.field_v)
        if self.temperature_c is not None:
            env.temperature_c = self.temperature_c
        if self.field_v is not None:
            env.field_v = max(env.field_v, self.field_v)

    def disarm(self, pts: Points) -> None:
        if self._saved is not None:
            pts.environment.temperature_c, pts.environment.field_v = self._saved


@dataclass(slots=True)
class LinkAction:
    """Network impairments armed on the fault proxy on the terminal's TCP path."""

    settings: LinkFaults

    def arm(self, pts: Points) -> None:
        _need(pts.link, "the network link").arm(self.settings)

    def disarm(self, pts: Points) -> None:
        if pts.link is not None:
            pts.link.disarm(self.settings)


@dataclass(slots=True)
class DnsAction:
    """A name-resolution failure or delay armed on the terminal's resolver."""

    mode: str
    delay: float = 0.0

    def arm(self, pts: Points) -> None:
        _need(pts.resolver, "name resolution").arm(self.mode, self.delay)

    def disarm(self, pts: Points) -> None:
        if pts.resolver is not None:
            pts.resolver.disarm()


@dataclass(slots=True)
class HostRuleAction:
    """Host behaviour rules added to the bundled host (or to a message proxy in front of a host)."""

    rules: list[HostRule]

    def arm(self, pts: Points) -> None:
        sink: RuleSink = pts.host.rules if pts.host is not None else \
            _need(pts.messages, "the bundled host (or a message proxy in front of a host)")
        for r in self.rules:
            sink.add(r)

    def disarm(self, pts: Points) -> None:
        sink = pts.host.rules if pts.host is not None else pts.messages
        if sink is not None:
            for r in self.rules:
                sink.remove(r)


@dataclass(slots=True)
class HostStateAction:
    """Account and terminal state at the host: card status and permissions, terminal permissions,
    the software version it accepts, and the working keys it holds (rotated or dropped)."""

    card_status: str | None = None
    card_permissions: str | None = None
    terminal_permissions: str | None = None
    min_version: int | None = None
    keys: str | None = None                 # "rotate": new keys the terminal does not have; "drop": none
    _saved: list[Any] = field(default_factory=list)
    armed_at: float | None = None           # when it was armed (on the clock), for scoring only

    def arm(self, pts: Points) -> None:
        host = _need(pts.host, "the bundled host")
        self.armed_at = pts.clock.now()
        store: HostStore = host.store
        card = store.card(pts.card_pan)
        term = store.terminal(pts.terminal_id)
        self._saved = [card, term]
        if card is not None:
            if self.card_status is not None:
                card = store.update_card(card.pan, status=self.card_status)
            if self.card_permissions is not None:
                store.update_card(card.pan, permissions=frozenset(filter(None, self.card_permissions.split("+"))))
        if term is not None:
            new: TerminalRow = term
            if self.terminal_permissions is not None:
                new = replace(new, permissions=frozenset(filter(None, self.terminal_permissions.split("+"))))
            if self.min_version is not None:
                new = replace(new, min_version=self.min_version)
            if self.keys == "drop":
                new = replace(new, pik=None, mak=None, signed_on=False)
            elif self.keys == "rotate":
                new = replace(new, pik=bytes(b ^ 0x5A for b in new.pik) if new.pik else None,
                              mak=bytes(b ^ 0x5A for b in new.mak) if new.mak else None)
            store.set_terminal(new)
        store.commit()

    def disarm(self, pts: Points) -> None:
        if pts.host is None or not self._saved:
            return
        card, term = self._saved
        if card is not None:
            pts.host.store.set_card(card)
        if term is not None and self.keys is None:      # rotated or dropped keys stay as they are
            pts.host.store.set_terminal(term)
        pts.host.store.commit()


@dataclass(slots=True)
class ClockAction:
    """The terminal's clock set off by an offset, or reset to a date (a flat RTC battery)."""

    offset_s: float = 0.0
    reset_to: dt.datetime | None = None

    def arm(self, pts: Points) -> None:
        if self.reset_to is not None:
            pts.clock.set_reset(self.reset_to)
        pts.clock.offset_s += self.offset_s

    def disarm(self, pts: Points) -> None:
        pts.clock.offset_s -= self.offset_s
        if self.reset_to is not None:
            pts.clock.set_reset(None)


class FullDisk:
    """The journal's database connection on a disk with no room left: every statement that adds a row
    fails as SQLite fails on a full disk (SQLITE_FULL); reads and in-place updates still work."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def execute(self, sql: str, *args: Any) -> Any:
        import sqlite3

        if sql.lstrip().upper().startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.inner.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> Any:
        return self.inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.inner.__exit__(*exc)


@dataclass(slots=True)
class JournalAction:
    """The terminal's storage is full: the journal's connection is put on a :class:`FullDisk`."""

    _saved: Any = None

    def arm(self, pts: Points) -> None:
        journal = _need(pts.journal, "the journal")
        self._saved = journal.db
        journal.db = FullDisk(journal.db)

    def disarm(self, pts: Points) -> None:
        if pts.journal is not None and self._saved is not None:
            pts.journal.db = self._saved
            self._saved = None


# --- the injectors ------------------------------------------------------------------------------------
Injector = Callable[[FaultSpec, Plan], list[Action]]


def _reader_settings(values: dict[str, ParamValue], seed: int) -> ReaderFaults:
    known = {f.name for f in dataclasses.fields(ReaderFaults)}
    kw: dict[str, Any] = {k: v for k, v in values.items() if k in known}
    return ReaderFaults(**kw, seed=seed) if "seed" not in kw else ReaderFaults(**kw)


def _terminal_policy(spec: FaultSpec, plan: Plan) -> None:
    """The terminal's own policy knobs a fault may set: fallback to the stripe after chip failures."""
    v = spec.values
    if "fallback" in v:
        plan.cfg = replace(plan.cfg, allow_fallback=_flag(v, "fallback"))


def inject_reader(spec: FaultSpec, plan: Plan) -> list[Action]:
    _terminal_policy(spec, plan)
    return [ReaderAction(_reader_settings(spec.values, plan.seed))]


def inject_environment(spec: FaultSpec, plan: Plan) -> list[Action]:
    _terminal_policy(spec, plan)
    v = spec.values
    actions: list[Action] = [EnvironmentAction(
        temperature_c=_num(v, "temperature_c") if "temperature_c" in v else None,
        field_v=_num(v, "field_v") if "field_v" in v else None)]
    if "field_v" in v:          # the field also reaches the magstripe head (its noise)
        plan.habits.swipe = {**(plan.habits.swipe or {}), "noise": _num(v, "field_v")}
    return actions


_SWIPE_KEYS = ("speed_ips", "skew_deg", "noise", "dirt_um", "accel_ips2")


def inject_habits(spec: FaultSpec, plan: Plan) -> list[Action]:
    """The customer and operator: swipe technique, PIN typing, pulling the card, cancelling."""
    v = spec.values
    h = plan.habits
    if any(k in v for k in _SWIPE_KEYS):
        h.prefer_chip = False
        h.swipe = {**(h.swipe or {}), **{k: _num(v, k) for k in _SWIPE_KEYS if k in v}}
    if "prefer_chip" in v:
        h.prefer_chip = _flag(v, "prefer_chip")
    if "pulls_card_at" in v:
        h.pulls_card_at = str(v["pulls_card_at"]) if v["pulls_card_at"] != "never" else ""
    if "wrong_pins" in v:
        n = int(_num(v, "wrong_pins"))
        h.pins = ["000000"] * n + [""]          # "" = then the card's own PIN
    if _flag(v, "cancel_pin"):
        h.cancel_pin = True
    if v.get("removes_card") is False:
        h.removes_card = False
    return []


def inject_stripe(spec: FaultSpec, plan: Plan) -> list[Action]:
    v = spec.values
    plan.habits.prefer_chip = False
    if "keep_chars" in v:
        plan.stripe_keep = int(_num(v, "keep_chars"))
    if "damage_start" in v:
        start = _num(v, "damage_start")
        region = DamageRegion(start, max(start, _num(v, "damage_end", start + 0.3)), _num(v, "damage_severity", 1.0))
        plan.profile_changes.append(lambda p: replace(p, stripe_damage=(*p.stripe_damage, region)))
    return []


def inject_chip(spec: FaultSpec, plan: Plan) -> list[Action]:
    """The card's chip itself: dead (no answer to reset), blocked, or declining after the host approved."""
    _terminal_policy(spec, plan)
    v = spec.values

    if _flag(v, "dead"):
        plan.card_wrappers.append(DeadChip)

    def change(p: CardProfile) -> CardProfile:
        chip = p.emv
        if chip is None:
            return p
        if _flag(v, "blocked"):
            return replace(p, emv=replace(chip, status=ChipStatus.BLOCKED))
        if _flag(v, "declines_after_online"):
            return replace(p, emv=replace(chip, applications=tuple(
                replace(a, decline_after_online=True) for a in chip.applications)))
        return p

    plan.profile_changes.append(change)
    return []


def inject_link(spec: FaultSpec, plan: Plan) -> list[Action]:
    if _num(spec.values, "half_open_after") > 0:        # only a kept-open connection can go half-open
        plan.cfg = replace(plan.cfg, persistent_connection=True)
    known = {f.name for f in dataclasses.fields(LinkFaults)}
    kw: dict[str, Any] = {k: v for k, v in spec.values.items() if k in known}
    return [LinkAction(LinkFaults.from_params({**kw, "seed": plan.seed}))]


def inject_dns(spec: FaultSpec, plan: Plan) -> list[Action]:
    return [DnsAction(str(spec.values.get("mode", "fail")), _num(spec.values, "delay"))]


def inject_host_rule(spec: FaultSpec, plan: Plan) -> list[Action]:
    plan.needs_bundled_host = True
    text = str(spec.values.get("rule", "respond:rc=96"))
    return [HostRuleAction([HostRule.parse(part) for part in filter(None, text.split(";"))])]


def inject_host_state(spec: FaultSpec, plan: Plan) -> list[Action]:
    plan.needs_bundled_host = True
    v = spec.values

    def text(key: str) -> str | None:
        x = v.get(key)
        return None if x in (None, "", "unchanged") else str(x)

    return [HostStateAction(card_status=text("card_status"), card_permissions=text("card_permissions"),
                            terminal_permissions=text("terminal_permissions"),
                            min_version=int(_num(v, "min_version")) if "min_version" in v else None,
                            keys=text("keys"))]


def inject_config(spec: FaultSpec, plan: Plan) -> list[Action]:
    v = spec.values
    cfg = plan.cfg
    if v.get("disabled_entry") not in (None, "", "none"):
        cfg = replace(cfg, disabled_entry=tuple(filter(None, str(v["disabled_entry"]).split("+"))))
    if "software_version" in v:
        cfg = replace(cfg, software_version=int(_num(v, "software_version", 0x31)))
    if _flag(v, "wrong_tmk"):
        cfg = replace(cfg, tmk=bytes.fromhex("1111111111111111" "2222222222222222"))
    if v.get("profile") not in (None, "", "same"):
        cfg = replace(cfg, profile=str(v["profile"]))
    if _flag(v, "wrong_port"):
        plan.host_override = "127.0.0.1:1"
    if "response_timeout" in v:
        cfg = replace(cfg, timeouts=replace(cfg.timeouts, response=_num(v, "response_timeout", 60)))
    plan.cfg = cfg
    return []


def inject_clock(spec: FaultSpec, plan: Plan) -> list[Action]:
    v = spec.values
    if _flag(v, "rtc_reset"):
        return [ClockAction(reset_to=dt.datetime(2099, 12, 31, 0, 0, tzinfo=dt.UTC))]
    return [ClockAction(offset_s=_num(v, "offset_days") * 86_400.0)]


def inject_journal(spec: FaultSpec, plan: Plan) -> list[Action]:
    return [JournalAction()]


def inject_steps(spec: FaultSpec, plan: Plan) -> list[Action]:
    v = spec.values
    if v.get("steps"):
        plan.steps = str(v["steps"]).split()
    return []


def inject_port_busy(spec: FaultSpec, plan: Plan) -> list[Action]:
    plan.hold_port = True
    plan.reader_url = "serial"
    plan.habits.prefer_chip = False
    return []


def inject_pcsc(spec: FaultSpec, plan: Plan) -> list[Action]:
    # "service-down" points pyscard at a socket with no pcscd behind it; pyscard reads that setting
    # once per process, so the regression suite uses "driver-missing" (works with or without pcscd)
    # and the service-down path is tested in a subprocess (tests/test_pcsc.py).
    if str(spec.values.get("mode", "driver-missing")) == "service-down":
        plan.pcsc_service = False
        plan.reader_url = "pcsc://0"
    else:
        plan.reader_url = "pcsc://posemu-missing-reader"
    return []


INJECTORS: dict[str, Injector] = {
    "reader": inject_reader,
    "environment": inject_environment,
    "habits": inject_habits,
    "stripe": inject_stripe,
    "chip": inject_chip,
    "link": inject_link,
    "dns": inject_dns,
    "host-rule": inject_host_rule,
    "host-state": inject_host_state,
    "config": inject_config,
    "clock": inject_clock,
    "journal": inject_journal,
    "steps": inject_steps,
    "port-busy": inject_port_busy,
    "pcsc": inject_pcsc,
}

BUILD_ONLY = frozenset({"stripe", "chip", "config", "steps", "port-busy", "pcsc", "habits"})
"""Injectors that change the world before power-on only: their onset is always power-on."""
