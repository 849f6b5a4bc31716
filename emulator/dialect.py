"""Host dialects: what a terminal must know to talk to one acquirer host, as data.

Acquirer hosts differ in small ways that decide whether a terminal works with them at all: the
ISO 8583 spec (which fields, which encodings), the envelope around each message (length header,
TPDU, application header), whether there is a sign-on that hands out working keys or the keys are
installed statically, the MAC algorithm (or none), the PIN block format, where the balance is and
what to show when it is missing, which response code means which screen, TLS and a backup host.
A :class:`HostDialect` holds all of that; the ``[host]`` table
of the terminal's TOML config describes it (docs/config.md lists every key), and
:meth:`HostDialect.profile` turns it into the :class:`protocol.specs.Profile` the codec speaks.

Defaults describe the bundled host: the base profile as it is, sign-on on, MAC on (the base's
algorithm) and required on every response, PIN block format 0, the balance in field 54 as
ISO 8583:1987 additional amounts, TLS off.

Whether the connection stays open between transactions (``[host] connection``) is also read from
the ``[host]`` table, but the terminal config keeps it as a field of its own
(:attr:`emulator.config.TerminalConfig.persistent_connection`, the one place the terminal and
the fault injector look), as it keeps the two MAC switches.

>>> d = HostDialect(mac="none", sign_on=False, pin_block=1, balance_missing="not-shown")
>>> d.profile("iso87ascii").name, d.mac_enabled, d.pin_format.name
('iso87ascii', False, 'ISO_1')
"""

from __future__ import annotations

import functools
import hashlib
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.messages import Msg
from protocol.errors import ConfigError, DecodeError, EncodeError
from protocol.framing import LengthHeader
from protocol.iso import Message
from protocol.mac import MacAlgorithm
from protocol.pinblock import PinBlockFormat
from protocol.specs import PROFILES, Profile, build_profile
from protocol.txn import parse_balances

MAC_CHOICES: dict[str, MacAlgorithm | None] = {
    "auto": None, "cup-ecb": MacAlgorithm.CUP_ECB, "x9.19": MacAlgorithm.X9_19, "none": None}
"""``auto``: the base profile's algorithm (``cup``: CUP ECB, ``iso87ascii``: ANSI X9.19)."""
CONNECTIONS = ("persistent", "per-transaction")
BALANCE_FORMATS = ("additional-amounts", "amount")
BALANCE_MISSING = ("not-shown", "error")
PIN_FORMATS = (0, 1, 3)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS to the host (the standard :mod:`ssl` module): the CA to trust — only that one when
    given (CA pinning) —, the name the certificate must carry, an optional client certificate, and
    optionally the SHA-256 fingerprints of the host certificates accepted (certificate pinning)."""

    enabled: bool = True
    ca: str | None = None
    server_name: str | None = None
    cert: str | None = None
    key: str | None = None
    pin_sha256: tuple[str, ...] = ()

    def client_context(self) -> ssl.SSLContext:
        """The client context: TLS 1.2 or later, certificate and host name checked. Unreadable or
        invalid files are a :class:`ConfigError` naming the key."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca) if self.ca else ssl.create_default_context()
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"host.tls.ca {self.ca}: {_ssl_reason(e)}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            if self.key:
                check_private_file(Path(self.key), "host.tls.key")
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"host.tls.cert/key {self.cert}: {_ssl_reason(e)}") from None
        return ctx

    def pinned(self, der: bytes | None) -> bool:
        """Whether the host's certificate (DER) is one of the pinned ones (always, with no pins)."""
        if not self.pin_sha256:
            return True
        return der is not None and hashlib.sha256(der).hexdigest() in self.pin_sha256


def _ssl_reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e)
    if isinstance(e, OSError):
        return str(e.strerror or e)
    return str(e)


def check_private_file(path: Path, key: str) -> None:
    """A private key file must be readable by its owner only."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise ConfigError(f"{key} {path}: {e.strerror or e}") from None
    if mode & 0o077:
        raise ConfigError(f"{key} {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")


FieldDefs = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
"""pyiso8583 field definitions kept hashable: ((field, ((key, value), …)), …)."""


def field_defs(fields: Mapping[str, Mapping[str, Any]], where: str = "host.spec.fields") -> FieldDefs:
    """Field definitions in the hashable form a :class:`HostDialect` keeps (values are strings,
    numbers or booleans; anything else is a :class:`ConfigError`)."""
    out = []
    for k, v in fields.items():
        if not isinstance(v, Mapping):
            raise ConfigError(f"{where}.{k} must be a table of pyiso8583 spec keys")
        for name, value in v.items():
            if not isinstance(value, str | int | float | bool):
                raise ConfigError(f"{where}.{k}.{name} must be a string or a number, not {type(value).__name__}")
        out.append((str(k), tuple(sorted((str(n), x) for n, x in v.items()))))
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class HostDialect:
    """One acquirer host's dialect (see the module docstring; ``[host]`` in the config)."""

    name: str = ""
    complete_spec: bool = False            # the spec is given whole in spec_fields (no base profile)
    spec_fields: FieldDefs = ()
    length_size: int = 2
    length_encoding: str = "binary"
    length_inclusive: bool = False
    tpdu: str | None = None                # hex; None: the base profile's, "": none
    app_header: str | None = None          # hex; None: the base profile's, "": none
    sign_on: bool = True
    mac: str = "auto"
    pin_block: int = 0
    balance_field: int = 54
    balance_format: str = "additional-amounts"
    balance_missing: str = "not-shown"
    rc_screens: tuple[tuple[str, str], ...] = ()
    tls: TlsSettings | None = None
    backup: str | None = None

    # --- what the terminal asks ---------------------------------------------------------------------
    @property
    def mac_enabled(self) -> bool:
        return self.mac != "none"

    @property
    def pin_format(self) -> PinBlockFormat:
        return PinBlockFormat(self.pin_block)

    @property
    def tls_on(self) -> bool:
        return self.tls is not None and self.tls.enabled

    def profile(self, base: str) -> Profile:
        """The wire profile on ``base`` (the config's ``profile``; unused with a complete spec)."""
        return _build(None if self.complete_spec else base, self)

    def screen_for(self, rc: str) -> Msg | None:
        """The screen the response-code table names for ``rc`` (``None``: the terminal's default)."""
        for code, name in self.rc_screens:
            if code == rc:
                return Msg(name)
        return None

    def read_balance(self, msg: Message, currency: str) -> tuple[int, str] | None:
        """The balance in an answer (amount in minor units, ISO 4217 currency), ``None`` when the
        field is absent; a malformed one is a :class:`DecodeError` (never a silent wrong value).

        ``additional-amounts``: ISO 8583:1987 field 54 entries (account type, amount type 01 ledger /
        02 available, currency, C/D, 12 digits), the available balance preferred. ``amount``: the
        field holds the amount itself in minor units, optionally signed ``C``/``D``."""
        v = msg.get(self.balance_field)
        if v is None:
            return None
        f = str(self.balance_field)
        if not isinstance(v, str):
            raise DecodeError(f"field {f} (balance) is binary", field=f)
        if self.balance_format == "amount":
            sign, digits = (v[0], v[1:]) if v[:1] in ("C", "D") else ("C", v)
            if not (digits and digits.isascii() and digits.isdigit() and len(digits) <= 18):
                raise DecodeError(f"field {f} (balance) is not an amount", field=f, raw=v.encode("ascii", "replace"))
            return (-int(digits) if sign == "D" else int(digits)), currency
        entries = parse_balances(v)
        avail = [b for b in entries if b.amount_type == "02"] or entries
        return avail[0].amount, avail[0].currency

    # --- checks --------------------------------------------------------------------------------------
    def validate(self, base: str) -> HostDialect:
        """Check every value; a :class:`ConfigError` names the ``host.…`` key."""
        if not isinstance(self.name, str) or len(self.name) > 40 or not self.name.isprintable():
            raise ConfigError("host.name must be a short printable label")
        if self.mac not in MAC_CHOICES:
            raise ConfigError(f"host.mac must be one of {', '.join(MAC_CHOICES)}")
        if self.pin_block not in PIN_FORMATS or isinstance(self.pin_block, bool):
            raise ConfigError("host.pin_block must be 0, 1 or 3 (ISO 9564-1 format)")
        if self.balance_format not in BALANCE_FORMATS:
            raise ConfigError(f"host.balance_format must be one of {', '.join(BALANCE_FORMATS)}")
        if self.balance_missing not in BALANCE_MISSING:
            raise ConfigError(f"host.balance_missing must be one of {', '.join(BALANCE_MISSING)}")
        for n in ("sign_on", "length_inclusive", "complete_spec"):
            if not isinstance(getattr(self, n), bool):
                raise ConfigError(f"host.{n} must be true or false")
        for code, name in self.rc_screens:
            if not (isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalnum()):
                raise ConfigError(f"host.responses: {code!r} is not a response code (2 letters or digits)")
            if name not in Msg.__members__:
                raise ConfigError(f"host.responses.{code}: {name!r} is not a screen message code "
                                  "(see emulator/messages.toml, e.g. DECLINED, NOT_PERMITTED)")
        for hexkey in ("tpdu", "app_header"):
            v = getattr(self, hexkey)
            if v is not None and not (isinstance(v, str) and _is_hex(v) and len(v) % 2 == 0 and len(v) <= 64):
                raise ConfigError(f"host.envelope.{hexkey} must be hex digits (an even number, at most 32 bytes), "
                                  'or "" for none')
        if self.tpdu and len(self.tpdu) != 10:
            raise ConfigError("host.envelope.tpdu must be 5 bytes (10 hex digits: ID, destination, source), "
                              'or "" for none')
        if self.tls is not None:
            t = self.tls
            if not isinstance(t.enabled, bool):
                raise ConfigError("host.tls.enabled must be true or false")
            if t.key and not t.cert:
                raise ConfigError("host.tls.key needs host.tls.cert")
            for pin in t.pin_sha256:
                if not (len(pin) == 64 and _is_hex(pin)):
                    raise ConfigError("host.tls.pin_sha256 entries must be SHA-256 fingerprints (64 hex digits)")
        if self.backup is not None:
            from emulator.config import parse_hostport

            parse_hostport(self.backup)
        if base not in PROFILES and not self.complete_spec:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}")
        prof = self.profile(base)          # builds the spec: a bad field definition is named here
        if not (isinstance(self.balance_field, int) and not isinstance(self.balance_field, bool)
                and prof.has_field(self.balance_field)):
            raise ConfigError(f"host.balance_field {self.balance_field!r} is not a field of the {prof.name} spec")
        return self


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


@functools.lru_cache(maxsize=32)
def _build(base: str | None, d: HostDialect) -> Profile:
    try:
        length = LengthHeader(d.length_size, d.length_encoding, d.length_inclusive)
    except EncodeError as e:   # the header's own checks
        raise ConfigError(f"host.envelope: {e.msg}") from None
    fields = {k: dict(v) for k, v in d.spec_fields}
    return build_profile(base, name=d.name or None, fields=fields,
                         tpdu=None if d.tpdu is None else bytes.fromhex(d.tpdu),
                         app_header=None if d.app_header is None else bytes.fromhex(d.app_header),
                         length_header=length, mac_alg=MAC_CHOICES.get(d.mac), where="host.spec.fields")


# --- the [host] table ---------------------------------------------------------------------------------
HOST_KEYS = frozenset({"address", "backup", "connection", "name", "sign_on", "mac", "response_mac", "sign_on_mac",
                       "pin_block", "balance_field", "balance_format", "balance_missing", "envelope", "spec",
                       "responses", "tls"})
ENVELOPE_KEYS = frozenset({"length_size", "length_encoding", "length_inclusive", "tpdu", "app_header"})
SPEC_KEYS = frozenset({"base", "fields"})
TLS_KEYS = frozenset({"enabled", "ca", "server_name", "cert", "key", "pin_sha256"})


@dataclass(frozen=True, slots=True)
class HostTable:
    """What a ``[host]`` table gives, beyond the dialect: the address, the spec's base, and the two
    MAC switches and the connection mode the terminal config keeps as fields of its own."""

    dialect: HostDialect
    address: str | None = None
    base: str | None = None               # [host.spec] base (None: not given)
    response_mac: bool | None = None
    sign_on_mac: bool | None = None
    persistent: bool | None = None        # connection = "persistent" (True) | "per-transaction" (False)


def _want(value: Any, kind: type | tuple[type, ...], where: str, key: str, what: str) -> Any:
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {what}, got {type(value).__name__} {value!r:.40}")
    return value


def _subtable(t: Mapping[str, Any], key: str, known: frozenset[str], where: str) -> dict[str, Any]:
    sub = t.get(key, {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{where}: host.{key} must be a table ([host.{key}])")
    unknown = sorted(set(sub) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key host.{key}.{unknown[0]}; known: {', '.join(sorted(known))}")
    return sub


def _path(value: Any, where: str, key: str, base_dir: Path | None) -> str:
    text = _want(value, str, where, key, "a path in quotes")
    p = Path(text).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p)


def parse_host_table(t: Mapping[str, Any], where: str, *, base_dir: Path | None = None) -> HostTable:
    """The ``[host]`` table of a config file (relative paths are relative to the file's folder)."""
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: host must be a table ([host]) or an address string")
    unknown = sorted(set(t) - HOST_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key host.{unknown[0]}; known: {', '.join(sorted(HOST_KEYS))}")
    ch: dict[str, Any] = {}
    for key in ("name", "backup", "mac", "balance_format", "balance_missing"):
        if key in t:
            ch[key] = _want(t[key], str, where, f"host.{key}", "a string (in quotes)")
    for key in ("sign_on",):
        if key in t:
            ch[key] = _want(t[key], bool, where, f"host.{key}", "true or false")
    for key in ("pin_block", "balance_field"):
        if key in t:
            ch[key] = _want(t[key], int, where, f"host.{key}", "a whole number")
    env = _subtable(t, "envelope", ENVELOPE_KEYS, where)
    if "length_size" in env:
        ch["length_size"] = _want(env["length_size"], int, where, "host.envelope.length_size", "2 or 4")
    if "length_encoding" in env:
        ch["length_encoding"] = _want(env["length_encoding"], str, where, "host.envelope.length_encoding",
                                      '"binary", "ascii" or "bcd"')
    if "length_inclusive" in env:
        ch["length_inclusive"] = _want(env["length_inclusive"], bool, where, "host.envelope.length_inclusive",
                                       "true or false")
    for key in ("tpdu", "app_header"):
        if key in env:
            ch[key] = _want(env[key], str, where, f"host.envelope.{key}", 'hex digits in quotes, or "" for none')
    spec = _subtable(t, "spec", SPEC_KEYS, where)
    base: str | None = None
    if "base" in spec:
        base = _want(spec["base"], str, where, "host.spec.base", '"cup", "iso87ascii" or "none"')
        if base == "none":
            ch["complete_spec"] = True
        elif base not in PROFILES:
            raise ConfigError(f"{where}: host.spec.base must be one of {', '.join(PROFILES)} or none")
    if "fields" in spec:
        fields = _want(spec["fields"], dict, where, "host.spec.fields", "a table of fields ([host.spec.fields.62])")
        for k, v in fields.items():
            _want(v, dict, where, f"host.spec.fields.{k}", "a table of pyiso8583 spec keys")
        if "h" in fields:
            raise ConfigError(f"{where}: host.spec.fields.h: the header is the TPDU and application header of "
                              "[host.envelope]")
        try:
            ch["spec_fields"] = field_defs(fields)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if ch.get("complete_spec") and not ch.get("spec_fields"):
        raise ConfigError(f"{where}: host.spec.base = \"none\" needs the whole spec in [host.spec.fields.*]")
    responses = t.get("responses", {})
    if not isinstance(responses, dict):
        raise ConfigError(f"{where}: host.responses must be a table of response code = message code")
    ch["rc_screens"] = tuple(sorted((str(k), _want(v, str, where, f"host.responses.{k}", "a message code"))
                                    for k, v in responses.items()))
    if "tls" in t:
        tls = _subtable(t, "tls", TLS_KEYS, where)
        pins = _want(tls.get("pin_sha256", []), list, where, "host.tls.pin_sha256", "a list of fingerprints")
        ch["tls"] = TlsSettings(
            enabled=_want(tls.get("enabled", True), bool, where, "host.tls.enabled", "true or false"),
            ca=_path(tls["ca"], where, "host.tls.ca", base_dir) if "ca" in tls else None,
            server_name=_want(tls["server_name"], str, where, "host.tls.server_name", "a host name")
            if "server_name" in tls else None,
            cert=_path(tls["cert"], where, "host.tls.cert", base_dir) if "cert" in tls else None,
            key=_path(tls["key"], where, "host.tls.key", base_dir) if "key" in tls else None,
            pin_sha256=tuple(_want(p, str, where, "host.tls.pin_sha256", "fingerprints in hex").lower()
                             .replace(":", "") for p in pins))
    address = _want(t["address"], str, where, "host.address", "HOST:PORT in quotes") if "address" in t else None
    persistent: bool | None = None
    if "connection" in t:
        connection = _want(t["connection"], str, where, "host.connection", "a string (in quotes)")
        if connection not in CONNECTIONS:
            raise ConfigError(f"{where}: host.connection must be one of {', '.join(CONNECTIONS)}")
        persistent = connection == "persistent"
    return HostTable(
        HostDialect(**ch), address=address, base=base,
        response_mac=_want(t["response_mac"], bool, where, "host.response_mac", "true or false")
        if "response_mac" in t else None,
        sign_on_mac=_want(t["sign_on_mac"], bool, where, "host.sign_on_mac", "true or false")
        if "sign_on_mac" in t else None,
        persistent=persistent)


def host_table(d: HostDialect, *, address: str | None, response_mac: bool, sign_on_mac: bool,
               base: str, persistent: bool = False) -> dict[str, Any]:
    """The ``[host]`` table that :func:`parse_host_table` reads back as ``d`` (only what differs from
    the defaults, apart from the switches a reader looks for first)."""
    out: dict[str, Any] = {}
    if address is not None:
        out["address"] = address
    default = HostDialect()
    for key in ("name", "backup"):
        if getattr(d, key):
            out[key] = getattr(d, key)
    out["connection"] = CONNECTIONS[0] if persistent else CONNECTIONS[1]
    out["sign_on"] = d.sign_on
    out["mac"] = d.mac
    out["response_mac"] = response_mac
    out["sign_on_mac"] = sign_on_mac
    out["pin_block"] = d.pin_block
    out["balance_field"] = d.balance_field
    out["balance_format"] = d.balance_format
    out["balance_missing"] = d.balance_missing
    env: dict[str, Any] = {}
    for key in ("length_size", "length_encoding", "length_inclusive"):
        if getattr(d, key) != getattr(default, key):
            env[key] = getattr(d, key)
    for key in ("tpdu", "app_header"):
        if getattr(d, key) is not None:
            env[key] = getattr(d, key)
    if env:
        out["envelope"] = env
    spec: dict[str, Any] = {"base": "none" if d.complete_spec else base}
    if d.spec_fields:
        spec["fields"] = {k: dict(v) for k, v in d.spec_fields}
    out["spec"] = spec
    if d.rc_screens:
        out["responses"] = dict(d.rc_screens)
    if d.tls is not None:
        t = d.tls
        tls: dict[str, Any] = {"enabled": t.enabled}
        for key in ("ca", "server_name", "cert", "key"):
            if getattr(t, key) is not None:
                tls[key] = getattr(t, key)
        if t.pin_sha256:
            tls["pin_sha256"] = list(t.pin_sha256)
        out["tls"] = tls
    return out
