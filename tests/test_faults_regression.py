"""The fault-regression suite in CI: every catalogue scenario and scenario file, through the
real stack (sim/serial/PC/SC reader backends, terminal, TCP host, journal), on the virtual clock."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emulator.cli import main
from faults.regress import Case, bundled_scenario_files, catalogue_cases, load, replay, run_cases
from faults.runner import RunResult

CAT = load()
CASES = catalogue_cases(CAT) + bundled_scenario_files(CAT)


class Runs:
    """Each case runs at most once per module, whichever test asks first; the results are shared."""

    def __init__(self) -> None:
        self._done: dict[str, RunResult] = {}

    def result(self, case: Case, request: pytest.FixtureRequest) -> RunResult:
        if case.preset.reader == "vpcd":
            request.getfixturevalue("pcscd")  # real pcscd + vpcd: skipped with a reason locally, required in CI
        if case.name not in self._done:
            self._done[case.name] = run_cases([case])[0]
        return self._done[case.name]


@pytest.fixture(scope="module")
def runs() -> Runs:
    return Runs()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scenario(case: Case, runs: Runs, request: pytest.FixtureRequest) -> None:
    r = runs.result(case, request)
    assert r.skipped is None, r.skipped
    problems = [f"{c.name}: {c.detail}" for c in r.checks if not c.ok] + ([r.error] if r.error else [])
    assert r.ok, "\n".join(problems)


@pytest.mark.slow
def test_every_cause_is_triggered_and_checked(runs: Runs, request: pytest.FixtureRequest) -> None:
    """Every cause id of the articles is exercised by a passing run (alone, this runs every scenario)."""
    covered = {cause for case in CASES if runs.result(case, request).ok
               for spec in runs.result(case, request).specs for cause in spec.fault.causes}
    assert sorted(set(CAT.causes) - covered) == []


def test_regress_cli_junit_and_exit_code(tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    res = CliRunner().invoke(main, ["regress", "--fault", "user.wrong-pin", "--junit", str(junit)])
    assert res.exit_code == 0, res.output
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == str(len(CAT.get("user.wrong-pin").presets)) and suite.get("failures") == "0"
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "wrong-expectation"\ncard = "cup_debit"\n[[fault]]\nid = "reader.dirty-contacts"\n'
                   'params = { contact_ohms = 40.0, fallback = false }\n[expect]\nscreens = ["APPROVED_BALANCE"]\n'
                   "approved = true\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["regress", "--fault", "user.wrong-pin", "--scenario", str(bad),
                                    "--junit", str(junit)])
    assert res.exit_code == 1
    suite = ET.parse(junit).getroot()
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["wrong-expectation"]


def test_replay_reproduces_the_event_sequence(tmp_path: Path) -> None:
    fault = CAT.get("network.drop-after-send")
    case = Case(f"{fault.id}[{fault.presets[0].name}]", fault.presets[0], fault)
    run_cases([case], trace_dir=tmp_path)
    trace = next(tmp_path.glob("*.jsonl"))
    result, diffs = replay(trace, CAT)
    assert result.ok and diffs == []
    res = CliRunner().invoke(main, ["regress", "--replay", str(trace)])
    assert res.exit_code == 0 and "same event sequence" in res.output


def test_inquiry_with_fault_flag_prints_codes_and_diagnosis() -> None:
    res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--lang", "en",
                                    "--fault", "reader.dirty-contacts:contact_ohms=40,fallback=false"])
    assert res.exit_code == 1
    assert "QUERY_CARD_FAILED" in res.output and "[A1, B2, A16, B16]" in res.output
    res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--fault", "reader.dirty-contacts:contact_ohms=5000"])
    assert res.exit_code == 2 and "outside" in res.output


def test_unmatched_response_is_explained(posemu_inject: Any) -> None:
    run = posemu_inject("host.peak-hours", rule="wrong-stan:mti=0200")
    assert "TIMEOUT" in run.codes
    assert any("never matched its request" in x and "fields 11/41" in x for x in run.diagnosis.explanations)


def test_unacknowledged_reversal_is_explained(posemu_inject: Any) -> None:
    run = posemu_inject("network.drop-after-send:rule=drop-response:mti=0200,count=1;no-response:mti=0400",
                        txn="purchase")
    assert "REVERSAL_PENDING" in run.codes and "REVERSAL_DONE" not in run.codes
    assert any("not acknowledged" in x for x in run.diagnosis.explanations)


def test_plugin_fixtures_drive_a_terminal(posemu_terminal: Any, posemu_runner: asyncio.Runner) -> None:
    rig = posemu_terminal(card="cup_debit")
    assert posemu_runner.run(rig.terminal.sign_on()).approved
    out = posemu_runner.run(rig.terminal.balance_inquiry())
    assert out.approved and out.codes[-1] == "REMOVE_CARD"
