"""The fault catalogue and the fault-spec grammar: every cause id covered, data validated, typed
parameters, presets, onsets, groups, CLI listing."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.cli import main
from emulator.messages import Msg
from faults.catalogue import load, parse
from faults.grammar import parse_spec, spec_from
from faults.model import Fault, OnsetKind, ParamDef, ParamType, ParamValue
from protocol.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fault-causes.md"
CAT = load()


def test_every_cause_id_is_covered_by_a_fault() -> None:
    assert CAT.uncovered() == []
    assert len(CAT.causes) == 42


@pytest.mark.skipif(not SHARED.exists(), reason="shared/fault-causes.md is not beside this checkout")
def test_packaged_causes_match_the_shared_gloss() -> None:
    ids = re.findall(r"^\| ([AB]\d+) \|", SHARED.read_text(encoding="utf-8"), re.M)
    assert sorted(ids) == sorted(CAT.causes)


def test_every_fault_names_real_codes_bilingual_remedies_and_its_group() -> None:
    known = {m.value for m in Msg}
    for f in CAT.faults.values():
        assert set(f.expect) <= known
        assert f.detect_zh and f.detect_en and f.fix_zh and f.fix_en
        assert f.presets and all(set(s.expect) <= known for s in f.presets)
        assert set(f.causes) <= set(CAT.groups[f.group].causes)
        for p in f.params:
            assert p.help, f"{f.id}.{p.name} has no help"
            p.check(p.default, f.id)           # the default is inside its own range


def test_every_group_is_reachable_and_names_known_causes() -> None:
    used = {f.group for f in CAT.faults.values()}
    assert used == set(CAT.groups)
    assert all(set(g.causes) <= set(CAT.causes) for g in CAT.groups.values())


CAUSES = {"A1": {"layer": "hardware", "zh": "接触不良", "en": "contacts"}}
GROUP = {"id": "g", "causes": ["A1"], "title": {"zh": "组", "en": "group"}}
BASE: dict[str, Any] = {
    "id": "x", "causes": ["A1"], "group": "g", "layer": "hardware", "injector": "reader",
    "title": {"zh": "z", "en": "e"}, "detect": {"zh": "z", "en": "e"}, "fix": {"zh": "z", "en": "e"},
    "expect": ["QUERY_CARD_FAILED"],
    "params": {"r": {"type": "float", "min": 0, "max": 10, "default": 5, "unit": "Ω", "help": "h"}},
    "preset": [{"name": "s", "params": {"r": 1.0}, "expect": ["QUERY_CARD_FAILED"], "diagnosis": ["g"]}]}


def _parse(**changes: Any) -> Any:
    return parse(CAUSES, [{"group": [GROUP], "fault": [{**BASE, **changes}]}], {"reader"})


def test_catalogue_validation_rejects_bad_data() -> None:
    assert _parse().faults["x"].param("r") == ParamDef("r", ParamType.FLOAT, 5.0, "Ω", 0.0, 10.0, (), "h")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"causes": ["Z9"]}, "known cause"),
        ({"expect": ["NOPE"]}, "unknown screen message"),
        ({"injector": "magic"}, "unknown injector"),
        ({"group": "nope"}, "unknown group"),
        ({"params": {"r": {"min": 0, "max": 1, "default": 5, "help": "h"}}}, "outside"),
        ({"params": {"r": {"min": 0, "max": 1, "default": 0}}}, "help"),
        ({"params": {"r": {"type": "choice", "choices": ["a"], "default": "b", "help": "h"}}}, "one of"),
        ({"preset": [{"name": "s", "params": {"q": 1}}]}, "unknown parameter"),
        ({"preset": [{"name": "s", "diagnosis": ["zz"]}]}, "unknown group"),
        ({"onset": "whenever"}, "onset"),
        ({"expect": []}, "expect"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            _parse(**change)
    with pytest.raises(ConfigError, match="not in its group"):
        parse({**CAUSES, "B2": {"layer": "hardware", "zh": "z", "en": "e"}},
              [{"group": [GROUP], "fault": [{**BASE, "causes": ["A1", "B2"]}]}], {"reader"})


# --- the grammar ---------------------------------------------------------------------------------------
def test_defaults_presets_and_overrides_merge_in_order() -> None:
    s = parse_spec("reader.dirty-contacts", CAT)
    assert s.values["contact_ohms"] == 30.0 and s.preset is None and s.onset.kind is OnsetKind.CARD_READ
    s = parse_spec("reader.dirty-contacts@mild", CAT)
    assert s.values["contact_ohms"] == 7.5 and s.preset == "mild"
    s = parse_spec("reader.dirty-contacts@mild:contact_ohms=9,fallback=yes,onset=step:2", CAT)
    assert s.values["contact_ohms"] == 9.0 and s.values["fallback"] is True
    assert (s.onset.kind, s.onset.step) == (OnsetKind.STEP, 2)
    assert str(s) == "reader.dirty-contacts@mild:contact_ohms=9,fallback=true,onset=step:2"


def test_text_values_keep_their_commas_and_colons() -> None:
    s = parse_spec("host.peak-hours:rule=respond:rc=91,mti=0200", CAT)
    assert s.values["rule"] == "respond:rc=91,mti=0200"
    s = parse_spec("network.drop-after-send:rule='drop-response:mti=0200,count=1;no-response:mti=0400'", CAT)
    assert s.values["rule"] == "drop-response:mti=0200,count=1;no-response:mti=0400"
    s = parse_spec('host.peak-hours:rule="respond:rc=91,mti=0200",onset=sign-on', CAT)
    assert s.values["rule"] == "respond:rc=91,mti=0200" and s.onset.kind is OnsetKind.SIGN_ON


@pytest.mark.parametrize(("text", "message"), [
    ("reader.nope", "unknown fault 'reader.nope'"),
    ("reader.dirty-contacts:ohms=3", "unknown parameter 'ohms'.*contact_ohms"),
    ("reader.dirty-contacts:contact_ohms=5000", "outside 0…1000 Ω"),
    ("reader.dirty-contacts:contact_ohms=nan", "outside"),
    ("reader.dirty-contacts:contact_ohms=abc", "must be a number"),
    ("reader.dirty-contacts:fallback=maybe", "true or false"),
    ("reader.dirty-contacts:contact_ohms=1,contact_ohms=2", "given twice"),
    ("reader.dirty-contacts@hard", "no preset 'hard'.*mild"),
    ("reader.dirty-contacts@", "needs a preset"),
    ("reader.dirty-contacts:", "needs name=value"),
    ("reader.dirty-contacts:onset=later", "onset 'later' must be one of"),
    ("reader.dirty-contacts:onset=step:0", "step:N needs N"),
    ("network.dns:mode=sometimes", "must be one of"),
    ("user.wrong-pin:wrong_pins=1.5", "whole number"),
    ("host.peak-hours:rule='respond:rc=91", "never closed"),
    ("", "ID\\[@PRESET\\]"),
])
def test_bad_specs_are_config_errors_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(text, CAT)


def test_build_time_faults_refuse_a_later_onset() -> None:
    from faults.runner import make_plan

    with pytest.raises(ConfigError, match="before it is powered on"):
        make_plan([parse_spec("config.wrong-keys:onset=online", CAT)])


def _values(draw: st.DrawFn, fault: Fault) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for p in fault.params:
        if not draw(st.booleans()):
            continue
        if p.type is ParamType.FLOAT:
            assert p.min is not None and p.max is not None
            out[p.name] = draw(st.floats(p.min, p.max, allow_nan=False))
        elif p.type is ParamType.INT:
            assert p.min is not None and p.max is not None
            out[p.name] = draw(st.integers(int(p.min), int(p.max)))
        elif p.type is ParamType.BOOL:
            out[p.name] = draw(st.booleans())
        elif p.type is ParamType.CHOICE:
            out[p.name] = draw(st.sampled_from(p.choices))
        else:
            out[p.name] = draw(st.text(st.characters(codec="utf-8", exclude_characters="'\"\x00"), max_size=20)
                               .filter(lambda t: t == t.strip()))
    return out


@st.composite
def specs(draw: st.DrawFn) -> tuple[Fault, dict[str, ParamValue]]:
    fault = draw(st.sampled_from(sorted(CAT.faults.values(), key=lambda f: f.id)))
    return fault, _values(draw, fault)


@settings(max_examples=300, deadline=None)
@given(specs())
def test_a_spec_prints_as_text_that_parses_back_to_it(drawn: tuple[Fault, dict[str, ParamValue]]) -> None:
    fault, values = drawn
    spec = spec_from(fault.id, CAT, given=values)
    again = parse_spec(str(spec), CAT)
    assert again.fault is spec.fault and again.onset == spec.onset
    for k, v in spec.values.items():
        w = again.values[k]
        assert w == v or (isinstance(v, float) and isinstance(w, float) and abs(w - v) <= 1e-5 * max(1.0, abs(v)))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_is_a_spec_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_spec(text, CAT)


# --- the CLI -------------------------------------------------------------------------------------------
def test_faults_list_json_and_table() -> None:
    res = CliRunner().invoke(main, ["faults", "list", "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    covered = {c for f in doc["faults"] for c in f["causes"]}
    assert len(covered) == 42
    dirty = next(f for f in doc["faults"] if f["id"] == "reader.dirty-contacts")
    assert "QUERY_CARD_FAILED" in dirty["expect"] and dirty["group"] == "contacts"
    assert dirty["params"]["contact_ohms"] == {"type": "float", "default": 30.0, "unit": "Ω", "min": 0.0,
                                              "max": 1000.0, "help": dirty["params"]["contact_ohms"]["help"]}
    assert "mild" in [p["name"] for p in dirty["presets"]] and dirty["onset"] == "card-read"
    assert set(doc["groups"]) == set(CAT.groups)
    res = CliRunner().invoke(main, ["faults", "list"])
    assert "42/42 cause ids" in res.output
    res = CliRunner().invoke(main, ["faults", "show", "reader.seat-switch-stuck"])
    assert "B1" in res.output and "remedy" in res.output and "REMOVE_CARD_FAILED" in res.output
    res = CliRunner().invoke(main, ["faults", "show", "reader.nope"])
    assert res.exit_code == 2 and "unknown fault" in res.output


def test_the_docs_tables_are_the_catalogue() -> None:
    """docs/faults.md holds `python -m faults.docgen`'s block: regenerate it when the catalogue changes."""
    from faults.docgen import BEGIN, END, block

    doc = (Path(__file__).resolve().parents[1] / "docs" / "faults.md").read_text(encoding="utf-8")
    assert BEGIN in doc and END in doc
    assert doc[doc.index(BEGIN):doc.index(END) + len(END)] == block()
