"""Terminal configuration in TOML: defaults, loading, validation errors, save round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator import config
from protocol.errors import ConfigError


def test_defaults_are_a_working_demo_terminal() -> None:
    cfg = config.load(None)
    assert cfg.terminal_id == "POSEMU01" and cfg.profile == "cup" and cfg.host is None
    assert (cfg.timeouts.connect, cfg.timeouts.response) == (10.0, 60.0)


def test_load_save_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text('terminal_id = "SHOP0001"\nhost = "127.0.0.1:5000"\nprofile = "iso87ascii"\n'
                 "[timeouts]\nresponse = 30\n[keys]\n"
                 'tmk = "00112233445566778899AABBCCDDEEFF"\nscheme = "003"\n[emv]\nallow_fallback = false\n',
                 encoding="utf-8")
    cfg = config.load(p)
    assert cfg.terminal_id == "SHOP0001" and cfg.timeouts.response == 30.0 and not cfg.allow_fallback
    assert cfg.tmk == bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    config.save(cfg, tmp_path / "out.toml")
    assert config.load(tmp_path / "out.toml") == cfg
    assert "SHOP0001" in repr(cfg) and "00112233" not in repr(cfg)      # keys never in a repr


@pytest.mark.parametrize(("text", "message"), [
    ('terminal_id = "SHORT"', "terminal_id"),
    ('profile = "x25"', "profile"),
    ('host = "nowhere"', "HOST:PORT"),
    ("[timeouts]\nresponse = 0", "positive"),
    ('[keys]\ntmk = "zz"', "hex digits"),
    ('surprise = 1', "unknown key"),
    ("[timeouts]\nforever = 1", "unknown key timeouts.forever"),
    ("terminal_id = [", "config file"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        config.load(p)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/posemu.toml")
