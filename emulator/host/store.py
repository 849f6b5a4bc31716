"""The host's state in SQLite (stdlib): accounts, cards, terminals, the transaction log.

PINs are stored as salted scrypt hashes, never in clear. Cards and accounts are cached in
memory (the host is their only writer) and written through on every change; money-moving
changes (purchase, reversal) are committed before the response is sent, balance-inquiry log
rows are committed in batches.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from emulator.sqlite_files import check_sqlite_file
from hardware.cards.profiles import CardProfile
from protocol.errors import EnvironmentProblem

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
  id INTEGER PRIMARY KEY,
  balance INTEGER NOT NULL,
  currency TEXT NOT NULL DEFAULT '156'
);
CREATE TABLE IF NOT EXISTS cards (
  pan TEXT PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts(id),
  status TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'restricted')),
  expiry TEXT NOT NULL,
  pin_salt BLOB NOT NULL,
  pin_hash BLOB NOT NULL,
  pin_tries_left INTEGER NOT NULL,
  pin_tries_max INTEGER NOT NULL,
  pin_required INTEGER NOT NULL DEFAULT 1,
  permissions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS terminals (
  tid TEXT PRIMARY KEY,
  mid TEXT NOT NULL,
  tmk BLOB NOT NULL,
  pik BLOB,
  mak BLOB,
  signed_on INTEGER NOT NULL DEFAULT 0,
  require_sign_on INTEGER NOT NULL DEFAULT 1,
  permissions TEXT NOT NULL,
  min_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS txlog (
  id INTEGER PRIMARY KEY,
  tid TEXT NOT NULL,
  stan TEXT NOT NULL,
  date TEXT NOT NULL,
  mti TEXT NOT NULL,
  kind TEXT NOT NULL,
  pan_masked TEXT NOT NULL,
  account_id INTEGER,
  amount INTEGER NOT NULL DEFAULT 0,
  rc TEXT NOT NULL,
  auth_code TEXT,
  rrn TEXT,
  reversed INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS txlog_orig ON txlog (tid, stan, date, mti);
"""

SCRYPT_N = 2**12  # interactive-grade cost: a simulator, but never a clear or fast-hashed PIN


def hash_pin(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class CardRow:
    pan: str
    account_id: int
    status: str
    expiry: str
    pin_salt: bytes
    pin_hash: bytes
    pin_tries_left: int
    pin_tries_max: int
    pin_required: bool
    permissions: frozenset[str]

    def pin_matches(self, pin: str) -> bool:
        return hmac.compare_digest(hash_pin(pin, self.pin_salt), self.pin_hash)

    def __repr__(self) -> str:
        from protocol.masking import mask_pan

        return f"CardRow(pan={mask_pan(self.pan)}, status={self.status})"


@dataclass(frozen=True, slots=True)
class TerminalRow:
    tid: str
    mid: str
    tmk: bytes
    pik: bytes | None
    mak: bytes | None
    signed_on: bool
    require_sign_on: bool
    permissions: frozenset[str]
    min_version: int

    def __repr__(self) -> str:
        return f"TerminalRow(tid={self.tid}, signed_on={self.signed_on})"


@dataclass(frozen=True, slots=True)
class TxRow:
    id: int
    tid: str
    stan: str
    date: str
    mti: str
    kind: str
    pan_masked: str
    account_id: int | None
    amount: int
    rc: str
    auth_code: str | None
    rrn: str | None
    reversed: bool


class HostStore:
    """SQLite-backed host state with an in-memory read cache."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._cards: dict[str, CardRow] = {}
        self._balances: dict[int, tuple[int, str]] = {}
        self._terminals: dict[str, TerminalRow] = {}
        self._in_batch = False
        self._log_rows: list[tuple[object, ...]] = []
        check_sqlite_file(self.path, "host database")   # corrupt or truncated: refused before SQLite writes
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise EnvironmentProblem(f"cannot open the host database {self.path}: {e}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._load()
        except (sqlite3.Error, ValueError, TypeError, AttributeError) as e:
            self.db.close()
            raise EnvironmentProblem(f"cannot open the host database {self.path}: {e} (corrupt? restore it from "
                                     "a backup or move it away)") from None

    # --- loading and seeding ------------------------------------------------------------
    def _load(self) -> None:
        for row in self.db.execute("SELECT id, balance, currency FROM accounts"):
            self._balances[row[0]] = (row[1], row[2])
        for r in self.db.execute(
            "SELECT pan, account_id, status, expiry, pin_salt, pin_hash, pin_tries_left, pin_tries_max,"
            " pin_required, permissions FROM cards"
        ):
            self._cards[r[0]] = CardRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]),
                                        frozenset(filter(None, r[9].split(","))))
        for r in self.db.execute(
            "SELECT tid, mid, tmk, pik, mak, signed_on, require_sign_on, permissions, min_version FROM terminals"
        ):
            self._terminals[r[0]] = TerminalRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), bool(r[6]),
                                                frozenset(filter(None, r[7].split(","))), r[8])

    @property
    def empty(self) -> bool:
        return not self._cards and not self._terminals

    def add_card(self, profile: CardProfile, *, pin_required: bool = True, salt: bytes | None = None,
                 pin_hash: bytes | None = None) -> None:
        """Seed a card and its account from a card profile (idempotent by PAN). ``salt`` and
        ``pin_hash`` may come precomputed (``hash_pin(profile.pin, salt)``)."""
        if profile.pan in self._cards:
            return
        acc = profile.account
        cur = self.db.execute("INSERT INTO accounts (balance, currency) VALUES (?, ?)",
                              (acc.balance, acc.currency))
        account_id = int(cur.lastrowid or 0)
        salt = salt or os.urandom(16)
        if pin_hash is None or salt is None:
            pin_hash = hash_pin(profile.pin, salt)
        row = CardRow(profile.pan, account_id, acc.status, profile.expiry, salt, pin_hash,
                      profile.pin_tries, profile.pin_tries, pin_required, frozenset(acc.permissions))
        self.db.execute(
            "INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.pan, account_id, row.status, row.expiry, row.pin_salt, row.pin_hash, row.pin_tries_left,
             row.pin_tries_max, int(pin_required), ",".join(sorted(row.permissions))),
        )
        self._cards[row.pan] = row
        self._balances[account_id] = (acc.balance, acc.currency)

    def add_terminal(self, tid: str, mid: str, tmk: bytes, *, require_sign_on: bool = True,
                     permissions: Iterable[str] = ("balance", "purchase", "reversal"),
                     min_version: int = 0) -> None:
        if tid in self._terminals:
            return
        row = TerminalRow(tid, mid, tmk, None, None, False, require_sign_on, frozenset(permissions), min_version)
        self.db.execute("INSERT INTO terminals VALUES (?, ?, ?, NULL, NULL, 0, ?, ?, ?)",
                        (tid, mid, tmk, int(require_sign_on), ",".join(sorted(row.permissions)), min_version))
        self._terminals[tid] = row

    # --- reads ------------------------------------------------------------------------------
    def card(self, pan: str) -> CardRow | None:
        return self._cards.get(pan)

    def pans(self) -> list[str]:
        return list(self._cards)

    def terminal(self, tid: str) -> TerminalRow | None:
        return self._terminals.get(tid)

    def balance(self, account_id: int) -> tuple[int, str]:
        return self._balances[account_id]

    def find_tx(self, tid: str, stan: str, date: str, mti: str) -> TxRow | None:
        self._flush_log()
        r = self.db.execute(
            "SELECT id, tid, stan, date, mti, kind, pan_masked, account_id, amount, rc, auth_code, rrn, reversed"
            " FROM txlog WHERE tid=? AND stan=? AND date=? AND mti=?", (tid, stan, date, mti)
        ).fetchone()
        return None if r is None else _tx(r)

    def transactions(self) -> list[TxRow]:
        self._flush_log()
        return [_tx(r) for r in self.db.execute(
            "SELECT id, tid, stan, date, mti, kind, pan_masked, account_id, amount, rc, auth_code, rrn, reversed"
            " FROM txlog ORDER BY id")]

    # --- writes -----------------------------------------------------------------------------
    def set_card(self, row: CardRow) -> None:
        self.db.execute("UPDATE cards SET status=?, pin_tries_left=?, permissions=? WHERE pan=?",
                        (row.status, row.pin_tries_left, ",".join(sorted(row.permissions)), row.pan))
        self._cards[row.pan] = row

    def update_card(self, pan: str, **changes: object) -> CardRow:
        row = self._cards[pan]
        new = replace(row, **changes)  # type: ignore[arg-type]
        self.set_card(new)
        return new

    def set_terminal(self, row: TerminalRow) -> None:
        self.db.execute(
            "UPDATE terminals SET pik=?, mak=?, signed_on=?, require_sign_on=?, permissions=?, min_version=?"
            " WHERE tid=?",
            (row.pik, row.mak, int(row.signed_on), int(row.require_sign_on),
             ",".join(sorted(row.permissions)), row.min_version, row.tid))
        self._terminals[row.tid] = row

    def move_money(self, account_id: int, delta: int) -> int:
        bal, cur = self._balances[account_id]
        bal += delta
        self.db.execute("UPDATE accounts SET balance=? WHERE id=?", (bal, account_id))
        self._balances[account_id] = (bal, cur)
        return bal

    def log_tx(self, *, tid: str, stan: str, date: str, mti: str, kind: str, pan_masked: str,
               account_id: int | None, amount: int, rc: str, auth_code: str | None = None,
               rrn: str | None = None) -> None:
        self._log_rows.append((tid, stan, date, mti, kind, pan_masked, account_id, amount, rc, auth_code, rrn))
        if not self._in_batch:
            self._flush_log()

    def _flush_log(self) -> None:
        if self._log_rows:
            rows, self._log_rows = self._log_rows, []
            self.db.executemany(
                "INSERT OR IGNORE INTO txlog (tid, stan, date, mti, kind, pan_masked, account_id, amount, rc,"
                " auth_code, rrn) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def mark_reversed(self, tx_id: int) -> None:
        self._flush_log()
        self.db.execute("UPDATE txlog SET reversed=1 WHERE id=?", (tx_id,))

    def begin(self) -> None:
        if not self._in_batch:
            self.db.execute("BEGIN")
            self._in_batch = True

    def commit(self) -> None:
        self._flush_log()
        if self._in_batch:
            self.db.execute("COMMIT")
            self._in_batch = False

    def close(self) -> None:
        self.commit()
        self._flush_log()
        self.db.close()


def _tx(r: tuple[object, ...]) -> TxRow:
    return TxRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),  # type: ignore[call-overload]
                 str(r[6]), None if r[7] is None else int(r[7]), int(r[8]), str(r[9]),  # type: ignore[call-overload]
                 None if r[10] is None else str(r[10]), None if r[11] is None else str(r[11]), bool(r[12]))
