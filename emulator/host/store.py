"""The host's state in SQLite (stdlib): accounts, cards, terminals, the transaction log.

PINs are stored as salted scrypt hashes, never in clear. Terminal keys (TMK, PIK, MAK) are stored
sealed under the host's local key (:mod:`emulator.keystore`, a 0600 file beside the database);
the database file itself is 0600. Each logged transaction carries a keyed fingerprint of its
identity (processing code, amount, PAN) so a reused STAN cannot pass for the original. Cards and accounts are cached in
memory (the host is their only writer) and written through on every change; money-moving
changes (purchase, reversal) are committed before the response is sent, balance-inquiry log
rows are committed in batches.

Most requests are new: a Bloom filter of the log's keys (terminal, STAN, date, MTI) answers "not
logged" for them without a query (:meth:`HostStore.find_tx`); it is read once at start, kept up to
date with every row logged here, and caught up from the log when another connection (another worker)
has committed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from emulator.keystore import LocalKey, private_file
from emulator.sqlite_files import check_sqlite_file
from hardware.cards.profiles import CardProfile
from protocol.errors import ConfigError, CryptoError, EnvironmentProblem

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
  min_version INTEGER NOT NULL DEFAULT 0,
  mac_required INTEGER NOT NULL DEFAULT 1,
  sign_on_proof INTEGER NOT NULL DEFAULT 1,
  last_sign_on TEXT
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
  reversed INTEGER NOT NULL DEFAULT 0,
  ident TEXT,
  batch TEXT,
  effect INTEGER NOT NULL DEFAULT 0,
  target INTEGER,
  voided INTEGER NOT NULL DEFAULT 0,
  completed INTEGER NOT NULL DEFAULT 0,
  refunded INTEGER NOT NULL DEFAULT 0,
  settled INTEGER NOT NULL DEFAULT 0,
  uploaded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS settlements (
  tid TEXT NOT NULL,
  batch TEXT NOT NULL,
  totals TEXT NOT NULL,
  agreed INTEGER NOT NULL,
  uploads INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (tid, batch)
);
CREATE UNIQUE INDEX IF NOT EXISTS txlog_orig ON txlog (tid, stan, date, mti);
"""

# columns added after the first release: (table, column, declaration) — added to older databases
_MIGRATIONS = (
    ("terminals", "mac_required", "INTEGER NOT NULL DEFAULT 1"),
    ("terminals", "sign_on_proof", "INTEGER NOT NULL DEFAULT 1"),
    ("terminals", "last_sign_on", "TEXT"),
    ("txlog", "ident", "TEXT"),
    ("txlog", "batch", "TEXT"),
    ("txlog", "effect", "INTEGER NOT NULL DEFAULT 0"),
    ("txlog", "target", "INTEGER"),
    ("txlog", "voided", "INTEGER NOT NULL DEFAULT 0"),
    ("txlog", "completed", "INTEGER NOT NULL DEFAULT 0"),
    ("txlog", "refunded", "INTEGER NOT NULL DEFAULT 0"),
    ("txlog", "settled", "INTEGER NOT NULL DEFAULT 0"),
    ("txlog", "uploaded", "INTEGER NOT NULL DEFAULT 0"),
)
_KEY_LENGTHS = (8, 16, 24)     # a key column of this length was written in clear by an older release

SCRYPT_N = 2**12  # interactive-grade cost: a simulator, but never a clear or fast-hashed PIN


def hash_pin(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=8, p=1, dklen=32)


@dataclass(frozen=True, slots=True)
class CardRow:
    """A card as the host stores it: account, status, expiry, salted PIN hash and tries, permissions."""

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
    """A terminal as the host knows it: ids, master key, working keys, sign-on state, what it may do."""

    tid: str
    mid: str
    tmk: bytes
    pik: bytes | None
    mak: bytes | None
    signed_on: bool
    require_sign_on: bool
    permissions: frozenset[str]
    min_version: int
    mac_required: bool = True
    """Requests from this terminal must carry a valid MAC once it holds a MAC key (off only for a
    host profile that speaks to MAC-less terminals, set explicitly)."""
    sign_on_proof: bool = True
    """A sign-on (0800) must carry a MAC under the terminal master key; without it nothing changes."""
    last_sign_on: str | None = None
    """Date and STAN of the last accepted sign-on: the same 0800 replayed is refused."""

    def __repr__(self) -> str:
        return f"TerminalRow(tid={self.tid}, signed_on={self.signed_on})"


@dataclass(frozen=True, slots=True)
class TxRow:
    """One row of the host's transaction log (PAN masked)."""

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
    ident: str | None = None
    batch: str | None = None
    effect: int = 0                 # the money it moved on the account (negative: debited or held)
    target: int | None = None       # the txlog id of the original it voids, completes or refunds
    voided: bool = False
    completed: bool = False         # a pre-authorization that a completion captured
    refunded: int = 0               # refunded so far (a purchase or completion)
    settled: bool = False
    uploaded: bool = False


class HostStore:
    """SQLite-backed host state with an in-memory read cache.

    ``shared=True``: several host processes (``posemu host --workers N``) use this database at once.
    Every decision then runs inside :meth:`hold` … :meth:`release` — ``BEGIN IMMEDIATE``, SQLite's
    write lock, so money moves are serialised across the processes and a duplicate or a reversal is
    seen by whichever worker gets it — and the caches are dropped whenever another connection has
    committed since (``PRAGMA data_version``) and read through, row by row, from the database.
    """

    BUSY_TIMEOUT_MS = 30_000
    """How long a shared store waits for another worker's write lock before giving up."""

    def __init__(self, path: str | Path = ":memory:", *, local_key: LocalKey | None = None,
                 shared: bool = False) -> None:
        self.path = str(path)
        self.shared = shared
        self._held = False
        self._data_version = -1
        self._opened: dict[bytes, bytes] = {}      # sealed key blob -> key (a shared store reloads rows often)
        self._cards: dict[str, CardRow] = {}
        self._balances: dict[int, tuple[int, str]] = {}
        self._terminals: dict[str, TerminalRow] = {}
        self._in_batch = False
        self._fp_key: bytes | None = None
        self._fp_hmac: hmac.HMAC | None = None
        self._log_rows: list[tuple[object, ...]] = []
        self._log_keys: set[tuple[object, ...]] = set()   # (tid, stan, date, mti) of the rows not yet written
        self._tx_keys: _KeyFilter | None = None   # every key of the log (built on first use, or prepare)
        self._tx_keys_version = -1                # PRAGMA data_version when the filter was last caught up
        self._tx_keys_last = 0                    # the highest log id whose key the filter holds
        check_sqlite_file(self.path, "host database")   # corrupt or truncated: refused before SQLite writes
        if self.path == ":memory:":
            self.kek = local_key or LocalKey.ephemeral()
        else:
            p = Path(self.path)
            self.kek = local_key or LocalKey.at(p.with_name(p.name + ".key"))
            private_file(p)
        self._lock_fd: int | None = None
        if shared and self.path != ":memory:":
            self._lock_fd = _open_lock(Path(self.path + ".lock"))
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise EnvironmentProblem(f"cannot open the host database {self.path}: {e}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            if shared:
                self.db.execute(f"PRAGMA busy_timeout={self.BUSY_TIMEOUT_MS}")
            self.db.executescript(SCHEMA)
            self._migrate()
            self._load()
        except (sqlite3.Error, ValueError, TypeError, AttributeError, CryptoError) as e:
            self.db.close()
            raise EnvironmentProblem(f"cannot open the host database {self.path}: {e} (corrupt? restore it from "
                                     "a backup or move it away)") from None

    def _migrate(self) -> None:
        for table, column, decl in _MIGRATIONS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    # --- keys at rest --------------------------------------------------------------------
    def _seal_key(self, key: bytes | None, tid: str, name: str) -> bytes | None:
        return None if key is None else self.kek.seal(key, f"host {name} {tid}")

    def _open_key(self, blob: bytes | None, tid: str, name: str) -> bytes | None:
        if blob is None:
            return None
        if len(blob) in _KEY_LENGTHS:          # written in clear by an older release: sealed on load
            return bytes(blob)
        blob = bytes(blob)
        key = self._opened.get(blob)
        if key is None:
            key = self.kek.open(blob, f"host {name} {tid}")
            if self.shared:
                self._opened[blob] = key
        return key

    def fingerprint(self, *parts: str) -> str:
        """A keyed fingerprint of a transaction's identity (see module docstring): HMAC-SHA256 under the
        local key's subkey for ``host txn identity`` (derived once), hex, 32 digits. The keyed HMAC
        object is made once and copied per message (:meth:`hmac.HMAC.copy`: its pads are not hashed
        again)."""
        base = self._fp_hmac
        if base is None:
            key = self._fp_key = self.kek.subkey("host txn identity")
            base = self._fp_hmac = hmac.new(key, digestmod=hashlib.sha256)
        h = base.copy()
        h.update("|".join(parts).encode())
        return h.hexdigest()[:32]

    # --- loading and seeding ------------------------------------------------------------
    _CARD_SQL = ("SELECT pan, account_id, status, expiry, pin_salt, pin_hash, pin_tries_left, pin_tries_max,"
                 " pin_required, permissions FROM cards")
    _TERMINAL_SQL = ("SELECT tid, mid, tmk, pik, mak, signed_on, require_sign_on, permissions, min_version,"
                     " mac_required, sign_on_proof, last_sign_on FROM terminals")

    @staticmethod
    def _card_row(r: tuple[object, ...]) -> CardRow:
        return CardRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]),  # type: ignore[arg-type]
                       frozenset(filter(None, str(r[9]).split(","))))

    def _terminal_row(self, r: tuple[object, ...]) -> TerminalRow:
        tid = str(r[0])
        return TerminalRow(tid, r[1], self._open_key(r[2], tid, "tmk") or b"",  # type: ignore[arg-type]
                           self._open_key(r[3], tid, "pik"), self._open_key(r[4], tid, "mak"),  # type: ignore[arg-type]
                           bool(r[5]), bool(r[6]), frozenset(filter(None, str(r[7]).split(","))),
                           r[8], bool(r[9]), bool(r[10]), r[11])  # type: ignore[arg-type]

    def _load(self) -> None:
        for row in self.db.execute("SELECT id, balance, currency FROM accounts"):
            self._balances[row[0]] = (row[1], row[2])
        for r in self.db.execute(self._CARD_SQL):
            self._cards[r[0]] = self._card_row(r)
        resealed = []
        for r in self.db.execute(self._TERMINAL_SQL):
            row = self._terminal_row(r)
            self._terminals[row.tid] = row
            if any(k is not None and len(k) in _KEY_LENGTHS for k in (r[2], r[3], r[4])):
                resealed.append(row)
        for row in resealed:
            self._write_terminal(row)
        self._data_version = self._version()

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def _refresh(self) -> None:
        """A shared store: drop the caches if another connection committed since we last looked."""
        v = self._version()
        if v != self._data_version:
            self._data_version = v
            self._cards.clear()
            self._balances.clear()
            self._terminals.clear()
            self._complete = False

    _complete = True
    """The caches hold every row (a shared store's are filled row by row after a refresh)."""

    def _fill(self) -> None:
        if not self._complete:
            self._load()
            self._complete = True

    @property
    def empty(self) -> bool:
        self._fill()
        return not self._cards and not self._terminals

    def add_card(self, profile: CardProfile, *, pin_required: bool = True, salt: bytes | None = None,
                 pin_hash: bytes | None = None) -> None:
        """Seed a card and its account from a card profile (idempotent by PAN). ``salt`` and
        ``pin_hash`` may come precomputed (``hash_pin(profile.pin, salt)``)."""
        if self.card(profile.pan) is not None:
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
                     min_version: int = 0, mac_required: bool = True, sign_on_proof: bool = True) -> None:
        if self.terminal(tid) is not None:
            return
        row = TerminalRow(tid, mid, tmk, None, None, False, require_sign_on, frozenset(permissions), min_version,
                          mac_required, sign_on_proof)
        self.db.execute("INSERT INTO terminals (tid, mid, tmk, permissions) VALUES (?, ?, ?, '')",
                        (tid, mid, self._seal_key(tmk, tid, "tmk")))
        self._write_terminal(row)

    # --- reads ------------------------------------------------------------------------------
    def card(self, pan: str) -> CardRow | None:
        row = self._cards.get(pan)
        if row is None and not self._complete:
            r = self.db.execute(self._CARD_SQL + " WHERE pan=?", (pan,)).fetchone()
            if r is not None:
                row = self._cards[pan] = self._card_row(r)
        return row

    def pans(self) -> list[str]:
        self._fill()
        return list(self._cards)

    def terminal(self, tid: str) -> TerminalRow | None:
        row = self._terminals.get(tid)
        if row is None and not self._complete:
            r = self.db.execute(self._TERMINAL_SQL + " WHERE tid=?", (tid,)).fetchone()
            if r is not None:
                row = self._terminals[tid] = self._terminal_row(r)
        return row

    def terminals(self) -> list[TerminalRow]:
        self._fill()
        return list(self._terminals.values())

    def balance(self, account_id: int) -> tuple[int, str]:
        got = self._balances.get(account_id)
        if got is None and not self._complete:
            r = self.db.execute("SELECT balance, currency FROM accounts WHERE id=?", (account_id,)).fetchone()
            if r is not None:
                got = self._balances[account_id] = (int(r[0]), str(r[1]))
        if got is None:
            raise KeyError(account_id)
        return got

    def find_tx(self, tid: str, stan: str, date: str, mti: str) -> TxRow | None:
        key = (tid, stan, date, mti)
        if key in self._log_keys:   # only a pending row of this key can change the answer
            self._flush_log()
        keys = self._tx_keys
        if keys is None and not self.shared:
            keys = self._build_tx_keys()
        # a shared store's filter is current only under the write lock (caught up in begin)
        if keys is not None and (self._held or not self.shared) and _texts(key) and key not in keys:
            return None                                 # surely not in the log: no query
        r = self.db.execute(_FIND_TX_SQL, key).fetchone()
        return None if r is None else _tx(r)

    def prepare(self) -> None:
        """Get ready to serve: read what :meth:`find_tx` needs in memory now (the log's keys, once),
        rather than on the first request."""
        if self._tx_keys is None:
            self._build_tx_keys()

    def _build_tx_keys(self) -> _KeyFilter:
        """The filter of the log's keys, read from the database."""
        self._flush_log()
        rows = self.db.execute("SELECT id, tid, stan, date, mti FROM txlog").fetchall()
        keys = _KeyFilter(4 * len(rows))
        for r in rows:
            keys.add(r[1:])
        self._tx_keys = keys
        self._tx_keys_last = max((int(r[0]) for r in rows), default=0)
        self._tx_keys_version = self._version()
        return keys

    def _catch_up_tx_keys(self) -> None:
        """Another connection (another worker) committed: add the keys of the rows it logged since we
        last looked (ids only grow: nothing is deleted from the log)."""
        keys = self._tx_keys
        if keys is None:
            return
        for r in self.db.execute("SELECT id, tid, stan, date, mti FROM txlog WHERE id > ?", (self._tx_keys_last,)):
            keys.add(r[1:])
            self._tx_keys_last = max(self._tx_keys_last, int(r[0]))

    def tx_count(self) -> int:
        """How many transactions the log holds (the highest id)."""
        self._flush_log()
        r = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM txlog").fetchone()
        return int(r[0])

    def highest_rrn_number(self) -> int:
        """The highest sequence number (the last 6 digits) of any RRN in the log, 0 if none."""
        self._flush_log()
        r = self.db.execute("SELECT MAX(CAST(substr(rrn, 7) AS INTEGER)) FROM txlog WHERE length(rrn) = 12"
                            ).fetchone()
        return int(r[0] or 0)

    def transactions(self) -> list[TxRow]:
        self._flush_log()
        return [_tx(r) for r in self.db.execute(f"SELECT {_TX_COLS} FROM txlog ORDER BY id")]

    # --- writes -----------------------------------------------------------------------------
    def set_card(self, row: CardRow) -> None:
        self.db.execute("UPDATE cards SET status=?, pin_tries_left=?, permissions=? WHERE pan=?",
                        (row.status, row.pin_tries_left, ",".join(sorted(row.permissions)), row.pan))
        self._cards[row.pan] = row

    def update_card(self, pan: str, **changes: object) -> CardRow:
        row = self.card(pan)
        if row is None:
            raise KeyError(pan)
        new = replace(row, **changes)  # type: ignore[arg-type]
        self.set_card(new)
        return new

    def set_terminal(self, row: TerminalRow) -> None:
        if self.terminal(row.tid) is None:
            raise ConfigError(f"unknown terminal {row.tid!r}")
        self._write_terminal(row)

    def _write_terminal(self, row: TerminalRow) -> None:
        tid = row.tid
        self.db.execute(
            "UPDATE terminals SET tmk=?, pik=?, mak=?, signed_on=?, require_sign_on=?, permissions=?, min_version=?,"
            " mac_required=?, sign_on_proof=?, last_sign_on=? WHERE tid=?",
            (self._seal_key(row.tmk, tid, "tmk"), self._seal_key(row.pik, tid, "pik"),
             self._seal_key(row.mak, tid, "mak"), int(row.signed_on), int(row.require_sign_on),
             ",".join(sorted(row.permissions)), row.min_version, int(row.mac_required), int(row.sign_on_proof),
             row.last_sign_on, tid))
        self._terminals[tid] = row

    def move_money(self, account_id: int, delta: int) -> int:
        bal, cur = self.balance(account_id)
        bal += delta
        self.db.execute("UPDATE accounts SET balance=? WHERE id=?", (bal, account_id))
        self._balances[account_id] = (bal, cur)
        return bal

    def log_tx(self, *, tid: str, stan: str, date: str, mti: str, kind: str, pan_masked: str,
               account_id: int | None, amount: int, rc: str, auth_code: str | None = None,
               rrn: str | None = None, ident: str | None = None, batch: str | None = None, effect: int = 0,
               target: int | None = None) -> None:
        if auth_code is None and rrn is None and batch is None and effect == 0 and target is None:
            # the columns left out are NULL or 0 by default: the same row, five fewer values to bind
            self._log_rows.append((tid, stan, date, mti, kind, pan_masked, account_id, amount, rc, ident))
        else:
            self._log_rows.append((tid, stan, date, mti, kind, pan_masked, account_id, amount, rc, auth_code, rrn,
                                   ident, batch, effect, target))
        key = (tid, stan, date, mti)
        self._log_keys.add(key)
        keys = self._tx_keys
        if keys is not None:
            if _texts(key):
                keys.add(key)
            else:                    # a key SQLite stores as other text: the filter is built again when needed
                self._tx_keys = None
        if not self._in_batch:
            self._flush_log()

    def _flush_log(self) -> None:
        if self._log_rows:
            rows, self._log_rows = self._log_rows, []
            self._log_keys.clear()
            for width, run in itertools.groupby(rows, len):     # in order: the ids follow the log
                self.db.executemany(_LOG_TX_SQL if width == 15 else _LOG_TX_SHORT_SQL, run)

    _TX_FLAGS = frozenset({"voided", "completed", "refunded", "settled", "uploaded", "reversed"})

    def update_tx(self, tx_id: int, **changes: int) -> None:
        """Change the state columns of a logged transaction (voided, completed, refunded, settled, uploaded)."""
        unknown = set(changes) - self._TX_FLAGS
        if unknown:
            raise ValueError(f"not a transaction state column: {sorted(unknown)}")
        self._flush_log()
        sets = ", ".join(f"{k}=?" for k in changes)
        self.db.execute(f"UPDATE txlog SET {sets} WHERE id=?", (*changes.values(), tx_id))

    def tx(self, tx_id: int) -> TxRow | None:
        self._flush_log()
        r = self.db.execute(f"SELECT {_TX_COLS} FROM txlog WHERE id=?", (tx_id,)).fetchone()
        return None if r is None else _tx(r)

    def find_txs(self, tid: str, *, stan: str | None = None, date: str | None = None, batch: str | None = None,
                 rrn: str | None = None, kinds: tuple[str, ...] = ()) -> list[TxRow]:
        """Logged transactions of a terminal matching what is given, newest first."""
        self._flush_log()
        where, args = ["tid=?"], [tid]
        for col, v in (("stan", stan), ("date", date), ("batch", batch), ("rrn", rrn)):
            if v is not None:
                where.append(f"{col}=?")
                args.append(v)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        rows = self.db.execute(f"SELECT {_TX_COLS} FROM txlog WHERE {' AND '.join(where)} ORDER BY id DESC", args)
        return [_tx(r) for r in rows]

    def find_by_rrn(self, rrn: str) -> TxRow | None:
        """The transaction the host gave this retrieval reference number (any terminal)."""
        self._flush_log()
        r = self.db.execute(f"SELECT {_TX_COLS} FROM txlog WHERE rrn=? AND mti NOT IN ('0400', '0320')"
                            " ORDER BY id DESC LIMIT 1", (rrn,)).fetchone()
        return None if r is None else _tx(r)

    def settlement(self, tid: str, batch: str) -> tuple[str, bool, int] | None:
        """(totals as sent, agreed, uploads) of a settled batch, or ``None``."""
        r = self.db.execute("SELECT totals, agreed, uploads FROM settlements WHERE tid=? AND batch=?",
                            (tid, batch)).fetchone()
        return None if r is None else (str(r[0]), bool(r[1]), int(r[2]))

    def record_settlement(self, tid: str, batch: str, totals: str, *, agreed: bool, uploads: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO settlements VALUES (?, ?, ?, ?, ?)",
                        (tid, batch, totals, int(agreed), uploads))

    def mark_reversed(self, tx_id: int) -> None:
        self._flush_log()
        self.db.execute("UPDATE txlog SET reversed=1 WHERE id=?", (tx_id,))

    def begin(self) -> None:
        if not self._in_batch:
            self.db.execute("BEGIN IMMEDIATE" if self.shared else "BEGIN")
            self._in_batch = True
            if self.shared:
                self._refresh()
            if self._tx_keys is not None:
                v = self._data_version if self.shared else self._version()
                if v != self._tx_keys_version:     # another connection wrote to the database
                    self._tx_keys_version = v
                    self._catch_up_tx_keys()

    def commit(self) -> None:
        if self._held:           # the holder commits (release) before any answer leaves
            return
        self._flush_log()
        if self._in_batch:
            self.db.execute("COMMIT")
            self._in_batch = False

    def hold(self) -> None:
        """Start deciding under the write lock (a shared store: ``BEGIN IMMEDIATE``, waiting up to
        :attr:`BUSY_TIMEOUT_MS` for another worker; caches refreshed). Commits inside are deferred to
        :meth:`release`, which the caller runs before any answer is sent.

        The workers of a shared database first take a lock on a file beside it (``<db>.lock``,
        ``flock``): a worker waiting for another is woken the moment that one releases, where SQLite's
        own busy handler would poll, sleeping 1 ms, then 2, 5, 10 … between tries."""
        fd = self._lock_fd
        if fd is not None:
            _flock(fd, exclusive=True)
        try:
            self.begin()
        except BaseException:
            if fd is not None:
                _flock(fd, exclusive=False)
            raise
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Commit what was decided since :meth:`hold` (durable before the answers are written)."""
        self._held = False
        try:
            self.commit()
        finally:
            if self._lock_fd is not None:
                _flock(self._lock_fd, exclusive=False)

    def close(self) -> None:
        self._held = False
        self.commit()
        self._flush_log()
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)         # closing it also drops the lock
            self._lock_fd = None


_TX_COLS = ("id, tid, stan, date, mti, kind, pan_masked, account_id, amount, rc, auth_code, rrn, reversed, ident,"
            " batch, effect, target, voided, completed, refunded, settled, uploaded")


_FIND_TX_SQL = f"SELECT {_TX_COLS} FROM txlog WHERE tid=? AND stan=? AND date=? AND mti=?"
_LOG_TX_SHORT_SQL = ("INSERT OR IGNORE INTO txlog (tid, stan, date, mti, kind, pan_masked, account_id, amount, rc,"
                     " ident) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_LOG_TX_SQL = ("INSERT OR IGNORE INTO txlog (tid, stan, date, mti, kind, pan_masked, account_id, amount, rc,"
               " auth_code, rrn, ident, batch, effect, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class _KeyFilter:
    """A Bloom filter over the keys (terminal, STAN, date, MTI) of the transaction log: a key it does not
    hold is surely not in the log, so :meth:`HostStore.find_tx` answers ``None`` without a query (most
    requests are new); a key it holds may be there (a false positive costs the query it otherwise saves).

    Two bits per key in 16 bits per key of capacity: about 1.4 % false positives when full. When a layer
    is full a new one, four times larger, takes the new keys (the old ones stay), so nothing is read
    again from the database while the host serves."""

    __slots__ = ("capacity", "count", "layers")

    def __init__(self, capacity: int) -> None:
        self.layers: list[tuple[bytearray, int]] = []
        self.capacity = 0
        self.count = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        nbits = 1 << max(20, (16 * max(capacity, 1) - 1).bit_length())
        self.layers.insert(0, (bytearray(nbits >> 3), nbits - 1))     # the newest first: it takes the adds
        self.capacity += nbits >> 4

    def add(self, key: tuple[object, ...]) -> None:
        if self.count >= self.capacity:
            self._grow(4 * self.count)
        self.count += 1
        h = hash(key)
        bits, m = self.layers[0]
        a, b = h & m, (h >> 32) & m
        bits[a >> 3] |= 1 << (a & 7)
        bits[b >> 3] |= 1 << (b & 7)

    def __contains__(self, key: object) -> bool:
        h = hash(key)
        for bits, m in self.layers:
            a, b = h & m, (h >> 32) & m
            if bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7)):
                return True
        return False


def _open_lock(path: Path) -> int:
    """The workers' lock file beside a shared database (0600, like the database)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise EnvironmentProblem(f"cannot open the host database's lock file {path}: {e.strerror or e}") from None


def _flock(fd: int, *, exclusive: bool) -> None:
    import fcntl  # POSIX, as --workers is (SO_REUSEPORT, fork)

    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN)


def _texts(key: tuple[object, object, object, object]) -> bool:
    """All of ``key`` is ``str`` (what the log's TEXT columns give back, so the filter's hashes agree)."""
    return type(key[0]) is type(key[1]) is type(key[2]) is type(key[3]) is str


def _tx(r: tuple[object, ...]) -> TxRow:
    return TxRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),  # type: ignore[call-overload]
                 str(r[6]), None if r[7] is None else int(r[7]), int(r[8]), str(r[9]),  # type: ignore[call-overload]
                 None if r[10] is None else str(r[10]), None if r[11] is None else str(r[11]), bool(r[12]),
                 None if r[13] is None else str(r[13]), None if r[14] is None else str(r[14]),
                 int(r[15]), None if r[16] is None else int(r[16]),  # type: ignore[call-overload]
                 bool(r[17]), bool(r[18]), int(r[19]), bool(r[20]), bool(r[21]))  # type: ignore[call-overload]
