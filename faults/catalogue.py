"""The fault catalogue: ``catalogue.toml`` (data) and ``causes.toml`` (the articles' causes).

Each fault has a stable id, the cause ids it reproduces, its layer, its parameters (unit,
range, default), the screen message codes it must produce, the article's detection method and
remedy in Chinese and English, what the journal must show, and scenarios (mild/severe…) the
regression suite runs. :func:`load` validates all of it: unknown message codes, cause ids or
injectors, and parameters outside their range are errors, and every cause id must be covered.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from emulator.messages import Msg
from protocol.errors import ConfigError

LAYERS = ("hardware", "card", "software", "network", "user", "account", "environment", "management",
          "consumer")
JOURNAL_EXPECT = ("none", "failed", "declined", "approved", "unknown", "reversed", "any")


@dataclass(frozen=True, slots=True)
class Cause:
    id: str
    layer: str
    zh: str
    en: str
    article_remedy: str


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    unit: str
    min: float
    max: float
    default: float
    help: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    params: dict[str, Any]
    expect: tuple[str, ...]
    approved: bool | None
    diagnosis: tuple[str, ...]
    journal: str = "any"
    steps: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    card: str | None = None
    txn: str | None = None
    evidence: str | None = None
    reader: str | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    id: str
    causes: tuple[str, ...]
    layer: str
    title_zh: str
    title_en: str
    injector: str
    params: tuple[Param, ...]
    expect: tuple[str, ...]
    detect_zh: str
    detect_en: str
    fix_zh: str
    fix_en: str
    journal: str
    card: str
    txn: str
    scenarios: tuple[Scenario, ...]
    note: str = ""

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True, slots=True)
class Catalogue:
    causes: dict[str, Cause]
    faults: dict[str, Fault]

    def covering(self, cause_id: str) -> list[Fault]:
        return [f for f in self.faults.values() if cause_id in f.causes]

    def uncovered(self) -> list[str]:
        covered = {c for f in self.faults.values() for c in f.causes}
        return sorted(set(self.causes) - covered, key=lambda c: (c[0], int(c[1:])))

    def get(self, fault_id: str) -> Fault:
        try:
            return self.faults[fault_id]
        except KeyError:
            raise ConfigError(f"unknown fault {fault_id!r}; see `posemu faults list`") from None


def _text(d: dict[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}: missing text {key!r}")
    return v


def _codes(values: Any, where: str) -> tuple[str, ...]:
    """Screen message codes: a list of known code strings (absent: none)."""
    if values is None:
        return ()
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: screens must be a list of message codes, e.g. [\"WRONG_PIN\"]")
    codes = tuple(values)
    known = {m.value for m in Msg}
    for c in codes:
        if c not in known:
            raise ConfigError(f"{where}: unknown screen message code {c!r}")
    return codes


def parse(causes_doc: dict[str, Any], doc: dict[str, Any], injectors: set[str] | None = None) -> Catalogue:
    causes = {cid: Cause(cid, str(c["layer"]), str(c["zh"]), str(c["en"]), str(c.get("article_remedy", "")))
              for cid, c in causes_doc.items()}
    faults: dict[str, Fault] = {}
    for raw in doc.get("fault", []):
        fid = str(raw.get("id", ""))
        where = f"fault {fid or '?'}"
        if not fid or fid in faults:
            raise ConfigError(f"{where}: missing or duplicate id")
        cause_ids = tuple(str(c) for c in raw.get("causes", ()))
        if not cause_ids:
            raise ConfigError(f"{where}: covers no cause id")
        for c in cause_ids:
            if c not in causes:
                raise ConfigError(f"{where}: unknown cause id {c!r}")
        layer = str(raw.get("layer", ""))
        if layer not in LAYERS:
            raise ConfigError(f"{where}: layer must be one of {', '.join(LAYERS)}")
        injector = str(raw.get("injector", ""))
        if injectors is not None and injector not in injectors:
            raise ConfigError(f"{where}: unknown injector {injector!r}")
        params = []
        for name, p in raw.get("params", {}).items():
            lo, hi, default = float(p["min"]), float(p["max"]), float(p["default"])
            if not lo <= default <= hi:
                raise ConfigError(f"{where}: parameter {name} default {default} outside {lo}..{hi}")
            params.append(Param(name, str(p.get("unit", "")), lo, hi, default, str(p.get("help", ""))))
        journal = str(raw.get("journal", "any"))
        if journal not in JOURNAL_EXPECT:
            raise ConfigError(f"{where}: journal must be one of {', '.join(JOURNAL_EXPECT)}")
        scenarios = []
        for s in raw.get("scenario", []):
            sname = str(s.get("name", ""))
            swhere = f"{where} scenario {sname}"
            sparams = dict(s.get("params", {}))
            for k, v in sparams.items():
                pdef = next((p for p in params if p.name == k), None)
                if pdef is not None and isinstance(v, int | float) and not pdef.min <= float(v) <= pdef.max:
                    raise ConfigError(f"{swhere}: {k}={v} outside {pdef.min}..{pdef.max}")
            diag = tuple(str(c) for c in s.get("diagnosis", ()))
            for c in diag:
                if c not in causes:
                    raise ConfigError(f"{swhere}: unknown cause id {c!r} in diagnosis")
            sj = str(s.get("journal", journal))
            if sj not in JOURNAL_EXPECT:
                raise ConfigError(f"{swhere}: journal must be one of {', '.join(JOURNAL_EXPECT)}")
            scenarios.append(Scenario(
                name=sname, params=sparams, expect=_codes(s.get("expect"), swhere),
                approved=s.get("approved"), diagnosis=diag, journal=sj,
                steps=tuple(str(x) for x in s.get("steps", ())), config=dict(s.get("config", {})),
                card=s.get("card"), txn=s.get("txn"), evidence=s.get("evidence"), reader=s.get("reader")))
        if not scenarios:
            raise ConfigError(f"{where}: has no scenario")
        title = raw.get("title", {})
        detect = raw.get("detect", {})
        fix = raw.get("fix", {})
        faults[fid] = Fault(
            id=fid, causes=cause_ids, layer=layer, title_zh=_text(title, "zh", where),
            title_en=_text(title, "en", where),
            injector=injector, params=tuple(params), expect=_codes(raw.get("expect"), where),
            detect_zh=_text(detect, "zh", where), detect_en=_text(detect, "en", where),
            fix_zh=_text(fix, "zh", where), fix_en=_text(fix, "en", where), journal=journal,
            card=str(raw.get("card", "demo")), txn=str(raw.get("txn", "balance")), scenarios=tuple(scenarios),
            note=str(raw.get("note", "")))
    return Catalogue(causes, faults)


@cache
def load() -> Catalogue:
    """The bundled catalogue, validated."""
    from faults.injectors import INJECTORS

    base = resources.files("faults")
    try:
        causes_doc = tomllib.loads((base / "causes.toml").read_text(encoding="utf-8"))
        doc = tomllib.loads((base / "catalogue.toml").read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"fault catalogue: {e}") from None
    return parse(causes_doc, doc, set(INJECTORS))


def parse_fault_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``ID[:param=value,…]`` → (id, params)."""
    fid, _, rest = spec.partition(":")
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(f"fault parameter {item!r} must look like name=value")
        params[k.strip()] = v.strip()
    return fid.strip(), params
