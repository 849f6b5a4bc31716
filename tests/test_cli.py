"""The command line: exit codes, printed screens, masked output, help everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_inquiry_approved_prints_screens_and_exits_zero(tmp_path: Path) -> None:
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path))
    assert code == 0, out
    assert "请插卡或刷卡 / Insert or swipe card" in out
    assert "[APPROVED_BALANCE] 交易成功  余额：CNY 12,345.67" in out
    assert "9900010000000019" not in out


def test_inquiry_wrong_pin_exits_non_zero_with_the_code(tmp_path: Path) -> None:
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path), "--pin", "000000", "--lang", "en")
    assert code == 1
    assert "result: FAILED QUERY_CARD_FAILED (WRONG_PIN) rc=55" in out
    assert "Failed to query card information" in out


def test_purchase_and_journal_json(tmp_path: Path) -> None:
    code, out = run("purchase", "--amount", "12.50", "--virtual-time", "--state", str(tmp_path), "--json")
    assert code == 0, out
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["approved"] and doc["headline"] == "APPROVED"
    code, out = run("journal", "--state", str(tmp_path), "--json")
    rows = json.loads(out)
    assert rows[-1]["kind"] == "purchase" and rows[-1]["amount"] == 1250 and rows[-1]["pan"] == "990001******0019"


def test_bad_amount_and_bad_profile_are_usage_errors(tmp_path: Path) -> None:
    assert run("purchase", "--amount", "abc", "--state", str(tmp_path))[0] == 2
    code, out = run("inquiry", "--card", "no-such-card", "--state", str(tmp_path))
    assert code == 2 and "unknown card profile" in out


def test_iso87ascii_profile_end_to_end(tmp_path: Path) -> None:
    code, out = run("inquiry", "--virtual-time", "--profile", "iso87ascii", "--state", str(tmp_path))
    assert code == 0, out


@pytest.mark.parametrize("cmd", ["inquiry", "purchase", "host", "journal"])
def test_help(cmd: str) -> None:
    code, out = run(cmd, "--help")
    assert code == 0 and "Usage:" in out


def test_fault_reader_url(tmp_path: Path) -> None:
    """`fault+<reader URL>` wraps any reader: 900 Ω contacts kill the chip; the terminal falls back to the stripe."""
    code, out = run("inquiry", "--virtual-time", "--card", "cup_debit", "--state", str(tmp_path),
                    "--reader", "fault+sim://cup_debit?contact_ohms=900&seed=7")
    assert code == 0, out
    assert "[READER_ERROR]" in out and "[FALLBACK_SWIPE]" in out and "[APPROVED_BALANCE]" in out
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "b"), "--reader", "fault+sim://demo?bogus=1")
    assert code == 2 and "sim:// has no parameter bogus" in out
    code, out = run("inquiry", "--virtual-time", "--card", "cup_debit", "--state", str(tmp_path / "c"),
                    "--reader", "fault+sim://cup_debit?contact_ohms=7.5&protocol=t0&seed=7")
    assert code == 0, out                       # inner parameters reach the inner reader


def test_diagnose_root_cause_from_a_trace_file(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    code, _ = run("inquiry", "--virtual-time", "--state", str(tmp_path), "--pin", "000000", "--trace", str(trace))
    assert code == 1 and trace.exists()
    code, out = run("diagnose", "--trace", str(trace), "--lang", "en")
    assert code == 1                            # a fault was found
    assert "[A12, A20]" in out and "(host.rc.55)" in out and "remedy" in out
    code, out = run("diagnose", "--trace", str(tmp_path / "journal.sqlite3"))
    assert code != 0 and "not a JSON-lines trace" in out
