"""The host simulator over real loopback sockets: every response code, idempotent reversals,
bad input, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import pytest

from emulator.demo import DEMO_MID, DEMO_TID, DEMO_TMK
from emulator.host.rules import HostRule, HostRules
from emulator.host.server import HostServer
from emulator.hostlink import HostLink
from emulator.trace import Trace
from hardware.cards.profiles import CardProfile, parse_profile
from hardware.clock import VirtualClock
from protocol import keys as keymod
from protocol.framing import frame
from protocol.iso import Message
from protocol.pinblock import encrypt_pinblock
from protocol.specs import CUP, ISO87ASCII, PROFILES, Profile
from protocol.txn import (
    RC,
    CardData,
    EntryMode,
    TerminalIds,
    TxnType,
    financial_request,
    key_block,
    parse_balances,
    reversal_request,
    sign_on_request,
)

NOW = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)


def luhn(body: str) -> str:
    """``body`` plus its Luhn check digit."""
    from hardware.cards.profiles import luhn_ok

    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def card(name: str, pan: str, *, expiry: str = "3012", status: str = "active", balance: int = 100_00,
         permissions: tuple[str, ...] = ("balance", "purchase", "reversal")) -> CardProfile:
    return parse_profile({"name": name, "pan": pan, "expiry": expiry, "service_code": "101", "pin": "123456",
                          "account": {"status": status, "balance": balance, "permissions": list(permissions)}},
                         name)


CARDS = {
    "ok": card("ok", luhn("990009000000001")),
    "expired": card("expired", luhn("990009000000002"), expiry="2401"),
    "blocked": card("blocked", luhn("990009000000003"), status="blocked"),
    "restricted": card("restricted", luhn("990009000000004"), status="restricted"),
    "nobalance": card("nobalance", luhn("990009000000005"), permissions=("purchase",)),
    "unknown": card("unknown", luhn("990009000000006")),
}


class Client:
    """A minimal terminal over a real socket: sign on, then send financial requests."""

    def __init__(self, host: HostServer, profile: Profile, clock: VirtualClock, tid: str = DEMO_TID) -> None:
        self.profile = profile
        self.ids = TerminalIds(tid, DEMO_MID, profile.default_header)
        self.link = HostLink("127.0.0.1", host.port, profile, clock=clock, trace=Trace(clock),
                             response_timeout=5)
        self.stan = 0
        self.keys: keymod.WorkingKeys | None = None

    def next_stan(self) -> str:
        self.stan += 1
        return f"{self.stan:06d}"

    async def sign_on(self) -> Message:
        ex = await self.link.exchange(sign_on_request(self.profile, self.ids, stan=self.next_stan()), mak=DEMO_TMK)
        if ex.response.get(39) == "00":
            self.keys = keymod.parse_field62(DEMO_TMK, key_block(ex.response), keymod.KeyScheme.DOUBLE)
        return ex.response

    def request(self, txn: TxnType, c: CardProfile, *, pin: str | None = "123456", amount: int | None = None,
                stan: str | None = None) -> Message:
        assert self.keys is not None
        data = CardData(c.pan, EntryMode.SWIPE, c.expiry, c.track2)
        block = encrypt_pinblock(pin, c.pan, self.keys.pik) if pin else None
        return financial_request(self.profile, self.ids, txn, data, stan=stan or self.next_stan(), now=NOW,
                                 amount=amount, pin_block=block)

    async def send(self, msg: Message, *, mac: bool = True) -> Message:
        """Send a request, MACed under the working MAK (``mac=False``: as it is, a forgery)."""
        assert self.keys is not None
        return (await self.link.exchange(msg, mak=self.keys.mak if mac else None)).response


def run_host(vrun: asyncio.Runner, vclock: VirtualClock, profile: Profile,
             body: Callable[[HostServer, Client], Awaitable[None]], rules: HostRules | None = None) -> HostServer:
    async def main() -> HostServer:
        host = await HostServer.start(profile, clock=vclock, rules=rules, seed=False)
        from emulator.host.logic import seed_demo

        seed_demo(host.store, profiles=[])
        for c in CARDS.values():
            if c.name != "unknown":
                host.store.add_card(c)
        client = Client(host, profile, vclock)
        try:
            await body(host, client)
        finally:
            await client.link.close()
            await host.close()
        return host

    return vrun.run(main())


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_sign_on_then_balance_inquiry(vrun: asyncio.Runner, vclock: VirtualClock, profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        r = await c.sign_on()
        assert r.mti == "0810" and r.get(39) == "00" and r.get(41) == DEMO_TID
        resp = await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))
        assert resp.mti == "0210" and resp.get(39) == "00"
        assert resp.get(11) == "000002" and resp.get(41) == DEMO_TID     # matching fields echoed
        bal = parse_balances(resp.text(54))
        assert bal[-1].amount == 100_00 and bal[-1].currency == "156"

    run_host(vrun, vclock, profile, body)


@pytest.mark.parametrize(("case", "expect"), [
    ("unknown", RC.INVALID_CARD), ("expired", RC.EXPIRED_CARD), ("blocked", RC.INVALID_CARD),
    ("restricted", RC.RESTRICTED_CARD), ("nobalance", RC.NOT_PERMITTED_CARDHOLDER),
])
def test_card_response_codes(vrun: asyncio.Runner, vclock: VirtualClock, case: str, expect: RC) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        resp = await c.send(c.request(TxnType.BALANCE, CARDS[case]))
        assert resp.get(39) == expect.value

    run_host(vrun, vclock, CUP, body)


def test_wrong_pin_then_tries_exceeded(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        codes = [(await c.send(c.request(TxnType.BALANCE, CARDS["ok"], pin="000000"))).get(39) for _ in range(3)]
        assert codes == ["55", "55", "75"]
        # even the right PIN is refused once the try counter is exhausted
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "75"
        assert host.store.card(CARDS["ok"].pan).pin_tries_left == 0  # type: ignore[union-attr]

    run_host(vrun, vclock, CUP, body)


def test_right_pin_resets_the_try_counter(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"], pin="999999"))).get(39) == "55"
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "00"
        assert host.store.card(CARDS["ok"].pan).pin_tries_left == 3  # type: ignore[union-attr]

    run_host(vrun, vclock, CUP, body)


def test_terminal_permissions_mac_and_sign_on(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        # before sign-on: 77
        c.keys = keymod.WorkingKeys(pik=bytes(range(16)), mak=bytes(range(8)))
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "77"
        await c.sign_on()
        good_mak = c.keys.mak
        c.keys = keymod.WorkingKeys(pik=c.keys.pik, mak=bytes.fromhex("1111111111111111"))
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "A0"
        c.keys = keymod.WorkingKeys(pik=c.keys.pik, mak=good_mak)
        term = host.store.terminal(DEMO_TID)
        assert term is not None
        from dataclasses import replace

        host.store.set_terminal(replace(term, permissions=frozenset({"purchase"})))
        assert (await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39) == "58"

    run_host(vrun, vclock, CUP, body)


def test_unknown_terminal_and_invalid_transaction(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        odd = c.request(TxnType.BALANCE, CARDS["ok"]).replace(f3="400000")
        assert (await c.send(odd)).get(39) == "12"
        stranger = c.request(TxnType.BALANCE, CARDS["ok"]).replace(f41="NOBODY01")
        resp = await c.send(stranger)
        assert resp.get(39) == "58"

    run_host(vrun, vclock, CUP, body)


def test_purchase_and_idempotent_reversal(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        pan = CARDS["ok"].pan
        acct = host.store.card(pan).account_id  # type: ignore[union-attr]
        p = c.request(TxnType.PURCHASE, CARDS["ok"], amount=25_00)
        assert (await c.send(p)).get(39) == "00"
        assert host.store.balance(acct)[0] == 75_00
        # the same purchase again (a retransmission) never debits twice
        assert (await c.send(p)).get(39) == "00"
        assert host.store.balance(acct)[0] == 75_00
        rev = reversal_request(CUP, p, reason=RC.NO_RESPONSE, ids=c.ids)
        for _ in range(3):
            assert (await c.send(rev)).get(39) == "00"
        assert host.store.balance(acct)[0] == 100_00               # refunded exactly once
        too_much = c.request(TxnType.PURCHASE, CARDS["ok"], amount=1_000_00)
        assert (await c.send(too_much)).get(39) == "51"
        # reversal of a purchase the host never saw: acknowledged, nothing moves
        ghost = c.request(TxnType.PURCHASE, CARDS["ok"], amount=5_00)
        assert (await c.send(reversal_request(CUP, ghost, reason=RC.NO_RESPONSE, ids=c.ids))).get(39) == "00"
        assert host.store.balance(acct)[0] == 100_00

    run_host(vrun, vclock, CUP, body)


def test_overload_rules_answer_91_96_and_delay(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    rules = HostRules([HostRule.parse("respond:rc=96,mti=0200,count=1"),
                       HostRule.parse("respond:rc=91,mti=0200,first=2,count=1"),
                       HostRule.parse("delay:delay=3,mti=0200,first=3,count=1")])

    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        codes = []
        for _ in range(3):
            t0 = vclock.now()
            codes.append((await c.send(c.request(TxnType.BALANCE, CARDS["ok"]))).get(39))
            took = vclock.now() - t0
        assert codes == ["96", "91", "00"]
        assert took == pytest.approx(3.0, abs=0.05)

    run_host(vrun, vclock, CUP, body, rules)


def test_malformed_frames(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        # MTI readable, body garbage → a 30 response on the same connection
        bad = b"0200" + b"\xff" * 8 + b"zz"
        writer.write(frame(bad))
        n = int.from_bytes(await reader.readexactly(2), "big")
        from protocol.iso import decode

        resp = decode(await reader.readexactly(n), ISO87ASCII)
        assert resp.mti == "0210" and resp.get(39) == "30"
        # unreadable MTI → the connection is closed
        writer.write(frame(b"\x00\x01garbage"))
        assert await reader.read() == b""
        writer.close()
        # broken length header → closed; the server keeps serving others
        r2, w2 = await asyncio.open_connection("127.0.0.1", host.port)
        w2.write(b"\x00\x00")
        assert await r2.read() == b""
        w2.close()
        await c.sign_on()
        assert host.stats.closed_bad_framing == 1 and host.stats.malformed == 2

    run_host(vrun, vclock, ISO87ASCII, body)


def test_many_connections_several_requests_in_flight(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    from emulator.demo import LOAD_TIDS
    from emulator.host.loadgen import run_load
    from emulator.host.logic import seed_demo

    nopin = card("nopin", luhn("990009000000007"))

    async def main() -> None:
        host = await HostServer.start(ISO87ASCII, clock=vclock, seed=False)
        seed_demo(host.store, profiles=[])
        host.store.add_card(nopin, pin_required=False)
        try:
            res = await run_load("127.0.0.1", host.port, ISO87ASCII, tids=LOAD_TIDS[:10], mid=DEMO_MID,
                                 pan=nopin.pan, expiry=nopin.expiry, total=400, concurrency=40)
        finally:
            await host.close()
        assert res.errors == 0
        assert res.received == 400 and res.codes == {"00": 400}
        assert host.stats.requests == 400 and host.stats.connections == 10

    vrun.run(main())
