"""Faults switched on and off at run time in someone else's system: toxics, the controller API, schedules.

The three bridges into a user's own system — the card relay (:mod:`faults.relay`), the ISO 8583
proxy (:mod:`faults.wire`) and the serial relay (:mod:`faults.serial_relay`) — take faults while
they run, Toxiproxy-style. A **toxic** is one named fault: a catalogue fault spec in the grammar
of :mod:`faults.grammar` (``network.weak-wifi@drops:loss=0.5``), or, where the tool has its own
vocabulary, a message rule (the proxy) or a line fault (the serial relay). A toxic is *added*,
*enabled* or *disabled* and *removed*; an enabled catalogue fault goes through the one seam
(:class:`faults.seam.Injection`: prepare → attach → onset → undo) onto the tool's fault points —
nothing here re-implements an injector.

Every tool is driven through the same small, typed, in-process API (:class:`Controller`) — the
HTTP control API (:mod:`emulator.control_http`), the CLI's ``--fault``/``--scenario`` and a
desktop UI all use it:

* ``await start()`` / ``await stop()``;
* ``arm(spec, name=None) -> Toxic`` adds and enables a toxic; ``disarm(name)`` removes it;
  ``enable(name, on)`` switches one without forgetting it; ``reset()`` removes them all;
* ``toxics()`` and ``status()`` say what is armed and what happened;
* ``subscribe(fn)`` / ``unsubscribe(fn)``: every traffic event, as the masked
  :class:`~emulator.trace.TraceEntry` the tool's trace records (card numbers 6+4, no track data,
  PIN blocks, keys or APDU data).

A **schedule** (:class:`Schedule`, a TOML file) arms and disarms toxics at given times on the
tool's clock::

    [[at]]
    t = 0                                  # seconds after the tool started
    arm = "network.congestion@slow"
    name = "slow"                          # optional (default: the spec)
    [[at]]
    t = 20
    arm = "rule:respond:rc=96,mti=0200"    # the proxy's message rules: rule:…
    [[at]]
    t = 40
    disarm = "slow"
    [[at]]
    t = 60
    reset = true
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import tomllib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from emulator.config import TerminalConfig
from emulator.trace import Kind, Trace, TraceEntry
from faults.catalogue import Catalogue, load
from faults.grammar import parse_spec
from faults.injectors import Plan, Points
from faults.model import FaultSpec, Onset, OnsetKind
from faults.seam import Injection
from hardware.clock import Clock
from protocol.errors import ConfigError

__all__ = ["Controller", "Schedule", "ScheduleStep", "Toxic", "ToxicKind", "ToxicSet", "load_schedule",
           "run_schedule"]


class ToxicKind(enum.Enum):
    """What a toxic of the control API is: a catalogue fault, a proxy message rule or a serial line fault."""

    FAULT = "fault"          # a catalogue fault spec, through the seam
    RULE = "rule"            # a message rule of the proxy (faults.wire.MessageRule)
    LINE = "line"            # a serial line fault of the serial relay (faults.serial_relay.LineFaults)


@dataclass(slots=True)
class Toxic:
    """One named fault of a running tool."""

    name: str
    kind: ToxicKind
    spec: str                               # as given (normalised for catalogue faults)
    enabled: bool = True
    armed: bool = False                     # enabled and its onset has come (it acts now)
    onset: str = "power-on"
    fault: FaultSpec | None = None          # the catalogue fault, for ``FAULT``
    plan: Plan | None = None                # what the fault's injector planned (habits, a held port …)
    injection: Injection | None = None      # the seam carrying it while enabled
    payload: Any = None                     # the tool's own object for ``RULE``/``LINE``

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.value, "spec": self.spec, "enabled": self.enabled,
                "armed": self.armed, "onset": self.onset,
                "fault": None if self.fault is None else self.fault.id,
                "group": None if self.fault is None else self.fault.fault.group}


@runtime_checkable
class Controller(Protocol):
    """What a UI, the HTTP control API or a schedule drives: one running relay or proxy."""

    @property
    def kind(self) -> str:
        """``relay``, ``proxy`` or ``serial-relay``."""
        ...

    @property
    def trace(self) -> Trace: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def arm(self, spec: str, *, name: str | None = None, enabled: bool = True) -> Toxic: ...

    def disarm(self, name: str) -> None: ...

    def enable(self, name: str, on: bool = True) -> Toxic: ...

    def toxics(self) -> list[Toxic]: ...

    def reset(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def subscribe(self, fn: Callable[[TraceEntry], None]) -> None: ...

    def unsubscribe(self, fn: Callable[[TraceEntry], None]) -> None: ...


class ToxicSet:
    """The toxics of one tool: parsing, the seam, onsets, enable/disable.

    ``points`` builds the tool's fault points (called when a catalogue fault is enabled);
    ``injectors`` are the injector kinds that act on them (anything else is refused with the
    reason, before it runs); ``onsets`` are the moments the tool can see. ``own`` parses the tool's
    own vocabulary (``rule:…``/``line:…``) into a payload, ``on_change`` is told whenever what is
    armed changes (the tool re-reads its settings)."""

    def __init__(self, *, tool: str, points: Callable[[], Points], injectors: Collection[str],
                 onsets: Collection[OnsetKind], trace: Trace, seed: int = 7,
                 own: dict[str, Callable[[str], Any]] | None = None,
                 on_change: Callable[[], None] | None = None,
                 catalogue: Catalogue | None = None) -> None:
        self.tool = tool
        self._points = points
        self.injectors = frozenset(injectors)
        self.onsets = frozenset(onsets) | {OnsetKind.POWER_ON}
        self.trace = trace
        self.seed = seed
        self._own = dict(own or {})
        self._on_change = on_change
        self._cat = catalogue
        self._toxics: dict[str, Toxic] = {}
        self._reached: set[OnsetKind] = set()
        self.steps = 0

    @property
    def catalogue(self) -> Catalogue:
        if self._cat is None:
            self._cat = load()
        return self._cat

    # --- parsing ---------------------------------------------------------------------------------
    def parse(self, spec: str, name: str | None = None) -> Toxic:
        """A toxic from its text, checked (a :class:`ConfigError` says why it cannot act here)."""
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError("a toxic is a fault spec ID[@PRESET][:k=v,…]"
                              + "".join(f" or {k}:…" for k in self._own))
        text = spec.strip()
        head, colon, rest = text.partition(":")
        if colon and head in self._own:
            payload = self._own[head](rest)
            return Toxic(name or text, ToxicKind(head), text, payload=payload)
        fs = parse_spec(text, self.catalogue)
        if fs.fault.injector not in self.injectors:
            raise ConfigError(f"fault {fs.id} acts on {_WHERE.get(fs.fault.injector, fs.fault.injector)}, which "
                              f"the {self.tool} does not have; it takes faults that act on "
                              f"{', '.join(sorted({_WHERE.get(i, i) for i in self.injectors}))}")
        if fs.onset.kind not in self.onsets:
            raise ConfigError(f"fault {fs.id}: the {self.tool} cannot see the moment {fs.onset}; "
                              f"onset may be {', '.join(sorted(k.value for k in self.onsets))}"
                              + (" or step:N" if OnsetKind.STEP in self.onsets else ""))
        plan = Plan(cfg=TerminalConfig(), seed=self.seed)
        Injection([fs], seed=self.seed).prepare(plan)         # checks the injector takes these values
        return Toxic(name or str(fs), ToxicKind.FAULT, str(fs), fault=fs, plan=plan, onset=str(fs.onset))

    # --- the set -------------------------------------------------------------------------------
    def add(self, spec: str, *, name: str | None = None, enabled: bool = True) -> Toxic:
        toxic = self.parse(spec, name)
        if toxic.name in self._toxics:
            raise ConfigError(f"a toxic named {toxic.name!r} is already there; remove it first or give another name")
        self._toxics[toxic.name] = toxic
        toxic.enabled = False
        if enabled:
            self.enable(toxic.name, True)
        else:
            self._changed(toxic, "added (disabled)")
        return toxic

    def get(self, name: str) -> Toxic:
        try:
            return self._toxics[name]
        except KeyError:
            raise ConfigError(f"no toxic named {name!r}; there are: {', '.join(self._toxics) or 'none'}") from None

    def remove(self, name: str) -> None:
        toxic = self.get(name)
        self._off(toxic)
        del self._toxics[name]
        self._changed(toxic, "removed")

    def enable(self, name: str, on: bool = True) -> Toxic:
        toxic = self.get(name)
        if on == toxic.enabled:
            return toxic
        if on:
            toxic.enabled = True
            if toxic.kind is ToxicKind.FAULT:
                assert toxic.fault is not None
                inj = Injection([toxic.fault], seed=self.seed)
                plan = Plan(cfg=TerminalConfig(), seed=self.seed)
                inj.prepare(plan)
                toxic.plan = plan
                toxic.injection = inj
                inj.attach(self._points(), None)
                toxic.armed = bool(inj.armed)
            else:
                toxic.armed = True
            self._changed(toxic, "enabled" + ("" if toxic.armed else f" (acts from {toxic.onset})"))
        else:
            self._off(toxic)
            self._changed(toxic, "disabled")
        return toxic

    def _off(self, toxic: Toxic) -> None:
        if toxic.injection is not None:
            toxic.injection.undo()
            toxic.injection = None
        toxic.enabled = toxic.armed = False

    def reset(self) -> None:
        for name in list(self._toxics):
            self.remove(name)

    def __iter__(self) -> Any:
        return iter(list(self._toxics.values()))

    def all(self) -> list[Toxic]:
        return list(self._toxics.values())

    def active(self, kind: ToxicKind) -> list[Toxic]:
        """The enabled toxics of a kind whose onset has come."""
        return [t for t in self._toxics.values() if t.kind is kind and t.armed]

    def plans(self) -> list[Plan]:
        """The plans of the armed catalogue faults (habits, a held port: what the tool acts on itself)."""
        return [t.plan for t in self.active(ToxicKind.FAULT) if t.plan is not None]

    # --- moments ---------------------------------------------------------------------------------
    def reached(self, kind: OnsetKind, why: str = "") -> None:
        """The tool saw a moment: faults waiting for it act from now on."""
        self._reached.add(kind)
        for t in self._toxics.values():
            if t.enabled and not t.armed and t.injection is not None:
                t.injection.reached(kind, why)
                if t.injection.armed:
                    t.armed = True
                    self._changed(t, f"armed at {why or kind.value}")

    def step(self) -> int:
        """The tool is about to do its next step (the proxy: a request; the relays: a command)."""
        self.steps += 1
        for t in self._toxics.values():
            if t.enabled and not t.armed and t.injection is not None:
                t.injection.step(self.steps)
                if t.injection.armed:
                    t.armed = True
                    self._changed(t, f"armed at step {self.steps}")
        return self.steps

    def _changed(self, toxic: Toxic, what: str) -> None:
        self.trace.record(Kind.NOTE, f"toxic {what}", toxic=toxic.name, spec=toxic.spec)
        if self._on_change is not None:
            self._on_change()


_WHERE = {"reader": "the card reader", "environment": "the reader's surroundings", "habits": "the cardholder",
          "link": "the network link", "dns": "name resolution", "host-rule": "the host's answers",
          "host-state": "the bundled host's accounts", "config": "the terminal's configuration",
          "clock": "the terminal's clock", "journal": "the terminal's journal", "steps": "the operator's steps",
          "port-busy": "a serial port", "pcsc": "the PC/SC service", "chip": "the card's chip",
          "stripe": "the magnetic stripe"}


def with_onset(spec: FaultSpec, onset: OnsetKind) -> FaultSpec:
    return replace(spec, onset=Onset(onset))


# --- schedules --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScheduleStep:
    """One step of a TOML scenario: at ``t`` seconds, arm, disarm, enable, disable or reset toxics."""

    t: float
    arm: str | None = None
    name: str | None = None
    disarm: str | None = None
    enable: str | None = None
    disable: str | None = None
    reset: bool = False

    def describe(self) -> str:
        if self.arm:
            return f"arm {self.arm}" + (f" as {self.name}" if self.name else "")
        for verb in ("disarm", "enable", "disable"):
            if getattr(self, verb):
                return f"{verb} {getattr(self, verb)}"
        return "reset"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A TOML scenario: its steps in time order, where it came from and its options."""

    steps: tuple[ScheduleStep, ...] = ()
    source: str = ""
    options: dict[str, Any] = field(default_factory=dict)


_STEP_KEYS = {"t", "arm", "name", "disarm", "enable", "disable", "reset"}


def parse_schedule(text: str, source: str = "scenario") -> Schedule:
    """A schedule from TOML (see the module docstring); a mistake is a :class:`ConfigError` naming it."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not TOML ({err})") from None
    unknown = set(doc) - {"at", "name", "description", "options"}
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; a schedule has [[at]] entries")
    raw = doc.get("at", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: a schedule needs [[at]] entries (t = seconds, then arm/disarm/enable/"
                          "disable/reset)")
    steps = []
    for i, entry in enumerate(raw, 1):
        where = f"{source}: [[at]] #{i}"
        e: dict[str, Any] = entry if isinstance(entry, dict) else {}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        bad = set(e) - _STEP_KEYS
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))} "
                              f"(known: {', '.join(sorted(_STEP_KEYS))})")
        t = e.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 86_400 * 7:
            raise ConfigError(f"{where}: t must be seconds from 0 to one week, got {t!r}")
        verbs = [k for k in ("arm", "disarm", "enable", "disable", "reset") if e.get(k)]
        if len(verbs) != 1:
            raise ConfigError(f"{where}: give exactly one of arm, disarm, enable, disable, reset")
        for k in ("arm", "name", "disarm", "enable", "disable"):
            if k in e and not isinstance(e[k], str):
                raise ConfigError(f"{where}: {k} must be text")
        if "reset" in e and e["reset"] is not True:
            raise ConfigError(f"{where}: reset must be true")
        if "name" in e and "arm" not in e:
            raise ConfigError(f"{where}: name goes with arm")
        steps.append(ScheduleStep(float(t), e.get("arm"), e.get("name"), e.get("disarm"), e.get("enable"),
                                  e.get("disable"), bool(e.get("reset", False))))
    steps.sort(key=lambda s: s.t)
    opts = doc.get("options", {})
    if not isinstance(opts, dict):
        raise ConfigError(f"{source}: options must be a table")
    return Schedule(tuple(steps), source, opts)


def load_schedule(path: str | Path) -> Schedule:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the scenario ({getattr(e, 'strerror', None) or e})") from None
    return parse_schedule(text, str(p))


def check_schedule(schedule: Schedule, toxics: ToxicSet) -> None:
    """Every ``arm`` of a schedule parses for this tool (so a typo fails before anything runs)."""
    for s in schedule.steps:
        if s.arm:
            toxics.parse(s.arm, s.name)


async def run_schedule(controller: Controller, schedule: Schedule, clock: Clock, *, start: float | None = None,
                       on_error: Callable[[ScheduleStep, Exception], None] | None = None) -> None:
    """Apply the steps at their times on ``clock`` (seconds after ``start``, default: now)."""
    t0 = clock.now() if start is None else start
    for s in schedule.steps:
        wait = t0 + s.t - clock.now()
        if wait > 0:
            await clock.sleep(wait)
        try:
            apply_step(controller, s)
        except ConfigError as e:
            if on_error is None:
                raise
            on_error(s, e)
        controller.trace.record(Kind.NOTE, "schedule", step=s.describe(), at=s.t)


def apply_step(controller: Controller, s: ScheduleStep) -> None:
    if s.arm:
        controller.arm(s.arm, name=s.name)
    elif s.disarm:
        controller.disarm(s.disarm)
    elif s.enable:
        controller.enable(s.enable, True)
    elif s.disable:
        controller.enable(s.disable, False)
    elif s.reset:
        controller.reset()


async def cancel_quietly(tasks: Sequence[asyncio.Task[Any] | None]) -> None:
    for t in tasks:
        if t is not None and not t.done():
            t.cancel()
    for t in tasks:
        if t is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
