"""The fault catalogue: every cause id covered, data validated, CLI listing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main
from emulator.messages import Msg
from faults.catalogue import load, parse, parse_fault_spec
from protocol.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fault-causes.md"


def test_every_cause_id_is_covered_by_a_fault() -> None:
    cat = load()
    assert cat.uncovered() == []
    assert len(cat.causes) == 42


@pytest.mark.skipif(not SHARED.exists(), reason="shared/fault-causes.md is not beside this checkout")
def test_packaged_causes_match_the_shared_gloss() -> None:
    ids = re.findall(r"^\| ([AB]\d+) \|", SHARED.read_text(encoding="utf-8"), re.M)
    assert sorted(ids) == sorted(load().causes)


def test_every_fault_names_real_codes_and_bilingual_remedies() -> None:
    known = {m.value for m in Msg}
    for f in load().faults.values():
        assert set(f.expect) <= known
        assert f.detect_zh and f.detect_en and f.fix_zh and f.fix_en
        assert all(set(s.expect) <= known for s in f.scenarios)
        assert f.scenarios


def test_catalogue_validation_rejects_bad_data() -> None:
    causes = {"A1": {"layer": "hardware", "zh": "接触不良", "en": "contacts"}}
    base = {"id": "x", "causes": ["A1"], "layer": "hardware", "injector": "reader",
            "title": {"zh": "z", "en": "e"}, "detect": {"zh": "z", "en": "e"}, "fix": {"zh": "z", "en": "e"},
            "scenario": [{"name": "s", "expect": ["QUERY_CARD_FAILED"]}]}
    parse(causes, {"fault": [base]}, {"reader"})
    with pytest.raises(ConfigError, match="unknown cause"):
        parse(causes, {"fault": [{**base, "causes": ["Z9"]}]}, {"reader"})
    with pytest.raises(ConfigError, match="unknown screen message"):
        parse(causes, {"fault": [{**base, "expect": ["NOPE"]}]}, {"reader"})
    with pytest.raises(ConfigError, match="unknown injector"):
        parse(causes, {"fault": [{**base, "injector": "magic"}]}, {"reader"})
    with pytest.raises(ConfigError, match="outside"):
        parse(causes, {"fault": [{**base, "params": {"r": {"min": 0, "max": 1, "default": 5}}}]}, {"reader"})


def test_fault_spec_parsing() -> None:
    assert parse_fault_spec("reader.dirty-contacts:contact_ohms=30,fallback=0") == (
        "reader.dirty-contacts", {"contact_ohms": "30", "fallback": "0"})
    with pytest.raises(ConfigError):
        parse_fault_spec("x:novalue")


def test_faults_list_json_and_table() -> None:
    res = CliRunner().invoke(main, ["faults", "list", "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    covered = {c for f in doc for c in f["causes"]}
    assert len(covered) == 42
    assert any(f["id"] == "reader.dirty-contacts" and "QUERY_CARD_FAILED" in f["expect"] for f in doc)
    res = CliRunner().invoke(main, ["faults", "list"])
    assert "42/42 cause ids" in res.output
    res = CliRunner().invoke(main, ["faults", "show", "reader.seat-switch-stuck"])
    assert "B1" in res.output and "remedy" in res.output and "REMOVE_CARD_FAILED" in res.output
