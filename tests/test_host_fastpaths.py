"""The bundled host's fast paths keep its guarantees: the transaction-log key filter never hides a
logged transaction (after a restart, past a filter's capacity, rows another connection wrote), the
identity fingerprint is HMAC-SHA256, a shared store's workers queue on the lock file, and an answer
leaves only after what it acknowledges is committed."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import hashlib
import hmac
import os
import sqlite3
from pathlib import Path

import pytest

from emulator.host.server import HostServer, _Conn
from emulator.host.store import HostStore, _KeyFilter
from hardware.cards.profiles import parse_profile
from hardware.clock import RealClock
from protocol.framing import Framer, frame
from protocol.iso import decode, encode
from protocol.specs import ISO87ASCII
from protocol.txn import CardData, EntryMode, TerminalIds, TxnType, financial_request

PAN = "9900990000000012"
TID, MID = "FAST0001", "898310012345678"
NOW = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)


def _log(store: HostStore, stan: str, *, tid: str = TID, mti: str = "0200") -> None:
    store.log_tx(tid=tid, stan=stan, date="0101", mti=mti, kind="balance", pan_masked="990099******0012",
                 account_id=1, amount=0, rc="00")


def test_key_filter_holds_every_key_it_was_given_past_its_capacity() -> None:
    keys = _KeyFilter(1)
    first = keys.capacity
    added = [("T", f"{i:06d}", "0101", "0200") for i in range(first + 1000)]
    for k in added:
        keys.add(k)
    assert len(keys.layers) == 2 and keys.capacity > first       # a new layer, nothing read again
    assert all(k in keys for k in added)
    misses = sum(("T", f"{i:06d}", "0102", "0200") in keys for i in range(20_000))
    assert misses < 20_000 * 0.05                                 # mostly "surely not there"


def test_find_tx_finds_logged_rows_pending_committed_and_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "host.sqlite3"
    store = HostStore(db)
    store.prepare()
    store.begin()
    _log(store, "000001")
    assert store.find_tx(TID, "000001", "0101", "0200") is not None     # pending in the batch
    store.commit()
    _log(store, "000002")
    assert store.find_tx(TID, "000002", "0101", "0200") is not None     # committed
    assert store.find_tx(TID, "000003", "0101", "0200") is None
    assert store.find_tx(TID, "000001", "0101", "0210") is None
    store.close()
    again = HostStore(db)
    again.prepare()
    assert again.find_tx(TID, "000001", "0101", "0200") is not None
    assert again.find_tx(TID, "000002", "0101", "0200") is not None
    assert again.find_tx(TID, "000004", "0101", "0200") is None
    again.close()


def test_find_tx_sees_rows_another_connection_committed(tmp_path: Path) -> None:
    db = tmp_path / "host.sqlite3"
    store = HostStore(db)
    store.prepare()
    assert store.find_tx(TID, "000009", "0101", "0200") is None
    other = sqlite3.connect(db)
    other.execute("INSERT INTO txlog (tid, stan, date, mti, kind, pan_masked, rc) "
                  "VALUES (?, '000009', '0101', '0200', 'balance', '', '00')", (TID,))
    other.commit()
    other.close()
    store.begin()                      # the next batch notices the other writer and reads the keys again
    assert store.find_tx(TID, "000009", "0101", "0200") is not None
    store.commit()
    store.close()


def test_shared_stores_find_the_rows_other_workers_logged(tmp_path: Path) -> None:
    """Two workers' stores on one database, each with its key filter built at start: under the write
    lock each sees what the other logged since (caught up from the log, never a stale "not there")."""
    db = tmp_path / "host.sqlite3"
    HostStore(db).close()
    a, b = HostStore(db, shared=True), HostStore(db, shared=True)
    a.prepare()
    b.prepare()
    for i in range(1, 40):
        mine, other = (a, b) if i % 3 else (b, a)
        mine.hold()
        assert mine.find_tx(TID, f"{i - 1:06d}", "0101", "0200") is not None or i == 1
        _log(mine, f"{i:06d}")
        mine.release()
        other.hold()
        assert other.find_tx(TID, f"{i:06d}", "0101", "0200") is not None
        assert other.find_tx(TID, f"{i:06d}", "0101", "0210") is None
        other.release()
        assert other.find_tx(TID, f"{i:06d}", "0101", "0200") is not None      # outside the lock: asked
    a.close()
    b.close()


def test_log_rows_are_the_same_whichever_insert_writes_them(tmp_path: Path) -> None:
    """Rows with no authorization, RRN, batch, effect or target are written by the shorter INSERT (the
    columns' defaults); mixed with full rows in one flush they keep the order they were logged in."""
    store = HostStore(tmp_path / "host.sqlite3")
    store.begin()
    _log(store, "000001")
    store.log_tx(tid=TID, stan="000002", date="0101", mti="0200", kind="purchase", pan_masked="990099******0012",
                 account_id=1, amount=5, rc="00", auth_code="000002", rrn="260101000002", ident="i", batch="000001",
                 effect=-5)
    store.log_tx(tid=TID, stan="000003", date="0101", mti="0200", kind="balance", pan_masked="", account_id=None,
                 amount=0, rc="14", ident="j")
    store.log_tx(tid=TID, stan="000004", date="0101", mti="0200", kind="refund", pan_masked="", account_id=1,
                 amount=5, rc="00", target=2)
    store.commit()
    rows = store.transactions()
    assert [r.stan for r in rows] == ["000001", "000002", "000003", "000004"]
    assert [r.id for r in rows] == [1, 2, 3, 4]
    short = rows[2]
    assert (short.auth_code, short.rrn, short.batch, short.effect, short.target, short.account_id, short.ident,
            short.reversed, short.voided, short.refunded) == (None, None, None, 0, None, None, "j", False, False, 0)
    full = rows[1]
    assert (full.auth_code, full.rrn, full.batch, full.effect, full.ident) == ("000002", "260101000002", "000001",
                                                                                -5, "i")
    assert rows[3].target == 2
    store.close()


def test_identity_fingerprint_is_hmac_sha256_of_the_parts() -> None:
    store = HostStore()
    for parts in (("310000", "", PAN), ("", "", ""), ("000000", "000000001250", "x" * 300)):
        got = store.fingerprint(*parts)
        key = store._fp_key
        assert key is not None
        assert got == hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()[:32]
    store.close()


def test_shared_store_holds_the_lock_file_from_hold_to_release(tmp_path: Path) -> None:
    db = tmp_path / "host.sqlite3"
    HostStore(db).close()
    store = HostStore(db, shared=True)
    lock = Path(f"{db}.lock")
    assert lock.stat().st_mode & 0o777 == 0o600
    fd = os.open(lock, os.O_RDWR)
    try:
        store.hold()
        with pytest.raises(BlockingIOError):      # another worker would wait here, in the kernel
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        store.release()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
        store.close()


class _Watched:
    """A transport that, at each write, reads the database through another connection."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.seen: list[tuple[bytes, int, int]] = []    # (bytes written, purchase rows, balance)

    def write(self, data: bytes) -> None:
        con = sqlite3.connect(self.db)
        try:
            rows = con.execute("SELECT COUNT(*) FROM txlog WHERE kind='purchase'").fetchone()[0]
            bal = con.execute("SELECT balance FROM accounts JOIN cards ON cards.account_id = accounts.id "
                              "WHERE cards.pan=?", (PAN,)).fetchone()[0]
        finally:
            con.close()
        self.seen.append((data, int(rows), int(bal)))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_a_purchase_is_committed_before_its_answer_is_written(tmp_path: Path) -> None:
    """Several requests arriving together are answered in one write; the money moved by a purchase
    among them is committed, as seen by another connection, before that write."""
    db = tmp_path / "host.sqlite3"

    async def main() -> None:
        host = await HostServer.start(ISO87ASCII, clock=RealClock(), db=db, seed=False)
        try:
            store = host.store
            store.begin()
            store.add_terminal(TID, MID, bytes(16), require_sign_on=False, permissions=("balance", "purchase"))
            store.add_card(parse_profile({"name": "fast", "pan": PAN, "expiry": "3912", "service_code": "101",
                                          "pin": "000000", "account": {"balance": 100_00,
                                                                       "permissions": ["balance", "purchase"]}},
                                         "fast"), pin_required=False)
            store.commit()
            ids = TerminalIds(TID, MID, b"")
            card = CardData(PAN, EntryMode.SWIPE, "3912", f"{PAN}=39121010000000000")
            reqs = [financial_request(ISO87ASCII, ids, TxnType.BALANCE, card, stan="000001", now=NOW),
                    financial_request(ISO87ASCII, ids, TxnType.PURCHASE, card, stan="000002", now=NOW, amount=12_34),
                    financial_request(ISO87ASCII, ids, TxnType.BALANCE, card, stan="000003", now=NOW)]
            tr = _Watched(db)
            conn = _Conn(host)
            conn.connection_made(tr)  # type: ignore[arg-type]
            conn.data_received(b"".join(frame(encode(r, ISO87ASCII)) for r in reqs))
            assert len(tr.seen) == 1                              # one write for the batch
            data, purchases, balance = tr.seen[0]
            assert purchases == 1 and balance == 100_00 - 12_34   # committed before the answers left
            framer = Framer()
            framer.receive_data(data)
            answers = [decode(p, ISO87ASCII) for p in framer.frames()]
            assert [(a.get(11), a.get(39)) for a in answers] == [("000001", "00"), ("000002", "00"),
                                                                   ("000003", "00")]
            group_commit = asyncio.Event()                        # the group commit of the inquiries' rows
            commit = store.commit

            def commit_and_tell() -> None:
                commit()
                group_commit.set()

            store.commit = commit_and_tell  # type: ignore[method-assign]
            await asyncio.wait_for(group_commit.wait(), 10)       # a bound, not a measurement
            con = sqlite3.connect(db)
            try:
                assert con.execute("SELECT COUNT(*) FROM txlog").fetchone()[0] == 3
            finally:
                con.close()
            conn.connection_lost(None)
        finally:
            await host.close()

    asyncio.run(main())


def _held(store: HostStore) -> bool:
    return store.held


def test_workers_answer_a_turn_of_the_event_loop_after_one_commit(tmp_path: Path) -> None:
    """A shared store (``--workers``): the batches of every connection served in one turn of the event
    loop are decided under one hold of the write lock and answered only once that is committed."""
    db = tmp_path / "host.sqlite3"

    async def main() -> None:
        host = await HostServer.start(ISO87ASCII, clock=RealClock(), db=db, seed=False, worker=(0, 1))
        try:
            store = host.store
            store.hold()
            store.add_terminal(TID, MID, bytes(16), require_sign_on=False, permissions=("balance", "purchase"))
            store.add_terminal("FAST0002", MID, bytes(16), require_sign_on=False, permissions=("balance",))
            store.add_card(parse_profile({"name": "fast", "pan": PAN, "expiry": "3912", "service_code": "101",
                                          "pin": "000000", "account": {"balance": 100_00,
                                                                       "permissions": ["balance", "purchase"]}},
                                         "fast"), pin_required=False)
            store.release()
            card = CardData(PAN, EntryMode.SWIPE, "3912", f"{PAN}=39121010000000000")
            conns = []
            for tid, txn in ((TID, TxnType.PURCHASE), ("FAST0002", TxnType.BALANCE)):
                ids = TerminalIds(tid, MID, b"")
                reqs = [financial_request(ISO87ASCII, ids, txn, card, stan=f"{i:06d}", now=NOW, amount=1_00)
                        for i in (1, 2)]
                tr = _Watched(db)
                conn = _Conn(host)
                conn.connection_made(tr)  # type: ignore[arg-type]
                conn.data_received(b"".join(frame(encode(r, ISO87ASCII)) for r in reqs))
                conns.append((conn, tr))
            assert _held(store) and all(not tr.seen for _, tr in conns)   # decided, not answered yet
            await asyncio.sleep(0)                                          # the end of this turn
            assert not _held(store)
            for _, tr in conns:
                assert len(tr.seen) == 1
                _, purchases, balance = tr.seen[0]
                assert purchases == 2 and balance == 100_00 - 2_00          # committed before any answer
            con = sqlite3.connect(db)
            try:
                assert con.execute("SELECT COUNT(*) FROM txlog").fetchone()[0] == 4
            finally:
                con.close()
            for conn, _ in conns:
                conn.connection_lost(None)
        finally:
            await host.close()

    asyncio.run(main())
