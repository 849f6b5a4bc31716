"""Faults from the catalogue apply to the whole transaction set (issue 12 item 2): a void, refund,
completion or pre-authorization whose answer is lost is reversed like a purchase, and the
regression runner's checks — nothing pending, every unknown step reversed, the cardholder's money
moved by exactly the approved steps — hold for every mix of them, on both profiles."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from faults.catalogue import load
from faults.regress import load_scenario_file, run_file_case
from faults.runner import RunResult
from hardware.clock import VirtualClock

CAT = load()
PROFILES = ["cup", "iso87ascii"]


def _scenario(tmp: Path, *, rule: str, steps: tuple[str, ...], screens: tuple[str, ...], approved: bool,
              journal: str, diagnosis: tuple[str, ...], profile: str) -> RunResult:
    """A scenario file (the same checks as `posemu regress`) with one host rule from the catalogue."""
    def lst(xs: tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    text = f"""name = "txnset"
card = "demo"
steps = {lst(steps)}
config = {{ profile = "{profile}" }}

[[fault]]
id = "host.peak-hours"
params = {{ rule = "{rule}" }}

[expect]
screens = {lst(screens)}
approved = {str(approved).lower()}
diagnosis = {lst(diagnosis)}
journal = "{journal}"
"""
    case = load_scenario_file(tmp / "txnset.toml", CAT, text=text)
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        return runner.run(run_file_case(case, tmp / "state", clock))


def _failed(result: RunResult) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("steps", "rule", "kinds"), [
    (("sign_on", "purchase", "void"), "drop-response:mti=0200,first=2", ["purchase", "void"]),
    (("sign_on", "purchase", "refund"), "drop-response:mti=0220", ["purchase", "refund"]),
    (("sign_on", "preauth", "complete"), "drop-response:mti=0200", ["preauth", "completion"]),
    (("sign_on", "preauth", "complete", "void"), "drop-response:mti=0200,first=2",
     ["preauth", "completion", "completion_void"]),
    (("sign_on", "preauth"), "drop-response:mti=0100", ["preauth"]),
], ids=["void", "refund", "completion", "completion-void", "preauth"])
def test_a_lost_answer_is_reversed_and_the_money_is_right(tmp_path: Path, steps: tuple[str, ...], rule: str,
                                                          kinds: list[str], profile: str) -> None:
    result = _scenario(tmp_path, rule=rule, steps=steps, screens=("TIMEOUT", "REVERSAL_DONE"), approved=False,
                       journal="reversed", diagnosis=("lost-answer",), profile=profile)
    assert result.error is None, result.error
    assert not _failed(result), _failed(result)
    assert [o.kind for o in result.outcomes][1:] == kinds
    assert [o.approved for o in result.outcomes][-1] is False


@pytest.mark.parametrize("profile", PROFILES)
def test_a_whole_day_settles_with_the_money_right(tmp_path: Path, profile: str) -> None:
    steps = ("sign_on", "purchase:2000", "void", "purchase:900", "refund:400", "preauth:5000", "complete:4500",
             "settle")
    result = _scenario(tmp_path, rule="delay:delay=20,mti=0500", steps=steps, screens=("SETTLING", "SETTLE_OK"),
                       approved=True, journal="approved", diagnosis=("host-busy",), profile=profile)
    assert result.error is None, result.error
    assert not _failed(result), _failed(result)
    assert [o.kind for o in result.outcomes] == ["sign_on", "purchase", "void", "purchase", "refund", "preauth",
                                                 "completion", "settle"]
    assert all(o.approved for o in result.outcomes)


def test_with_the_plugin_a_void_that_times_out_is_reversed(posemu_inject: Any) -> None:
    """The pytest plugin's way: the fault's rule strikes the void (the second 0200), not the purchase."""
    run = posemu_inject("host.peak-hours", rule="drop-response:mti=0200,first=2",
                        steps=["sign_on", "purchase", "void"])
    assert [(o.kind, o.approved) for o in run.outcomes] == [("sign_on", True), ("purchase", True), ("void", False)]
    assert "TIMEOUT" in run.codes and "REVERSAL_DONE" in run.codes
    assert run.codes.index("REVERSAL_DONE") > run.codes.index("TIMEOUT")
