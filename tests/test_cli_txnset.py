"""The transaction set, receipts and isolation from the command line (issue 12 items 1, 2 and 5)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emulator.cli import main
from emulator.receipt import find_cjk_font


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def last_json(out: str) -> dict[str, Any]:
    doc = json.loads(out.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    return doc


def test_result_line_and_json_carry_the_transaction_data(tmp_path: Path) -> None:
    code, out = run("purchase", "--amount", "12.50", "--virtual-time", "--state", str(tmp_path), "--lang", "en")
    assert code == 0, out
    line = out.strip().splitlines()[-1]
    for key in ("kind=purchase", "amount=12.50", "currency=CNY", "pan=990001******0019", "entry=SWIPE",
                "batch=000001", "tid=POSEMU01", "mid=898310012345678"):
        assert key in line, line
    assert re.search(r" stan=\d{6} rrn=\w{12} auth=\w{6} ", line), line
    # the amount stays on screen from the card prompt to the approval
    assert "[INSERT_OR_SWIPE] Amount: CNY 12.50  Insert or swipe card" in out
    assert "[ENTER_PIN] Amount: CNY 12.50  Enter PIN" in out
    assert "[APPROVED] Approved  amount: CNY 12.50" in out
    code, out = run("purchase", "--amount", "3.00", "--virtual-time", "--state", str(tmp_path), "--json")
    doc = last_json(out)
    assert doc["amount"] == 300 and doc["pan"] == "990001******0019" and doc["entry"] == "SWIPE"
    assert all(doc[k] for k in ("stan", "rrn", "auth_code", "batch", "tid", "mid", "time", "screens"))
    assert "9900010000000019" not in out


def test_void_refund_preauth_complete_settle_from_the_cli(tmp_path: Path) -> None:
    s = ("--virtual-time", "--state", str(tmp_path), "--json")
    assert run("purchase", "--amount", "20.00", *s)[0] == 0
    code, out = run("void", "--last", *s)
    assert code == 0 and last_json(out)["kind"] == "void", out
    code, out = run("void", "--id", "1", *s)                     # already voided: refused on screen, exit 1
    assert code == 1 and last_json(out)["screens"][-2:] == ["TXN_REFUSED", "ALREADY_VOIDED"]
    code, out = run("void", "--id", "99", *s)                    # no such entry: a usage error
    assert code == 2 and "no transaction #99" in out
    assert run("purchase", "--amount", "9.00", *s)[0] == 0
    code, out = run("refund", "--amount", "4.00", "--last", *s)
    assert code == 0 and last_json(out)["kind"] == "refund", out
    code, out = run("preauth", "--amount", "50.00", *s)
    assert code == 0 and last_json(out)["kind"] == "preauth", out
    code, out = run("complete", "--last", "--amount", "45.00", *s)
    assert code == 0 and last_json(out)["amount"] == 4500, out
    code, out = run("settle", *s)
    doc = last_json(out)
    assert code == 0 and doc["kind"] == "settle" and doc["totals"] == {
        "debit_amount": 54_00, "debit_count": 2, "credit_amount": 4_00, "credit_count": 1}, out
    code, out = run("sign-off", *s)
    assert code == 0 and last_json(out)["headline"] == "SIGN_OFF_OK", out
    code, out = run("journal", "--state", str(tmp_path), "--json")
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["purchase", "void", "purchase", "refund", "preauth", "completion", "settle"]
    assert rows[0]["state"] == "voided" and rows[4]["state"] == "completed"
    assert all(r["settled"] for r in rows) and all(r["rrn"] for r in rows[:6])


def test_receipt_two_copies_text_and_pdf(tmp_path: Path) -> None:
    assert run("purchase", "--amount", "12.50", "--virtual-time", "--state", str(tmp_path))[0] == 0
    code, out = run("receipt", "--state", str(tmp_path))
    assert code == 0, out
    assert "商户存根 / MERCHANT COPY" in out and "持卡人存根 / CARDHOLDER COPY" in out
    assert out.count("990001******0019") == 2 and "RMB 12.50" in out and "重打印凭证 / DUPLICATE" in out
    assert "持卡人签名 CARDHOLDER SIGNATURE" in out and "9900010000000019" not in out
    text = tmp_path / "out" / "r.txt"
    code, out = run("receipt", "--state", str(tmp_path), "--id", "1", "--copy", "cardholder", "--text", str(text))
    assert code == 0 and "持卡人存根" in text.read_text(encoding="utf-8") and "商户存根" not in text.read_text(
        encoding="utf-8")
    find_cjk_font()       # installed by `make` (fonts-wqy-microhei): a missing font fails here, by name
    pdf = tmp_path / "r.pdf"
    code, out = run("receipt", "--state", str(tmp_path), "--last", "--pdf", str(pdf))
    assert code == 0, out
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") >= 2
    assert b"FontFile2" in data               # the CJK font is embedded (a subset)
    code, out = run("receipt", "--state", str(tmp_path), "--pdf", str(tmp_path / "journal.sqlite3"))
    assert code == 2 and "not overwriting" in out        # never over another file


def test_virtual_time_without_state_leaves_the_user_state_alone(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, out = run("purchase", "--amount", "1.00", "--virtual-time")
    assert code == 0, out
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()


def test_journal_at_80_columns_cuts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = ("--virtual-time", "--state", str(tmp_path))
    assert run("purchase", "--amount", "7.00", *s)[0] == 0
    assert run("void", "--last", *s)[0] == 0
    monkeypatch.setenv("COLUMNS", "80")
    code, out = run("journal", "--state", str(tmp_path))
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()[1:]) <= 80, out     # after the title (a path)
    assert "…" not in out and out.count("990001******0019") == 2
    assert "#1 " in out and "#2 " in out and "status voided by #2" in out and "original #1" in out
    assert re.search(r"STAN \d{6}  batch 000001  RRN \w{12}  auth \w{6}", out), out
    monkeypatch.setenv("COLUMNS", "200")
    code, wide = run("journal", "--state", str(tmp_path))
    assert code == 0 and "voided by #2" in wide and "…" not in wide and "┃ RRN" in wide


@pytest.mark.parametrize("profile", ["cup", "iso87ascii"])
def test_the_transaction_set_speaks_the_configured_dialect(tmp_path: Path, profile: str) -> None:
    """A `[host]` dialect (no MAC, PIN block format 3, one connection kept) carries the new transactions
    too, and `--pcap` captures them like a purchase."""
    conf = tmp_path / "terminal.toml"
    conf.write_text(f'profile = "{profile}"\n[host]\nmac = "none"\npin_block = 3\nconnection = "persistent"\n',
                    encoding="utf-8")
    s = ("--virtual-time", "--state", str(tmp_path / "state"), "--config", str(conf), "--json")
    assert run("purchase", "--amount", "20.00", *s)[0] == 0
    pcap = tmp_path / "void.pcap"
    res = CliRunner().invoke(main, ["void", "--last", "--pcap", str(pcap), *s], catch_exceptions=False)
    assert res.exit_code == 0 and last_json(res.stdout)["kind"] == "void", res.output
    assert "pcap written" in res.stderr
    assert pcap.stat().st_size > 100
    code, out = run("refund", "--amount", "1.00", "--rrn", "000000000001", *s)   # another terminal's sale: 25
    assert code == 1 and last_json(out)["rc"] == "25", out
    code, out = run("settle", *s)
    assert code == 0 and last_json(out)["totals"]["debit_count"] == 0, out


def test_virtual_time_without_state_still_reads_the_saved_config(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The scratch state folder has no terminal.toml: the one saved in the user's folder still applies,
    and nothing else is written there."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from emulator.commands.config import saved_config

    saved = saved_config(None)
    saved.parent.mkdir(parents=True)
    saved.write_text('terminal_id = "POSEMU77"\nprofile = "iso87ascii"\n', encoding="utf-8")
    code, out = run("purchase", "--amount", "1.00", "--virtual-time", "--json")
    assert code == 0, out
    assert last_json(out)["tid"] == "POSEMU77"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["terminal.toml"]


def test_isolation_exact_screens_and_advancing_virtual_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: ``regress`` without ``--state`` writes nothing into the user's folders; with a
    state folder the journal's screen column is the code the terminal showed (APPROVED_BALANCE, not
    APPROVED) and virtual-time rows are stamped with when they ran (the virtual clock starts at the
    wall time of the run and advances from there), not one frozen instant such as the clock's epoch."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, out = run("regress", "--fault", "reader.dirty-contacts", "--no-bundled-scenarios")
    assert code == 0, out
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
    state = tmp_path / "state"
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for _ in range(2):
        assert run("inquiry", "--virtual-time", "--state", str(state))[0] == 0
    assert run("purchase", "--amount", "2.00", "--virtual-time", "--state", str(state))[0] == 0
    code, out = run("journal", "--state", str(state), "--json")
    assert code == 0, out
    rows = [r for r in json.loads(out) if r["kind"] != "sign_on"]
    assert [(r["kind"], r["screen"]) for r in rows] == [("balance", "APPROVED_BALANCE"),
                                                        ("balance", "APPROVED_BALANCE"), ("purchase", "APPROVED")]
    ended = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)   # a run's simulated waits put it ahead of the wall
    times = [dt.datetime.fromisoformat(r["created"]) for r in rows]
    assert times == sorted(times) and all(started <= t <= ended for t in times), (started, times, ended)
    assert all(dt.datetime.fromisoformat(r["updated"]) >= dt.datetime.fromisoformat(r["created"]) for r in rows)
