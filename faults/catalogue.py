"""The fault catalogue: data in ``faults/data/*.toml`` (faults by layer, and ``groups.toml``)
and ``faults/causes.toml`` (the articles' causes).

Each fault has a stable id, the cause ids it reproduces and the diagnosis group that names them,
its layer, its typed parameters (unit, range, default = the typical severity), its default onset,
the screen codes its defaults must produce, the article's detection method and remedy in Chinese
and English, and presets (mild, severe, …) with what each must show. :func:`load` validates all
of it: unknown message codes, cause ids, groups or injectors, defaults or preset values outside
their range are errors, every cause id is covered, and a fault's causes lie in its group.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from emulator.messages import Msg
from faults.model import Fault, Group, Onset, ParamDef, ParamType, ParamValue, Preset
from protocol.errors import ConfigError

LAYERS = ("hardware", "card", "software", "network", "user", "account", "environment", "management",
          "consumer")
JOURNAL_EXPECT = ("none", "failed", "declined", "approved", "unknown", "reversed", "any")
REQUIRES = ("bundled-host", "sim-reader", "pcscd", "serial")


@dataclass(frozen=True, slots=True)
class Cause:
    """One cause from the articles (`fault-causes.md`): its id, layer, Chinese and English text and remedy."""

    id: str
    layer: str
    zh: str
    en: str
    article_remedy: str


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The causes, the faults that reproduce them and the diagnosis groups, loaded from `faults/data/`."""

    causes: dict[str, Cause]
    faults: dict[str, Fault]
    groups: dict[str, Group]

    def covering(self, cause_id: str) -> list[Fault]:
        return [f for f in self.faults.values() if cause_id in f.causes]

    def uncovered(self) -> list[str]:
        covered = {c for f in self.faults.values() for c in f.causes}
        return sorted(set(self.causes) - covered, key=lambda c: (c[0], int(c[1:])))

    def get(self, fault_id: str) -> Fault:
        try:
            return self.faults[fault_id]
        except KeyError:
            close = [f for f in self.faults if fault_id and (fault_id in f or f.split(".")[-1] in fault_id)]
            hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
            raise ConfigError(f"unknown fault {fault_id!r}{hint}; see `posemu faults list`") from None

    def group(self, group_id: str) -> Group:
        try:
            return self.groups[group_id]
        except KeyError:
            raise ConfigError(f"unknown cause group {group_id!r}") from None

    def group_of(self, fault: Fault) -> Group:
        return self.groups[fault.group]


def _text(d: dict[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}: missing text {key!r}")
    return v


def _strs(d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = d.get(key, ())
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return tuple(v)


def _codes(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        raise ConfigError(f"{where}: expect must be a list of screen codes")
    codes = tuple(str(v) for v in values)
    known = {m.value for m in Msg}
    for c in codes:
        if c not in known:
            raise ConfigError(f"{where}: unknown screen message code {c!r}")
    return codes


def _param(name: str, p: Any, where: str) -> ParamDef:
    if not isinstance(p, dict):
        raise ConfigError(f"{where}: parameter {name} must be a table")
    try:
        ptype = ParamType(str(p.get("type", "float")))
    except ValueError:
        raise ConfigError(f"{where}: parameter {name}: type must be one of "
                          f"{', '.join(t.value for t in ParamType)}") from None
    unit, help_ = str(p.get("unit", "")), str(p.get("help", ""))
    if not help_:
        raise ConfigError(f"{where}: parameter {name} needs a help text")
    if ptype in (ParamType.FLOAT, ParamType.INT):
        lo, hi = p.get("min"), p.get("max")
        if not (isinstance(lo, int | float) and isinstance(hi, int | float)) or isinstance(lo, bool) \
                or isinstance(hi, bool) or lo > hi:
            raise ConfigError(f"{where}: parameter {name} needs numeric min <= max")
        draft = ParamDef(name, ptype, 0, unit, float(lo), float(hi), (), help_)
    elif ptype is ParamType.CHOICE:
        choices = p.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
            raise ConfigError(f"{where}: parameter {name} needs a list of choices")
        draft = ParamDef(name, ptype, "", unit, None, None, tuple(choices), help_)
    else:
        draft = ParamDef(name, ptype, False if ptype is ParamType.BOOL else "", unit, None, None, (), help_)
    if "default" not in p:
        raise ConfigError(f"{where}: parameter {name} needs a default")
    default = draft.check(p["default"], f"{where}: default of")
    return ParamDef(name, ptype, default, unit, draft.min, draft.max, draft.choices, help_)


def _preset(raw: Any, fault_where: str, params: tuple[ParamDef, ...], groups: dict[str, Group],
            journal_default: str) -> Preset:
    if not isinstance(raw, dict):
        raise ConfigError(f"{fault_where}: a preset must be a table")
    name = str(raw.get("name", ""))
    where = f"{fault_where} preset {name or '?'}"
    if not name or not name.replace("-", "").isalnum():
        raise ConfigError(f"{where}: needs a name of letters, digits and '-'")
    values: dict[str, ParamValue] = {}
    onset = None
    raw_params = raw.get("params", {})
    if not isinstance(raw_params, dict):
        raise ConfigError(f"{where}: params must be a table")
    for k, v in raw_params.items():
        if k == "onset":
            onset = Onset.parse(str(v), where)
            continue
        pdef = next((p for p in params if p.name == k), None)
        if pdef is None:
            raise ConfigError(f"{where}: unknown parameter {k!r} (declared: {', '.join(p.name for p in params)})")
        values[k] = pdef.check(v, where)
    diagnosis = _strs(raw, "diagnosis", where)
    for g in diagnosis:
        if g not in groups:
            raise ConfigError(f"{where}: unknown group {g!r} in diagnosis")
    journal = str(raw.get("journal", journal_default))
    if journal not in JOURNAL_EXPECT:
        raise ConfigError(f"{where}: journal must be one of {', '.join(JOURNAL_EXPECT)}")
    approved = raw.get("approved")
    if approved is not None and not isinstance(approved, bool):
        raise ConfigError(f"{where}: approved must be true or false")
    config = raw.get("config", {})
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: config must be a table")
    return Preset(name=name, params=values, expect=_codes(raw.get("expect", []), where), approved=approved,
                  diagnosis=diagnosis, journal=journal, steps=_strs(raw, "steps", where), config=dict(config),
                  card=raw.get("card"), txn=raw.get("txn"), evidence=raw.get("evidence"), reader=raw.get("reader"),
                  onset=onset, note=str(raw.get("note", "")))


def parse(causes_doc: dict[str, Any], docs: list[dict[str, Any]], injectors: set[str] | None = None) -> Catalogue:
    """Build and validate a catalogue from the causes and the catalogue documents."""
    causes = {cid: Cause(cid, str(c["layer"]), str(c["zh"]), str(c["en"]), str(c.get("article_remedy", "")))
              for cid, c in causes_doc.items()}
    groups: dict[str, Group] = {}
    for doc in docs:
        for raw in doc.get("group", []):
            gid = str(raw.get("id", ""))
            where = f"group {gid or '?'}"
            if not gid or gid in groups:
                raise ConfigError(f"{where}: missing or duplicate id")
            gcauses = _strs(raw, "causes", where)
            if not gcauses or any(c not in causes for c in gcauses):
                raise ConfigError(f"{where}: causes must be known cause ids")
            title = raw.get("title", {})
            groups[gid] = Group(gid, gcauses, _text(title, "zh", where), _text(title, "en", where))
    faults: dict[str, Fault] = {}
    for doc in docs:
        for raw in doc.get("fault", []):
            fid = str(raw.get("id", ""))
            where = f"fault {fid or '?'}"
            if not fid or fid in faults:
                raise ConfigError(f"{where}: missing or duplicate id")
            cause_ids = _strs(raw, "causes", where)
            if not cause_ids or any(c not in causes for c in cause_ids):
                raise ConfigError(f"{where}: causes must be known cause ids")
            gid = str(raw.get("group", ""))
            if gid not in groups:
                raise ConfigError(f"{where}: unknown group {gid!r}")
            outside = set(cause_ids) - set(groups[gid].causes)
            if outside:
                raise ConfigError(f"{where}: causes {sorted(outside)} are not in its group {gid}")
            layer = str(raw.get("layer", ""))
            if layer not in LAYERS:
                raise ConfigError(f"{where}: layer must be one of {', '.join(LAYERS)}")
            injector = str(raw.get("injector", ""))
            if injectors is not None and injector not in injectors:
                raise ConfigError(f"{where}: unknown injector {injector!r}")
            raw_params = raw.get("params", {})
            if not isinstance(raw_params, dict):
                raise ConfigError(f"{where}: params must be a table")
            params = tuple(_param(n, p, where) for n, p in raw_params.items())
            journal = str(raw.get("journal", "any"))
            if journal not in JOURNAL_EXPECT:
                raise ConfigError(f"{where}: journal must be one of {', '.join(JOURNAL_EXPECT)}")
            presets = tuple(_preset(p, where, params, groups, journal) for p in raw.get("preset", []))
            if len({p.name for p in presets}) != len(presets):
                raise ConfigError(f"{where}: two presets share a name")
            requires = _strs(raw, "requires", where)
            for r in requires:
                if r not in REQUIRES:
                    raise ConfigError(f"{where}: requires {r!r}: known {', '.join(REQUIRES)}")
            expect = _codes(raw.get("expect", []), where)
            if not expect:
                raise ConfigError(f"{where}: expect (what its defaults show) is missing")
            title, detect, fix = raw.get("title", {}), raw.get("detect", {}), raw.get("fix", {})
            faults[fid] = Fault(
                id=fid, causes=cause_ids, group=gid, layer=layer, title_zh=_text(title, "zh", where),
                title_en=_text(title, "en", where), injector=injector, params=params,
                onset=Onset.parse(str(raw.get("onset", "transaction")), where), expect=expect,
                detect_zh=_text(detect, "zh", where), detect_en=_text(detect, "en", where),
                fix_zh=_text(fix, "zh", where), fix_en=_text(fix, "en", where), journal=journal,
                card=str(raw.get("card", "demo")), txn=str(raw.get("txn", "balance")), presets=presets,
                note=str(raw.get("note", "")), requires=requires)
    return Catalogue(causes, faults, groups)


@cache
def load() -> Catalogue:
    """The bundled catalogue, validated."""
    from faults.injectors import INJECTORS

    base = resources.files("faults")
    try:
        causes_doc = tomllib.loads((base / "causes.toml").read_text(encoding="utf-8"))
        docs = [tomllib.loads(entry.read_text(encoding="utf-8"))
                for entry in sorted((base / "data").iterdir(), key=lambda e: e.name)
                if entry.name.endswith(".toml")]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"fault catalogue: {e}") from None
    return parse(causes_doc, docs, set(INJECTORS))
