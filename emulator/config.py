"""Terminal configuration in TOML.

Every key has a default, so an empty file (or none) gives a working demo terminal that talks
to the bundled host. Example::

    terminal_id = "POSEMU01"
    merchant_id = "898310012345678"
    profile = "cup"                 # cup | iso87ascii
    host = "127.0.0.1:5000"         # omitted: start the bundled host in-process
    reader = "sim://demo"
    language = "both"               # zh | en | both
    currency = "156"
    software_version = 49           # sent in the CUP application header (0x31)
    [timeouts]                      # seconds on the terminal's clock
    connect = 10
    response = 60
    pin_entry = 60
    card = 60
    removal = 30
    [keys]
    tmk = "0123456789ABCDEFFEDCBA9876543210"   # terminal master key: a TEST key may be given in clear;
    # a real one never: tmk_sealed = "v1:…" (`posemu config seal-key`, sealed under the user's local
    # key) or tmk_file = "/path/0600-file-with-hex"
    scheme = "003"                  # 001 single DES, 003 double length, 004 double + TDK
    [reversal]
    retries = 3
    [security]
    mac = true                      # responses must carry a valid MAC (false only for a MAC-less host)
    sign_on_mac = true              # the sign-on carries a MAC under the TMK (the bundled host requires it)
    [emv]
    aids = ["A000000333010101", "A0000000031010", "A0000000041010"]
    chip_retries = 3                # chip failures before falling back to the stripe
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.keystore import user_key, write_private
from protocol.errors import ConfigError
from protocol.specs import PROFILES


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    response: float = 60.0
    pin_entry: float = 60.0
    card: float = 60.0
    removal: float = 30.0


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    terminal_id: str = DEMO_TID
    merchant_id: str = DEMO_MID
    profile: str = "cup"
    host: str | None = None
    reader: str = "sim://demo"
    language: str = "both"
    currency: str = "156"
    software_version: int = 0x31
    operator: str = "01"
    operator_password: str = "0000"
    admin_password: str = "99999999"          # the administrator's: unlocks a terminal the operator locked
    operator_tries: int = 3
    tmk: bytes = DEMO_TMK
    key_scheme: str = "003"
    reversal_retries: int = 3
    aids: tuple[str, ...] = ("A000000333010101", "A0000000031010", "A0000000041010")
    chip_retries: int = 3
    allow_fallback: bool = True               # magstripe fallback after repeated chip failures
    disabled_entry: tuple[str, ...] = ()      # e.g. ("swipe",) — card types switched off
    mac_required: bool = True                 # every response must carry a valid MAC once keys exist
    sign_on_mac: bool = True                  # the 0800 carries a MAC under the TMK (proof of the key)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __repr__(self) -> str:
        return f"TerminalConfig(tid={self.terminal_id}, profile={self.profile}, host={self.host})"

    def validate(self) -> TerminalConfig:
        if len(self.terminal_id) != 8:
            raise ConfigError("terminal_id must be 8 characters")
        if len(self.merchant_id) != 15:
            raise ConfigError("merchant_id must be 15 characters")
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}")
        if self.language not in ("zh", "en", "both"):
            raise ConfigError("language must be zh, en or both")
        if len(self.tmk) not in (8, 16, 24):
            raise ConfigError("keys.tmk must be 8, 16 or 24 bytes (hex)")
        if self.key_scheme not in ("001", "003", "004"):
            raise ConfigError("keys.scheme must be 001, 003 or 004")
        for name in ("connect", "response", "pin_entry", "card", "removal"):
            if getattr(self.timeouts, name) <= 0:
                raise ConfigError(f"timeouts.{name} must be positive")
        if self.host is not None:
            parse_hostport(self.host)
        return self


def parse_hostport(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (port 0 = any free port, where ``allow_zero``)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not (0 if allow_zero else 1) <= int(port) < 65536:
        raise ConfigError(f"host address {text!r} must be HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


_SIMPLE = {"terminal_id", "merchant_id", "profile", "host", "reader", "language", "currency",
           "software_version", "operator", "operator_password", "operator_tries", "admin_password"}


def from_dict(data: dict[str, Any], where: str = "config") -> TerminalConfig:
    cfg = TerminalConfig()
    changes: dict[str, Any] = {}
    known = _SIMPLE | {"timeouts", "keys", "reversal", "emv", "disabled_entry", "security"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}")
    for key in _SIMPLE & data.keys():
        want = type(getattr(cfg, key)) if getattr(cfg, key) is not None else str
        val = data[key]
        if want is int and not isinstance(val, int):
            raise ConfigError(f"{where}: {key} must be an integer")
        changes[key] = val if want is int else str(val)
    try:
        if "timeouts" in data:
            t = data["timeouts"]
            unknown = set(t) - {f.name for f in fields(Timeouts)}
            if unknown:
                raise ConfigError(f"{where}: unknown timeouts {sorted(unknown)}")
            changes["timeouts"] = replace(cfg.timeouts, **{k: float(v) for k, v in t.items()})
        if "keys" in data:
            k = data["keys"]
            given = [n for n in ("tmk", "tmk_sealed", "tmk_file") if n in k]
            if len(given) > 1:
                raise ConfigError(f"{where}: give one of keys.tmk, keys.tmk_sealed, keys.tmk_file")
            if "tmk" in k:
                changes["tmk"] = bytes.fromhex(str(k["tmk"]))
            elif "tmk_sealed" in k:
                changes["tmk"] = user_key().open_text(str(k["tmk_sealed"]), TMK_PURPOSE)
            elif "tmk_file" in k:
                changes["tmk"] = read_key_file(Path(str(k["tmk_file"])))
            if "scheme" in k:
                changes["key_scheme"] = str(k["scheme"])
        if "reversal" in data:
            changes["reversal_retries"] = int(data["reversal"].get("retries", cfg.reversal_retries))
        if "emv" in data:
            e = data["emv"]
            if "aids" in e:
                changes["aids"] = tuple(str(a) for a in e["aids"])
            if "chip_retries" in e:
                changes["chip_retries"] = int(e["chip_retries"])
            if "allow_fallback" in e:
                changes["allow_fallback"] = bool(e["allow_fallback"])
        if "security" in data:
            sec = data["security"]
            unknown = set(sec) - {"mac", "sign_on_mac"}
            if unknown:
                raise ConfigError(f"{where}: unknown security keys {sorted(unknown)}")
            for key, attr in (("mac", "mac_required"), ("sign_on_mac", "sign_on_mac")):
                if key in sec:
                    if not isinstance(sec[key], bool):
                        raise ConfigError(f"{where}: security.{key} must be true or false")
                    changes[attr] = sec[key]
        if "disabled_entry" in data:
            changes["disabled_entry"] = tuple(str(x) for x in data["disabled_entry"])
    except (ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return replace(cfg, **changes).validate()


def load(path: str | Path | None) -> TerminalConfig:
    """Load a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return TerminalConfig().validate()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {p}: {e}") from None
    return from_dict(data, str(p))


def to_dict(cfg: TerminalConfig) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(cfg, k) for k in sorted(_SIMPLE) if getattr(cfg, k) is not None}
    out["disabled_entry"] = list(cfg.disabled_entry)
    out["timeouts"] = {f.name: getattr(cfg.timeouts, f.name) for f in fields(Timeouts)}
    # the terminal master key is never written in clear: the public test key is the default
    # (written as nothing), any other key is sealed under the user's local key
    out["keys"] = {"scheme": cfg.key_scheme}
    if cfg.tmk != DEMO_TMK:
        out["keys"]["tmk_sealed"] = user_key().seal_text(cfg.tmk, TMK_PURPOSE)
    out["reversal"] = {"retries": cfg.reversal_retries}
    out["security"] = {"mac": cfg.mac_required, "sign_on_mac": cfg.sign_on_mac}
    out["emv"] = {"aids": list(cfg.aids), "chip_retries": cfg.chip_retries, "allow_fallback": cfg.allow_fallback}
    return out


def save(cfg: TerminalConfig, path: str | Path) -> None:
    """Write the config (mode 0600; keys sealed, see :func:`to_dict`)."""
    write_private(Path(path), tomli_w.dumps(to_dict(cfg)).encode("utf-8"))


TMK_PURPOSE = "config tmk"


def read_key_file(path: Path) -> bytes:
    """A key as hex text in a file only its owner can read."""
    import stat

    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"key file {path}: {getattr(e, 'strerror', None) or e}") from None
    if mode & 0o077:
        raise ConfigError(f"key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"key file {path} does not hold a hex key") from None
