"""Several host workers on one database (``posemu host --workers N``): every money move exactly once
whichever worker gets it, caches that never go stale across workers; the verified-PIN-block cache."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from emulator.demo import DEMO_MID, DEMO_TMK, LOAD_TIDS
from emulator.host.loadgen import sign_on
from emulator.host.logic import HostLogic, seed_demo
from emulator.host.store import HostStore
from hardware.cards.profiles import load_profile
from hardware.clock import VirtualClock
from protocol import keys as keymod
from protocol.framing import frame
from protocol.iso import Message, decode
from protocol.pinblock import encrypt_pinblock
from protocol.session import seal
from protocol.specs import ISO87ASCII
from protocol.txn import (
    RC,
    CardData,
    EntryMode,
    TerminalIds,
    TxnType,
    financial_request,
    key_block,
    reversal_request,
    sign_on_request,
)

ROOT = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
P = ISO87ASCII


@contextlib.asynccontextmanager
async def _host(db: Path, workers: int) -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--profile", "iso87ascii",
        "--db", str(db), "--workers", str(workers), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        m = re.search(r"listening on [\d.]+:(\d+).*, (\d+) workers", line)
        assert m is not None, line
        assert int(m.group(2)) == workers
        yield int(m.group(1))
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()


async def _exchange(port: int, frames: list[bytes]) -> list[Message]:
    """Write every frame at once on a new connection; the answers, in the order they come."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(frames))
        out = []
        async with asyncio.timeout(60):
            for _ in frames:
                n = int.from_bytes(await reader.readexactly(2), "big")
                out.append(decode(await reader.readexactly(n), P))
        return out
    finally:
        writer.close()


def test_workers_move_money_exactly_once(tmp_path: Path) -> None:
    """Three workers; six terminals sign on (wherever that lands, the others must know the new keys),
    then each sends its PIN'd purchases on one connection and the same purchases again
    (retransmissions) on another at the same time; then the reversal of every other purchase, twice,
    again on two connections at once. Every purchase is debited once and answered the same both
    times, every reversal refunds once, RRNs are unique, the balance is what the log's effects say."""
    db = tmp_path / "host.sqlite3"
    demo = load_profile("demo")
    tids = LOAD_TIDS[:6]
    per = 12

    async def main() -> None:
        async with _host(db, 3) as port:
            with sqlite3.connect(db) as con:
                acct, = con.execute("SELECT account_id FROM cards WHERE pan=?", (demo.pan,)).fetchone()
                start, = con.execute("SELECT balance FROM accounts WHERE id=?", (acct,)).fetchone()
            keys = await asyncio.gather(*(sign_on("127.0.0.1", port, P, tid=t, mid=DEMO_MID, tmk=DEMO_TMK)
                                          for t in tids))
            card = CardData(demo.pan, EntryMode.SWIPE, demo.expiry, f"{demo.pan}={demo.expiry}1010000000000")
            buys: dict[str, list[Message]] = {}
            for tid, k in zip(tids, keys, strict=True):
                ids = TerminalIds(tid, DEMO_MID, P.default_header)
                block = encrypt_pinblock(demo.pin, demo.pan, k.pik)
                buys[tid] = [financial_request(P, ids, TxnType.PURCHASE, card, stan=f"{i:06d}", now=NOW,
                                               amount=100 + i, pin_block=block) for i in range(1, per + 1)]
            sealed = {t: [frame(seal(m, P, k.mak)) for m in buys[t]] for t, k in zip(tids, keys, strict=True)}
            answers = await asyncio.gather(*(_exchange(port, sealed[t]) for t in tids for _ in range(2)))
            rrn: dict[tuple[str, str], str] = {}
            for i, got in enumerate(answers):
                tid = tids[i // 2]
                assert len(got) == per and all(a.get(39) == "00" for a in got), [a.get(39) for a in got]
                for a in got:
                    key = (tid, a.text(11))
                    assert rrn.setdefault(key, a.text(37)) == a.text(37)   # the retransmission: same answer
            assert len(set(rrn.values())) == len(tids) * per                 # unique across the workers
            revs = {t: [frame(seal(reversal_request(P, m, reason=RC.NO_RESPONSE,
                                                    ids=TerminalIds(t, DEMO_MID, P.default_header)), P, k.mak))
                        for m in buys[t][::2]] for t, k in zip(tids, keys, strict=True)}
            answers = await asyncio.gather(*(_exchange(port, revs[t]) for t in tids for _ in range(2)))
            assert all(a.get(39) == "00" for got in answers for a in got)
        with sqlite3.connect(db) as con:
            balance, = con.execute("SELECT balance FROM accounts WHERE id=?", (acct,)).fetchone()
            rows = con.execute("SELECT tid, stan, kind, effect, reversed FROM txlog WHERE account_id=? AND "
                               "kind IN ('purchase', 'reversal')", (acct,)).fetchall()
        purchases = [r for r in rows if r[2] == "purchase"]
        assert len(purchases) == len({(r[0], r[1]) for r in purchases}) == len(tids) * per   # each once
        assert sorted(int(r[1]) for r in purchases if r[4]) == sorted(list(range(1, per + 1, 2)) * len(tids))
        assert len([r for r in rows if r[2] == "reversal"]) == len(tids) * per // 2
        kept = sum(100 + i for i in range(2, per + 1, 2)) * len(tids)
        assert balance == start - kept == start + sum(r[3] for r in purchases if not r[4])

    asyncio.run(main())


def _shared_pair(tmp_path: Path, clock: VirtualClock) -> tuple[HostStore, HostLogic, HostStore, HostLogic]:
    db = tmp_path / "host.sqlite3"
    seed_demo(HostStore(db, shared=True), profiles=["demo", "load"])
    a, b = HostStore(db, shared=True), HostStore(db, shared=True)
    return a, HostLogic(a, P, clock, lane=(0, 2)), b, HostLogic(b, P, clock, lane=(1, 2))


def _decide(store: HostStore, logic: HostLogic, msg: Message, mak: bytes | None) -> Message:
    """What a worker does with one request: decide it under the write lock, commit, answer."""
    raw = seal(msg, P, mak)
    store.hold()
    try:
        d = logic.handle(decode(raw, P), raw)
    finally:
        store.release()
    assert d.response is not None
    return d.response


def test_shared_stores_see_each_others_changes(tmp_path: Path, vclock: VirtualClock) -> None:
    """Two workers' stores on one database: a sign-on on one re-keys the terminal for the other, a
    purchase on one is a duplicate for the other, a reversal on either refunds once, balances follow."""
    a, la, b, lb = _shared_pair(tmp_path, vclock)
    demo = load_profile("demo")
    tid = LOAD_TIDS[0]
    ids = TerminalIds(tid, DEMO_MID, P.default_header)
    assert b.terminal(tid) is not None                 # cached by b before a re-keys it
    on = _decide(a, la, sign_on_request(P, ids, stan="000001"), DEMO_TMK)
    k = keymod.parse_field62(DEMO_TMK, key_block(on), keymod.KeyScheme.DOUBLE)
    card = CardData(demo.pan, EntryMode.SWIPE, demo.expiry, f"{demo.pan}={demo.expiry}1010000000000")
    buy = financial_request(P, ids, TxnType.PURCHASE, card, stan="000002", now=NOW, amount=500,
                            pin_block=encrypt_pinblock(demo.pin, demo.pan, k.pik))
    acct = a.card(demo.pan).account_id  # type: ignore[union-attr]
    start = b.balance(acct)[0]
    first = _decide(b, lb, buy, k.mak)                 # b knows the keys a gave out
    assert first.get(39) == "00"
    again = _decide(a, la, buy, k.mak)                 # a retransmission reaching the other worker
    assert (again.get(39), again.get(37)) == ("00", first.get(37))
    assert a.balance(acct)[0] == start - 500
    rev = reversal_request(P, buy, reason=RC.NO_RESPONSE, ids=ids)
    for store, logic in ((a, la), (b, lb), (a, la)):
        assert _decide(store, logic, rev, k.mak).get(39) == "00"
    b.hold()
    assert b.balance(acct)[0] == start                 # refunded once
    b.release()
    other = financial_request(P, ids, TxnType.PURCHASE, card, stan="000003", now=NOW, amount=1,
                              pin_block=encrypt_pinblock(demo.pin, demo.pan, k.pik))
    rrns = {_decide(s, lg, other.replace(f11=f"{n:06d}"), k.mak).text(37)
            for n, (s, lg) in enumerate(((a, la), (b, lb)) * 3, start=10)}
    assert len(rrns) == 6                              # the lanes never give the same RRN twice
    for s in (a, b):
        s.close()


def test_a_verified_pin_block_skips_the_scrypt_and_nothing_else(tmp_path: Path, vclock: VirtualClock) -> None:
    """The PIN cache: a correct PIN block is recorded (as a keyed hash), a wrong one never is and still
    costs a try; a new PIK (sign-on) does not hit; a hit still answers like a full check."""
    store = HostStore(tmp_path / "h.sqlite3")
    seed_demo(store, profiles=["demo"])
    logic = HostLogic(store, P, vclock)
    demo = load_profile("demo")
    tid = LOAD_TIDS[0]
    ids = TerminalIds(tid, DEMO_MID, P.default_header)
    card = CardData(demo.pan, EntryMode.SWIPE, demo.expiry, f"{demo.pan}={demo.expiry}1010000000000")

    def keys(stan: str) -> keymod.WorkingKeys:
        on = _decide(store, logic, sign_on_request(P, ids, stan=stan), DEMO_TMK)
        return keymod.parse_field62(DEMO_TMK, key_block(on), keymod.KeyScheme.DOUBLE)

    def buy(k: keymod.WorkingKeys, stan: int, pin: str) -> Message:
        return financial_request(P, ids, TxnType.PURCHASE, card, stan=f"{stan:06d}", now=NOW, amount=1,
                                 pin_block=encrypt_pinblock(pin, demo.pan, k.pik))

    k = keys("000001")
    wrong = buy(k, 2, "999999")
    assert logic.pin_job(decode(seal(wrong, P, k.mak), P), seal(wrong, P, k.mak)) is not None
    assert _decide(store, logic, wrong, k.mak).get(39) == RC.WRONG_PIN.value
    assert store.card(demo.pan).pin_tries_left == demo.pin_tries - 1  # type: ignore[union-attr]
    raw = seal(buy(k, 3, "999999"), P, k.mak)
    assert logic.pin_job(decode(raw, P), raw) is not None       # a wrong PIN is never remembered
    right = buy(k, 4, demo.pin)
    raw = seal(right, P, k.mak)
    job = logic.pin_job(decode(raw, P), raw)
    assert job is not None and job.run()                       # the scrypt, once
    raw = seal(buy(k, 5, demo.pin), P, k.mak)
    assert logic.pin_job(decode(raw, P), raw) is None          # the same block again: no scrypt …
    assert _decide(store, logic, buy(k, 5, demo.pin), k.mak).get(39) == "00"   # … and the same answer
    assert store.card(demo.pan).pin_tries_left == demo.pin_tries  # type: ignore[union-attr]
    k2 = keys("000006")
    raw = seal(buy(k2, 7, demo.pin), P, k2.mak)
    assert logic.pin_job(decode(raw, P), raw) is not None      # another PIK: checked in full
    tag = logic.pin_cache.tag(store.card(demo.pan), k.pik, encrypt_pinblock(demo.pin, demo.pan, k.pik))  # type: ignore[arg-type]
    assert demo.pin.encode() not in tag and encrypt_pinblock(demo.pin, demo.pan, k.pik) not in tag
    store.close()


def test_worker_lanes_never_reuse_an_rrn_after_a_restart(tmp_path: Path, vclock: VirtualClock) -> None:
    """One worker of two makes every purchase (its lane fills, the other's stays empty); restarted, the
    workers count on from the highest RRN the log holds, not from the number of its rows."""
    a, la, b, _ = _shared_pair(tmp_path, vclock)
    b.close()
    demo = load_profile("demo")
    ids = TerminalIds(LOAD_TIDS[0], DEMO_MID, P.default_header)
    on = _decide(a, la, sign_on_request(P, ids, stan="000001"), DEMO_TMK)
    k = keymod.parse_field62(DEMO_TMK, key_block(on), keymod.KeyScheme.DOUBLE)
    card = CardData(demo.pan, EntryMode.SWIPE, demo.expiry, f"{demo.pan}={demo.expiry}1010000000000")
    buy = financial_request(P, ids, TxnType.PURCHASE, card, stan="000002", now=NOW, amount=1,
                            pin_block=encrypt_pinblock(demo.pin, demo.pan, k.pik))
    given = {_decide(a, la, buy.replace(f11=f"{n:06d}"), k.mak).text(37) for n in range(2, 22)}
    assert len(given) == 20
    for lane in (0, 1):
        logic = HostLogic(a, P, vclock, lane=(lane, 2))
        a.hold()
        nxt = logic._next_rrn()
        a.release()
        assert int(nxt[6:]) > max(int(r[6:]) for r in given)
    a.close()
