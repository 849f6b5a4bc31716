"""Terminal configuration in TOML.

Every key has a default, so an empty file (or none) gives a working demo terminal that talks
to the bundled host. Example::

    terminal_id = "POSEMU01"
    merchant_id = "898310012345678"
    profile = "cup"                 # cup | iso87ascii: the ISO 8583 base profile
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
    # with [host] sign_on = false, static working keys: pik/pik_sealed/pik_file, mak/mak_sealed/mak_file
    [reversal]
    retries = 3
    [emv]
    aids = ["A000000333010101", "A0000000031010", "A0000000041010"]
    chip_retries = 3                # chip failures before falling back to the stripe
    [host]                          # the acquirer host and its dialect (emulator.dialect)
    address = "127.0.0.1:5000"      # omitted: start the bundled host in-process
    sign_on = true
    mac = "auto"                    # auto | cup-ecb | x9.19 | none
    response_mac = true             # responses must carry a valid MAC (false only for a host that sends none)
    sign_on_mac = true              # the sign-on carries a MAC under the TMK (the bundled host requires it)

Every key is documented in docs/config.md (``posemu config init`` writes a commented template).
A ``host = "HOST:PORT"`` string and a ``[security]`` table (``mac``, ``sign_on_mac``) are still read,
as older releases wrote them.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.dialect import HostDialect, host_table, parse_host_table
from emulator.keystore import user_key, write_private
from hardware.registry import ReaderURL
from protocol import keys as keymod
from protocol.errors import ConfigError, CryptoError
from protocol.specs import PROFILES, Profile


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The terminal's waits in clock seconds: connect, host response, PIN entry, card, card removal."""

    connect: float = 10.0
    response: float = 60.0
    pin_entry: float = 60.0
    card: float = 60.0
    removal: float = 30.0


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    """The terminal's configuration (:func:`load` reads it from TOML); frozen: change it with ``replace``."""

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
    persistent_connection: bool = False       # [host] connection: "persistent" keeps it open between
                                              # transactions; "per-transaction" (default) hangs up after each
    mac_required: bool = True                 # every response must carry a valid MAC once keys exist
    sign_on_mac: bool = True                  # the 0800 carries a MAC under the TMK (proof of the key)
    timeouts: Timeouts = field(default_factory=Timeouts)
    dialect: HostDialect = field(default_factory=HostDialect)   # the host's dialect ([host])
    pik: bytes | None = None                  # static working keys, when the host has no sign-on
    mak: bytes | None = None

    def __repr__(self) -> str:
        return f"TerminalConfig(tid={self.terminal_id}, profile={self.profile}, host={self.host})"

    def wire_profile(self) -> Profile:
        """The ISO 8583 profile the host speaks: ``profile`` as the ``[host]`` dialect shapes it."""
        return self.dialect.profile(self.profile)

    def static_keys(self) -> keymod.WorkingKeys | None:
        """The working keys installed in the config (``[host] sign_on = false``), else ``None``.

        Without a MAC (``mac = "none"``) no MAK is needed; one is then made up, never sent."""
        if self.dialect.sign_on or self.pik is None:
            return None
        return keymod.WorkingKeys(pik=self.pik, mak=self.mak or keymod.generate_key(8))

    @property
    def response_mac(self) -> bool:
        """Responses are checked: a MAC algorithm is on and ``response_mac`` (``mac_required``) is set."""
        return self.mac_required and self.dialect.mac_enabled

    @property
    def request_sign_on_mac(self) -> bool:
        """The 0800 carries a MAC under the terminal master key."""
        return self.sign_on_mac and self.dialect.mac_enabled

    def validate(self) -> TerminalConfig:
        """Check every value, whatever built the config (TOML, the UI's form, a scenario):
        a :class:`ConfigError` names the key and what it must be."""
        _text(self.terminal_id, "terminal_id", exact=8, what="8 ASCII characters (ISO 8583 field 41, ans 8)")
        _text(self.merchant_id, "merchant_id", exact=15, what="15 ASCII characters (ISO 8583 field 42, ans 15)")
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}")
        if not isinstance(self.dialect, HostDialect):
            raise ConfigError("host must be a host dialect")
        self.dialect.validate(self.profile)
        for name in ("pik", "mak"):
            key = getattr(self, name)
            if key is not None and (not isinstance(key, bytes) or len(key) not in (8, 16, 24)):
                raise ConfigError(f"keys.{name} must be 8, 16 or 24 bytes (hex)")
        if self.dialect.sign_on:
            if self.pik is not None or self.mak is not None:
                raise ConfigError("keys.pik and keys.mak are static working keys: give them only with "
                                  "host.sign_on = false (with a sign-on, the host sends the working keys)")
        else:
            if self.pik is None:
                raise ConfigError("host.sign_on = false needs the static working keys: keys.pik (or keys.pik_sealed, "
                                  "keys.pik_file)")
            if self.dialect.mac_enabled and self.mak is None:
                raise ConfigError("host.sign_on = false with a MAC needs keys.mak (or keys.mak_sealed, keys.mak_file); "
                                  'or set host.mac = "none"')
        if self.host is not None:
            if not isinstance(self.host, str):
                raise ConfigError("host must be HOST:PORT")
            parse_hostport(self.host)
        if not isinstance(self.reader, str):
            raise ConfigError("reader must be a reader URL such as sim://demo")
        ReaderURL.parse(self.reader)
        if self.language not in ("zh", "en", "both"):
            raise ConfigError("language must be zh, en or both")
        _digits(self.currency, "currency", 3, 3, what="3 digits (ISO 4217 numeric, e.g. 156)")
        _int(self.software_version, "software_version", 0, 255)
        _digits(self.operator, "operator", 1, 3, what="1 to 3 digits")
        _digits(self.operator_password, "operator_password", 1, 12, what="1 to 12 digits")
        _digits(self.admin_password, "admin_password", 4, 12, what="4 to 12 digits")
        for name in ("mac_required", "sign_on_mac"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"security.{'mac' if name == 'mac_required' else name} must be true or false")
        if not isinstance(self.persistent_connection, bool):
            raise ConfigError('host.connection must be "persistent" or "per-transaction"')
        _int(self.operator_tries, "operator_tries", 1, 99)
        if not isinstance(self.tmk, bytes) or len(self.tmk) not in (8, 16, 24):
            raise ConfigError("keys.tmk must be 8, 16 or 24 bytes (hex)")
        if self.key_scheme not in ("001", "003", "004"):
            raise ConfigError("keys.scheme must be 001, 003 or 004")
        _int(self.reversal_retries, "reversal.retries", 0, 99)
        _int(self.chip_retries, "emv.chip_retries", 0, 99)
        if not isinstance(self.allow_fallback, bool):
            raise ConfigError("emv.allow_fallback must be true or false")
        if not isinstance(self.aids, tuple) or not self.aids:
            raise ConfigError("emv.aids must be a non-empty list of AIDs")
        for aid in self.aids:
            if not (isinstance(aid, str) and _is_hex(aid) and 10 <= len(aid) <= 32 and len(aid) % 2 == 0):
                raise ConfigError(f"emv.aids: {aid!r} is not an AID (5 to 16 bytes in hex, EMV Book 1 §12.2.1)")
        if not isinstance(self.disabled_entry, tuple) or not set(self.disabled_entry) <= set(ENTRY_MODES):
            raise ConfigError(f"disabled_entry may list only {', '.join(ENTRY_MODES)}")
        for name in ("connect", "response", "pin_entry", "card", "removal"):
            v = getattr(self.timeouts, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or not 0 < v <= MAX_TIMEOUT_S:
                raise ConfigError(f"timeouts.{name} must be a positive number of seconds, at most "
                                  f"{MAX_TIMEOUT_S}, got {v!r}")
        return self


#: card entry modes that ``disabled_entry`` can switch off
ENTRY_MODES = ("swipe", "chip")
#: the longest timeout accepted (one day): longer is a typo, and would overflow the clock's timers
MAX_TIMEOUT_S = 86_400


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _text(value: object, key: str, *, exact: int, what: str) -> None:
    if not (isinstance(value, str) and len(value) == exact and value.isascii() and value.isprintable()):
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def _digits(value: object, key: str, lo: int, hi: int, *, what: str) -> None:
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and lo <= len(value) <= hi):
        raise ConfigError(f"{key} must be {what}")


def _int(value: object, key: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be a whole number from {lo} to {hi}, got {value!r}")


def parse_hostport(text: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (port 0 = any free port, where ``allow_zero``); an empty
    host means 127.0.0.1. The host is an IP address or a DNS name (RFC 1123 labels).

    >>> parse_hostport("127.0.0.1:5000"), parse_hostport("[::1]:5000"), parse_hostport(":5000")
    (('127.0.0.1', 5000), ('::1', 5000), ('127.0.0.1', 5000))
    """
    if not isinstance(text, str):
        raise ConfigError(f"host address {text!r} must be HOST:PORT")
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) \
            or not (0 if allow_zero else 1) <= int(port) < 65536:
        raise ConfigError(f"host address {text!r} must be HOST:PORT with a port from "
                          f"{0 if allow_zero else 1} to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"host address {text!r}: {host!r} in brackets is not an IPv6 address") from None
    elif host and not _valid_host(host):
        raise ConfigError(f"host address {text!r}: {host!r} is not an IP address or host name")
    return host or "127.0.0.1", int(port)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)", re.ASCII)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


_SIMPLE = {"terminal_id", "merchant_id", "profile", "reader", "language", "currency",
           "software_version", "operator", "operator_password", "operator_tries", "admin_password"}
_INTS = {"software_version", "operator_tries"}
_KEY_NAMES = ("tmk", "pik", "mak")
_TABLES: dict[str, set[str]] = {
    "timeouts": {f.name for f in fields(Timeouts)},
    "keys": {f"{k}{v}" for k in _KEY_NAMES for v in ("", "_sealed", "_file")} | {"scheme"},
    "security": {"mac", "sign_on_mac"},
    "reversal": {"retries"},
    "emv": {"aids", "chip_retries", "allow_fallback"},
}


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    t = data.get(key, {})
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(t) - _TABLES[key])
    if unknown:
        raise ConfigError(f"{where}: unknown key {key}.{unknown[0]}; known: {', '.join(sorted(_TABLES[key]))}")
    return t


def _want(value: Any, kind: type | tuple[type, ...], where: str, key: str, what: str) -> Any:
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {what}, got {type(value).__name__} {value!r:.40}")
    return value


def _key(k: dict[str, Any], name: str, where: str, base_dir: Path | None) -> bytes | None:
    """One key of [keys]: ``name`` in clear (test keys only), ``name_sealed`` under the user's local
    key, or ``name_file`` (hex in a 0600 file)."""
    given = [n for n in (name, f"{name}_sealed", f"{name}_file") if n in k]
    if len(given) > 1:
        raise ConfigError(f"{where}: give one of keys.{name}, keys.{name}_sealed, keys.{name}_file")
    if name in k:
        text = _want(k[name], str, where, f"keys.{name}", "hex digits in quotes")
        if not (text.isascii() and _is_hex(text) and len(text) % 2 == 0):
            raise ConfigError(f"{where}: keys.{name} must be hex digits (16, 32 or 48)")
        return bytes.fromhex(text)
    if f"{name}_sealed" in k:
        sealed = _want(k[f"{name}_sealed"], str, where, f"keys.{name}_sealed",
                       '"v1:…" from `posemu config seal-key`')
        try:
            return user_key().open_text(sealed, KEY_PURPOSES[name])
        except CryptoError as err:
            raise ConfigError(f"{where}: keys.{name}_sealed: {err}") from None
    if f"{name}_file" in k:
        p = Path(_want(k[f"{name}_file"], str, where, f"keys.{name}_file", "a path in quotes")).expanduser()
        if name != "tmk" and not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return read_key_file(p)
    return None


def from_dict(data: dict[str, Any], where: str = "config", *, base_dir: Path | None = None) -> TerminalConfig:
    """A config from a TOML document: unknown keys and wrong types are errors naming the key.
    ``base_dir``: the config file's folder (relative TLS and working-key paths start there)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table of keys")
    cfg = TerminalConfig()
    changes: dict[str, Any] = {}
    known = _SIMPLE | set(_TABLES) | {"disabled_entry", "host"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}")
    for key in _SIMPLE & data.keys():
        if key in _INTS:
            changes[key] = _want(data[key], int, where, key, "a whole number")
        else:
            changes[key] = _want(data[key], str, where, key, "a string (in quotes)")
    t = _table(data, "timeouts", where)
    if t:
        changes["timeouts"] = replace(cfg.timeouts, **{
            k: float(_want(v, (int, float), where, f"timeouts.{k}", "a number of seconds")) for k, v in t.items()})
    k = _table(data, "keys", where)
    for name in _KEY_NAMES:
        value = _key(k, name, where, base_dir)
        if value is not None:
            changes[name] = value
    if "scheme" in k:
        changes["key_scheme"] = _want(k["scheme"], str, where, "keys.scheme", '"001", "003" or "004"')
    r = _table(data, "reversal", where)
    if "retries" in r:
        changes["reversal_retries"] = _want(r["retries"], int, where, "reversal.retries", "a whole number")
    e = _table(data, "emv", where)
    if "aids" in e:
        aids = _want(e["aids"], list, where, "emv.aids", "a list of AIDs in hex")
        changes["aids"] = tuple(_want(a, str, where, "emv.aids", "a list of AIDs in hex") for a in aids)
    if "chip_retries" in e:
        changes["chip_retries"] = _want(e["chip_retries"], int, where, "emv.chip_retries", "a whole number")
    if "allow_fallback" in e:
        changes["allow_fallback"] = _want(e["allow_fallback"], bool, where, "emv.allow_fallback", "true or false")
    sec = _table(data, "security", where)          # older releases: [security] mac, sign_on_mac
    for key, attr in (("mac", "mac_required"), ("sign_on_mac", "sign_on_mac")):
        if key in sec:
            changes[attr] = _want(sec[key], bool, where, f"security.{key}", "true or false")
    host = data.get("host")
    if isinstance(host, str):                       # older releases: host = "HOST:PORT"
        changes["host"] = host
    elif host is not None:
        ht = parse_host_table(host, where, base_dir=base_dir)
        changes["dialect"] = ht.dialect
        if ht.address is not None:
            changes["host"] = ht.address
        if ht.base is not None and not ht.dialect.complete_spec:
            if "profile" in changes and changes["profile"] != ht.base:
                raise ConfigError(f"{where}: profile = {changes['profile']!r} and host.spec.base = {ht.base!r} "
                                  "disagree; give one of them")
            changes["profile"] = ht.base
        for key, attr, switch in (("response_mac", "mac_required", ht.response_mac),
                                 ("sign_on_mac", "sign_on_mac", ht.sign_on_mac)):
            if switch is not None:
                if attr in changes:
                    raise ConfigError(f"{where}: host.{key} and security.{'mac' if key == 'response_mac' else key} "
                                      f"both given; keep host.{key}")
                changes[attr] = switch
        if ht.persistent is not None:
            changes["persistent_connection"] = ht.persistent
    if "disabled_entry" in data:
        entries = _want(data["disabled_entry"], list, where, "disabled_entry", "a list of entry modes")
        changes["disabled_entry"] = tuple(_want(x, str, where, "disabled_entry", "a list of entry modes")
                                          for x in entries)
    try:
        return replace(cfg, **changes).validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def load(path: str | Path | None) -> TerminalConfig:
    """Load a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return TerminalConfig().validate()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a folder") from None
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"config file {p}: nested too deeply") from None
    return from_dict(data, str(p), base_dir=p.parent)


SECRET_KEYS = frozenset({"operator_password", "admin_password"})
"""Values :func:`to_dict` hides with ``hide_secrets`` besides the keys of ``[keys]``."""


def to_dict(cfg: TerminalConfig, *, hide_secrets: bool = False) -> dict[str, Any]:
    """The config as a TOML document that :func:`from_dict` reads back. Keys are never written in
    clear: the public test TMK is the default (written as nothing), any other key is sealed under
    the user's local key. ``hide_secrets``: for showing, not for saving — keys by their check value
    only, passwords hidden."""
    out: dict[str, Any] = {k: getattr(cfg, k) for k in sorted(_SIMPLE) if getattr(cfg, k) is not None}
    out["disabled_entry"] = list(cfg.disabled_entry)
    out["timeouts"] = {f.name: getattr(cfg.timeouts, f.name) for f in fields(Timeouts)}
    out["keys"] = {"scheme": cfg.key_scheme}
    if hide_secrets:
        for k in SECRET_KEYS:
            out[k] = "<hidden>"
        for name in _KEY_NAMES:
            key = getattr(cfg, name)
            if key is not None:
                what = "public test key" if name == "tmk" and key == DEMO_TMK else f"{len(key) * 8}-bit key"
                out["keys"][name] = f"<hidden: {what}, check value {keymod.kcv(key, 3).hex().upper()}>"
    else:
        if cfg.tmk != DEMO_TMK:
            out["keys"]["tmk_sealed"] = user_key().seal_text(cfg.tmk, TMK_PURPOSE)
        for name in ("pik", "mak"):
            key = getattr(cfg, name)
            if key is not None:
                out["keys"][f"{name}_sealed"] = user_key().seal_text(key, KEY_PURPOSES[name])
    out["reversal"] = {"retries": cfg.reversal_retries}
    out["emv"] = {"aids": list(cfg.aids), "chip_retries": cfg.chip_retries, "allow_fallback": cfg.allow_fallback}
    out["host"] = host_table(cfg.dialect, address=cfg.host, response_mac=cfg.mac_required,
                             sign_on_mac=cfg.sign_on_mac, base=cfg.profile,
                             persistent=cfg.persistent_connection)
    del out["profile"]          # it is [host.spec] base
    return out


def save(cfg: TerminalConfig, path: str | Path) -> None:
    """Write the config (mode 0600; keys sealed, see :func:`to_dict`)."""
    write_private(Path(path), tomli_w.dumps(to_dict(cfg)).encode("utf-8"))


TMK_PURPOSE = "config tmk"
KEY_PURPOSES = {"tmk": TMK_PURPOSE, "pik": "config pik", "mak": "config mak"}
"""What each sealed key of [keys] is sealed for (a blob sealed for one does not open for another)."""


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
