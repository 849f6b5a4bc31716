"""The one seam between the desktop emulator and the fault package (``faults/``).

The UI's fault panel, transaction runner and diagnosis pane never use ``faults`` directly: they
go through :class:`FaultsAdapter`, which turns what the fault package gives into the small, stable
records below. The UI is a front end, a floor above ``faults``, so the imports here are ordinary
static ones (checked by the import-linter contracts). When the catalogue cannot be loaded the
panel says "fault catalogue not available" with the reason, and everything else works.

* :meth:`FaultsAdapter.load` reads ``faults.catalogue.load()``.
* :meth:`FaultsAdapter.arm` puts the active faults into the running rig for the next action
  through the same seam as the CLI and the regression suite (:class:`faults.seam.Injection`):
  the faults plan their changes (configuration, the card in the slot, the cardholder's swipe),
  then act on the rig's fault points — the fault reader under the UI's reader, a fault proxy on
  the way to the host, the resolver, the bundled host, the environment, the terminal's clock,
  its journal — each at its onset. ``disarm`` undoes all of it. Faults that need another world
  (scripted operator steps, another reader backend) raise :class:`FaultWiringError` naming the
  CLI command that runs them. Faults the user performs (a wrong PIN, cancelling, pulling the
  card) come back as hints: the user does them at the counter.
* :meth:`FaultsAdapter.diagnose` takes the technician's readings while the faults are still
  armed and runs the evidence-based diagnosis: ranked cause groups with their evidence and the
  articles' remedies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from emulator.trace import Kind
from emulator.ui.readers import find_sim
from faults import catalogue as fault_catalogue
from faults.diagnose import diagnose as fault_diagnose
from faults.environment import Environment, SkewedClock
from faults.grammar import parse_spec
from faults.injectors import Plan, Points
from faults.instruments import Sheet, self_test
from faults.model import FaultSpec, ParamDef, ParamType
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.reader import FaultyReader, find_faulty
from faults.seam import Injection
from hardware.clock import Clock
from hardware.ports import CardReader
from protocol import keys as keymod
from protocol.errors import ConfigError, PosemuError

if TYPE_CHECKING:
    from emulator.app import Rig
    from emulator.terminal import Outcome
    from emulator.trace import TraceEntry

NOT_AVAILABLE = "fault catalogue not available"


class FaultWiringError(PosemuError):
    """Faults are selected but cannot be applied from the UI (they need another setup)."""


@dataclass(frozen=True, slots=True)
class FaultParam:
    """One parameter of a fault, with its unit, range (numbers) or choices, and default."""

    name: str
    unit: str = ""
    default: str = ""
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""
    type: str = "float"
    choices: tuple[str, ...] = ()

    def check(self, value: str) -> str | None:
        """An error message when ``value`` does not fit, else ``None``."""
        try:
            ParamDef(self.name, ParamType(self.type), self.default, self.unit, self.minimum, self.maximum,
                     self.choices).parse(value, "value")
        except ConfigError as e:
            return str(e).removeprefix("value: ")
        except ValueError:
            return f"{self.name}: unknown parameter type {self.type!r}"
        return None


@dataclass(frozen=True, slots=True)
class FaultInfo:
    """One catalogue entry as the panel shows it."""

    id: str
    layer: str
    cause_ids: tuple[str, ...]
    title: str = ""
    params: tuple[FaultParam, ...] = ()
    messages: tuple[str, ...] = ()
    detect: str = ""
    remedy: str = ""
    card: str = ""
    injector: str = ""
    group: str = ""
    onset: str = ""
    presets: tuple[str, ...] = ()


def _quote(value: str) -> str:
    if "," not in value and '"' not in value and "'" not in value:
        return value
    return "'" + value + "'" if "'" not in value else '"' + value + '"'


@dataclass(frozen=True, slots=True)
class ActiveFault:
    """A fault switched on in the panel, with the parameter values the user set."""

    id: str
    params: tuple[tuple[str, str], ...] = ()

    def spec(self) -> str:
        """The command-line form ``ID[:param=value,…]`` (as ``posemu inquiry --fault``)."""
        if not self.params:
            return self.id
        return self.id + ":" + ",".join(f"{k}={_quote(v)}" for k, v in self.params)


@dataclass(frozen=True, slots=True)
class CauseReport:
    """One named cause group: its cause ids, title, confidence, the evidence and the remedy."""

    cause_ids: tuple[str, ...]
    summary: str
    evidence: tuple[str, ...] = ()
    remedy: str = ""
    source: str = "faults.diagnose"
    confidence: float | None = None
    group: str = ""


class Armed(Protocol):
    """The panel's faults put into the rig for one action (:meth:`FaultsAdapter.arm`): the hints for
    the user (what to do to trigger them) and ``disarm``, which takes every one of them out again."""

    hints: list[str]

    async def disarm(self) -> None: ...


@dataclass(slots=True)
class _Armed:
    undo: list[Callable[[], None]] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    points: Points | None = None
    injection: Injection | None = None
    closing: list[Callable[[], Any]] = field(default_factory=list)

    async def disarm(self) -> None:
        if self.injection is not None:
            self.injection.undo()
            self.injection = None
        while self.undo:
            self.undo.pop()()
        while self.closing:
            with contextlib.suppress(Exception):
                await self.closing.pop()()


def _both(zh: str, en: str) -> str:
    return " / ".join(x for x in (zh, en) if x)


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


#: what the user does at the counter for these habits (the UI's PIN pad and card slot are theirs)
_HABIT_HINTS = {
    "wrong_pins": "type a wrong PIN at the prompt (then the right one)",
    "cancel_pin": "press Cancel at the PIN prompt",
    "pulls_card_at": "pull the card out while the terminal is still working",
    "removes_card": "leave the card in when asked to remove it",
}


@dataclass(slots=True)
class FaultsAdapter:
    """The fault catalogue, injector and diagnosis as the UI sees them (see the module docstring)."""

    loader: Callable[[], Any] = fault_catalogue.load     # the catalogue (a test passes another)
    available: bool = False
    reason: str = NOT_AVAILABLE
    faults: list[FaultInfo] = field(default_factory=list)
    seed: int = 7
    environment: Environment = field(default_factory=Environment)
    _catalogue: Any = None
    _loaded: bool = False
    _armed: _Armed | None = None

    def load(self, *, force: bool = False) -> FaultsAdapter:
        """Import the catalogue (once, or again with ``force``); never raises."""
        if self._loaded and not force:
            return self
        self._loaded = True
        try:
            cat = self.loader()
            infos = [self._info(f) for f in cat.faults.values()]
        except ModuleNotFoundError as e:
            self.available, self.faults, self._catalogue = False, [], None
            self.reason = f"{NOT_AVAILABLE} ({e.name or fault_catalogue.__name__} is not installed yet)"
            return self
        except Exception as e:  # a broken catalogue must not take the UI down
            self.available, self.faults, self._catalogue = False, [], None
            self.reason = f"{NOT_AVAILABLE}: {type(e).__name__}: {e}"
            return self
        self._catalogue = cat
        self.available, self.faults = True, sorted(infos, key=lambda f: (f.layer, f.id))
        self.reason = "" if infos else "the fault catalogue is empty"
        return self

    @staticmethod
    def _info(f: Any) -> FaultInfo:
        params = tuple(FaultParam(str(p.name), str(p.unit), _text(p.default), p.min, p.max, str(p.help),
                                  p.type.value, tuple(p.choices)) for p in f.params)
        return FaultInfo(id=str(f.id), layer=str(f.layer), cause_ids=tuple(str(c) for c in f.causes),
                         title=_both(f.title_zh, f.title_en), params=params,
                         messages=tuple(str(m) for m in f.expect), detect=_both(f.detect_zh, f.detect_en),
                         remedy=_both(f.fix_zh, f.fix_en), card=str(f.card), injector=str(f.injector),
                         group=str(f.group), onset=str(f.onset), presets=tuple(p.name for p in f.presets))

    def by_layer(self) -> dict[str, list[FaultInfo]]:
        out: dict[str, list[FaultInfo]] = {}
        for f in self.faults:
            out.setdefault(f.layer, []).append(f)
        return out

    def get(self, fault_id: str) -> FaultInfo | None:
        return next((f for f in self.faults if f.id == fault_id), None)

    def check(self, active: ActiveFault) -> str | None:
        """An error message when the fault or a parameter value does not fit, else ``None`` (the
        CLI's own grammar and checks)."""
        if self._catalogue is None:
            return self.reason or NOT_AVAILABLE
        try:
            parse_spec(active.spec(), self._catalogue)
        except ConfigError as e:
            return str(e)
        return None

    # --- the rig's fault points --------------------------------------------------------------------
    def terminal_clock(self, base: Clock) -> SkewedClock:
        """The clock to give the terminal: clock faults (skew, a flat RTC battery) act on it."""
        return SkewedClock(base)

    def wrap_reader(self, reader: CardReader, clock: Clock) -> FaultyReader:
        """The reader as the terminal should see it: reader and environment faults act here
        (with no fault armed it passes everything through)."""
        return FaultyReader(reader, None, clock, self.environment)

    def _faulty_reader(self, rig: Rig) -> FaultyReader:
        """The fault point around the rig's reader: the :meth:`wrap_reader` the rig was opened with
        (faults wrap ports; the terminal's reader is never swapped under it)."""
        found = find_faulty(rig.terminal.reader)
        if found is None:
            raise FaultWiringError("reader faults need the rig's reader from FaultsAdapter.wrap_reader")
        return found

    async def arm(self, rig: Rig, active: Sequence[ActiveFault], *, card_profile: str | None = None) -> Armed:
        """Put ``active`` into ``rig`` for the next action; the result's ``disarm`` undoes it."""
        if not active:
            return _Armed()
        cat = self._catalogue
        if cat is None:
            raise FaultWiringError(self.reason or NOT_AVAILABLE)
        try:
            specs = [parse_spec(a.spec(), cat) for a in active]
        except ConfigError as e:
            raise FaultWiringError(str(e)) from None
        term = rig.terminal
        plan = Plan(cfg=term.cfg, card=card_profile or "demo", seed=self.seed)
        injection = Injection(specs, seed=self.seed)
        try:
            injection.prepare(plan)
        except ConfigError as e:
            raise FaultWiringError(str(e)) from None
        self._wirable(specs, plan, rig)
        armed = _Armed()
        try:
            await self._apply_plan(rig, plan, specs, armed)
            points = await self._points(rig, specs, armed)
            injection.attach(points, rig.trace)
        except BaseException:
            await armed.disarm()
            raise
        armed.injection, armed.points = injection, points
        rig.trace.record(Kind.NOTE, "faults armed", faults=[str(s) for s in specs])
        self._armed = armed
        return armed

    @staticmethod
    def _wirable(specs: Sequence[FaultSpec], plan: Plan, rig: Rig) -> None:
        def cli(spec: FaultSpec, why: str) -> FaultWiringError:
            return FaultWiringError(f"{spec.id} {why}; run it with `posemu inquiry --virtual-time --fault "
                                    f"{spec.id}` or `posemu regress --fault {spec.id}`")

        for s in specs:
            inj = s.fault.injector
            if inj == "steps":
                raise cli(s, "is a sequence of operator steps (not applicable from the UI)")
            if inj in ("port-busy", "pcsc"):
                raise cli(s, "needs another reader backend")
            if inj in ("host-rule", "host-state") and rig.host is None:
                raise FaultWiringError(f"{s.id} acts on the bundled host (settings: leave the host empty)")
            if inj == "clock" and not isinstance(rig.terminal.clock, SkewedClock):
                raise FaultWiringError(f"{s.id} needs the terminal's clock from FaultsAdapter.terminal_clock")

    async def _apply_plan(self, rig: Rig, plan: Plan, specs: Sequence[FaultSpec], armed: _Armed) -> None:
        """What the faults change before the action: config, the card in the slot, the swipe, the
        address the terminal uses; hints for what the user does."""
        term = rig.terminal
        if plan.cfg != term.cfg:
            old_cfg = term.cfg
            term.cfg = plan.cfg
            armed.undo.append(lambda: setattr(term, "cfg", old_cfg))
        if plan.profile_changes or plan.card_wrappers or plan.stripe_keep is not None:
            self._change_card(rig, plan, armed)
        if plan.habits.swipe:
            saved = dict(rig.swipe_faults)
            rig.swipe_faults.update(plan.habits.swipe)

            def undo_swipe() -> None:
                rig.swipe_faults.clear()
                rig.swipe_faults.update(saved)
            armed.undo.append(undo_swipe)
            armed.hints.append("swipe the card: the next swipe is made with "
                               + ", ".join(f"{k}={v:g}" for k, v in plan.habits.swipe.items()))
        for s in specs:
            for key, hint in _HABIT_HINTS.items():
                if key in s.values and s.fault.injector == "habits" and s.values[key] not in (False, 0, "never"):
                    armed.hints.append(f"{s.id}: {hint}")
        if plan.host_override:
            link = term.link
            old_addr = (link.host, link.port)
            host, _, port = plan.host_override.rpartition(":")
            link.host, link.port = host, int(port)
            await link.close()

            def undo_address() -> None:
                link.host, link.port = old_addr
            armed.undo.append(undo_address)
        if plan.host_changes and rig.host is not None:
            pan = self._pan(rig)
            for change in plan.host_changes:
                change(rig.host.store, pan)

    @staticmethod
    def _pan(rig: Rig) -> str:
        sim = find_sim(rig.terminal.reader)
        card = sim.default_card if sim is not None else None
        profile = getattr(card, "profile", None)
        return str(getattr(profile, "pan", ""))

    @staticmethod
    def _change_card(rig: Rig, plan: Plan, armed: _Armed) -> None:
        from faults.card import StripeOverride, truncated_stripe
        from hardware.ports import VirtualCard
        from hardware.sim import card_for_profile

        sim = find_sim(rig.terminal.reader)
        if sim is None or sim.default_card is None:
            raise FaultWiringError("card faults need a virtual card (reader sim://…)")
        original = sim.default_card
        profile = getattr(original, "profile", None)
        card: VirtualCard = original
        if plan.profile_changes or plan.card_wrappers:
            if profile is None:
                raise FaultWiringError("card faults need a virtual card built from a card profile")
            for change in plan.profile_changes:
                profile = change(profile)
            card = card_for_profile(profile)
            for wrap in plan.card_wrappers:
                card = wrap(card)
        if plan.stripe_keep is not None:
            card = StripeOverride(card, truncated_stripe(card, plan.stripe_keep))
        sim.default_card = card

        def undo_card() -> None:
            sim.default_card = original
        armed.undo.append(undo_card)

    async def _points(self, rig: Rig, specs: Sequence[FaultSpec], armed: _Armed) -> Points:
        term = rig.terminal
        injectors = {s.fault.injector for s in specs}
        clock = term.clock if isinstance(term.clock, SkewedClock) else SkewedClock(rig.clock)
        reader = self._faulty_reader(rig) if injectors & {"reader", "environment"} \
            else find_faulty(term.reader)
        link = term.link
        proxy: FaultProxy | None = None
        if "link" in injectors:
            proxy = await FaultProxy.start((link.host, link.port), LinkFaults(seed=self.seed), rig.clock)
            old_addr = (link.host, link.port)
            link.host, link.port = "127.0.0.1", proxy.port
            await link.close()                       # the next exchange connects through the proxy

            def undo_link() -> None:
                link.host, link.port = old_addr
            armed.undo.append(undo_link)
            armed.closing.append(proxy.close)
            armed.closing.append(link.close)
        resolver: FaultyResolver | None = None
        if "dns" in injectors:
            old_resolver = link.resolver
            resolver = FaultyResolver(old_resolver, rig.clock)
            link.resolver = resolver
            await link.close()

            def undo_dns() -> None:
                link.resolver = old_resolver
            armed.undo.append(undo_dns)
            armed.closing.append(link.close)
        return Points(environment=self.environment, clock=clock, reader=reader, link=proxy, resolver=resolver,
                      host=rig.host, journal=rig.journal, card_pan=self._pan(rig),
                      terminal_id=term.cfg.terminal_id)

    # --- diagnosis ---------------------------------------------------------------------------------
    def _sheet(self, rig: Rig) -> Sheet:
        host = rig.host
        if host is None:
            return Sheet()
        row = host.store.terminal(rig.terminal.cfg.terminal_id)
        return Sheet(host=rig.terminal.cfg.host, profile=host.profile.name,
                     min_version=row.min_version if row else None,
                     tmk_kcv=keymod.kcv(row.tmk) if row else None)

    async def diagnose(self, rig: Rig, entries: Sequence[TraceEntry], outcome: Outcome) -> list[CauseReport]:
        """The likely causes of a failure, ranked. Call it while armed: the technician's readings
        then measure the faulty reader, link and host, as they would at the counter."""
        points = self._armed.points if self._armed is not None else None
        try:
            readings = await self_test(rig, points, self._sheet(rig), seed=self.seed)
        except (TimeoutError, PosemuError, OSError):  # the readings are advisory
            readings = {}
        result = fault_diagnose(list(entries), [outcome], readings)
        cat = self._catalogue
        out: list[CauseReport] = []
        for f in result.named:
            remedy = ""
            if cat is not None:
                fault = next((x for c in f.causes for x in cat.covering(c) if x.group == f.group.id), None)
                if fault is not None:
                    remedy = _both(fault.fix_zh, fault.fix_en)
            out.append(CauseReport(tuple(f.causes), f.group.title(), tuple(c.text for c in f.clues), remedy,
                                   confidence=f.confidence, group=f.group.id))
        for note in result.explanations:
            out.append(CauseReport((), str(note), (), "", "faults.diagnose note"))
        return out

