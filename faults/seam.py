"""The one seam where faults meet a terminal: plan → attach → (onset) arm → undo.

:class:`Injection` is what the regression runner, ``posemu inquiry|purchase --fault``, ``posemu
diagnose --fault``, the UI's fault panel and the pytest plugin all use:

1. :meth:`Injection.prepare` runs each fault's injector over the :class:`~faults.injectors.Plan`
   (the world before power-on: card, config, reader backend, steps) and keeps the
   :class:`~faults.injectors.Action` s to arm later;
2. :meth:`Injection.attach` hands it the running rig's :class:`~faults.injectors.Points` and its
   trace: faults whose onset is ``power-on`` are armed at once, the others when the trace shows
   their moment — the sign-on, the first transaction, the card read, the PIN prompt, the request
   about to leave (``online``), the removal prompt — or at step N (:meth:`Injection.step`);
3. :meth:`Injection.undo` disarms everything, last armed first.

Faults wrap the rig's fault points; nothing in the terminal is edited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from emulator.trace import Kind, Trace, TraceEntry
from faults.injectors import BUILD_ONLY, INJECTORS, Action, Plan, Points
from faults.model import FaultSpec, OnsetKind
from protocol.errors import ConfigError, PosemuError

# onset → what in the trace marks it
_STATE_ONSETS = {OnsetKind.CARD_READ: "waiting for card"}
_SCREEN_ONSETS = {OnsetKind.PIN_ENTRY: ("ENTER_PIN", "PIN_RETRY"), OnsetKind.ONLINE: ("PROCESSING",),
                  OnsetKind.REMOVAL: ("REMOVE_CARD",)}


@dataclass(slots=True)
class _Pending:
    spec: FaultSpec
    actions: list[Action]
    armed: bool = False


@dataclass(slots=True)
class Injection:
    """Faults as asked for (:class:`~faults.model.FaultSpec`), on their way into one rig."""

    specs: Sequence[FaultSpec]
    seed: int = 7
    _pending: list[_Pending] = field(default_factory=list)
    _points: Points | None = None
    _armed_order: list[_Pending] = field(default_factory=list)
    _trace: Trace | None = None
    log: list[str] = field(default_factory=list)
    ever: list[FaultSpec] = field(default_factory=list)     # every spec armed at some point (undo keeps it)

    def prepare(self, plan: Plan) -> Plan:
        """Apply every fault's build-time changes to ``plan``; keep the actions for their onset."""
        self._pending = []
        for spec in self.specs:
            injector = INJECTORS.get(spec.fault.injector)
            if injector is None:
                raise ConfigError(f"fault {spec.id}: unknown injector {spec.fault.injector!r}")
            if spec.fault.injector in BUILD_ONLY and spec.onset.kind is not OnsetKind.POWER_ON \
                    and spec.onset != spec.fault.onset:
                raise ConfigError(f"fault {spec.id} changes the terminal before it is powered on; "
                                  f"its onset cannot be {spec.onset}")
            try:
                actions = injector(spec, plan)
            except ConfigError as e:
                raise ConfigError(f"fault {spec.id}: {e}") from None
            self._pending.append(_Pending(spec, actions))
        return plan

    def attach(self, points: Points, trace: Trace | None) -> None:
        """Start acting on a running rig: power-on faults now, the others at their onset."""
        self._points = points
        for p in self._pending:
            if p.spec.onset.kind is OnsetKind.POWER_ON or not p.actions:
                self._arm(p, "power-on")
        if trace is not None:
            self._trace = trace
            trace.subscribe(self._on_trace)

    def step(self, n: int) -> None:
        """The run is about to do its step ``n`` (1-based)."""
        for p in self._pending:
            if p.spec.onset.kind is OnsetKind.STEP and p.spec.onset.step == n:
                self._arm(p, f"step {n}")

    def reached(self, kind: OnsetKind, why: str = "") -> None:
        """A front end that has no terminal trace says a moment has come (a relay sees the card
        powered, a proxy sees the first transaction): every fault waiting for that onset is armed."""
        for p in self._pending:
            if p.spec.onset.kind is kind and kind is not OnsetKind.STEP:
                self._arm(p, why or kind.value)

    def _on_trace(self, e: TraceEntry) -> None:
        for p in self._pending:
            if p.armed:
                continue
            kind = p.spec.onset.kind
            hit = False
            if e.kind is Kind.TXN and e.what == "begin":
                txn = e.data.get("txn")
                hit = (kind is OnsetKind.SIGN_ON and txn == "sign_on") or \
                      (kind is OnsetKind.TRANSACTION and txn not in ("sign_on", "sign_off"))
            elif e.kind is Kind.STATE and kind in _STATE_ONSETS:
                hit = e.what.endswith("→ " + _STATE_ONSETS[kind])
            elif e.kind is Kind.SCREEN and kind in _SCREEN_ONSETS:
                hit = e.what in _SCREEN_ONSETS[kind]
            if hit:
                self._arm(p, str(p.spec.onset))

    def _arm(self, p: _Pending, why: str) -> None:
        if p.armed or self._points is None:
            return
        for a in p.actions:
            try:
                a.arm(self._points)
            except ConfigError as e:
                raise ConfigError(f"fault {p.spec.id}: {e}") from None
        p.armed = True
        self._armed_order.append(p)
        if p.spec not in self.ever:
            self.ever.append(p.spec)
        self.log.append(f"{p.spec} armed at {why}")

    def undo(self) -> None:
        """Disarm every armed fault, last first, and stop watching the trace: the rig is as it was."""
        if self._trace is not None:
            self._trace.unsubscribe(self._on_trace)
            self._trace = None
        if self._points is None:
            return
        for p in reversed(self._armed_order):
            for a in reversed(p.actions):
                with contextlib.suppress(PosemuError):
                    a.disarm(self._points)
            p.armed = False
        self._armed_order.clear()

    @property
    def armed(self) -> list[FaultSpec]:
        return [p.spec for p in self._armed_order]

    def actions_of(self, spec: FaultSpec) -> list[Action]:
        """The actions a spec's injector made (for scoring what acted; never for the diagnosis)."""
        return next((p.actions for p in self._pending if p.spec is spec), [])
