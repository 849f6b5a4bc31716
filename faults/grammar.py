"""The fault-spec grammar: how a fault is asked for on the command line, in the pytest plugin and in
scenario files.

::

    spec   := ID [ "@" PRESET ] [ ":" param ( "," param )* ]
    param  := NAME "=" value
    value  := '"' any text without '"' '"'  |  "'" any text without "'" "'"  |  bare
    bare   := text up to the next "," that starts another declared NAME "=" of this fault

``NAME`` is a declared parameter of the fault or ``onset``. A bare value of a *text* parameter may
hold commas and colons — ``host.peak-hours:rule=respond:rc=91,mti=0200`` keeps its MTI filter,
because ``mti`` is not a parameter of ``host.peak-hours`` — and any value may be quoted. An unknown
fault, preset or parameter, a malformed or out-of-range value: a :class:`~protocol.errors.ConfigError`
(exit 2) naming the fault and what it declares, before anything runs.

Values are merged in this order: the parameter defaults (the typical severity), the preset, what
the spec says.

>>> from faults.catalogue import load
>>> s = parse_spec("reader.dirty-contacts@mild:onset=online", load())
>>> s.fault.id, s.preset, s.values["contact_ohms"], str(s.onset)
('reader.dirty-contacts', 'mild', 7.5, 'online')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from faults.model import FaultSpec, Onset, ParamType, ParamValue
from protocol.errors import ConfigError

if TYPE_CHECKING:
    from faults.catalogue import Catalogue

__all__ = ["parse_spec", "spec_from", "split_params"]


def split_params(text: str, declared: Mapping[str, ParamType], where: str) -> list[tuple[str, str]]:
    """``name=value,name=value`` → pairs, by the rules of the module docstring."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            raise ConfigError(f"{where}: {text[i:]!r} is not name=value")
        name = text[i:eq].strip()
        if not name:
            raise ConfigError(f"{where}: a parameter has no name before '='")
        if "," in name:
            raise ConfigError(f"{where}: {name.split(',')[0]!r} is not name=value")
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(f"{where}: unknown parameter {name!r} (declared: {known})")
        j = eq + 1
        if j < n and text[j] in "\"'":
            quote = text[j]
            end = text.find(quote, j + 1)
            if end < 0:
                raise ConfigError(f"{where}: the value of {name} opens a {quote} that is never closed")
            value = text[j + 1:end]
            j = end + 1
            if j < n and text[j] != ",":
                raise ConfigError(f"{where}: after the quoted value of {name} comes {text[j:j + 10]!r}, not ','")
            i = j + 1
        else:
            k = j
            while True:
                comma = text.find(",", k)
                if comma < 0:
                    value, i = text[j:], n
                    break
                nxt = text[comma + 1:].split("=", 1)[0].strip() if "=" in text[comma + 1:] else None
                if declared[name] is ParamType.TEXT and (nxt is None or nxt not in declared or "," in nxt):
                    k = comma + 1          # a text value keeps its commas
                    continue
                value, i = text[j:comma], comma + 1
                break
        if any(name == seen for seen, _ in out):
            raise ConfigError(f"{where}: parameter {name!r} given twice")
        out.append((name, value))
    return out


def parse_spec(text: str, catalogue: Catalogue) -> FaultSpec:
    """Parse ``ID[@PRESET][:name=value,…]`` against the catalogue (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("a fault spec is ID[@PRESET][:name=value,…]")
    head, colon, rest = text.strip().partition(":")
    fid, at, preset = head.partition("@")
    fid = fid.strip()
    fault = catalogue.get(fid)
    where = f"fault {fid}"
    if at and not preset.strip():
        raise ConfigError(f"{where}: '@' needs a preset name")
    declared: dict[str, ParamType] = {p.name: p.type for p in fault.params}
    declared["onset"] = ParamType.CHOICE
    pairs = split_params(rest, declared, where) if colon and rest.strip() else []
    if colon and not rest.strip():
        raise ConfigError(f"{where}: ':' needs name=value parameters")
    return spec_from(fault.id, catalogue, preset=preset.strip() or None, given=dict(pairs), where=where)


def spec_from(fault_id: str, catalogue: Catalogue, *, preset: str | None = None,
              given: Mapping[str, object] | None = None, where: str | None = None) -> FaultSpec:
    """A :class:`FaultSpec` from already-split values (text from a spec, or typed values from TOML
    or the pytest plugin): defaults ← preset ← ``given``, each value checked."""
    fault = catalogue.get(fault_id)
    where = where or f"fault {fault.id}"
    values: dict[str, ParamValue] = fault.defaults()
    onset = fault.onset
    if preset is not None:
        p = fault.preset(preset)
        values.update(p.params)
        if p.onset is not None:
            onset = p.onset
    for name, raw in (given or {}).items():
        if name == "onset":
            if not isinstance(raw, str):
                raise ConfigError(f"{where}: onset must be text like 'online' or 'step:2'")
            onset = Onset.parse(raw, where)
            continue
        pdef = fault.param(name)
        if pdef is None:
            known = ", ".join(sorted([p.name for p in fault.params] + ["onset"]))
            raise ConfigError(f"{where}: unknown parameter {name!r} (declared: {known})")
        values[name] = pdef.parse(raw, where) if isinstance(raw, str) and pdef.type is not ParamType.TEXT \
            else pdef.check(raw, where)
    return FaultSpec(fault, values, onset, preset)
