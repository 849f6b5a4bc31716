"""The terminal's transaction journal in SQLite (WAL).

Every transaction is written *before* its request is sent and completed when the outcome is
known. A purchase is written with its reversal already prepared ("armed"); if the outcome is
unknown — timeout, connection lost, a crash after sending — the reversal becomes *pending* and
the terminal sends it, and retries it, until the host acknowledges it, also after a restart.

The data a reversal needs (the original's data elements, with the PAN) is stored encrypted
(AES-GCM under the terminal's local key, :mod:`emulator.keystore`, a 0600 file in the state
folder) and erased as soon as the transaction can no longer need a reversal (approved, declined,
failed, or reversed and acknowledged); the readable columns hold only the masked PAN. Track data,
PIN blocks and keys are never stored. The journal file is 0600.

Each row also keeps what a receipt and a reprint need — the host's retrieval reference number (37)
and authorization code (38), the batch, terminal and merchant ids, the entry mode, the exact code of
the result screen the terminal showed — and how it relates to others: a void or completion names
its original (``original_id``), the original then names it (``voided_by``, ``completed_by``), and a
settled batch is marked ``settled`` (a settled transaction can no longer be voided). A transaction
whose reversal the host acknowledged shows status ``reversed``.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from emulator.errors import JournalError
from emulator.keystore import LocalKey, file_parent, private_file
from emulator.sqlite_files import check_sqlite_file
from hardware.clock import Clock
from protocol.errors import CryptoError, DecodeError, EnvironmentProblem
from protocol.iso import Message, Value

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
  id INTEGER PRIMARY KEY,
  created TEXT NOT NULL,
  updated TEXT NOT NULL,
  kind TEXT NOT NULL,
  stan TEXT NOT NULL,
  date TEXT NOT NULL,
  pan_masked TEXT NOT NULL DEFAULT '',
  amount INTEGER NOT NULL DEFAULT 0,
  currency TEXT NOT NULL DEFAULT '156',
  entry TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL,
  rc TEXT,
  screen TEXT,
  reversal TEXT NOT NULL DEFAULT 'none',
  reversal_reason TEXT,
  reversal_attempts INTEGER NOT NULL DEFAULT 0,
  reversal_blob BLOB,
  rrn TEXT,
  auth_code TEXT,
  batch TEXT NOT NULL DEFAULT '',
  tid TEXT NOT NULL DEFAULT '',
  mid TEXT NOT NULL DEFAULT '',
  original_id INTEGER,
  original_ref TEXT,
  voided_by INTEGER,
  completed_by INTEGER,
  settled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_SECRET_FIELDS = (35, 36, 52, 64)

# columns added after the first release: added to older journals when opened
_MIGRATIONS = (
    ("rrn", "TEXT"), ("auth_code", "TEXT"), ("batch", "TEXT NOT NULL DEFAULT ''"), ("tid", "TEXT NOT NULL DEFAULT ''"),
    ("mid", "TEXT NOT NULL DEFAULT ''"), ("original_id", "INTEGER"), ("original_ref", "TEXT"),
    ("voided_by", "INTEGER"), ("completed_by", "INTEGER"), ("settled", "INTEGER NOT NULL DEFAULT 0"),
)


class Status(enum.Enum):
    """A journal row's outcome."""

    PENDING = "pending"        # written, about to be sent
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED = "failed"          # never reached the host (or refused locally)
    UNKNOWN = "unknown"        # sent; no usable answer
    REVERSED = "reversed"      # its outcome was unknown; the host acknowledged the reversal


class Reversal(enum.Enum):
    """A journal row's reversal: none, armed before the send, owed to the host, or acknowledged."""

    NONE = "none"
    ARMED = "armed"            # prepared before sending; becomes pending if the outcome is unknown
    PENDING = "pending"        # must be sent until acknowledged
    DONE = "done"              # acknowledged by the host


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal row, PAN masked."""

    id: int
    created: str
    updated: str
    kind: str
    stan: str
    date: str
    pan_masked: str
    amount: int
    currency: str
    entry: str
    status: Status
    rc: str | None
    screen: str | None
    reversal: Reversal
    reversal_reason: str | None
    reversal_attempts: int
    rrn: str | None = None
    auth_code: str | None = None
    batch: str = ""
    tid: str = ""
    mid: str = ""
    original_id: int | None = None
    original_ref: dict[str, str] | None = None
    voided_by: int | None = None
    completed_by: int | None = None
    settled: bool = False

    @property
    def state(self) -> str:
        """The status as an operator reads it: ``voided`` once a void of it was approved,
        ``completed`` for a pre-authorization that was completed, else the status."""
        if self.status is Status.APPROVED and self.voided_by is not None:
            return "voided"
        if self.status is Status.APPROVED and self.completed_by is not None:
            return "completed"
        return self.status.value


class Journal:
    """The terminal's write-ahead transaction journal and its counters (STAN, batch).

    ``local_key`` seals reversal data; ``legacy_key_material`` (the terminal master key) opens
    records sealed by releases before the local key existed."""

    def __init__(self, path: str | Path, *, clock: Clock, local_key: LocalKey | None = None,
                 legacy_key_material: bytes | None = None) -> None:
        self.path = str(path)
        self.clock = clock
        self.local_key = local_key or LocalKey.ephemeral()
        check_sqlite_file(self.path, "journal")      # corrupt or truncated: refused before SQLite writes to it
        try:
            if self.path != ":memory:":
                try:
                    file_parent(Path(self.path))
                    private_file(Path(self.path))
                except EnvironmentProblem as e:
                    raise OSError(str(e)) from None
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            have = {r[1] for r in self.db.execute("PRAGMA table_info(journal)")}
            for column, decl in _MIGRATIONS:
                if column not in have:
                    self.db.execute(f"ALTER TABLE journal ADD COLUMN {column} {decl}")
            self.db.execute("UPDATE journal SET reversal_blob=NULL WHERE reversal NOT IN ('armed', 'pending')"
                            " AND reversal_blob IS NOT NULL")       # records of older releases
        except (sqlite3.Error, OSError) as e:
            raise EnvironmentProblem(f"cannot open the journal {self.path}: {e}") from None
        self._key = self.local_key.subkey("journal reversal v2")
        self._legacy = None if legacy_key_material is None else HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"posemu journal v1").derive(legacy_key_material)

    def close(self) -> None:
        self.db.close()

    # --- counters ---------------------------------------------------------------------------
    def next_counter(self, name: str, start: int = 1, wrap: int = 999999) -> int:
        try:
            with self.db:
                row = self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
                value = start if row is None else (row[0] % wrap) + 1
                self.db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (name, value))
        except sqlite3.Error as e:
            raise _journal_error(e, self.path) from None
        return int(value)

    def counter(self, name: str, default: int) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return default if row is None else int(row[0])

    def set_counter(self, name: str, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (name, value))

    # --- entries ----------------------------------------------------------------------------
    def _now(self) -> str:
        return self.clock.wall().isoformat(timespec="seconds")

    def begin(self, *, kind: str, stan: str, date: str, pan_masked: str = "", amount: int = 0,
              currency: str = "156", entry: str = "", reversible: Message | None = None, batch: str = "",
              tid: str = "", mid: str = "", original_id: int | None = None,
              original_ref: dict[str, str] | None = None) -> int:
        """Write a transaction before its request is sent; arm its reversal if it has one."""
        blob = self._seal(reversible) if reversible is not None else None
        now = self._now()
        try:
            cur = self.db.execute(
                "INSERT INTO journal (created, updated, kind, stan, date, pan_masked, amount, currency, entry,"
                " status, reversal, reversal_blob, batch, tid, mid, original_id, original_ref)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, now, kind, stan, date, pan_masked, amount, currency, entry, Status.PENDING.value,
                 (Reversal.ARMED if blob else Reversal.NONE).value, blob, batch, tid, mid, original_id,
                 json.dumps(original_ref) if original_ref else None))
        except sqlite3.Error as e:
            raise _journal_error(e, self.path) from None
        return int(cur.lastrowid or 0)

    def complete(self, entry_id: int, status: Status, *, rc: str | None = None, screen: str | None = None,
                 reversal: Reversal | None = None, reason: str | None = None, rrn: str | None = None,
                 auth_code: str | None = None) -> None:
        sets = ["status=?", "rc=?", "screen=?", "updated=?"]
        args: list[object] = [status.value, rc, screen, self._now()]
        if rrn is not None:
            sets.append("rrn=?")
            args.append(rrn)
        if auth_code is not None:
            sets.append("auth_code=?")
            args.append(auth_code)
        if reversal is not None:
            sets.append("reversal=?")
            args.append(reversal.value)
        if reason is not None:
            sets.append("reversal_reason=?")
            args.append(reason)
        # card data is kept only while a reversal may still be needed
        # (SET expressions see the row as it was: the new reversal state is passed in)
        sets.append("reversal_blob=CASE WHEN COALESCE(?, reversal) IN ('armed', 'pending') THEN reversal_blob"
                    " ELSE NULL END")
        args.append(reversal.value if reversal is not None else None)
        try:
            self.db.execute(f"UPDATE journal SET {', '.join(sets)} WHERE id=?", (*args, entry_id))
        except sqlite3.Error as e:
            raise _journal_error(e, self.path) from None

    def recover(self) -> int:
        """After a restart: an armed reversal whose transaction never completed becomes pending."""
        cur = self.db.execute(
            "UPDATE journal SET reversal=?, reversal_reason=COALESCE(reversal_reason, '98'),"
            " status=CASE WHEN status=? THEN ? ELSE status END WHERE reversal=? AND status IN (?, ?)",
            (Reversal.PENDING.value, Status.PENDING.value, Status.UNKNOWN.value, Reversal.ARMED.value,
             Status.PENDING.value, Status.UNKNOWN.value))
        return cur.rowcount

    def pending_reversals(self) -> list[tuple[Entry, Message]]:
        rows = self.db.execute(
            f"SELECT {_COLS}, reversal_blob FROM journal WHERE reversal=? ORDER BY id", (Reversal.PENDING.value,)
        ).fetchall()
        return [(_entry(r[:-1]), self._open(r[-1])) for r in rows]

    def reversal_attempted(self, entry_id: int) -> None:
        self.db.execute("UPDATE journal SET reversal_attempts=reversal_attempts+1, updated=? WHERE id=?",
                        (self._now(), entry_id))

    def reversal_done(self, entry_id: int) -> None:
        """The host acknowledged the reversal: whatever the transaction did is undone (status
        ``reversed``)."""
        self.db.execute("UPDATE journal SET reversal=?, reversal_blob=NULL, updated=?,"
                        " status=CASE WHEN status IN (?, ?, ?) THEN ? ELSE status END WHERE id=?",
                        (Reversal.DONE.value, self._now(), Status.UNKNOWN.value, Status.PENDING.value,
                         Status.APPROVED.value, Status.REVERSED.value, entry_id))

    def set_screen(self, entry_id: int, screen: str) -> None:
        """The exact code of the result screen the terminal showed for this transaction."""
        self._write("UPDATE journal SET screen=? WHERE id=?", (screen, entry_id))

    # --- links between transactions and batches -------------------------------------------------
    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            self.db.execute(sql, args)
        except sqlite3.Error as e:
            raise _journal_error(e, self.path) from None

    def mark_voided(self, original_id: int, by_id: int | None) -> None:
        """The original was voided by ``by_id`` (``None``: the void itself was voided/reversed)."""
        self._write("UPDATE journal SET voided_by=?, updated=? WHERE id=?", (by_id, self._now(), original_id))

    def mark_completed(self, preauth_id: int, by_id: int | None) -> None:
        """The pre-authorization was completed by ``by_id`` (``None``: that completion was voided)."""
        self._write("UPDATE journal SET completed_by=?, updated=? WHERE id=?", (by_id, self._now(), preauth_id))

    def batch_entries(self, batch: str) -> list[Entry]:
        """Every transaction of an open (unsettled) batch, oldest first."""
        rows = self.db.execute(f"SELECT {_COLS} FROM journal WHERE batch=? AND settled=0 ORDER BY id",
                               (batch,)).fetchall()
        return [_entry(r) for r in rows]

    def settle_batch(self, batch: str) -> int:
        """Mark every transaction of ``batch`` settled; how many."""
        try:
            cur = self.db.execute("UPDATE journal SET settled=1, updated=? WHERE batch=? AND settled=0",
                                  (self._now(), batch))
        except sqlite3.Error as e:
            raise _journal_error(e, self.path) from None
        return cur.rowcount

    def find(self, *, stan: str | None = None, rrn: str | None = None, kinds: tuple[str, ...] = ()) -> Entry | None:
        """The latest transaction with this STAN (凭证号) or RRN, of one of ``kinds`` if given."""
        where, args = [], []
        if stan is not None:
            where.append("stan=?")
            args.append(stan)
        if rrn is not None:
            where.append("rrn=?")
            args.append(rrn)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        if not where:
            return None
        r = self.db.execute(f"SELECT {_COLS} FROM journal WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT 1",
                            args).fetchone()
        return None if r is None else _entry(r)

    def last(self, kinds: tuple[str, ...] = ()) -> Entry | None:
        """The latest transaction (of one of ``kinds`` if given)."""
        sql = f"SELECT {_COLS} FROM journal"
        args: tuple[str, ...] = ()
        if kinds:
            sql += f" WHERE kind IN ({', '.join('?' * len(kinds))})"
            args = kinds
        r = self.db.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return None if r is None else _entry(r)

    def entries(self, limit: int = 100) -> list[Entry]:
        rows = self.db.execute(f"SELECT {_COLS} FROM journal ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_entry(r) for r in reversed(rows)]

    def get(self, entry_id: int) -> Entry:
        r = self.db.execute(f"SELECT {_COLS} FROM journal WHERE id=?", (entry_id,)).fetchone()
        if r is None:
            raise KeyError(entry_id)
        return _entry(r)

    # --- sealed reversal data -----------------------------------------------------------------
    def _seal(self, msg: Message) -> bytes:
        fields = {str(k): (v.hex() if isinstance(v, bytes) else v, isinstance(v, bytes))
                  for k, v in msg.fields.items() if k not in _SECRET_FIELDS}
        doc = json.dumps({"mti": msg.mti, "header": msg.header.hex(), "fields": fields}).encode()
        nonce = os.urandom(12)
        return nonce + AESGCM(self._key).encrypt(nonce, doc, b"posemu-reversal")

    def _open(self, blob: bytes) -> Message:
        if not isinstance(blob, bytes) or len(blob) < 12 + 16:
            raise CryptoError("journal reversal record is missing or too short to be a sealed record")
        for key in (self._key, self._legacy):
            if key is None:
                continue
            try:
                plain = AESGCM(key).decrypt(blob[:12], blob[12:], b"posemu-reversal")
            except (InvalidTag, ValueError):
                continue
            return _reversal_from_doc(plain)
        raise CryptoError("journal reversal record cannot be opened: the local key "
                          f"({self.local_key.path or 'in memory'}) is not the one it was sealed under")


def _reversal_from_doc(plain: bytes) -> Message:
    """The reversal message of an opened record; a record of the wrong shape (another version, a
    bug) is a :class:`DecodeError` at ``journal.reversal…`` — its content is never shown (it holds
    the PAN)."""
    where = "journal.reversal"
    try:
        doc = json.loads(plain)
    except (ValueError, RecursionError):
        raise DecodeError("sealed reversal record is not JSON", field=where) from None
    if not isinstance(doc, dict):
        raise DecodeError("sealed reversal record is not a JSON object", field=where)
    mti, header, raw_fields = doc.get("mti"), doc.get("header"), doc.get("fields")
    if not (isinstance(mti, str) and len(mti) == 4 and mti.isascii() and mti.isdigit()):
        raise DecodeError("sealed reversal record has no valid MTI", field=f"{where}.mti")
    if not isinstance(header, str):
        raise DecodeError("sealed reversal record has no header", field=f"{where}.header")
    if not isinstance(raw_fields, dict):
        raise DecodeError("sealed reversal record has no fields", field=f"{where}.fields")
    try:
        head = bytes.fromhex(header)
    except ValueError:
        raise DecodeError("sealed reversal record header is not hex", field=f"{where}.header") from None
    fields: dict[int, Value] = {}
    for k, entry in raw_fields.items():
        if not (k.isascii() and k.isdigit() and 2 <= int(k) <= 128):
            raise DecodeError(f"sealed reversal record has a bad field number {k[:4]!r}", field=f"{where}.fields")
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], bool)):
            raise DecodeError("sealed reversal record field is not [value, is_bytes]", field=f"{where}.fields.{k}")
        value, is_bytes = entry
        if is_bytes:
            try:
                fields[int(k)] = bytes.fromhex(value)
            except ValueError:
                raise DecodeError("sealed reversal record field is not hex", field=f"{where}.fields.{k}") from None
        else:
            fields[int(k)] = value
    return Message(mti, fields, head)



def _journal_error(e: sqlite3.Error, path: str) -> JournalError:
    """A write the journal could not make: ``journal.full`` (SQLITE_FULL), else ``journal.error``."""
    full = "full" in str(e).lower() or getattr(e, "sqlite_errorname", "") == "SQLITE_FULL"
    err = JournalError(f"cannot write the journal {path}: {e}")
    return err.with_code("journal.full") if full else err


_COLS = ("id, created, updated, kind, stan, date, pan_masked, amount, currency, entry, status, rc, screen,"
         " reversal, reversal_reason, reversal_attempts, rrn, auth_code, batch, tid, mid, original_id, original_ref,"
         " voided_by, completed_by, settled")


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def _opt_int(v: object) -> int | None:
    return None if v is None else int(v)  # type: ignore[call-overload]


def _ref(v: object) -> dict[str, str] | None:
    if not isinstance(v, str):
        return None
    try:
        doc = json.loads(v)
    except ValueError:
        return None
    return {str(k): str(x) for k, x in doc.items()} if isinstance(doc, dict) else None


def _entry(r: tuple[object, ...]) -> Entry:
    return Entry(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]),  # type: ignore[call-overload]
                 int(r[7]), str(r[8]), str(r[9]), Status(r[10]), r[11] if r[11] is None else str(r[11]),  # type: ignore[call-overload]
                 None if r[12] is None else str(r[12]), Reversal(r[13]),
                 None if r[14] is None else str(r[14]), int(r[15]),  # type: ignore[call-overload]
                 _opt_str(r[16]), _opt_str(r[17]), str(r[18] or ""), str(r[19] or ""), str(r[20] or ""),
                 _opt_int(r[21]), _ref(r[22]), _opt_int(r[23]), _opt_int(r[24]), bool(r[25]))
