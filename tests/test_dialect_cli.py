"""Every transaction command honours the saved configuration and its host dialect; the bundled host
in-process speaks the dialect the config describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main

PIK = "0123456789ABCDEFFEDCBA9876543210"
MAK = "2323232323232323"

# a dialect far from the defaults: base iso87ascii, 4-digit ASCII length, a TPDU, no sign-on (static keys),
# PIN block format 3, field 62 binary, per-transaction connections
DIALECT = f'''
language = "en"
[keys]
pik = "{PIK}"
mak = "{MAK}"
[host]
sign_on = false
pin_block = 3
connection = "per-transaction"
[host.spec]
base = "iso87ascii"
[host.spec.fields.62]
data_enc = "b"
[host.envelope]
length_size = 4
length_encoding = "ascii"
tpdu = "6000030000"
[host.responses]
"55" = "DECLINED"
'''


@pytest.fixture(autouse=True)
def _private_user_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_inquiry_and_purchase_read_terminal_toml_of_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "terminal.toml").write_text(DIALECT, encoding="utf-8")
    code, out = run("inquiry", "--virtual-time", "--state", str(state))
    assert code == 0, out
    assert "[APPROVED_BALANCE] Approved  balance: CNY 12,345.67" in out          # language from the file
    assert "SIGNING_ON" not in out                                               # static keys: no sign-on
    code, out = run("purchase", "--amount", "1.00", "--virtual-time", "--state", str(state))
    assert code == 0, out
    # the dialect's response-code table: a wrong PIN (55) shows DECLINED
    code, out = run("inquiry", "--virtual-time", "--state", str(state), "--pin", "000000")
    assert code == 1 and "QUERY_CARD_FAILED (DECLINED) rc=55" in out


def test_the_command_line_overrides_the_config(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "terminal.toml").write_text(DIALECT, encoding="utf-8")
    code, out = run("inquiry", "--virtual-time", "--state", str(state), "--lang", "zh")
    assert code == 0 and "交易成功" in out and "Approved" not in out
    other = tmp_path / "other.toml"
    other.write_text('language = "both"\n', encoding="utf-8")
    code, out = run("inquiry", "--virtual-time", "--state", str(state), "--config", str(other))
    assert code == 0 and "交易成功  余额：CNY 12,345.67 / Approved" in out and "SIGNING_ON" in out


def test_a_bad_saved_config_is_a_usage_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "terminal.toml").write_text('[host]\nsign_on = false\n', encoding="utf-8")
    code, out = run("inquiry", "--virtual-time", "--state", str(state))
    assert code == 2 and "keys.pik" in out and "Traceback" not in out


def test_regress_runs_the_scenarios_on_the_configured_dialect(tmp_path: Path) -> None:
    """Each run's bundled host speaks the config's dialect (4-digit ASCII lengths, no sign-on, a TPDU
    on iso87ascii): a timed-out purchase is still reversed and the money checks still pass."""
    cfg = tmp_path / "terminal.toml"
    cfg.write_text(DIALECT.split("[host.responses]")[0], encoding="utf-8")     # the catalogue's screens
    code, out = run("regress", "--config", str(cfg), "--fault", "network.drop-after-send", "--fault",
                    "user.wrong-pin")
    assert code == 0, out
    assert f"terminal config: {cfg}" in out and "0 failed" in out


def test_regress_with_a_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "terminal.toml"
    cfg.write_text('[host]\nmac = "md5"\n', encoding="utf-8")
    code, out = run("regress", "--config", str(cfg), "--fault", "user.wrong-pin")
    assert code == 2 and "host.mac" in out


def test_a_fault_run_uses_the_config_too(tmp_path: Path) -> None:
    """`--fault` runs on its own bundled host: it speaks the saved dialect (no sign-on, 4-digit ASCII
    lengths, PIN block format 3) and finds the wrong PIN."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "terminal.toml").write_text(DIALECT.split("[host.responses]")[0], encoding="utf-8")
    code, out = run("inquiry", "--virtual-time", "--state", str(state), "--fault", "user.wrong-pin")
    assert code == 1 and "message codes: SIGN_ON_OK INSERT_OR_SWIPE" in out and "SIGNING_ON" not in out
    assert "[WRONG_PIN] Incorrect PIN" in out                 # the host decrypted the format-3 block


def test_regress_worker_processes_run_on_the_configured_dialect(tmp_path: Path) -> None:
    """regress runs many cases in worker processes: each gets the base configuration, so its terminal
    (its id, the dialect) and its own bundled host are the configured ones there too."""
    from emulator import config as configmod
    from faults import regress
    from faults.runner import base_config

    cfg = tmp_path / "terminal.toml"
    cfg.write_text('terminal_id = "SHOP0001"\n' + DIALECT.split("[host.responses]")[0], encoding="utf-8")
    cases = regress.catalogue_cases(regress.load(), only=["network.drop-after-send", "user.wrong-pin"])
    with base_config(configmod.load(cfg)):
        results = regress.run_cases(cases, workers=2)
    assert len(results) == len(cases) >= 2
    for r in results:
        assert r.ok, (r.name, r.error, [c for c in r.checks if not c.ok])
        sent = [json.loads(e) for e in r.trace]
        tids = {e["fields"]["41"] for e in sent if e["kind"] == "iso-out" and "41" in e.get("fields", {})}
        assert tids == {"SHOP0001"}, (r.name, tids)


def test_diagnose_self_test_runs_on_the_saved_config(tmp_path: Path) -> None:
    """`posemu diagnose` (no trace) checks the configured terminal: its id, its dialect, no sign-on."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "terminal.toml").write_text('terminal_id = "SHOP0001"\n' + DIALECT, encoding="utf-8")
    code, out = run("diagnose", "--state", str(state), "--json")
    assert code == 0, out
    readings = json.loads(out)["readings"]
    assert readings["terminal.id"] == "SHOP0001" and readings["host.profile"] == "iso87ascii"
    assert readings["sign_on"].startswith("off in the config")
    code, out = run("diagnose", "--config", str(state / "terminal.toml"), "--fault", "user.wrong-pin", "--json")
    assert json.loads(out)["readings"]["terminal.id"] == "SHOP0001"
    (state / "terminal.toml").write_text('[host]\nsign_on = false\n', encoding="utf-8")   # static keys missing
    code, out = run("diagnose", "--state", str(state))
    assert code == 2, out
