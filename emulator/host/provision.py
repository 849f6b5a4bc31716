"""Fleet identities: many terminals and cards that a host and a load generator agree on without talking.

A fleet of ``n`` terminals is named ``<prefix>00001`` … (8 characters, ISO 8583 field 41). Each one has
its own terminal master key, derived from a base key and its id (HMAC-SHA256, the first 16 bytes: a
double-length key), the way an acquirer derives per-terminal keys from one base key, so ``posemu fleet``,
the Locust user and ``posemu host --fleet N`` reach the same keys from the same base (the demo TMK unless
configured). Each terminal has its own card too, a copy of a card profile under its own PAN (the invented
BIN ``990009``, Luhn-valid), with the profile's PIN and balance. These are test keys and test cards only.

:func:`seed_demo` seeds the demo terminal, the load-test terminals and the bundled card profiles.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import replace

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK, LOAD_TIDS
from emulator.host.store import HostStore, hash_pin
from hardware.cards.profiles import CardProfile, list_profiles, load_profile, luhn_ok
from protocol.errors import UsageError

FLEET_PREFIX = "FLT"
FLEET_BIN = "990009"
MAX_FLEET = 99_999


def fleet_tid(index: int, prefix: str = FLEET_PREFIX) -> str:
    """The id of fleet terminal ``index`` (1-based): the prefix, then the index, 8 characters in all.

    >>> fleet_tid(1), fleet_tid(42, "LC")
    ('FLT00001', 'LC000042')
    """
    width = 8 - len(prefix)
    if not prefix.isascii() or not prefix.isalnum() or width < 3:
        raise UsageError(f"fleet terminal prefix {prefix!r}: 1 to 5 letters or digits")
    if not 1 <= index < 10**width:
        raise UsageError(f"fleet terminal number {index} does not fit {width} digits after {prefix!r}")
    return f"{prefix}{index:0{width}d}"


def fleet_tids(n: int, prefix: str = FLEET_PREFIX, first: int = 1) -> list[str]:
    if not 1 <= n <= MAX_FLEET:
        raise UsageError(f"a fleet has 1 to {MAX_FLEET} terminals, not {n}")
    return [fleet_tid(i, prefix) for i in range(first, first + n)]


def fleet_tmk(tid: str, base: bytes = DEMO_TMK) -> bytes:
    """The master key of fleet terminal ``tid``: HMAC-SHA256(base, "posemu fleet tmk|" + tid), 16 bytes.

    >>> fleet_tmk("FLT00001").hex() != fleet_tmk("FLT00002").hex(), len(fleet_tmk("FLT00001"))
    (True, 16)
    """
    return hmac.new(base, b"posemu fleet tmk|" + tid.encode(), hashlib.sha256).digest()[:16]


def fleet_pan(index: int) -> str:
    """A Luhn-valid 16-digit test PAN under the invented BIN 990009 for card ``index``.

    >>> fleet_pan(1), luhn_ok(fleet_pan(12345))
    ('9900090000000011', True)
    """
    body = f"{FLEET_BIN}{index:09d}"
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable: one check digit always fits")  # pragma: no cover


def fleet_card(base: CardProfile, index: int) -> CardProfile:
    """``base`` under the PAN of fleet card ``index`` (same PIN, expiry, chip, account seed)."""
    return replace(base, name=f"{base.name}#{index}", pan=fleet_pan(index))


def provision(store: HostStore, tids: Sequence[str], cards: Sequence[CardProfile], *, mid: str = DEMO_MID,
              base_tmk: bytes = DEMO_TMK) -> None:
    """Add the fleet's terminals (each with its derived master key; sign-on required, MAC required) and
    cards to a host's store; what it already knows is left as it is. The cards share one salted PIN hash
    per PIN (scrypt is slow on purpose: thousands of cards would take minutes otherwise)."""
    hashes: dict[str, tuple[bytes, bytes]] = {}
    store.begin()
    try:
        for tid in tids:
            store.add_terminal(tid, mid, fleet_tmk(tid, base_tmk))
        for card in cards:
            if card.pin not in hashes:
                salt = os.urandom(16)
                hashes[card.pin] = (salt, hash_pin(card.pin, salt))
            salt, digest = hashes[card.pin]
            store.add_card(card, salt=salt, pin_hash=digest)
    finally:
        store.commit()


_DEMO_HASHES: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def demo_pin_hash(pan: str, pin: str) -> tuple[bytes, bytes]:
    """(salt, scrypt hash) for a demo card, computed once per process: demo data is reseeded often
    (every regression scenario) and scrypt is slow on purpose."""
    key = (pan, pin)
    if key not in _DEMO_HASHES:
        salt = os.urandom(16)
        _DEMO_HASHES[key] = (salt, hash_pin(pin, salt))
    return _DEMO_HASHES[key]


def seed_demo(store: HostStore, *, profiles: list[str] | None = None, load_terminals: bool = True) -> None:
    """Seed the demo terminal, the load-test terminals (unless ``load_terminals`` is false) and every
    bundled card profile (or those named)."""
    store.begin()
    store.add_terminal(DEMO_TID, DEMO_MID, DEMO_TMK)
    for tid in LOAD_TIDS if load_terminals else ():
        store.add_terminal(tid, DEMO_MID, DEMO_TMK, require_sign_on=False)
    for name in profiles if profiles is not None else list_profiles():
        prof = load_profile(name)
        salt, digest = demo_pin_hash(prof.pan, prof.pin)
        store.add_card(prof, pin_required=not name.startswith("load"), salt=salt, pin_hash=digest)
    store.commit()
