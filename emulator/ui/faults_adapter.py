"""The one seam between the desktop emulator and the fault package (``faults/``).

The UI never imports ``faults`` directly: the fault panel, the transaction runner and the
diagnosis pane go through :class:`FaultsAdapter`, which imports the package lazily and turns
what it finds into the small, stable records below. When ``faults.catalogue`` is missing the
panel says "fault catalogue not available" and everything else works.

Wiring still to be completed by the fault package's owner (only this file changes):

* :meth:`FaultsAdapter._load_raw` / :func:`_info` — read the catalogue (today: tries
  ``load_catalogue()``, ``load()``, ``CATALOGUE``/``FAULTS`` and common attribute names);
* :meth:`FaultsAdapter.arm` — apply the active faults to the running rig before the next action
  (wrap ``rig.terminal.reader``, the host link's connector/resolver, the host rules…) and
  return an :class:`Armed` whose ``disarm`` undoes it. Until then it raises
  :class:`FaultWiringError` when a fault is active, so a user is never misled into thinking a
  fault was applied;
* :meth:`FaultsAdapter.diagnose` — name the likely cause ids from the trace (calls
  ``faults.diagnose.diagnose(entries, outcome)`` when it exists).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from protocol.errors import PosemuError

if TYPE_CHECKING:
    from emulator.app import Rig
    from emulator.terminal import Outcome
    from emulator.trace import TraceEntry

CATALOGUE_MODULE = "faults.catalogue"
DIAGNOSE_MODULE = "faults.diagnose"
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


class _Nothing:
    async def disarm(self) -> None:
        return None


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, Mapping) and n in obj:
            return obj[n]
        if not isinstance(obj, Mapping) and hasattr(obj, n):
            return getattr(obj, n)
    return default


def _text(value: Any) -> str:
    """Plain text from a string or a bilingual ``{"en": …, "zh": …}`` table/object."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    en, zh = _get(value, "en"), _get(value, "zh")
    if en is not None or zh is not None:
        return " / ".join(str(x) for x in (zh, en) if x)
    return str(value)


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Mapping):
        return tuple(str(k) for k in value)
    if isinstance(value, Iterable):
        return tuple(str(getattr(v, "value", v)) for v in value)
    return (str(value),)


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _param(name: str, spec: Any) -> FaultParam:
    if not isinstance(spec, Mapping) and not hasattr(spec, "__dict__") and not hasattr(spec, "__slots__"):
        return FaultParam(name, default=str(spec))
    rng = _get(spec, "range")
    lo = _get(spec, "min", "minimum", default=rng[0] if isinstance(rng, list | tuple) and rng else None)
    hi = _get(spec, "max", "maximum", default=rng[-1] if isinstance(rng, list | tuple) and rng else None)
    default = _get(spec, "default")
    return FaultParam(str(_get(spec, "name", default=name)), str(_get(spec, "unit", "units", default="") or ""),
                      "" if default is None else str(default), _num(lo), _num(hi),
                      _text(_get(spec, "help", "description", "doc")))


def _params(value: Any) -> tuple[FaultParam, ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(_param(str(k), v) for k, v in value.items())
    if isinstance(value, Iterable) and not isinstance(value, str):
        return tuple(_param(str(_get(v, "name", default=f"p{i}")), v) for i, v in enumerate(value))
    return ()


def _info(key: str | None, obj: Any) -> FaultInfo:
    fid = str(_get(obj, "id", "fault_id", "name", default=key or "?"))
    layer = str(_get(obj, "layer", "category", default="") or (fid.split(".", 1)[0] if "." in fid else "other"))
    return FaultInfo(
        id=fid,
        layer=str(getattr(layer, "value", layer)),
        cause_ids=_strs(_get(obj, "cause_ids", "causes", "covers")),
        title=_text(_get(obj, "title", "summary", "description", "name")),
        params=_params(_get(obj, "params", "parameters")),
        messages=_strs(_get(obj, "messages", "message_codes", "expect_messages", "screens", "codes")),
        detect=_text(_get(obj, "detect", "detection")),
        remedy=_text(_get(obj, "remedy", "fix")),
    )


@dataclass(slots=True)
class FaultsAdapter:
    """The fault catalogue and injector as the UI sees them (see the module docstring)."""

    module: str = CATALOGUE_MODULE
    available: bool = False
    reason: str = NOT_AVAILABLE
    faults: list[FaultInfo] = field(default_factory=list)
    _loaded: bool = False

    def load(self, *, force: bool = False) -> FaultsAdapter:
        """Import the catalogue (once, or again with ``force``); never raises."""
        if self._loaded and not force:
            return self
        self._loaded = True
        try:
            raw = self._load_raw()
            infos = self._infos(raw)
        except ModuleNotFoundError as e:
            self.available, self.faults = False, []
            self.reason = f"{NOT_AVAILABLE} ({e.name or self.module} is not installed yet)"
            return self
        except Exception as e:
            self.available, self.faults = False, []
            self.reason = f"{NOT_AVAILABLE}: {type(e).__name__}: {e}"
            return self
        self.available, self.faults = True, sorted(infos, key=lambda f: (f.layer, f.id))
        self.reason = "" if infos else "the fault catalogue is empty"
        return self

    def _load_raw(self) -> Any:
        mod = importlib.import_module(self.module)
        for name in ("load_catalogue", "load", "catalogue"):
            fn = getattr(mod, name, None)
            if callable(fn):
                return fn()
        for name in ("CATALOGUE", "FAULTS", "catalogue", "faults"):
            if hasattr(mod, name):
                return getattr(mod, name)
        raise LookupError(f"{self.module} offers no load_catalogue()/CATALOGUE")

    @staticmethod
    def _infos(raw: Any) -> list[FaultInfo]:
        inner = _get(raw, "faults") if not isinstance(raw, Mapping | list | tuple) else None
        if inner is not None:
            raw = inner
        if isinstance(raw, Mapping):
            return [_info(str(k), v) for k, v in raw.items()]
        return [_info(None, v) for v in raw]

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
        """Apply ``active`` to ``rig`` for the next action; ``disarm`` afterwards.

        Not wired yet: raises :class:`FaultWiringError` when any fault is active.
        """
        if not active:
            return _Nothing()
        specs = ", ".join(a.spec() for a in active)
        raise FaultWiringError(f"fault injection from the UI is not wired yet (active: {specs}); "
                               "switch the faults off, or use `posemu inquiry --fault …`")

    def diagnose(self, entries: Sequence[TraceEntry], outcome: Outcome) -> list[CauseReport]:
        """Cause ids for a failure from the fault package's diagnosis (``[]`` until it exists)."""
        try:
            mod = importlib.import_module(DIAGNOSE_MODULE)
        except ImportError:
            return []
        fn = getattr(mod, "diagnose", None)
        if not callable(fn):
            return []
        try:
            raw = fn(list(entries), outcome)
        except Exception:
            return []
        out: list[CauseReport] = []
        for r in raw or ():
            out.append(CauseReport(
                cause_ids=_strs(_get(r, "cause_ids", "causes", "cause_id", "id")),
                summary=_text(_get(r, "summary", "title", "explanation", "why")),
                evidence=_strs(_get(r, "evidence")),
                remedy=_text(_get(r, "remedy", "fix")),
            ))
        return out
