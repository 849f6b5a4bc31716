"""Administering the bundled host's database: cards, balances, permissions, terminals.

What ``posemu host accounts list|show|set|reset`` does, over a :class:`HostStore` (no CLI here).
A card is named by its card profile (``demo``) or its PAN; a terminal by its terminal id (field 41).
Views never hold a full PAN, a PIN hash or a key: PANs are masked 6+4 and keys appear as their
check values only.

The running host keeps cards and balances in memory: change its database while it is stopped (a
running ``posemu host`` reads it again at its next start, and may overwrite a balance it moves).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK, LOAD_TIDS
from emulator.host.store import CardRow, HostStore, TerminalRow
from hardware.cards.profiles import list_profiles, load_profile
from protocol import keys as keymod
from protocol.errors import PosemuError, UsageError
from protocol.masking import mask_pan

CARD_STATUSES = ("active", "blocked", "restricted")
DEFAULT_TERMINAL_PERMISSIONS = ("balance", "purchase", "reversal")
_WORD = re.compile(r"[a-z][a-z_-]{0,31}", re.ASCII)


def parse_permissions(text: str) -> frozenset[str]:
    """``"balance,purchase"`` → the set; words of lower-case letters (an empty text: none)."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    for w in words:
        if not _WORD.fullmatch(w):
            raise UsageError(f"permission {w!r} is not a word such as balance, purchase, preauth, reversal")
    return frozenset(words)


def find_card(store: HostStore, ref: str) -> CardRow:
    """A card by PAN or by card profile name."""
    if ref.isdigit():
        card = store.card(ref)
        if card is None:
            raise UsageError(f"no card {mask_pan(ref)} in the host database")
        return card
    try:
        pan = load_profile(ref).pan
    except PosemuError:
        raise UsageError(f"{ref!r} is neither a card profile, a PAN nor a terminal id in the host database") from None
    card = store.card(pan)
    if card is None:
        raise UsageError(f"the card of profile {ref!r} is not in the host database")
    return card


def find(store: HostStore, ref: str) -> CardRow | TerminalRow:
    """A terminal (by id) or a card (by PAN or profile name)."""
    term = store.terminal(ref)
    return term if term is not None else find_card(store, ref)


def card_view(store: HostStore, card: CardRow) -> dict[str, Any]:
    balance, currency = store.balance(card.account_id)
    return {"type": "card", "pan": mask_pan(card.pan), "account": card.account_id, "status": card.status,
            "balance": balance, "currency": currency, "expiry": card.expiry,
            "permissions": sorted(card.permissions), "pin_required": card.pin_required,
            "pin_tries_left": card.pin_tries_left, "pin_tries_max": card.pin_tries_max}


def terminal_view(term: TerminalRow) -> dict[str, Any]:
    def kcv(key: bytes | None) -> str | None:
        return None if key is None else keymod.kcv(key, 3).hex().upper()

    return {"type": "terminal", "tid": term.tid, "mid": term.mid, "signed_on": term.signed_on,
            "require_sign_on": term.require_sign_on, "mac_required": term.mac_required,
            "sign_on_mac": term.sign_on_proof, "permissions": sorted(term.permissions),
            "min_version": term.min_version, "tmk_kcv": kcv(term.tmk), "mak_kcv": kcv(term.mak)}


def view(store: HostStore, row: CardRow | TerminalRow) -> dict[str, Any]:
    return terminal_view(row) if isinstance(row, TerminalRow) else card_view(store, row)


def everything(store: HostStore) -> list[dict[str, Any]]:
    """Every terminal, then every card (sorted by id and PAN)."""
    out = [terminal_view(t) for t in sorted(store.terminals(), key=lambda t: t.tid)]
    cards = [c for pan in sorted(store.pans()) if (c := store.card(pan)) is not None]
    return out + [card_view(store, c) for c in cards]


def set_card(store: HostStore, card: CardRow, *, balance: int | None = None, status: str | None = None,
             permissions: frozenset[str] | None = None, pin_tries: int | None = None) -> CardRow:
    if status is not None and status not in CARD_STATUSES:
        raise UsageError(f"a card's status is one of {', '.join(CARD_STATUSES)}")
    if pin_tries is not None and not 0 <= pin_tries <= card.pin_tries_max:
        raise UsageError(f"PIN tries left must be 0 to {card.pin_tries_max}")
    store.begin()
    if balance is not None:
        old, _ = store.balance(card.account_id)
        store.move_money(card.account_id, balance - old)
    new = replace(card, status=status or card.status,
                  permissions=card.permissions if permissions is None else permissions,
                  pin_tries_left=card.pin_tries_left if pin_tries is None else pin_tries)
    if new != card:
        store.set_card(new)
    store.commit()
    return new


def set_terminal(store: HostStore, term: TerminalRow, *, mac_required: bool | None = None,
                 require_sign_on: bool | None = None, sign_on_mac: bool | None = None,
                 permissions: frozenset[str] | None = None, min_version: int | None = None) -> TerminalRow:
    """Change what the host asks of one terminal. ``mac_required``: every request from it, once it
    holds a MAC key, must carry a valid MAC (missing or wrong → A0)."""
    if min_version is not None and not 0 <= min_version <= 255:
        raise UsageError("the minimum software version is 0 to 255")
    changes: dict[str, Any] = {}
    for name, value in (("mac_required", mac_required), ("require_sign_on", require_sign_on),
                        ("sign_on_proof", sign_on_mac), ("permissions", permissions), ("min_version", min_version)):
        if value is not None:
            changes[name] = value
    new = replace(term, **changes)
    if new != term:
        store.begin()
        store.set_terminal(new)
        store.commit()
    return new


def reset(store: HostStore, refs: list[str] | None = None) -> list[str]:
    """Back to the seeded state: bundled cards get their profile's balance, status, permissions and
    PIN tries; terminals drop their working keys and get the default rules. ``refs`` (terminal ids,
    PANs, profile names): only those; ``None``: everything. Returns what was reset (masked)."""
    bundled = {load_profile(n).pan: load_profile(n) for n in list_profiles()}
    targets: list[CardRow | TerminalRow]
    if refs:
        targets = [find(store, r) for r in refs]
    else:
        targets = [*store.terminals(), *(c for p in store.pans() if (c := store.card(p)) is not None)]
    done: list[str] = []
    store.begin()
    for row in targets:
        if isinstance(row, TerminalRow):
            load = row.tid in LOAD_TIDS
            tmk = DEMO_TMK if row.tid == DEMO_TID or load else row.tmk
            store.set_terminal(TerminalRow(row.tid, row.mid or DEMO_MID, tmk, None, None, False, not load,
                                           frozenset(DEFAULT_TERMINAL_PERMISSIONS), 0, True, True, None))
            done.append(row.tid)
            continue
        prof = bundled.get(row.pan)
        if prof is None:
            continue        # a card added by hand: no profile to go back to
        acc = prof.account
        old, _ = store.balance(row.account_id)
        store.move_money(row.account_id, acc.balance - old)
        store.set_card(replace(row, status=acc.status, permissions=frozenset(acc.permissions),
                               pin_tries_left=row.pin_tries_max))
        done.append(mask_pan(row.pan))
    store.commit()
    return done
