"""The one seam between the desktop emulator and the fault package (``faults/``).

The UI's fault panel, transaction runner and diagnosis pane never use ``faults`` directly: they
go through :class:`FaultsAdapter`, which turns what the fault package gives into the small, stable
records below. The UI is a front end, a floor above ``faults``, so the imports here are ordinary
static ones (checked by the import-linter contracts). When the catalogue cannot be loaded (a broken
``catalogue.toml``) the panel says "fault catalogue not available" with the reason, and everything
else works.

* :meth:`FaultsAdapter.load` reads ``faults.catalogue.load()``.
* :meth:`FaultsAdapter.arm` applies the active faults to the running rig for the next action,
  built with the fault package's own injectors (``faults.runner.combine`` → a ``Setup``):
  reader faults wrap the reader under the UI's :class:`~emulator.ui.readers.UiReader`, host
  rules go to the bundled host, configuration changes to the terminal; ``disarm`` undoes them.
  Injectors that need a different world (a network proxy, DNS, another reader backend, host
  account state, scripted steps) raise :class:`FaultWiringError` — the place to extend.
* :meth:`FaultsAdapter.diagnose` runs ``faults.diagnose.self_test`` and ``diagnose`` on the
  trace while the faults are still armed, and adds the article's remedy for each cause.

User faults (swipe speed/tilt, wrong PIN, cancelling) need no injector here: the user does them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from emulator.config import TerminalConfig
from emulator.demo import DEMO_TID
from emulator.trace import Kind
from emulator.ui.readers import find_sim
from faults import catalogue as fault_catalogue
from faults import diagnose as fault_diagnose
from faults import network as fault_network
from faults.card import StripeOverride, truncated_stripe
from faults.reader import FaultyReader
from faults.runner import combine
from protocol.errors import PosemuError

if TYPE_CHECKING:
    from emulator.app import Rig
    from emulator.terminal import Outcome
    from emulator.trace import TraceEntry

NOT_AVAILABLE = "fault catalogue not available"


class FaultWiringError(PosemuError):
    """Faults are selected but cannot be applied from the UI (the injector is not wired in)."""


@dataclass(frozen=True, slots=True)
class FaultParam:
    """One parameter of a fault, with its unit, range and default."""

    name: str
    unit: str = ""
    default: str = ""
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

    def check(self, value: str) -> str | None:
        """An error message when ``value`` is outside the range, else ``None``."""
        if self.minimum is None and self.maximum is None:
            return None
        try:
            v = float(value)
        except ValueError:
            return f"{self.name} must be a number"
        if self.minimum is not None and v < self.minimum:
            return f"{self.name} must be ≥ {self.minimum:g}{self.unit and ' ' + self.unit}"
        if self.maximum is not None and v > self.maximum:
            return f"{self.name} must be ≤ {self.maximum:g}{self.unit and ' ' + self.unit}"
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


@dataclass(frozen=True, slots=True)
class ActiveFault:
    """A fault switched on in the panel, with the parameter values the user set."""

    id: str
    params: tuple[tuple[str, str], ...] = ()

    def spec(self) -> str:
        """The command-line form: ``ID[:param=value,…]`` (as ``posemu inquiry --fault``)."""
        if not self.params:
            return self.id
        return self.id + ":" + ",".join(f"{k}={v}" for k, v in self.params)


@dataclass(frozen=True, slots=True)
class CauseReport:
    """A diagnosis: likely cause ids, why, the evidence and the article's remedy."""

    cause_ids: tuple[str, ...]
    summary: str
    evidence: tuple[str, ...] = ()
    remedy: str = ""
    source: str = "faults.diagnose"


class Armed(Protocol):
    async def disarm(self) -> None: ...


class _Undo:
    def __init__(self, steps: list[Callable[[], None]]) -> None:
        self._steps = steps

    async def disarm(self) -> None:
        while self._steps:
            self._steps.pop()()


USER_INJECTORS = frozenset({"swipe", "pin"})
"""Faults the user performs in the UI (swipe speed/tilt, typing a wrong PIN); a swipe fault's other
parameters (stripe damage, noise, head dirt) are applied to the user's next swipe."""
WIRED_INJECTORS = frozenset({"reader", "host-rule", "config", "dns", "link", "host-state", "stripe-data"}) \
    | USER_INJECTORS


def _both(zh: str, en: str) -> str:
    return " / ".join(x for x in (zh, en) if x)


@dataclass(slots=True)
class FaultsAdapter:
    """The fault catalogue, injector and diagnosis as the UI sees them (see the module docstring)."""

    loader: Callable[[], Any] = fault_catalogue.load     # the catalogue (a test passes another)
    available: bool = False
    reason: str = NOT_AVAILABLE
    faults: list[FaultInfo] = field(default_factory=list)
    seed: int = 7
    _catalogue: Any = None
    _loaded: bool = False
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

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
        params = tuple(FaultParam(str(p.name), str(p.unit), f"{p.default:g}", float(p.min), float(p.max), str(p.help))
                       for p in f.params)
        return FaultInfo(id=str(f.id), layer=str(f.layer), cause_ids=tuple(str(c) for c in f.causes),
                         title=_both(f.title_zh, f.title_en), params=params,
                         messages=tuple(str(m) for m in f.expect), detect=_both(f.detect_zh, f.detect_en),
                         remedy=_both(f.fix_zh, f.fix_en), card=str(f.card), injector=str(f.injector))

    def by_layer(self) -> dict[str, list[FaultInfo]]:
        out: dict[str, list[FaultInfo]] = {}
        for f in self.faults:
            out.setdefault(f.layer, []).append(f)
        return out

    def get(self, fault_id: str) -> FaultInfo | None:
        return next((f for f in self.faults if f.id == fault_id), None)

    def check(self, active: ActiveFault) -> str | None:
        """An error message when a parameter value is out of range, else ``None``."""
        info = self.get(active.id)
        if info is None:
            return f"unknown fault {active.id!r}"
        by_name = {p.name: p for p in info.params}
        for k, v in active.params:
            p = by_name.get(k)
            if p is None:
                return f"{active.id}: unknown parameter {k!r}"
            err = p.check(v)
            if err:
                return f"{active.id}: {err}"
        return None

    async def arm(self, rig: Rig, active: Sequence[ActiveFault]) -> Armed:
        """Apply ``active`` to ``rig`` for the next action; the result's ``disarm`` undoes it."""
        if not active:
            return _Undo([])
        cat = self._catalogue
        if cat is None:
            raise FaultWiringError(self.reason or NOT_AVAILABLE)
        infos = [self.get(a.id) for a in active]
        unwired = [i.id + f" ({i.injector})" for i in infos if i is not None and i.injector not in WIRED_INJECTORS]
        if unwired:
            raise FaultWiringError("not applicable from the UI yet: " + ", ".join(unwired)
                                   + "; use `posemu inquiry --fault …` or `posemu regress`")
        pairs = [(cat.get(a.id), dict(a.params)) for a in active]
        setup = combine(pairs, seed=self.seed)
        undo: list[Callable[[], None]] = []
        if setup.reader_faults is not None:
            outer = rig.terminal.reader
            inner = getattr(outer, "inner", None)
            if inner is None:
                raise FaultWiringError("reader faults need the UI's reader wrapper")
            setattr(outer, "inner", FaultyReader(inner, setup.reader_faults, rig.clock))  # noqa: B010
            undo.append(lambda: setattr(outer, "inner", inner))
        for rule in list(setup.host_rules.rules):
            if rig.host is None:
                raise FaultWiringError("host rules apply to the bundled host only (settings: empty host)")
            rules = rig.host.rules
            rules.add(rule)
            undo.append(partial(rules.rules.remove, rule))
        if setup.swipe:
            extra = {k: v for k, v in setup.swipe.items() if k not in ("speed_ips", "skew_deg")}
            if extra:
                saved_swipe = dict(rig.swipe_faults)
                rig.swipe_faults.update(extra)

                def undo_swipe() -> None:
                    rig.swipe_faults.clear()
                    rig.swipe_faults.update(saved_swipe)
                undo.append(undo_swipe)
        if setup.stripe_keep is not None:
            sim = find_sim(rig.terminal.reader)
            if sim is None or sim.default_card is None:
                raise FaultWiringError("stripe faults need a virtual card (reader sim://…)")
            original = sim.default_card
            sim.default_card = StripeOverride(original, truncated_stripe(original, setup.stripe_keep))

            def undo_stripe() -> None:
                sim.default_card = original
            undo.append(undo_stripe)
        link = rig.terminal.link
        if setup.dns is not None:
            old_resolver, old_host = link.resolver, link.host
            target = (old_host, link.port)
            link.resolver = (fault_network.failing_resolver() if setup.dns == "fail"
                             else fault_network.slow_resolver(old_resolver, setup.dns_delay, rig.clock, target))
            link.host = "acquirer.example"
            await link.close()

            def undo_dns() -> None:
                link.resolver, link.host = old_resolver, old_host
            undo.append(undo_dns)
        if setup.link is not None:
            proxy = await fault_network.FaultProxy.start((link.host, link.port), setup.link, rig.clock)
            old_addr = (link.host, link.port)
            link.host, link.port = "127.0.0.1", proxy.port
            await link.close()                       # the next exchange connects through the proxy

            def undo_link() -> None:
                link.host, link.port = old_addr
                task = asyncio.ensure_future(proxy.close())
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            undo.append(undo_link)
        if setup.store_changes:
            if rig.host is None:
                raise FaultWiringError("account faults apply to the bundled host only (settings: empty host)")
            store = rig.host.store
            pans = store.pans()                      # the account faults apply to every card at this host
            saved_cards = [store.card(p) for p in pans]
            saved_term = store.terminal(DEMO_TID)
            for change in setup.store_changes:
                for p in pans:
                    change(store, p)

            def undo_store() -> None:
                for row in saved_cards:
                    if row is not None:
                        store.set_card(row)
                if saved_term is not None:
                    store.set_terminal(saved_term)
            undo.append(undo_store)
        base = TerminalConfig()
        diff = {f.name: getattr(setup.cfg, f.name) for f in fields(TerminalConfig)
                if getattr(setup.cfg, f.name) != getattr(base, f.name)}
        if diff:
            term = rig.terminal
            old = term.cfg
            term.cfg = replace(old, **diff)
            undo.append(lambda: setattr(term, "cfg", old))
        rig.trace.record(Kind.NOTE, "faults armed", faults=[a.spec() for a in active])
        return _Undo(undo)

    async def diagnose(self, rig: Rig, entries: Sequence[TraceEntry], outcome: Outcome) -> list[CauseReport]:
        """Likely causes of a failure. Call it while armed: the self-test then measures the faulty
        reader, as a technician would."""
        try:
            measurements = await fault_diagnose.self_test(rig)
        except Exception:  # the self-test is advisory
            measurements = {}
        try:
            result = fault_diagnose.diagnose(list(entries), [outcome], measurements)
        except Exception:  # diagnosis is advisory; the built-in hints remain
            return []
        cat = self._catalogue
        out: list[CauseReport] = []
        for f in sorted(result.findings, key=lambda f: -f.score):
            remedy = ""
            if cat is not None:
                for cid in f.causes:
                    covering = cat.covering(cid)
                    if covering:
                        remedy = _both(covering[0].fix_zh, covering[0].fix_en)
                        break
            out.append(CauseReport(tuple(f.causes), str(f.title), (str(f.evidence),), remedy))
        for note in result.explanations:
            out.append(CauseReport((), str(note), (), "", "faults.diagnose note"))
        return out
