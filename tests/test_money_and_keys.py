"""Money and keys (issue 8): every forgery found by the security campaign, on both profiles.

Each test is one attack: the host must refuse it (A0 / 94 / 25) and move no money, the terminal
must not take an unauthenticated answer for an approval, and nothing a client sends leaves the
host silent or broken.
"""

from __future__ import annotations

import asyncio
import stat
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK, LOAD_TIDS
from emulator.host.logic import HostLogic, PinJob, seed_demo
from emulator.host.server import HostServer
from emulator.host.store import HostStore
from emulator.hostlink import HostLink
from emulator.trace import Trace
from hardware.clock import VirtualClock
from protocol import keys as keymod
from protocol.errors import ConfigError, DecodeError
from protocol.framing import frame
from protocol.iso import Message, decode, encode
from protocol.session import MacStatus, check_mac, seal
from protocol.specs import CUP, PROFILES, Profile
from protocol.txn import (
    RC,
    NetCode,
    TerminalIds,
    TxnType,
    key_block,
    network_request,
    reversal_request,
    sign_on_request,
)
from tests.test_host import CARDS, Client, run_host

PROFILE_PARAMS = pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))


def _balance(host: HostServer) -> int:
    card = host.store.card(CARDS["ok"].pan)
    assert card is not None
    return host.store.balance(card.account_id)[0]


# --- 1. the host never treats the MAC as optional ---------------------------------------------
@PROFILE_PARAMS
def test_host_refuses_requests_without_a_valid_mac(vrun: asyncio.Runner, vclock: VirtualClock,
                                                   profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        before = _balance(host)
        purchase = c.request(TxnType.PURCHASE, CARDS["ok"], amount=1_00)
        # MAC stripped
        assert (await c.send(purchase, mac=False)).get(39) == "A0"
        # amount raised to 9,999.99 and the MAC stripped
        raised = c.request(TxnType.PURCHASE, CARDS["ok"], amount=9_999_99)
        assert (await c.send(raised, mac=False)).get(39) == "A0"
        # a MAC that belongs to another message (the 1.00 purchase's) on the 9,999.99 one
        assert c.keys is not None
        forged = raised.replace(f64=seal(purchase, profile, c.keys.mak)[-8:])
        assert (await c.send(forged, mac=False)).get(39) == "A0"
        # a balance inquiry without MAC: also refused (no balance leaks)
        bal = await c.send(c.request(TxnType.BALANCE, CARDS["ok"]), mac=False)
        assert bal.get(39) == "A0" and 54 not in bal
        # a bare reversal: fields 3, 11, 13, 39, 41, 42 and no MAC refunds nothing
        ok = await c.send(c.request(TxnType.PURCHASE, CARDS["ok"], amount=30_00))
        assert ok.get(39) == "00" and _balance(host) == before - 30_00
        bare = Message("0400", {3: "000000", 11: f"{c.stan:06d}", 13: "0101", 39: "98",
                                41: DEMO_TID, 42: DEMO_MID}, profile.default_header)
        assert (await c.send(bare, mac=False)).get(39) == "A0"
        assert _balance(host) == before - 30_00            # only the MACed purchase moved money

    run_host(vrun, vclock, profile, body)


@PROFILE_PARAMS
def test_host_responses_are_maced_and_verify(vrun: asyncio.Runner, vclock: VirtualClock, profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        assert c.keys is not None
        ex = await c.link.exchange(c.request(TxnType.BALANCE, CARDS["ok"]), mak=c.keys.mak)
        assert check_mac(ex.response, ex.raw, profile, c.keys.mak) is MacStatus.OK
        # declines are MACed too: a terminal can tell a forged decline from a real one
        ex = await c.link.exchange(c.request(TxnType.BALANCE, CARDS["ok"], pin="999999"), mak=c.keys.mak)
        assert ex.response.get(39) == "55"
        assert check_mac(ex.response, ex.raw, profile, c.keys.mak) is MacStatus.OK

    run_host(vrun, vclock, profile, body)


# --- 2. reversals land on both profiles -------------------------------------------------------
@PROFILE_PARAMS
def test_every_reversal_the_terminal_builds_is_accepted(vrun: asyncio.Runner, vclock: VirtualClock,
                                                        profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        before = _balance(host)
        p = c.request(TxnType.PURCHASE, CARDS["ok"], amount=12_34)
        assert (await c.send(p)).get(39) == "00"
        for reason in (RC.NO_RESPONSE, RC.MAC_ERROR, RC.SYSTEM_MALFUNCTION):
            rev = reversal_request(profile, p, reason=reason, ids=c.ids)
            assert (await c.send(rev)).get(39) == "00"
        assert _balance(host) == before              # refunded exactly once

    run_host(vrun, vclock, profile, body)


# --- 3. duplicates on the whole transaction identity ------------------------------------------
@PROFILE_PARAMS
def test_reused_stan_for_another_transaction_is_refused(vrun: asyncio.Runner, vclock: VirtualClock,
                                                        profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        before = _balance(host)
        first = await c.send(c.request(TxnType.PURCHASE, CARDS["ok"], amount=1_00, stan="000002"))
        assert first.get(39) == "00" and isinstance(first.get(38), str)
        # a reinstalled terminal reuses STAN 000002 for 30.00: never the 1.00 purchase's approval
        again = await c.send(c.request(TxnType.PURCHASE, CARDS["ok"], amount=30_00, stan="000002"))
        assert again.get(39) == "94" and 38 not in again
        assert _balance(host) == before - 1_00
        # the same 1.00 purchase retransmitted: its own answer, debited once
        retry = await c.send(c.request(TxnType.PURCHASE, CARDS["ok"], amount=1_00, stan="000002"))
        assert retry.get(39) == "00" and retry.get(38) == first.get(38)
        assert _balance(host) == before - 1_00
        # a reversal naming STAN 000002 but another amount refunds nothing
        other = c.request(TxnType.PURCHASE, CARDS["ok"], amount=30_00, stan="000002")
        assert (await c.send(reversal_request(profile, other, reason=RC.NO_RESPONSE, ids=c.ids))).get(39) == "25"
        assert _balance(host) == before - 1_00

    run_host(vrun, vclock, profile, body)


# --- 5. a host that cannot be knocked over ----------------------------------------------------
@PROFILE_PARAMS
def test_sign_on_needs_proof_of_the_master_key(vrun: asyncio.Runner, vclock: VirtualClock,
                                               profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        term = host.store.terminal(DEMO_TID)
        assert term is not None and term.mak is not None
        # anyone can send an 0800 for the terminal id: without a MAC under the TMK nothing changes
        unauth = await c.link.exchange(sign_on_request(profile, c.ids, stan=c.next_stan()))
        assert unauth.response.get(39) == "A0" and 62 not in unauth.response
        wrong = await c.link.exchange(sign_on_request(profile, c.ids, stan=c.next_stan()), mak=bytes(16))
        assert wrong.response.get(39) == "A0"
        after = host.store.terminal(DEMO_TID)
        assert after is not None and after.mak == term.mak        # the real terminal keeps working
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "00"
        # a captured sign-on replayed: refused
        stan = c.next_stan()
        ok = await c.link.exchange(sign_on_request(profile, c.ids, stan=stan), mak=DEMO_TMK)
        assert ok.response.get(39) == "00"
        c.keys = keymod.parse_field62(DEMO_TMK, key_block(ok.response), keymod.KeyScheme.DOUBLE)
        replay = await c.link.exchange(sign_on_request(profile, c.ids, stan=stan), mak=DEMO_TMK)
        assert replay.response.get(39) == "94"
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "00"

    run_host(vrun, vclock, profile, body)


@PROFILE_PARAMS
def test_echo_is_answered_and_never_rekeys_sign_off_drops_keys(vrun: asyncio.Runner, vclock: VirtualClock,
                                                               profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        assert c.keys is not None
        term = host.store.terminal(DEMO_TID)
        echo = network_request(profile, c.ids, NetCode.ECHO, stan=c.next_stan())
        ex = await c.link.exchange(echo, mak=c.keys.mak)
        assert ex.response.get(39) == "00" and 62 not in ex.response
        assert host.store.terminal(DEMO_TID) == term
        # an echo without the MAC of a terminal that holds one: A0 (a management message too)
        assert (await c.link.exchange(network_request(profile, c.ids, NetCode.ECHO, stan=c.next_stan()))
                ).response.get(39) == "A0"
        off = await c.link.exchange(network_request(profile, c.ids, NetCode.SIGN_OFF, stan=c.next_stan()),
                                    mak=c.keys.mak)
        assert off.response.get(39) == "00"
        gone = host.store.terminal(DEMO_TID)
        assert gone is not None and gone.mak is None and not gone.signed_on
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "77"

    run_host(vrun, vclock, profile, body)


def test_pin_checks_run_off_the_event_loop(vrun: asyncio.Runner, vclock: VirtualClock,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A purchase whose PIN check is still running does not hold up another terminal's inquiry."""
    release = threading.Event()
    started = threading.Event()
    real_run = PinJob.run

    def slow_run(self: PinJob) -> bool:
        started.set()
        release.wait(30)          # the worker thread is busy; the event loop must not be
        return real_run(self)

    monkeypatch.setattr(PinJob, "run", slow_run)

    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        purchase = asyncio.ensure_future(c.send(c.request(TxnType.PURCHASE, CARDS["ok"], amount=5_00)))
        with vclock.external():
            assert await asyncio.to_thread(started.wait, 30)
        # another terminal (no PIN card, load terminal id) is served meanwhile
        other = HostLink("127.0.0.1", host.port, CUP, clock=vclock, trace=Trace(vclock), response_timeout=5)
        try:
            ids = TerminalIds(LOAD_TIDS[0], DEMO_MID, CUP.default_header)
            from protocol.txn import CardData, EntryMode, financial_request
            from tests.test_host import NOW

            card = CARDS["ok"]
            req = financial_request(CUP, ids, TxnType.BALANCE, CardData(card.pan, EntryMode.SWIPE, card.expiry,
                                                                          card.track2), stan="000077", now=NOW)
            with vclock.external():
                answered = await other.exchange(req)
            assert answered.response.get(39) == "55"     # that card wants a PIN; answered at once
            assert not purchase.done()
        finally:
            await other.close()
            release.set()
        assert (await purchase).get(39) == "00"
        assert host.stats.pin_checks >= 1

    run_host(vrun, vclock, CUP, body)


def test_idle_connections_are_closed_and_the_number_is_capped(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        host = await HostServer.start(CUP, clock=vclock, seed=False, idle_timeout=30, max_connections=3)
        try:
            conns = [await asyncio.open_connection("127.0.0.1", host.port) for _ in range(3)]
            r4, w4 = await asyncio.open_connection("127.0.0.1", host.port)
            assert await r4.read() == b""                   # over the cap: refused at once
            w4.close()
            assert host.stats.refused_full == 1
            # a slowloris client: one byte, then nothing more; idle ones: nothing at all
            conns[0][1].write(b"\x00")
            t0 = vclock.now()
            for r, _ in conns:
                assert await r.read() == b""
            assert vclock.now() - t0 == pytest.approx(30, abs=1)
            assert host.stats.closed_idle == 3
            for _, w in conns:
                w.close()
        finally:
            await host.close()

    vrun.run(main())


@settings(max_examples=300, deadline=None)
@given(mti=st.sampled_from(["0200", "0400", "0800", "0820", "0100"]),
       partial=st.dictionaries(st.sampled_from(["11", "41", "42", "3", "t"]),
                               st.one_of(st.text(max_size=20), st.binary(max_size=8), st.integers())))
def test_every_malformed_frame_gets_a_30_or_a_close(mti: str, partial: dict[str, object]) -> None:
    """When the MTI is readable but the fields cannot be echoed, the host still answers (or closes)."""
    for profile in PROFILES.values():
        logic = HostLogic(HostStore(), profile, VirtualClock())
        d = logic.malformed(mti, partial, DecodeError("bad", field="11"))
        if d.response is None:
            assert d.close
        else:
            assert d.response.get(39) == "30"
            encode(d.response, profile)            # what it sends really encodes


def test_garbage_over_a_socket_never_leaves_the_client_hanging(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        host = await HostServer.start(CUP, clock=vclock, seed=False)
        try:
            header = CUP.default_header
            cases = [
                header + bytes.fromhex("0200") + b"\x00\x20\x00\x00\x00\x00\x00\x00" + b"\xff\xff\xff",  # bad STAN
                header + bytes.fromhex("0200") + b"\x00\x00\x00\x00\x00\x80\x00\x00" + b"\xff" * 8,       # bad 41
            ]
            for raw in cases:
                r, w = await asyncio.open_connection("127.0.0.1", host.port)
                w.write(frame(raw))
                head = await r.read(2)
                if head:                              # an answer: a 30
                    body = await r.readexactly(int.from_bytes(head, "big"))
                    assert decode(body, CUP).get(39) == "30"
                w.close()
        finally:
            await host.close()

    vrun.run(main())


def test_keys_are_committed_before_the_0810_leaves(vrun: asyncio.Runner, vclock: VirtualClock,
                                                   tmp_path: Path) -> None:
    db = tmp_path / "host.sqlite3"

    async def main() -> None:
        host = await HostServer.start(CUP, clock=vclock, db=db, seed=False)
        seed_demo(host.store, profiles=[])
        link = HostLink("127.0.0.1", host.port, CUP, clock=vclock, trace=Trace(vclock), response_timeout=5)
        try:
            ids = TerminalIds(DEMO_TID, DEMO_MID, CUP.default_header)
            ex = await link.exchange(sign_on_request(CUP, ids, stan="000001"), mak=DEMO_TMK)
            keys = keymod.parse_field62(DEMO_TMK, key_block(ex.response), keymod.KeyScheme.DOUBLE)
            # another process opening the database the moment the 0810 arrives sees the new keys
            other = HostStore(db)
            term = other.terminal(DEMO_TID)
            assert term is not None and term.mak == keys.mak and term.pik == keys.pik
            other.close()
        finally:
            await link.close()
            await host.close()

    vrun.run(main())


# --- 6. keys and card data at rest ------------------------------------------------------------
def test_host_keys_are_sealed_and_files_private(tmp_path: Path) -> None:
    db = tmp_path / "state" / "host.sqlite3"
    db.parent.mkdir()
    store = HostStore(db)
    seed_demo(store, profiles=[])
    term = store.terminal(DEMO_TID)
    assert term is not None
    store.set_terminal(replace(term, pik=bytes(range(16)), mak=bytes(range(8, 16))))
    store.close()
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith("host.sqlite3")
                   and not p.name.endswith(".key"))
    for secret in (DEMO_TMK, bytes(range(16)), bytes(range(8, 16))):
        assert secret not in raw
    for p in db.parent.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    again = HostStore(db)                          # and they open again under the local key
    t2 = again.terminal(DEMO_TID)
    assert t2 is not None and t2.tmk == DEMO_TMK and t2.mak == bytes(range(8, 16))
    again.close()


def test_host_database_written_by_an_older_release_is_sealed_on_open(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "host.sqlite3"
    old = sqlite3.connect(db)
    old.executescript("""
      CREATE TABLE terminals (tid TEXT PRIMARY KEY, mid TEXT NOT NULL, tmk BLOB NOT NULL, pik BLOB, mak BLOB,
        signed_on INTEGER NOT NULL DEFAULT 0, require_sign_on INTEGER NOT NULL DEFAULT 1,
        permissions TEXT NOT NULL, min_version INTEGER NOT NULL DEFAULT 0);""")
    old.execute("INSERT INTO terminals VALUES (?, ?, ?, NULL, NULL, 0, 1, 'balance', 0)",
                (DEMO_TID, DEMO_MID, DEMO_TMK))
    old.commit()
    old.close()
    store = HostStore(db)
    t = store.terminal(DEMO_TID)
    assert t is not None and t.tmk == DEMO_TMK and t.mac_required
    store.close()
    assert DEMO_TMK not in db.read_bytes()


# --- the terminal never takes an unauthenticated answer ---------------------------------------
class Mitm:
    """A man in the middle between terminal and host (a plain asyncio relay of length-framed messages):
    ``rewrite(request, response)`` returns what the terminal gets instead (or ``None`` to pass it on);
    with ``answer_alone`` the 0200 never reaches the host."""

    def __init__(self, profile: Profile, host_port: int, *, answer_alone: bool) -> None:
        self.profile = profile
        self.host_port = host_port
        self.answer_alone = answer_alone
        self.server: asyncio.Server | None = None
        self.forged = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def forge(self, req: Message, rc: str) -> Message:
        from protocol.txn import response_to

        return response_to(req, rc)           # a bare answer: no field 64

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        hr, hw = await asyncio.open_connection("127.0.0.1", self.host_port)
        try:
            while True:
                head = await r.read(2)
                if len(head) < 2:
                    return
                payload = await r.readexactly(int.from_bytes(head, "big"))
                req = decode(payload, self.profile)
                if req.mti == "0200" and req.get(3) == "000000":
                    self.forged += 1
                    if not self.answer_alone:          # let the host charge, then lie about it
                        hw.write(head + payload)
                        n = int.from_bytes(await hr.readexactly(2), "big")
                        await hr.readexactly(n)
                    w.write(frame(encode(self.forge(req, "00" if self.answer_alone else "05"), self.profile)))
                    continue
                hw.write(head + payload)
                n = int.from_bytes(await hr.readexactly(2), "big")
                w.write(n.to_bytes(2, "big") + await hr.readexactly(n))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            hw.close()
            w.close()


@PROFILE_PARAMS
@pytest.mark.parametrize("answer_alone", [True, False], ids=["fake-approval", "fake-decline-after-charge"])
def test_terminal_reverses_a_purchase_whose_answer_has_no_mac(vrun: asyncio.Runner, vclock: VirtualClock,
                                                              tmp_path: Path, profile: Profile,
                                                              answer_alone: bool) -> None:
    from emulator.app import open_rig
    from emulator.config import TerminalConfig
    from emulator.journal import Reversal, Status
    from emulator.ports import ScriptedPinPad

    async def main() -> None:
        host = await HostServer.start(profile, clock=vclock, seed=True)
        mitm = Mitm(profile, host.port, answer_alone=answer_alone)
        port = await mitm.start()
        rig = await open_rig(TerminalConfig(host=f"127.0.0.1:{port}", profile=profile.name), clock=vclock,
                             state_dir=tmp_path, pinpad=ScriptedPinPad("123456"))
        pan = "9900010000000019"
        card = host.store.card(pan)
        assert card is not None
        before = host.store.balance(card.account_id)[0]
        try:
            assert (await rig.terminal.sign_on()).approved
            out = await rig.terminal.purchase(300_00)
            assert mitm.forged == 1
            assert not out.approved and "MAC_ERROR" in out.codes
            entry = rig.journal.get(out.journal_id or 0)
            assert entry.status is Status.REVERSED and entry.reversal is Reversal.DONE
            assert rig.journal.pending_reversals() == []
        finally:
            await rig.close()
            await mitm.close()
            after = host.store.balance(card.account_id)[0]
            await host.close()
        assert after == before            # the cardholder is never charged for what the terminal calls failed

    vrun.run(main())


def test_reinstalled_terminal_resends_under_a_new_stan(posemu_runner: asyncio.Runner, posemu_host: HostServer,
                                                       posemu_terminal: Any) -> None:
    """A STAN collision with an earlier installation: the host says 94, the terminal resends once.

    The plugin's fixtures (:mod:`faults.pytest_plugin`): the bundled host, and a terminal factory
    whose every terminal has its own state folder — a reinstalled terminal is a second one."""
    run = posemu_runner.run
    card = posemu_host.store.card("9900010000000019")
    assert card is not None
    before = posemu_host.store.balance(card.account_id)[0]
    first = posemu_terminal()
    assert run(first.terminal.sign_on()).approved
    old = run(first.terminal.purchase(1_00))
    assert old.approved
    old_stan = first.journal.get(old.journal_id or 0).stan
    run(first.terminal.close())                      # the old installation is gone (the fixture closes it again)
    # reinstalled: a new journal whose STAN counter happens to land on the old purchase's STAN
    fresh = posemu_terminal()
    assert run(fresh.terminal.sign_on()).approved
    fresh.journal.set_counter("stan", int(old_stan) - 1)
    out = run(fresh.terminal.purchase(300_00))
    assert out.approved
    rows = fresh.journal.entries()
    assert [(e.stan == old_stan, e.rc) for e in rows if e.kind == "purchase"] == [(True, "94"), (False, "00")]
    after = posemu_host.store.balance(card.account_id)[0]
    assert after == before - 1_00 - 300_00          # each purchase debited once, for its own amount


def test_new_journals_start_at_a_random_stan(tmp_path: Path) -> None:
    from emulator.journal import Journal
    from emulator.terminal import Terminal

    starts = set()
    for i in range(5):
        j = Journal(tmp_path / f"j{i}.sqlite3", clock=VirtualClock())
        Terminal._seed_stan(j)
        starts.add(j.counter("stan", -1))
        j.close()
    assert len(starts) > 1 and all(0 <= s < 999_000 for s in starts)


def test_journal_erases_card_data_once_no_reversal_can_be_needed(vrun: asyncio.Runner, vclock: VirtualClock,
                                                                 tmp_path: Path) -> None:
    import sqlite3

    from emulator.app import open_rig
    from emulator.config import TerminalConfig
    from emulator.ports import ScriptedPinPad

    async def main() -> None:
        rig = await open_rig(TerminalConfig(), clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"))
        try:
            assert (await rig.terminal.sign_on()).approved
            assert (await rig.terminal.purchase(2_00)).approved
        finally:
            await rig.close()

    vrun.run(main())
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    blobs = db.execute("SELECT COUNT(*) FROM journal WHERE reversal_blob IS NOT NULL").fetchone()[0]
    db.close()
    assert blobs == 0
    for p in [tmp_path, *tmp_path.iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p


def test_config_never_holds_a_real_key_in_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from emulator import config as configmod
    from emulator.cli import main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    real = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    cfg = replace(configmod.TerminalConfig(), tmk=real)
    path = tmp_path / "terminal.toml"
    configmod.save(cfg, path)                       # what the UI's settings dialog does
    text = path.read_text()
    assert real.hex() not in text.lower() and "tmk_sealed" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert configmod.load(path).tmk == real
    # `posemu config seal-key` gives the line to paste; a key file must be private
    out = CliRunner().invoke(main, ["config", "seal-key"], input=real.hex() + "\n")
    assert out.exit_code == 0 and out.output.startswith('tmk_sealed = "v1:')
    sealed = out.output.strip().split(" = ", 1)[1].strip('"')
    path.write_text(f'[keys]\ntmk_sealed = "{sealed}"\n')
    assert configmod.load(path).tmk == real
    keyfile = tmp_path / "tmk.hex"
    keyfile.write_text(real.hex())
    keyfile.chmod(0o644)
    path.write_text(f'[keys]\ntmk_file = "{keyfile}"\n')
    with pytest.raises(ConfigError, match="readable by others"):
        configmod.load(path)
    keyfile.chmod(0o600)
    assert configmod.load(path).tmk == real
    # the demo (test) key is simply not written
    configmod.save(configmod.TerminalConfig(), path)
    assert "tmk" not in path.read_text()


def test_shared_folders_are_never_tightened(tmp_path: Path) -> None:
    """A state folder, journal, key or host database given inside a shared folder (sticky, writable by
    all, like /tmp) leaves that folder as it is — making /tmp 0700 breaks every other program; a
    folder of the user's own given as the state folder is made private as before."""
    from click.testing import CliRunner

    from emulator.cli import main as cli
    from emulator.host.store import HostStore
    from emulator.journal import Journal
    from emulator.keystore import LocalKey
    from hardware.clock import VirtualClock as _Clock

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    own = tmp_path / "own"
    own.mkdir()
    own.chmod(0o755)
    LocalKey.at(shared / "local.key")
    Journal(shared / "journal.sqlite3", clock=_Clock()).close()
    HostStore(shared / "host.sqlite3").close()
    res = CliRunner().invoke(cli, ["inquiry", "--virtual-time", "--state", str(shared)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    res = CliRunner().invoke(cli, ["inquiry", "--virtual-time", "--state", str(own)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(own.stat().st_mode) == 0o700
    for p in shared.iterdir():
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
