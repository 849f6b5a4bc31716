"""A POS terminal as a Locust user: terminals spread over machines with Locust's master and workers.

Needs Locust (``pip install 'posemu[load]'``); import this module only where Locust is installed
(the shipped ``emulator/locustfile.py`` does). Each user is one terminal of the fleet
(:mod:`emulator.host.provision`): its own terminal id and master key, derived from its user number,
so ``posemu host --fleet N`` knows it. On start it signs on (0800 MACed under its master key; the
0810's working keys checked by their check values), then runs the transaction mix — balance inquiries
and purchases with a PIN block under its PIK, every request MACed under its MAK, every answer's MAC
checked — and reverses a purchase whose answer does not come (0400, reason 98) until the host
acknowledges it, as a terminal does. On stop it sends what it still owes.

Every ISO 8583 exchange is reported to Locust as a request of type ``ISO8583`` named by MTI and
processing code (``0800``, ``0200/310000``, ``0200/000000``, ``0400/000000``): Locust's statistics, web
UI, CSV and distribution work as for HTTP. A decline, a wrong MAC or no answer is a failure.

The user speaks to the host over a plain blocking socket (Locust patches it with gevent) through the
sans-IO client session of :mod:`protocol.session`; nothing here uses asyncio.

Options (``locust … --pos-profile cup``; each also from its environment variable):

====================  ==========================  ===============================================
``--pos-profile``     ``POSEMU_LOCUST_PROFILE``   ISO 8583 profile: ``cup`` (default) or ``iso87ascii``
``--pos-mix``         ``POSEMU_LOCUST_MIX``       transaction mix, default ``balance=70,purchase=30``
``--pos-prefix``      ``POSEMU_LOCUST_PREFIX``    terminal-id prefix, default ``FLT``
``--pos-card``        ``POSEMU_LOCUST_CARD``      card profile the fleet cards copy, default ``cup_debit``
``--pos-stride``      ``POSEMU_LOCUST_STRIDE``    terminal numbers per worker, default 1000: worker *w*'s
                                                  *k*-th user is terminal ``w * stride + k``
``--pos-timeout``     ``POSEMU_LOCUST_TIMEOUT``   seconds to wait for an answer, default 10
====================  ==========================  ===============================================

``posemu host --fleet N`` must know every terminal number used (workers × stride at most).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import socket
import time
from typing import Any

from locust import User, between, events, task

from emulator.demo import DEMO_MID, DEMO_TMK
from emulator.host.provision import FLEET_PREFIX, fleet_card, fleet_tid, fleet_tmk
from hardware.cards.profiles import load_profile
from protocol.errors import PosemuError, ProtocolError
from protocol.iso import Message
from protocol.keys import KeyScheme, WorkingKeys, parse_field62
from protocol.pinblock import encrypt_pinblock
from protocol.sansio import NEED_DATA
from protocol.session import ClientSession, MacStatus, ResponseReceived, check_mac
from protocol.specs import Profile, get_profile
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

_OPTIONS = (("--pos-profile", "POSEMU_LOCUST_PROFILE", "cup"),
            ("--pos-mix", "POSEMU_LOCUST_MIX", "balance=70,purchase=30"),
            ("--pos-prefix", "POSEMU_LOCUST_PREFIX", FLEET_PREFIX),
            ("--pos-card", "POSEMU_LOCUST_CARD", "cup_debit"),
            ("--pos-stride", "POSEMU_LOCUST_STRIDE", "1000"),
            ("--pos-timeout", "POSEMU_LOCUST_TIMEOUT", "10"))
_KINDS = ("balance", "purchase")
_numbers = itertools.count(1)
ACKED = frozenset({"00", "25", "12"})      # a reversal the host took (or had nothing to reverse)


def _options(parser: Any) -> None:
    for flag, env, default in _OPTIONS:
        parser.add_argument(flag, type=str, env_var=env, default=default, include_in_web_ui=False,
                            help=f"posemu terminal: see emulator/locust_user.py (default {default})")


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``balance=70,purchase=30`` → [(kind, weight)]; kinds: balance, purchase.

    >>> parse_mix("balance=3,purchase=1")
    [('balance', 3.0), ('purchase', 1.0)]
    """
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, _, weight = item.partition("=")
        if kind not in _KINDS:
            raise ProtocolError(f"--pos-mix: unknown kind {kind!r}; available: {', '.join(_KINDS)}")
        out.append((kind, float(weight or 1)))
    if not out or sum(w for _, w in out) <= 0:
        raise ProtocolError("--pos-mix needs a kind with a weight > 0")
    return out


class IsoFailure(Exception):
    """What Locust shows for a failed exchange (a decline, a bad MAC, no answer)."""


class PosTerminal:
    """One terminal's conversation with its host over a blocking socket (gevent-cooperative under Locust)."""

    def __init__(self, host: str, port: int, profile: Profile, *, tid: str, tmk: bytes, card: CardData, pin: str,
                 timeout: float, fire: Any) -> None:
        self.host, self.port, self.profile = host, port, profile
        self.ids = TerminalIds(tid, DEMO_MID, profile.default_header)
        self.tmk = tmk
        self.card = card
        self.pin = pin
        self.timeout = timeout
        self.fire = fire
        self.keys: WorkingKeys | None = None
        self.stan = random.Random(tid).randrange(1, 900_000)
        self.sock: socket.socket | None = None
        self.session = ClientSession(profile)
        self.owed: list[Message] = []            # purchases whose outcome is unknown: to reverse

    def _next_stan(self) -> str:
        self.stan = self.stan % 999_999 + 1
        return f"{self.stan:06d}"

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.session = ClientSession(self.profile)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def exchange(self, msg: Message, mak: bytes | None) -> Message | None:
        """Send ``msg``, wait for its answer; report it to Locust. None: no usable answer."""
        proc = msg.get(3)
        name = msg.mti + (f"/{proc}" if isinstance(proc, str) else "")
        t0 = time.perf_counter()
        resp: Message | None = None
        error: Exception | None = None
        length = 0
        try:
            sock = self._connect()
            sock.sendall(self.session.send(msg, mak=mak))
            deadline = t0 + self.timeout
            while resp is None:
                ev = self.session.next_event()
                if ev is NEED_DATA:
                    sock.settimeout(max(0.001, deadline - time.perf_counter()))
                    data = sock.recv(65536)
                    if not data:
                        raise IsoFailure("the host closed the connection")
                    self.session.receive_data(data)
                    continue
                if isinstance(ev, ResponseReceived):
                    resp, length = ev.response, len(ev.raw)
                    if self.keys is not None and ev.response.mti != "0810":
                        status = check_mac(ev.response, ev.raw, self.profile, self.keys.mak)
                        if status is not MacStatus.OK:
                            resp = None
                            raise IsoFailure(f"response MAC {status.value}")
        except (OSError, PosemuError, IsoFailure) as e:
            error = e if isinstance(e, IsoFailure) else IsoFailure(f"{type(e).__name__}: {e}")
            self.session.forget(msg)
            self.close()
        if resp is not None:
            rc = resp.get(39)
            ok = rc in ACKED if msg.mti == "0400" else rc == "00"
            if not ok:
                error = IsoFailure(f"response code {rc!r}")
        self.fire(request_type="ISO8583", name=name, response_time=(time.perf_counter() - t0) * 1000,
                  response_length=length, exception=error, context={"tid": self.ids.tid})
        return resp

    def sign_on(self) -> bool:
        req = sign_on_request(self.profile, self.ids, stan=self._next_stan())
        resp = self.exchange(req, self.tmk)
        if resp is None or resp.get(39) != "00":
            return False
        try:
            self.keys = parse_field62(self.tmk, key_block(resp), KeyScheme.DOUBLE)
        except PosemuError:
            return False
        return True

    def transaction(self, kind: str, amount: int) -> None:
        if self.keys is None and not self.sign_on():
            return
        self.send_reversals()
        keys = self.keys
        assert keys is not None
        block = encrypt_pinblock(self.pin, self.card.pan, keys.pik)
        txn = TxnType.PURCHASE if kind == "purchase" else TxnType.BALANCE
        req = financial_request(self.profile, self.ids, txn, self.card, stan=self._next_stan(), now=dt.datetime.now(),
                                amount=amount if txn is TxnType.PURCHASE else None, pin_block=block)
        resp = self.exchange(req, keys.mak)
        if txn is TxnType.PURCHASE and resp is None:
            self.owed.append(req)         # unknown outcome: the purchase is reversed
            self.send_reversals()
        elif resp is not None and resp.get(39) in ("77", "A0"):
            self.keys = None              # the host no longer takes our keys: sign on again

    def send_reversals(self, tries: int = 3) -> None:
        keys = self.keys
        while self.owed and keys is not None and tries > 0:
            tries -= 1
            rev = reversal_request(self.profile, self.owed[0], reason=RC.NO_RESPONSE, ids=self.ids)
            resp = self.exchange(rev, keys.mak)
            if resp is not None and resp.get(39) in ACKED:
                self.owed.pop(0)


class PosTerminalUser(User):
    """A POS terminal of the fleet (see the module docstring). ``locust -f emulator/locustfile.py``."""

    abstract = True
    wait_time = between(0.5, 2.0)             # the next customer at the counter

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        env = {flag: os.environ.get(var, default) for flag, var, default in _OPTIONS}

        def get(name: str, default: str) -> str:
            return str(getattr(opts, name, default)) if opts is not None else default
        profile = get_profile(get("pos_profile", env["--pos-profile"]))
        self.mix = parse_mix(get("pos_mix", env["--pos-mix"]))
        runner = environment.runner
        stride = int(get("pos_stride", env["--pos-stride"]))
        worker = int(getattr(runner, "worker_index", 0) or 0)
        self.number = worker * stride + next(_numbers)
        prefix = get("pos_prefix", env["--pos-prefix"])
        tid = fleet_tid(self.number, prefix)
        base = load_profile(get("pos_card", env["--pos-card"]))
        card = fleet_card(base, self.number)
        data = CardData(card.pan, EntryMode.SWIPE, card.expiry, card.track2, service_code=card.service_code)
        host, port = _hostport(self.host or "")
        self.rng = random.Random(tid)
        self.terminal = PosTerminal(host, port, profile, tid=tid, tmk=fleet_tmk(tid, DEMO_TMK), card=data,
                                    pin=card.pin, timeout=float(get("pos_timeout", env["--pos-timeout"])),
                                    fire=environment.events.request.fire)

    def on_start(self) -> None:
        self.terminal.sign_on()

    def on_stop(self) -> None:
        self.terminal.send_reversals(tries=5)
        self.terminal.close()

    @task
    def transact(self) -> None:
        kinds = [k for k, _ in self.mix]
        kind = self.rng.choices(kinds, weights=[w for _, w in self.mix])[0]
        self.terminal.transaction(kind, self.rng.randint(100, 20_000))


def _hostport(text: str) -> tuple[str, int]:
    """``--host`` as ``HOST:PORT`` or ``tcp://HOST:PORT``.

    >>> _hostport("tcp://127.0.0.1:5000"), _hostport("[::1]:5000")
    (('127.0.0.1', 5000), ('::1', 5000))
    """
    rest = text.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ProtocolError(f"Locust --host {text!r}: give the ISO 8583 host as HOST:PORT or tcp://HOST:PORT")
    return host.strip("[]"), int(port)
