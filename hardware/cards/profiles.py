"""Card profiles: TOML files describing a test card (stripe, chip, PIN, host-side account).

Every PAN here is an invented test number (BINs 99xxxx, Luhn-valid); no real card data.

A profile file (``hardware/cards/profiles/<name>.toml``)::

    name = "demo"
    description = "…"
    pan = "9900010000000019"
    expiry = "3012"            # YYMM
    service_code = "101"
    cardholder = "TEST/CARD"
    discretionary = "000000000"
    pin = "123456"            # the cardholder's PIN (the host stores only a salted hash)
    pin_tries = 3
    [account]                 # seeds the bundled host's database
    status = "active"         # active | blocked | restricted
    balance = 1234567         # minor units
    currency = "156"
    permissions = ["balance", "purchase", "reversal"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from protocol.errors import ConfigError

PROFILE_DIR = "profiles"


def luhn_ok(pan: str) -> bool:
    """ISO/IEC 7812-1 Luhn check.

    >>> luhn_ok("9900010000000019"), luhn_ok("9900010000000018")
    (True, False)
    """
    if not pan.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


DEFAULT_PERMISSIONS = ("balance", "purchase", "reversal")


@dataclass(frozen=True, slots=True)
class AccountSeed:
    status: str = "active"
    balance: int = 0
    currency: str = "156"
    permissions: tuple[str, ...] = DEFAULT_PERMISSIONS


@dataclass(frozen=True, slots=True)
class CardProfile:
    name: str
    pan: str
    expiry: str
    service_code: str
    cardholder: str = "TEST/CARD"
    discretionary: str = ""
    pin: str = "123456"
    pin_tries: int = 3
    description: str = ""
    account: AccountSeed = field(default_factory=AccountSeed)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def track1(self) -> str:
        """Track 1 data between the sentinels (ISO/IEC 7813 format B)."""
        return f"B{self.pan}^{self.cardholder}^{self.expiry}{self.service_code}{self.discretionary}"

    @property
    def track2(self) -> str:
        """Track 2 data between the sentinels (ISO/IEC 7813)."""
        return f"{self.pan}={self.expiry}{self.service_code}{self.discretionary}"

    @property
    def chip(self) -> bool:
        """Service code 2xx/6xx: the card has a chip and must be inserted."""
        return self.service_code[:1] in ("2", "6")


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing key {key!r}")
    return d[key]


def parse_profile(data: dict[str, Any], where: str) -> CardProfile:
    """Validate a profile dict (from TOML) into a :class:`CardProfile`."""
    pan = str(_req(data, "pan", where))
    if not (12 <= len(pan) <= 19 and luhn_ok(pan)):
        raise ConfigError(f"{where}: pan is not a 12–19 digit Luhn-valid number")
    expiry = str(_req(data, "expiry", where))
    if len(expiry) != 4 or not expiry.isdigit() or not 1 <= int(expiry[2:]) <= 12:
        raise ConfigError(f"{where}: expiry must be YYMM, got {expiry!r}")
    sc = str(_req(data, "service_code", where))
    if len(sc) != 3 or not sc.isdigit():
        raise ConfigError(f"{where}: service_code must be 3 digits, got {sc!r}")
    pin = str(data.get("pin", "123456"))
    if not (4 <= len(pin) <= 12 and pin.isdigit()):
        raise ConfigError(f"{where}: pin must be 4–12 digits")
    acc = data.get("account", {})
    if not isinstance(acc, dict):
        raise ConfigError(f"{where}: [account] must be a table")
    status = str(acc.get("status", "active"))
    if status not in ("active", "blocked", "restricted"):
        raise ConfigError(f"{where}: account.status must be active, blocked or restricted")
    account = AccountSeed(
        status=status,
        balance=int(acc.get("balance", 0)),
        currency=str(acc.get("currency", "156")),
        permissions=tuple(str(p) for p in acc.get("permissions", DEFAULT_PERMISSIONS)),
    )
    disc = str(data.get("discretionary", ""))
    if not disc.isdigit() and disc:
        raise ConfigError(f"{where}: discretionary data must be digits")
    return CardProfile(
        name=str(_req(data, "name", where)),
        pan=pan,
        expiry=expiry,
        service_code=sc,
        cardholder=str(data.get("cardholder", "TEST/CARD")),
        discretionary=disc,
        pin=pin,
        pin_tries=int(data.get("pin_tries", 3)),
        description=str(data.get("description", "")),
        account=account,
        raw=data,
    )


def _profile_files() -> dict[str, Path]:
    root = resources.files("hardware.cards") / PROFILE_DIR
    out: dict[str, Path] = {}
    for entry in root.iterdir():
        if entry.name.endswith(".toml"):
            out[entry.name[:-5]] = Path(str(entry))
    return out


def list_profiles() -> list[str]:
    """Names of the bundled card profiles."""
    return sorted(_profile_files())


def load_profile(name_or_path: str) -> CardProfile:
    """Load a bundled profile by name, or a profile file by path."""
    files = _profile_files()
    path = files.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"unknown card profile {name_or_path!r}; bundled: {', '.join(sorted(files))}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"card profile {path}: {e}") from None
    return parse_profile(data, str(path))
