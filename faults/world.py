"""The world a fault run happens in, built for one :class:`~faults.injectors.Plan`.

:class:`Run` builds it on the given clock: the bundled host (a real asyncio TCP server on 127.0.0.1,
SQLite) or the user's host, the fault proxy on the path to it, the resolver, the reader backend (sim,
serial pty, PC/SC through vpcd) wrapped by the fault reader, the environment, the terminal's own clock,
the terminal and its journal; the faults are attached through the seam (:mod:`faults.seam`). It scores
which faults struck (:mod:`faults.scoring`) and closes it all again.

:func:`base_config` sets the terminal configuration runs start from. :mod:`faults.runner` makes the
plan, runs the steps in this world and checks what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
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
from faults.card import StripeOverride, truncated_stripe
from faults.environment import Environment, SkewedClock
from faults.injectors import Plan, Points
from faults.instruments import Sheet
from faults.network import FaultProxy, FaultyResolver, LinkFaults
from faults.reader import FaultyReader
from faults.scoring import what_struck
from faults.seam import Injection
from hardware.cards.profiles import CardProfile, load_profile
from hardware.clock import Clock
from hardware.ports import CardReader, VirtualCard
from hardware.registry import open_reader
from hardware.sim import SimReader, card_for_profile
from protocol import keys as keymod
from protocol.errors import ConfigError

HOST_NAME = "acquirer.example"
"""The name the terminal is configured with: resolved (through the fault point) to the path to the host."""


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
        a refused host a request). See :func:`faults.scoring.what_struck`."""
        if self._struck is not None:
            return dict(self._struck)
        trace = list(self.rig.trace) if self.rig is not None else []
        return what_struck(self.injection, trace, self.points, self.proxy, self.resolver, self.requests)

    def freeze_struck(self) -> None:
        """Take :meth:`struck` now (before the technician's readings add traffic of their own)."""
        self._struck = None
        self._struck = self.struck()

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

