"""Run faults through the real stack and check what happened.

For a set of :class:`~faults.model.FaultSpec` s the runner builds the whole world — bundled host
(real asyncio TCP server on 127.0.0.1, SQLite) or the user's host, the fault proxy on the path, the
resolver, the reader backend (sim, serial pty, PC/SC) wrapped by the fault reader, the environment,
the terminal's clock, terminal and journal — on the given clock, attaches the faults through the
seam (:mod:`faults.seam`), runs the steps (sign-on, balance inquiry, purchase, crash and
restart…), takes the technician's readings (:mod:`faults.instruments`) and diagnoses
(:mod:`faults.diagnose`). For a catalogue preset it then checks:

* **screens** — the expected message codes appear, in order;
* **outcome** — approved or not, as expected;
* **diagnosis** — exactly the expected cause groups are named (the first of them on top), from the
  trace and the readings only;
* **journal** — no transaction lost or duplicated, none left pending, every unknown purchase
  reversed and acknowledged; what the preset says the journal must show;
* **money** — the cardholder's balance at the host moved exactly by the approved, unreversed
  purchases (B20: a failed transaction leaves the cardholder unharmed);
* **evidence** — for mild faults, the evidence code of the recovered errors is in the trace.

Every run is bounded: each step has a deadline on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emulator.app import Rig, fit_bundled_host, open_rig
from emulator.config import TerminalConfig
from emulator.demo import DEMO_TMK
from emulator.host.logic import seed_demo
from emulator.host.rules import HostRules
from emulator.host.server import HostServer
from emulator.hostlink import Resolver
from emulator.messages import Msg, Screen
from emulator.ports import CancelPinPad, PinPad, ScriptedPinPad
from emulator.terminal import Outcome
from emulator.trace import Kind
from faults.card import StripeOverride, truncated_stripe
from faults.catalogue import Catalogue, load
from faults.checks import (
    Check,
    RunResult,
    _codes_in,
    check_diagnosis,
    final_outcome,
    journal_checks,
    journal_money,
    subsequence,
)
from faults.diagnose import Diagnosis, diagnose
from faults.environment import Environment, SkewedClock
from faults.grammar import spec_from
from faults.injectors import Plan, Points
from faults.instruments import Sheet, self_test
from faults.model import Fault, FaultSpec, Preset
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.reader import FaultyReader
from faults.seam import Injection
from hardware.cards.profiles import CardProfile, load_profile
from hardware.clock import Clock, VirtualClock
from hardware.ports import CardReader, VirtualCard
from hardware.registry import open_reader
from hardware.sim import SimReader, card_for_profile
from protocol import keys as keymod
from protocol.errors import ConfigError, PosemuError
from protocol.iso import Message

HOST_NAME = "acquirer.example"
"""The name the terminal is configured with: resolved (through the fault point) to the path to the host."""
STEP_DEADLINE_S = 900.0
"""No step of a run takes longer than this on the clock (a deadlock is a failed run, not a hang)."""


@functools.cache
def vpcd_available() -> bool:
    """Is a pcscd with vpcd listening for virtual cards (the test run's private one, or the system's)?

    The test run and ``make bench`` say so in the environment. Otherwise the system's vpcd port is
    probed once per process: a probe sits in vpcd's accept queue (its backlog is 0) until vpcd next
    polls, and a card connecting meanwhile has its SYN dropped — a second lost to TCP's retry."""
    import socket

    if os.environ.get("POSEMU_VPCD_PORT") and os.environ.get("POSEMU_PCSCD_SOCKET"):
        return Path(os.environ["POSEMU_PCSCD_SOCKET"]).exists()
    port = int(os.environ.get("POSEMU_VPCD_PORT", "35963"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


_BASE: contextvars.ContextVar[TerminalConfig | None] = contextvars.ContextVar("posemu_base_config", default=None)


def for_bundled_host(cfg: TerminalConfig) -> TerminalConfig:
    """``cfg`` for a run's own bundled host on 127.0.0.1: its host address, TLS and backup host dropped."""
    return replace(cfg, host=None, dialect=replace(cfg.dialect, tls=None, backup=None)).validate()


@contextlib.contextmanager
def base_config(cfg: TerminalConfig | None) -> Iterator[None]:
    """Run faults on this terminal configuration (``posemu regress --config``, ``inquiry``/``purchase
    --fault`` on the saved terminal.toml) instead of the defaults: the terminal starts from it (faults
    change it as usual) and the bundled host speaks its host dialect, with its terminal id and master
    key. Its host address, TLS and backup host are not used: every run has its own host on 127.0.0.1."""
    if cfg is not None:
        cfg = for_bundled_host(cfg)
    token = _BASE.set(cfg)
    try:
        yield
    finally:
        _BASE.reset(token)


def current_base() -> TerminalConfig | None:
    """The configuration :func:`base_config` set here (``None``: the defaults): to hand to another
    process, which sets it again (``regress`` runs cases in worker processes)."""
    return _BASE.get()


def _base() -> TerminalConfig:
    cfg = _BASE.get()
    return cfg if cfg is not None else TerminalConfig()


def make_plan(specs: Sequence[FaultSpec], *, preset: Preset | None = None, seed: int = 7, card: str | None = None,
              txn: str | None = None, steps: Sequence[str] | None = None, reader_url: str | None = None,
              cfg: TerminalConfig | None = None, amount: int | None = None,
              pin: str | None = None) -> tuple[Plan, Injection]:
    """The world before power-on for these faults, and the injection that will arm them. The terminal
    starts from ``cfg``, else from the base configuration (:func:`base_config`), else the defaults."""
    base = cfg or _base()
    if preset is not None and preset.config:
        conf = dict(preset.config)
        timeouts = conf.pop("timeouts", None)
        if timeouts:
            base = replace(base, timeouts=replace(base.timeouts, **{k: float(v) for k, v in timeouts.items()}))
        base = replace(base, **conf)
    first = specs[0].fault if specs else None
    plan = Plan(cfg=base, card=card or (preset.card if preset else None) or (first.card if first else "demo"),
                txn=txn or (preset.txn if preset else None) or (first.txn if first else "balance"), seed=seed)
    if amount is not None:
        plan.amount = amount
    if pin is not None:
        plan.habits.pins = [pin]
    injection = Injection(list(specs), seed=seed)
    injection.prepare(plan)
    if preset is not None and preset.steps:
        plan.steps = list(preset.steps)
    if steps:
        plan.steps = list(steps)
    if preset is not None and preset.reader:
        plan.reader_url = preset.reader
    if reader_url:
        plan.reader_url = reader_url
    return plan, injection


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


class Run:
    """One world: host, proxy, resolver, reader, environment, clock, terminal."""

    def __init__(self, plan: Plan, injection: Injection, clock: Clock, state: Path, *,
                 external_host: str | None = None, base: TerminalConfig | None = None) -> None:
        self.plan = plan
        self.base = base or _base()               # what the bundled host serves (before presets and faults)
        self.injection = injection
        self.clock = clock
        self.tclock = SkewedClock(clock)          # the terminal's own real-time clock
        self.environment = Environment()
        self.state = state
        self.external_host = external_host
        self.host: HostServer | None = None
        self.proxy: FaultProxy | None = None
        self.resolver: FaultyResolver | None = None
        self.rig: Rig | None = None
        self.extras: list[Any] = []
        self.profile: CardProfile = self._profile()
        self.requests: list[tuple[float, str]] = []        # (clock time, MTI) the bundled host decoded
        self._struck: dict[str, bool] | None = None
        self.pan = self.profile.pan
        self.balance_before = 0
        self.screens: list[str] = []
        self.vpcd: Any = None
        self.points: Points | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.display: Callable[[Screen], None] | None = None
        if plan.needs_bundled_host and external_host is not None:
            names = [s.id for s in injection.specs if s.fault.injector in ("host-rule", "host-state")]
            raise ConfigError(f"fault {', '.join(names)} acts on the bundled host; it cannot run against --host "
                              f"{external_host}")

    def _profile(self) -> CardProfile:
        prof = load_profile(self.plan.card)
        for change in self.plan.profile_changes:
            prof = change(prof)
        return prof

    def card(self) -> VirtualCard:
        card = card_for_profile(self.profile)
        if self.plan.stripe_keep is not None:
            card = StripeOverride(card, truncated_stripe(card, self.plan.stripe_keep))
        for wrap in self.plan.card_wrappers:
            card = wrap(card)
        return card

    async def start_host(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        if self.external_host is not None:
            host, _, port = self.external_host.rpartition(":")
            target = (host.strip("[]") or "127.0.0.1", int(port))
        else:
            host_cfg = self._host_config()
            self.host = await HostServer.start(host_cfg.wire_profile(), clock=self.clock, db=":memory:",
                                               rules=HostRules(seed=self.plan.seed), seed=False)
            self.host.observers.append(lambda m: self.requests.append((self.clock.now(), m.mti)))
            # PIN hashing is slow on purpose: only this card (and no load-test terminals)
            seed_demo(self.host.store, profiles=[self.plan.card], load_terminals=False)
            fit_bundled_host(self.host, host_cfg, tmk=True)          # its terminal, keys and dialect
            if self.profile.pan != load_profile(self.plan.card).pan:
                self.host.store.add_card(self.profile)
            for change in self.plan.host_changes:
                change(self.host.store, self.pan)
            card = self.host.store.card(self.pan)
            self.balance_before = self.host.store.balance(card.account_id)[0] if card else 0
            target = self.host.address
        self.proxy = await FaultProxy.start(target, LinkFaults(seed=self.plan.seed), self.clock,
                                            external=self.external_host is not None)

    def _host_config(self) -> TerminalConfig:
        """What the bundled host serves and speaks: the run's base configuration (the ``cfg`` the run
        started from, else :func:`base_config`'s, else the defaults) — its host dialect, terminal id and
        master key, whatever a fault does to the terminal's — on the profile the terminal *should* use (a
        preset may choose it; a profile fault changes only the terminal)."""
        base = self.base
        changed = any(s.fault.injector == "config" and s.values.get("profile") not in (None, "", "same")
                      for s in self.injection.specs)
        return base if changed else replace(base, profile=self.plan.cfg.profile)

    def _through_proxy(self, cfg: TerminalConfig) -> TerminalConfig:
        """The terminal's dialect on the run's one path (the fault proxy): no backup host (it would go
        round the faults); TLS only to the user's host (the bundled host speaks none), the certificate
        checked against that host's name, not the name the run resolves to the proxy."""
        d = cfg.dialect
        tls = d.tls
        if tls is not None:
            if self.external_host is None:
                tls = None
            elif tls.server_name is None:
                tls = replace(tls, server_name=self.external_host.rpartition(":")[0].strip("[]") or "127.0.0.1")
        if tls is d.tls and d.backup is None:
            return cfg
        return replace(cfg, dialect=replace(d, tls=tls, backup=None))

    def host_address(self) -> str:
        if self.plan.host_override:
            return self.plan.host_override
        assert self.proxy is not None
        return f"{HOST_NAME}:{self.proxy.port}"

    def sheet(self) -> Sheet:
        """The acquirer's parameter and key sheets for this terminal."""
        if self.host is None:
            return Sheet(host=f"{HOST_NAME}:{self.proxy.port}" if self.proxy else None)
        term = self.host.store.terminal(self.plan.cfg.terminal_id)
        # the profile the host's configuration names (a dialect's own name is no message specification)
        return Sheet(host=f"{HOST_NAME}:{self.proxy.port}" if self.proxy else None, profile=self._host_config().profile,
                     min_version=term.min_version if term else None,
                     tmk_kcv=keymod.kcv(term.tmk) if term else keymod.kcv(DEMO_TMK))

    async def _reader(self) -> CardReader:
        plan = self.plan
        url = plan.reader_url
        if url == "serial":
            from hardware.msr605_device import Msr605Device, Msr605PtyServer
            from hardware.msr605_stripe import MagStripe

            server = Msr605PtyServer(Msr605Device(), clock=self.clock, card=MagStripe.from_iso(self.card().stripe),
                                     auto_swipe=0.5)
            path = await server.start()
            self.extras.append(server)
            if plan.hold_port:
                from hardware.links import SerialLink

                holder = SerialLink(path, clock=self.clock)        # another program holds the port
                await holder.open()
                self.extras.append(holder)
            reader: CardReader = open_reader(f"serial://{path}", clock=self.clock)
        elif url == "vpcd":
            # a real PC/SC stack: pyscard → pcscd → vpcd → our virtual card (posemu card serve)
            from hardware.vpcd import VpcdClient

            port = int(os.environ.get("POSEMU_VPCD_PORT", "35963"))
            self.vpcd = VpcdClient(self.card(), clock=self.clock, port=port, retry_interval=0.02)
            reader = open_reader("pcsc://Virtual PCD 00 00?poll=0.2", clock=self.clock)
        elif url:
            reader = open_reader(url, clock=self.clock)
        else:
            sim = SimReader(self.clock)
            sim.default_card = self.card()
            reader = sim
        return FaultyReader(reader, None, self.clock, self.environment)

    async def open_terminal(self) -> Rig:
        plan = self.plan
        assert self.proxy is not None
        proxy_port = self.proxy.port

        async def to_proxy(host: str, port: int) -> list[tuple[str, int]]:
            return [("127.0.0.1", proxy_port)] if host == HOST_NAME else [(host, port)]

        resolver: Resolver = to_proxy
        self.resolver = self.resolver or FaultyResolver(resolver, self.clock)
        cfg = self._through_proxy(replace(plan.cfg, host=self.host_address()))
        pins = [p or self.profile.pin for p in (plan.habits.pins or [self.profile.pin])]
        with _env("PCSCLITE_CSOCK_NAME", None if plan.pcsc_service else str(self.state / "no-pcscd.comm")):
            reader = await self._reader()
        # Under a real PC/SC stack the reader is watched by a blocking call in a thread, so the virtual
        # clock follows real time during the card session: the scripted cardholder types at once there.
        typing = 0.0 if plan.reader_url == "vpcd" else 0.4
        pinpad: PinPad = CancelPinPad() if plan.habits.cancel_pin else ScriptedPinPad(*pins, seconds_per_digit=typing)
        rig = await open_rig(cfg, clock=self.tclock, state_dir=self.state / "terminal", pinpad=pinpad,
                             reader=reader, resolver=self.resolver,
                             # the terminal's peer is the fault proxy, in this process; the proxy gives an
                             # external host real time to answer (and a congested path none)
                             external_host=False)
        h = plan.habits
        if rig.cardholder is not None:
            rig.cardholder.prefer_chip = h.prefer_chip
            rig.cardholder.removes_card = h.removes_card
            rig.cardholder.pulls_card_at = h.pulls_card_at
            if h.swipe is not None:
                from hardware.magstripe import swipe_params

                rig.cardholder.swipe_params = swipe_params(h.swipe, seed=plan.seed)
        rig.terminal.add_display(lambda sc: self.screens.append(sc.code))
        if self.vpcd is not None:
            rig.terminal.add_display(self._vpcd_cardholder)
        if self.display is not None:
            rig.terminal.add_display(self.display)
        self.rig = rig
        assert isinstance(reader, FaultyReader)
        self.points = Points(environment=self.environment, clock=self.tclock, reader=reader, link=self.proxy,
                             resolver=self.resolver, host=self.host, journal=rig.journal, card_pan=self.pan,
                             terminal_id=cfg.terminal_id)
        self.injection.attach(self.points, rig.trace)
        return rig

    def _vpcd_cardholder(self, screen: Screen) -> None:
        """A person at a PC/SC reader: inserts when asked, takes the card out and back in after a chip
        error, removes it at the end."""
        vpcd = self.vpcd

        async def reinsert() -> None:
            await vpcd.remove()
            await self.clock.sleep(0.6)        # out long enough for the reader's poll to see it
            await vpcd.insert()

        action = {Msg.INSERT_OR_SWIPE: vpcd.insert, Msg.INSERT_CHIP: vpcd.insert, Msg.READER_ERROR: reinsert,
                  Msg.REMOVE_CARD: vpcd.remove}.get(screen.msg)
        if action is not None:
            t = asyncio.ensure_future(action())
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    def struck(self) -> dict[str, bool]:
        """Scoring only (never for the diagnosis): which faults changed anything in this run — their
        injector acted, or what they change was reached (a habit needs its moment, a stripe a swipe,
        a refused host a request)."""
        from faults.injectors import HostRuleAction, HostStateAction

        if self._struck is not None:
            return dict(self._struck)
        trace = list(self.rig.trace) if self.rig is not None else []
        screens = {e.what for e in trace if e.kind is Kind.SCREEN}
        codes = {e.data.get("code") for e in trace}
        swiped = any(e.kind is Kind.READER and e.what == "swipe read" for e in trace)
        chip = any(e.kind is Kind.APDU for e in trace) or bool(codes & {"reader.atr_timeout", "reader.card_mute",
                                                                        "chip.fallback", "reader.card_reset"})
        stripe_errors = "SWIPE_AGAIN" in screens or any(isinstance(c, str) and c.startswith("stripe.") for c in codes)
        began = any(e.kind is Kind.TXN and e.what == "begin" and e.data.get("txn") not in ("sign_on", "sign_off")
                    for e in trace)
        signed = any(e.kind is Kind.TXN and e.what == "begin" and e.data.get("txn") == "sign_on" for e in trace)
        out: dict[str, bool] = {}
        pts = self.points
        for spec in self.injection.specs:
            inj, v = spec.fault.injector, spec.values
            armed = spec in self.injection.ever
            if inj in ("reader", "environment"):
                hits = pts.reader.hits if pts and pts.reader else {}
                hit = armed and any(hits.get(m, 0) for m in _mechanisms(v))
                if inj == "environment" and _num(v, "field_v") > 0 and swiped and stripe_errors:
                    hit = True                          # the field reaches the magstripe head too
            elif inj == "link":
                refused = v.get("refuse") is True and "tcp.refused" in codes
                hit = armed and (bool(self.proxy and self.proxy.struck) or refused)
            elif inj == "dns":
                hit = armed and bool(self.resolver and self.resolver.struck)
            elif inj == "host-rule":
                hit = any(r.applied > 0 for a in self.injection.actions_of(spec) if isinstance(a, HostRuleAction)
                          for r in a.rules)
            elif inj == "host-state":
                times = [a.armed_at for a in self.injection.actions_of(spec)
                         if isinstance(a, HostStateAction) and a.armed_at is not None]
                hit = bool(times) and any(t >= min(times) and mti in ("0100", "0200", "0220")
                                          for t, mti in self.requests)
            elif inj == "stripe":
                hit = swiped and stripe_errors
            elif inj == "chip":
                hit = chip if v.get("declines_after_online") is not True else \
                    "chip.declined_after_online" in codes
            elif inj == "habits":
                hit = self._habit_struck(v, screens, swiped and stripe_errors)
            elif inj == "clock":
                hit = armed and "card.expired_local" in codes
            elif inj == "journal":
                hit = armed and began
            elif inj == "config":
                hit = signed or began
            elif inj == "steps":
                hit = self._steps_struck(str(v.get("steps", "")), codes)
            else:                                   # port-busy, pcsc: they shape the whole run
                hit = True
            out[spec.id] = bool(hit)
        return out

    def freeze_struck(self) -> None:
        """Take :meth:`struck` now (before the technician's readings add traffic of their own)."""
        self._struck = None
        self._struck = self.struck()

    @staticmethod
    def _steps_struck(steps: str, codes: set[Any]) -> bool:
        """Operator steps change something when their effect happened: a crash that left a purchase
        to recover, a transaction before the sign-on, wrong operator passwords."""
        if "crash_purchase" in steps:
            return "journal.recovered" in codes
        if "operator:" in steps:
            return bool(codes & {"operator.wrong_password", "terminal.locked"})
        if not steps.startswith("sign_on"):
            return "terminal.not_signed_on" in codes
        return True

    @staticmethod
    def _habit_struck(v: dict[str, Any], screens: set[str], swiped: bool) -> bool:
        if any(k in v for k in ("speed_ips", "skew_deg")):
            return swiped
        if v.get("wrong_pins") or v.get("cancel_pin") is True:
            return "ENTER_PIN" in screens
        moments = {"reading": "READING_CARD", "pin": "ENTER_PIN", "online": "PROCESSING"}
        moment = moments.get(str(v.get("pulls_card_at")))
        if moment is not None:
            return moment in screens
        if v.get("removes_card") is False:
            return "REMOVE_CARD" in screens
        return True

    async def close(self) -> None:
        self.injection.undo()
        if self.rig is not None:
            await self.rig.close()
        if self.vpcd is not None:
            with contextlib.suppress(Exception):
                await self.vpcd.remove()
        for x in reversed(self.extras):
            with contextlib.suppress(Exception):
                await x.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.host is not None:
            await self.host.close()


def _num(values: dict[str, Any], key: str) -> float:
    x = values.get(key, 0)
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0.0


def _mechanisms(v: dict[str, Any]) -> set[str]:
    """How a reader or environment fault's settings can change what happens (the reader's
    :attr:`~faults.reader.FaultyReader.hits`)."""
    out: set[str] = set()
    if _num(v, "contact_ohms") > 1.0 or _num(v, "dirt_per_insert_ohms") > 0 or _num(v, "wear_per_insert_ohms") > 0:
        out |= {"brownout", "parity"}
    if _num(v, "bounce_probability") > 0:
        out.add("bounce")
    if ("supply_v" in v and _num(v, "supply_v") < 5.0) or _num(v, "sag_v") > 0 or _num(v, "supply_wear_v") > 0:
        out.add("brownout")
    if v.get("seating") not in (None, "ok"):
        out |= {"seating", "bounce"}
    for flag, mechanism in (("dead", "dead"), ("seat_stuck", "seat"), ("latch_stuck", "latch"),
                            ("sensor_dead", "sensor")):
        if v.get(flag) is True:
            out.add(mechanism)
    if _num(v, "flap_probability") > 0:
        out.add("flap")
    if _num(v, "wtx_s") > 0:
        out.add("wtx")
    if "temperature_c" in v:
        out.add("temperature")
    if _num(v, "field_v") > 0:
        out |= {"emi", "parity"}
    return out


DEFAULT_STEPS = {"balance": ["sign_on", "balance"], "purchase": ["sign_on", "purchase"],
                 # the transaction set: each with the original it needs first (issue 12)
                 "preauth": ["sign_on", "preauth"], "void": ["sign_on", "purchase", "void"],
                 "refund": ["sign_on", "purchase", "refund"], "complete": ["sign_on", "preauth", "complete"],
                 "settle": ["sign_on", "purchase", "settle"], "sign_off": ["sign_on", "sign_off"]}
_ACTIONABLE = {"void": ("purchase", "preauth", "completion"), "refund": ("purchase", "completion"),
               "complete": ("preauth",)}


async def _steps(run: Run, outcomes: list[Outcome]) -> None:
    plan = run.plan
    rig = await run.open_terminal()
    steps = plan.steps or DEFAULT_STEPS.get(plan.txn, ["sign_on", plan.txn])
    for i, step in enumerate(steps, start=1):
        run.injection.step(i)
        name, _, arg = step.partition(":")
        t = rig.terminal
        try:
            async with asyncio.timeout(STEP_DEADLINE_S):
                out = await _step(run, rig, name, arg)
        except TimeoutError:
            raise PosemuError(f"step {i} ({step}) did not finish within {STEP_DEADLINE_S:g} s: a deadlock") from None
        rig = run.rig or rig
        if out is not None:
            outcomes.append(out)
            if name == "sign_on" and not out.approved and i < len(steps) and steps[i].split(":")[0] != "sign_on" \
                    and not plan.steps:
                break          # a failed sign-on is the result: nothing runs after it
        del t


async def _step(run: Run, rig: Rig, name: str, arg: str) -> Outcome | None:
    t = rig.terminal
    plan = run.plan
    if name == "sign_on":
        return await t.sign_on()
    if name == "sign_off":
        return await t.sign_off()
    if name == "balance":
        return await t.balance_inquiry()
    if name == "purchase":
        return await t.purchase(int(arg) if arg else plan.amount)
    if name == "preauth":
        return await t.preauth(int(arg) if arg else plan.amount)
    if name in _ACTIONABLE:
        # ``void[:journal id]``, ``refund[:amount]``, ``complete[:amount]``: the last original that fits
        orig = rig.journal.get(int(arg)) if name == "void" and arg else rig.journal.last(_ACTIONABLE[name])
        if orig is None:
            raise PosemuError(f"scenario step {name!r}: no transaction to act on in the journal")
        if name == "void":
            return await t.void(orig.id)
        if name == "refund":
            return await t.refund(int(arg) if arg else orig.amount, original_id=orig.id)
        return await t.complete(orig.id, int(arg) if arg else None)
    if name == "settle":
        return await t.settle()
    if name == "operator":
        t.operator_login(arg)
        return None
    if name == "reversals":
        await t.send_pending_reversals()
        return None
    if name == "clean":
        r = rig.reader
        if isinstance(r, FaultyReader):
            r.clean()
        return None
    if name == "crash_purchase":
        # the application dies right after the purchase request left: the task is killed. If the request
        # never reaches the host (the link is down), the purchase ends by itself first.
        sent = asyncio.Event()

        def on_request(m: Message, ev: asyncio.Event = sent) -> None:
            if m.mti == "0200":
                ev.set()

        if run.host is not None:
            run.host.observers.append(on_request)
        task = asyncio.ensure_future(t.purchase(int(arg) if arg else plan.amount))
        waiter = asyncio.ensure_future(sent.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            return task.result() if not task.cancelled() and task.exception() is None else None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, PosemuError):
            await task
        # what the operator saw: the terminal died in the middle of a purchase
        return Outcome("purchase", False, Msg.SYSTEM_ERROR, error="the application stopped in the middle of a purchase")
    if name == "restart":
        await rig.terminal.close()
        rig.journal.close()
        run.rig = None
        await run.open_terminal()
        return None
    raise PosemuError(f"unknown scenario step {name!r}")


@dataclass(slots=True)
class Ran:
    """A finished :func:`run_specs`: the run (the caller closes it), its outcomes, the diagnosis and the
    readings."""

    run: Run
    outcomes: list[Outcome]
    diagnosis: Diagnosis
    readings: dict[str, Any]


async def run_specs(specs: Sequence[FaultSpec], *, clock: Clock, state: Path, preset: Preset | None = None,
                    seed: int = 7, card: str | None = None, txn: str | None = None,
                    steps: Sequence[str] | None = None, reader_url: str | None = None,
                    cfg: TerminalConfig | None = None, amount: int | None = None, external_host: str | None = None,
                    display: Callable[[Screen], None] | None = None, self_test_too: bool = True,
                    pin: str | None = None) -> Ran:
    """Build the world for ``specs``, run its steps, take the readings and diagnose. The caller closes
    ``ran.run``."""
    plan, injection = make_plan(specs, preset=preset, seed=seed, card=card, txn=txn, steps=steps,
                                reader_url=reader_url, cfg=cfg, amount=amount, pin=pin)
    run = Run(plan, injection, clock, state, external_host=external_host,
              base=for_bundled_host(cfg) if cfg is not None else None)
    run.display = display
    outcomes: list[Outcome] = []
    await run.start_host()
    await _steps(run, outcomes)
    rig = run.rig
    if rig is None:
        raise PosemuError("the run left no terminal running")
    run.freeze_struck()
    readings = await self_test(rig, run.points, run.sheet(), seed=seed) if self_test_too else {}
    return Ran(run, outcomes, diagnose(list(rig.trace), outcomes, readings), readings)


def run_journal_checks(run: Run, preset: Preset) -> list[Check]:
    """:func:`faults.checks.journal_checks` on a run's terminal journal and bundled host."""
    assert run.rig is not None
    return journal_checks(run.rig.journal, preset, store=run.host.store if run.host is not None else None,
                          pan=run.pan, balance_before=run.balance_before)


async def run_preset(fault: Fault, preset: Preset, *, clock: Clock, state: Path, seed: int = 7,
                     catalogue: Catalogue | None = None, extra: Sequence[FaultSpec] = ()) -> RunResult:
    cat = catalogue or load()
    spec = spec_from(fault.id, cat, preset=preset.name)
    result = RunResult(fault, preset, [spec, *extra])
    t0_wall, t0_virtual = time.perf_counter(), clock.now()
    if preset.reader == "vpcd" and not vpcd_available():
        result.skipped = "needs pcscd with the vsmartcard vpcd driver (started by `make test`)"
        return result
    ran: Ran | None = None
    try:
        ran = await run_specs(result.specs, clock=clock, state=state, preset=preset, seed=seed)
        run = ran.run
        rig = run.rig
        assert rig is not None
        result.outcomes, result.diagnosis = ran.outcomes, ran.diagnosis
        result.codes = run.screens
        result.trace = [e.to_json() for e in rig.trace]
        result.struck = run.struck()
        result.checks.append(Check("screens", subsequence(preset.expect, result.codes),
                                   f"expected {list(preset.expect)} in {result.codes}"))
        final = final_outcome(result.outcomes)
        if preset.approved is not None:
            got = final.approved if final else None
            result.checks.append(Check("outcome", got == preset.approved,
                                       f"expected approved={preset.approved}, got {got}"))
        result.checks.append(check_diagnosis(ran.diagnosis, preset.diagnosis))
        result.checks.extend(run_journal_checks(run, preset))
        if preset.evidence:
            seen = _codes_in(list(rig.trace))
            reading = ran.readings.get(preset.evidence)
            ok = preset.evidence in seen or (isinstance(reading, int | float) and reading > 0)
            result.checks.append(Check(f"evidence: {preset.evidence}", ok,
                                       f"reading {reading!r}; codes seen: {sorted(seen)}"))
    except PosemuError as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        if ran is not None:
            await ran.run.close()
    result.wall_s = time.perf_counter() - t0_wall
    result.virtual_s = clock.now() - t0_virtual
    return result


def all_presets(cat: Catalogue, only: list[str] | None = None) -> list[tuple[Fault, Preset]]:
    out = []
    for f in cat.faults.values():
        if only and f.id not in only:
            continue
        for p in f.presets:
            out.append((f, p))
    return out


all_scenarios = all_presets


def run_one(fault: Fault, preset: Preset, state: Path, seed: int = 7) -> RunResult:
    """Run one preset on a fresh virtual clock (blocking)."""
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        return runner.run(run_preset(fault, preset, clock=clock, state=state, seed=seed))


__all__ = ["Check", "Msg", "Ran", "RunResult", "all_presets", "final_outcome", "journal_money", "load", "run_one",
           "run_preset", "run_specs", "subsequence"]
