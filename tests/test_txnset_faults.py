"""Faults from the catalogue apply to the whole transaction set (issue 12 item 2): a void, refund,
completion or pre-authorization whose answer is lost is reversed like a purchase, and the
regression runner's checks — nothing pending, every unknown step reversed, the cardholder's money
moved by exactly the approved steps — hold for every mix of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.catalogue import Scenario, load
from faults.runner import run_one


@pytest.mark.parametrize(("steps", "rule"), [
    (("sign_on", "purchase", "void"), "drop-response:mti=0200,first=2"),
    (("sign_on", "purchase", "refund"), "drop-response:mti=0220"),
    (("sign_on", "preauth", "complete"), "drop-response:mti=0200"),
    (("sign_on", "preauth", "complete", "void"), "drop-response:mti=0200,first=2"),
    (("sign_on", "preauth"), "drop-response:mti=0100"),
], ids=["void", "refund", "completion", "completion-void", "preauth"])
def test_a_lost_answer_is_reversed_and_the_money_is_right(tmp_path: Path, steps: tuple[str, ...], rule: str) -> None:
    fault = load().get("host.peak-hours")
    sc = Scenario("lost-answer", {"rule": rule}, ("TIMEOUT", "REVERSAL_DONE"), False, (), journal="reversed",
                  steps=steps)
    result = run_one(fault, sc, tmp_path)
    assert result.error is None, result.error
    assert all(c.ok for c in result.checks), [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]


def test_a_whole_day_settles_with_the_money_right(tmp_path: Path) -> None:
    fault = load().get("host.peak-hours")
    steps = ("sign_on", "purchase:2000", "void", "purchase:900", "refund:400", "preauth:5000", "complete:4500",
             "settle")
    sc = Scenario("day", {"rule": "delay:delay=5,mti=0500"}, ("SETTLING", "SETTLE_OK"), True, (), journal="approved",
                  steps=steps)
    result = run_one(fault, sc, tmp_path)
    assert result.error is None, result.error
    assert all(c.ok for c in result.checks), [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert [o.kind for o in result.outcomes] == ["sign_on", "purchase", "void", "purchase", "refund", "preauth",
                                                 "completion", "settle"]
