"""Host dialects in the terminal's TOML config ([host]), `posemu config init|show|seal-key`."""

from __future__ import annotations

import stat
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from emulator import config
from emulator.cli import main
from emulator.commands.config import template
from emulator.dialect import HostDialect, TlsSettings
from protocol.errors import ConfigError
from protocol.framing import LengthHeader
from protocol.mac import MacAlgorithm
from protocol.pinblock import PinBlockFormat
from protocol.specs import CUP, Kind
from tests.test_inputs_fuzz import mutated

PIK = "1111111111111111FEFEFEFEFEFEFEFE"
MAK = "2323232323232323"

FULL = f'''
terminal_id = "SHOP0001"
[keys]
pik = "{PIK}"
mak = "{MAK}"
[host]
address = "10.1.2.3:7000"
backup = "acquirer-b.example:7000"
name = "acme"
connection = "persistent"
sign_on = false
mac = "x9.19"
response_mac = true
pin_block = 3
balance_field = 4
balance_format = "amount"
balance_missing = "error"
[host.spec]
base = "iso87ascii"
[host.spec.fields.62]
data_enc = "b"
max_len = 512
[host.spec.fields.48]
max_len = 30
kind = "an"
[host.envelope]
length_size = 4
length_encoding = "ascii"
tpdu = "6000120000"
app_header = ""
[host.responses]
"05" = "DECLINED"
"61" = "INSUFFICIENT_FUNDS"
[host.tls]
ca = "ca.pem"
server_name = "acquirer.example"
pin_sha256 = ["{'ab' * 32}"]
'''


@pytest.fixture(autouse=True)
def _private_user_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def _load(tmp_path: Path, text: str) -> config.TerminalConfig:
    p = tmp_path / "t.toml"
    p.write_text(text, encoding="utf-8")
    return config.load(p)


def test_a_full_host_table(tmp_path: Path) -> None:
    cfg = _load(tmp_path, FULL)
    d = cfg.dialect
    assert cfg.host == "10.1.2.3:7000" and cfg.profile == "iso87ascii"
    assert (d.backup, cfg.persistent_connection, d.sign_on, d.mac, d.pin_format) == (
        "acquirer-b.example:7000", True, False, "x9.19", PinBlockFormat.ISO_3)
    assert d.tls == TlsSettings(ca=str(tmp_path / "ca.pem"), server_name="acquirer.example", pin_sha256=("ab" * 32,))
    assert d.screen_for("05") is not None and d.screen_for("05").value == "DECLINED"  # type: ignore[union-attr]
    p = cfg.wire_profile()
    assert p.name == "acme" and p.kind("62") is Kind.B and p.kind("48") is Kind.AN and p.spec["48"]["max_len"] == 30
    assert p.length_header == LengthHeader(4, "ascii") and p.default_header == bytes.fromhex("6000120000")
    assert p.mac_alg is MacAlgorithm.X9_19
    keys = cfg.static_keys()
    assert keys is not None and keys.pik == bytes.fromhex(PIK) and keys.mak == bytes.fromhex(MAK)


def test_save_and_load_round_trip_keeps_the_dialect_and_seals_the_keys(tmp_path: Path) -> None:
    cfg = _load(tmp_path, FULL)
    out = tmp_path / "saved.toml"
    config.save(cfg, out)
    text = out.read_text()
    assert PIK.lower() not in text.lower() and MAK.lower() not in text.lower() and "pik_sealed" in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert config.load(out) == cfg
    assert config.load(out).wire_profile() == cfg.wire_profile()


def test_the_template_is_the_defaults() -> None:
    assert config.from_dict(tomllib.loads(template()), "template") == config.TerminalConfig()


def test_older_configs_still_load(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'host = "127.0.0.1:5000"\n[security]\nmac = false\nsign_on_mac = false\n')
    assert cfg.host == "127.0.0.1:5000" and not cfg.mac_required and not cfg.sign_on_mac
    assert cfg.dialect == HostDialect()
    # what save writes now is the [host] table
    config.save(cfg, tmp_path / "new.toml")
    doc = tomllib.loads((tmp_path / "new.toml").read_text())
    assert "security" not in doc and doc["host"]["address"] == "127.0.0.1:5000" and doc["host"]["response_mac"] is False
    assert config.load(tmp_path / "new.toml") == cfg


def test_mac_is_required_unless_switched_off_explicitly() -> None:
    cfg = config.TerminalConfig()
    assert cfg.response_mac and cfg.request_sign_on_mac and cfg.dialect.mac_enabled
    off = config.from_dict({"host": {"mac": "none", "sign_on": False}, "keys": {"pik": PIK}})
    assert not off.response_mac and not off.request_sign_on_mac and off.static_keys() is not None
    assert off.wire_profile() is CUP            # MAC none changes nothing on the wire profile


def test_a_complete_spec_needs_no_base(tmp_path: Path) -> None:
    import iso8583.specs

    fields = "".join(f'[host.spec.fields.{k}]\n' + "".join(f"{a} = {v!r}\n".replace("'", '"') for a, v in f.items()
                                                         if a != "desc")
                     for k, f in iso8583.specs.default_ascii.items() if k != "h")
    cfg = _load(tmp_path, '[host]\nname = "ascii-bitmap"\n[host.spec]\nbase = "none"\n' + fields)
    p = cfg.wire_profile()
    assert p.name == "ascii-bitmap" and p.base == "" and p.spec["p"]["data_enc"] == "ascii"
    assert cfg.wire_profile() is p


@pytest.mark.parametrize(("text", "message"), [
    ('[host]\nsign_on = false', "needs the static working keys"),
    (f'[host]\nsign_on = false\n[keys]\npik = "{PIK}"', "needs keys.mak"),
    (f'[keys]\npik = "{PIK}"', "only with host.sign_on = false"),
    ('[host]\nmac = "md5"', "host.mac must be one of"),
    ('[host]\npin_block = 2', "0, 1 or 3"),
    ('[host]\nconnection = "sometimes"', "host.connection"),
    ('[host]\nbalance_field = 130', "not a field"),
    ('[host]\nbalance_format = "words"', "balance_format"),
    ('[host]\nbalance_missing = "maybe"', "balance_missing"),
    ('[host]\ncolour = "red"', "unknown key host.colour"),
    ('[host.envelope]\nlength_size = 3', "length header size"),
    ('[host.envelope]\nlength_encoding = "ebcdic"', "length header encoding"),
    ('[host.envelope]\ntpdu = "60"', "5 bytes"),
    ('[host.envelope]\napp_header = "xyz"', "hex digits"),
    ('[host.spec]\nbase = "x25"', "base must be one of"),
    ('[host.spec]\nbase = "none"', "needs the whole spec"),
    ('[host.spec.fields.62]\ndata_enc = "klingon"', "host.spec.fields.62"),
    ('profile = "cup"\n[host.spec]\nbase = "iso87ascii"', "disagree"),
    ('[security]\nmac = false\n[host]\nresponse_mac = false', "both given"),
    ('[host.responses]\n"05" = "NOPE"', "not a screen message code"),
    ('[host.responses]\n"005" = "DECLINED"', "not a response code"),
    ('[host.tls]\nkey = "k.pem"', "needs host.tls.cert"),
    ('[host.tls]\npin_sha256 = ["abc"]', "64 hex digits"),
    ('[host]\nbackup = "nowhere"', "HOST:PORT"),
    ('[host]\naddress = 5000', "host.address"),
    ('host = 5', "host must be a table"),
    ('[keys]\nmak = "abc"', "hex digits"),
    ('[keys]\nmak = "00"\nmak_file = "x"', "give one of"),
])
def test_bad_host_tables_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_field_54_not_in_a_complete_spec_is_refused() -> None:
    with pytest.raises(ConfigError, match="balance_field"):
        config.from_dict({"host": {"spec": {"base": "none", "fields": {
            "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4},
            "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8}}}}})


def test_config_init_writes_the_template_and_never_overwrites(tmp_path: Path) -> None:
    r = CliRunner()
    out = r.invoke(main, ["config", "init", "--state", str(tmp_path / "st")])
    assert out.exit_code == 0, out.output
    saved = tmp_path / "st" / "terminal.toml"
    assert saved.read_text() == template() and stat.S_IMODE(saved.stat().st_mode) == 0o600
    again = r.invoke(main, ["config", "init", "--state", str(tmp_path / "st")])
    assert again.exit_code == 2 and "--force" in again.output
    assert r.invoke(main, ["config", "init", "--state", str(tmp_path / "st"), "--force"]).exit_code == 0
    assert r.invoke(main, ["config", "init", str(tmp_path)]).exit_code == 2          # a folder


def test_config_show_prints_the_effective_config_with_secrets_hidden(tmp_path: Path) -> None:
    real_tmk = "00112233445566778899AABBCCDDEEFF"
    text = FULL.replace("[keys]\n", f'[keys]\ntmk = "{real_tmk}"\n').replace(
        'terminal_id = "SHOP0001"', 'terminal_id = "SHOP0001"\noperator_password = "4321"')
    p = tmp_path / "t.toml"
    p.write_text(text, encoding="utf-8")
    out = CliRunner().invoke(main, ["config", "show", "--config", str(p)])
    assert out.exit_code == 0, out.output
    shown = out.output
    for secret in (real_tmk, PIK, MAK, "4321"):
        assert secret.lower() not in shown.lower()
    assert "check value" in shown and 'address = "10.1.2.3:7000"' in shown and 'base = "iso87ascii"' in shown
    assert "wire profile: acme" in shown and "MAC ansi-x9.19" in shown and "sign-on off" in shown and "TLS" in shown
    assert "[host.spec.fields.62]" in shown and "[host.envelope]" in shown


def test_config_show_reads_the_saved_config_and_reports_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "terminal.toml").write_text('terminal_id = "SAVED001"\n', encoding="utf-8")
    out = CliRunner().invoke(main, ["config", "show", "--state", str(tmp_path)])
    assert out.exit_code == 0 and 'terminal_id = "SAVED001"' in out.output
    (tmp_path / "terminal.toml").write_text('[host]\nmac = "md5"\n', encoding="utf-8")
    bad = CliRunner().invoke(main, ["config", "show", "--state", str(tmp_path)])
    assert bad.exit_code == 2 and "host.mac" in bad.output
    empty = CliRunner().invoke(main, ["config", "show", "--state", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "built-in defaults" in empty.output


@pytest.mark.parametrize("which", ["pik", "mak"])
def test_seal_key_for_static_working_keys(tmp_path: Path, which: str) -> None:
    key = PIK if which == "pik" else MAK
    out = CliRunner().invoke(main, ["config", "seal-key", "--key", which], input=key + "\n")
    assert out.exit_code == 0 and out.output.startswith(f'{which}_sealed = "v1:')
    blob = out.output.strip().split(" = ", 1)[1]
    clear = {"pik": f'pik = "{PIK}"', "mak": f'mak = "{MAK}"'}
    other = "mak" if which == "pik" else "pik"
    cfg = _load(tmp_path, f"[host]\nsign_on = false\n[keys]\n{which}_sealed = {blob}\n{clear[other]}\n")
    assert getattr(cfg, which) == bytes.fromhex(key)
    # sealed as one key, it does not open as the other
    with pytest.raises(ConfigError, match="does not open"):
        _load(tmp_path, f"[host]\nsign_on = false\n[keys]\n{other}_sealed = {blob}\n{clear[which]}\n")


def test_static_key_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pik.hex").write_text(PIK)
    (tmp_path / "pik.hex").chmod(0o600)
    cfg = _load(tmp_path, '[host]\nsign_on = false\nmac = "none"\n[keys]\npik_file = "pik.hex"\n')
    assert cfg.pik == bytes.fromhex(PIK) and cfg.mak is None
    assert replace(cfg, pik=None).dialect.sign_on is False


def test_every_config_key_is_documented() -> None:
    """docs/config.md names every key the parser knows (issue 12 item 9)."""
    from emulator import dialect
    from protocol.specs import FIELD_KEYS

    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text(encoding="utf-8")
    keys = set(config._SIMPLE) | {"disabled_entry", "host"} | set(dialect.HOST_KEYS) | dialect.ENVELOPE_KEYS \
        | dialect.SPEC_KEYS | dialect.TLS_KEYS | FIELD_KEYS
    for table, names in config._TABLES.items():
        if table != "security":
            assert f"[{table}]" in doc
            keys |= names
    subtables = {k for k in dialect.HOST_KEYS if f"[host.{k}]" in doc}      # envelope, spec, responses, tls
    missing = sorted(k for k in keys - subtables
                     if f"`{k}`" not in doc and f"`{k}," not in doc and f" {k}`" not in doc)
    assert not missing, f"not in docs/config.md: {missing}"


_FULL_DOC = tomllib.loads(FULL.replace(f'pik = "{PIK}"', "").replace(f'mak = "{MAK}"', "")
                          .replace("sign_on = false", "sign_on = true"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated(_FULL_DOC, ("host", "keys")))
def test_malformed_host_tables_raise_only_config_errors(doc: dict[str, Any]) -> None:
    """Whatever a [host] table holds, loading it is a config or a clear ConfigError, never a crash."""
    try:
        cfg = config.from_dict(doc, "fuzz.toml")
    except ConfigError:
        return
    cfg.wire_profile()


def test_the_fuzz_base_is_valid() -> None:
    config.from_dict(_FULL_DOC, "fuzz.toml").wire_profile()
