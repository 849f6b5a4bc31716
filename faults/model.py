"""The fault catalogue's types: faults, their typed parameters and presets, onsets, cause groups.

A :class:`Fault` reproduces one or more of the articles' causes (ids A1…B20). Its parameters are
typed (:class:`ParamDef`: float, int, bool, choice or text, with unit, range and help) and their
defaults are the fault's *typical* severity — asked for by name, a fault bites. Milder and more
severe variants are :class:`Preset` s (``ID@PRESET``), each with what it must show; the regression
suite runs the presets. Every fault acts from an :class:`Onset` (power-on, the sign-on, the next
transaction, a phase of it, or step N). Causes that evidence cannot tell apart form one
:class:`Group`; the diagnosis names groups.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ConfigError

ParamValue = float | int | bool | str


class ParamType(enum.Enum):
    """The type of a fault parameter, as the catalogue declares it (checked when a spec is parsed)."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CHOICE = "choice"
    TEXT = "text"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class ParamDef:
    """One declared parameter of a fault."""

    name: str
    type: ParamType
    default: ParamValue
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def describe(self) -> str:
        if self.type in (ParamType.FLOAT, ParamType.INT):
            return f"{self.min:g}…{self.max:g} {self.unit}".rstrip()
        if self.type is ParamType.BOOL:
            return "true/false"
        if self.type is ParamType.CHOICE:
            return " | ".join(self.choices)
        return "text"

    def parse(self, text: str, where: str) -> ParamValue:
        """A value given as text (``--fault ID:name=value``)."""
        t = self.type
        raw = text.strip()
        if t is ParamType.TEXT:
            return raw
        if t is ParamType.CHOICE:
            return self.check(raw, where)
        if t is ParamType.BOOL:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ConfigError(f"{where}: {self.name}={text!r} must be true or false")
        if not raw or not raw.isascii():
            raise ConfigError(f"{where}: {self.name}={text!r} must be a number ({self.describe()})")
        try:
            num = float(raw) if t is ParamType.FLOAT else int(raw, 10)
        except ValueError:
            kind = "a number" if t is ParamType.FLOAT else "a whole number"
            raise ConfigError(f"{where}: {self.name}={text!r} must be {kind} ({self.describe()})") from None
        return self.check(num, where)

    def check(self, value: object, where: str) -> ParamValue:
        """A value from TOML (or parsed): the right type and inside the declared range."""
        t = self.type
        if t is ParamType.BOOL:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ConfigError(f"{where}: {self.name} must be true or false, got {value!r}")
        if t is ParamType.TEXT:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {self.name} must be text, got {value!r}")
            return value
        if t is ParamType.CHOICE:
            if not isinstance(value, str) or value not in self.choices:
                raise ConfigError(f"{where}: {self.name}={value!r} must be one of {', '.join(self.choices)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {self.name} must be a number ({self.describe()}), got {value!r}")
        if t is ParamType.INT:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{where}: {self.name} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        assert self.min is not None and self.max is not None
        if not (math.isfinite(value) and self.min <= value <= self.max):
            raise ConfigError(f"{where}: {self.name}={value:g} is outside {self.describe()}")
        return value


class OnsetKind(enum.Enum):
    """The moment a fault starts to act, named after the step of the transaction it strikes."""

    POWER_ON = "power-on"          # from the start: before the sign-on
    SIGN_ON = "sign-on"            # strikes the sign-on
    TRANSACTION = "transaction"    # from the first transaction after the sign-on
    CARD_READ = "card-read"        # when the terminal starts reading the card
    PIN_ENTRY = "pin-entry"        # when it asks for the PIN
    ONLINE = "online"              # when the request is about to go to the host
    REMOVAL = "removal"            # when the card should come out
    STEP = "step"                  # at step N of the run (1 = the first step)


@dataclass(frozen=True, slots=True)
class Onset:
    """When a fault is armed: its kind and, for repeated moments, which occurrence (``card-read:2``)."""

    kind: OnsetKind
    step: int = 0

    @classmethod
    def parse(cls, text: str, where: str = "onset") -> Onset:
        head, _, n = text.strip().partition(":")
        try:
            kind = OnsetKind(head)
        except ValueError:
            raise ConfigError(f"{where}: onset {text!r} must be one of "
                              f"{', '.join(k.value for k in OnsetKind if k is not OnsetKind.STEP)} or step:N") from None
        if kind is OnsetKind.STEP:
            if not (n.isascii() and n.isdigit() and 1 <= int(n) <= 1000):
                raise ConfigError(f"{where}: onset step:N needs N from 1 to 1000, got {text!r}")
            return cls(kind, int(n))
        if n:
            raise ConfigError(f"{where}: onset {text!r}: only step takes a number")
        return cls(kind)

    def __str__(self) -> str:
        return f"step:{self.step}" if self.kind is OnsetKind.STEP else self.kind.value


ONSET_CHOICES = (*(k.value for k in OnsetKind if k is not OnsetKind.STEP), "step:N")


@dataclass(frozen=True, slots=True)
class Preset:
    """A named variant of a fault with what it must show (the regression suite runs these)."""

    name: str
    params: dict[str, ParamValue]
    expect: tuple[str, ...]                 # screen codes, in order (a subsequence of what is shown)
    approved: bool | None
    diagnosis: tuple[str, ...]              # group ids the diagnosis must name — exactly these (empty: none)
    journal: str = "any"
    steps: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    card: str | None = None
    txn: str | None = None
    evidence: str | None = None             # a code the trace must hold (mild faults: the recovered errors)
    reader: str | None = None
    onset: Onset | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    """Causes the evidence cannot tell apart: one finding of the diagnosis."""

    id: str
    causes: tuple[str, ...]
    title_zh: str
    title_en: str

    def title(self, lang: str = "both") -> str:
        return {"zh": self.title_zh, "en": self.title_en}.get(lang, f"{self.title_zh} {self.title_en}")


@dataclass(frozen=True, slots=True)
class Fault:
    """One catalogue entry: the articles' causes it reproduces, its diagnosis group, injector, typed
    parameters, presets, default onset and the screens it is expected to show."""

    id: str
    causes: tuple[str, ...]
    group: str
    layer: str
    title_zh: str
    title_en: str
    injector: str
    params: tuple[ParamDef, ...]
    onset: Onset
    expect: tuple[str, ...]
    detect_zh: str
    detect_en: str
    fix_zh: str
    fix_en: str
    journal: str
    card: str
    txn: str
    presets: tuple[Preset, ...]
    note: str = ""
    requires: tuple[str, ...] = ()          # "bundled-host", "sim-reader", "pcscd" …

    def defaults(self) -> dict[str, ParamValue]:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> ParamDef | None:
        return next((p for p in self.params if p.name == name), None)

    def preset(self, name: str) -> Preset:
        for p in self.presets:
            if p.name == name:
                return p
        raise ConfigError(f"fault {self.id} has no preset {name!r}; presets: "
                          f"{', '.join(p.name for p in self.presets) or 'none'}")


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault as asked for: the fault, its preset (if any), every parameter's value, its onset."""

    fault: Fault
    values: dict[str, ParamValue]
    onset: Onset
    preset: str | None = None

    @property
    def id(self) -> str:
        return self.fault.id

    def __str__(self) -> str:
        head = self.fault.id + (f"@{self.preset}" if self.preset else "")
        changed = {k: v for k, v in self.values.items() if v != self.fault.defaults().get(k)}
        parts = [f"{k}={_show(v)}" for k, v in changed.items()]
        if self.onset != self.fault.onset:
            parts.append(f"onset={self.onset}")
        return head + (":" + ",".join(parts) if parts else "")


def _show(v: ParamValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and ("," in v or '"' in v):
        return "'" + v + "'" if "'" not in v else '"' + v + '"'
    return str(v)
