"""Run fault scenarios through the real stack and check what happened.

For one (fault, scenario) the runner builds the whole setup — bundled host (real asyncio TCP
server on 127.0.0.1, SQLite), optional fault proxy on the path, reader backend (sim, serial pty,
PC/SC) wrapped by the fault injector, terminal, journal — on the given clock, runs the steps
(sign-on, balance inquiry, purchase, crash and restart…), then checks:

* **screens** — the expected message codes appear, in order;
* **outcome** — approved or not, as expected;
* **diagnosis** — :func:`faults.diagnose.diagnose` names the expected cause ids, from what a
  terminal and a technician can see (the trace and the self-test), never from the injected
  parameters;
* **journal** — no transaction lost or duplicated, no entry left pending, every unknown purchase
  reversed and acknowledged; what the fault says the journal must show;
* **money** — the cardholder's balance at the host moved exactly by the approved, unreversed
  purchases (B20: a failed transaction leaves the cardholder unharmed);
* **evidence** — for mild faults, the recovered errors (retransmissions…) really happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emulator.app import Rig, open_rig
from emulator.config import TerminalConfig
from emulator.host.logic import seed_demo
from emulator.host.server import HostServer
from emulator.hostlink import Resolver, system_resolver
from emulator.journal import Entry, Journal, Reversal, Status
from emulator.messages import Msg, Screen
from emulator.ports import CancelPinPad, PinPad, ScriptedPinPad
from emulator.terminal import Outcome
from faults.card import StripeOverride, truncated_stripe
from faults.catalogue import Catalogue, Fault, Scenario, load
from faults.diagnose import Diagnosis, diagnose, self_test
from faults.injectors import INJECTORS, Setup
from faults.network import FaultProxy, failing_resolver, slow_resolver
from faults.reader import FaultyReader
from hardware.cards.profiles import load_profile
from hardware.clock import Clock, VirtualClock
from hardware.ports import CardReader
from hardware.registry import open_reader
from hardware.sim import SimReader, card_for_profile
from protocol.errors import PosemuError
from protocol.iso import Message
from protocol.specs import get_profile


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class RunResult:
    fault: Fault
    scenario: Scenario
    outcomes: list[Outcome] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    diagnosis: Diagnosis | None = None
    checks: list[Check] = field(default_factory=list)
    virtual_s: float = 0.0
    wall_s: float = 0.0
    trace: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None          # why this run could not happen here (e.g. no pcscd)

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None and all(c.ok for c in self.checks)

    @property
    def name(self) -> str:
        return f"{self.fault.id}[{self.scenario.name}]"


def vpcd_available() -> bool:
    """Is a pcscd with vpcd listening for virtual cards (the test run's private one, or the system's)?"""
    import socket

    port = int(os.environ.get("POSEMU_VPCD_PORT", "35963"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def subsequence(expected: tuple[str, ...], seen: list[str]) -> bool:
    it = iter(seen)
    return all(any(code == s for s in it) for code in expected)


def build_setup(fault: Fault, scenario: Scenario, *, seed: int, overrides: dict[str, Any] | None = None) -> Setup:
    """The setup for one catalogue scenario."""
    return combine([(fault, {**scenario.params, **(overrides or {})})], scenario=scenario, seed=seed)


def combine(faults: list[tuple[Fault, dict[str, Any]]], *, scenario: Scenario | None = None, seed: int = 7,
            card: str | None = None, txn: str | None = None, steps: list[str] | None = None,
            reader_url: str | None = None, config: dict[str, Any] | None = None) -> Setup:
    """One setup with several faults active at once (each injector wraps what the previous left)."""
    cfg = TerminalConfig()
    conf = {**(scenario.config if scenario else {}), **(config or {})}
    if conf:
        timeouts = conf.pop("timeouts", None)
        if timeouts:
            cfg = replace(cfg, timeouts=replace(cfg.timeouts, **{k: float(v) for k, v in timeouts.items()}))
        cfg = replace(cfg, **conf)
    first = faults[0][0] if faults else None
    setup = Setup(cfg=cfg, card=card or (scenario.card if scenario else None) or (first.card if first else "demo"),
                  txn=txn or (scenario.txn if scenario else None) or (first.txn if first else "balance"), seed=seed)
    for fault, params in faults:
        INJECTORS[fault.injector](setup, {**fault.defaults(), **params})
    if scenario is not None and scenario.steps:
        setup.steps = list(scenario.steps)
    if steps:
        setup.steps = list(steps)
    if scenario is not None and scenario.reader:
        setup.reader_url = scenario.reader
    if reader_url:
        setup.reader_url = reader_url
    return setup


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
    """One scenario's world: host, proxy, reader, terminal."""

    def __init__(self, setup: Setup, clock: Clock, state: Path) -> None:
        self.setup = setup
        self.clock = clock
        self.state = state
        self.host: HostServer | None = None
        self.proxy: FaultProxy | None = None
        self.rig: Rig | None = None
        self.extras: list[Any] = []
        self.pan = load_profile(setup.card).pan
        self.balance_before = 0
        self.screens: list[str] = []
        self.vpcd: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.display: Callable[[Screen], None] | None = None

    async def start_host(self) -> None:
        s = self.setup
        self.state.mkdir(parents=True, exist_ok=True)
        profile = get_profile("cup")      # the bundled host speaks the terminal's default profile
        self.host = await HostServer.start(profile, clock=self.clock, db=":memory:",
                                           rules=s.host_rules, seed=False)
        seed_demo(self.host.store, profiles=[s.card])     # only what this run uses: PIN hashing is slow on purpose
        for change in s.store_changes:
            change(self.host.store, self.pan)
        card = self.host.store.card(self.pan)
        self.balance_before = self.host.store.balance(card.account_id)[0] if card else 0
        if s.link is not None:
            self.proxy = await FaultProxy.start(self.host.address, s.link, self.clock)

    def host_address(self) -> str:
        s = self.setup
        if s.host_override:
            return s.host_override
        if self.proxy is not None:
            return f"127.0.0.1:{self.proxy.port}"
        assert self.host is not None
        return f"127.0.0.1:{self.host.port}"

    async def _reader(self) -> CardReader:
        s = self.setup
        if s.reader_url and s.reader_url.startswith("serial"):
            from hardware.msr605_device import Msr605Device, Msr605PtyServer

            card = card_for_profile(load_profile(s.card))
            server = Msr605PtyServer(Msr605Device(), clock=self.clock, stripe=card.stripe, auto_swipe=0.5)
            path = await server.start()
            self.extras.append(server)
            if s.hold_port:
                from hardware.links import SerialLink

                holder = SerialLink(path, clock=self.clock)        # another program holds the port
                await holder.open()
                self.extras.append(holder)
            reader: CardReader = open_reader(f"serial://{path}", clock=self.clock)
        elif s.reader_url == "vpcd":
            # a real PC/SC stack: pyscard → pcscd → vpcd → our virtual card (posemu card serve)
            from hardware.vpcd import VpcdClient

            port = int(os.environ.get("POSEMU_VPCD_PORT", "35963"))
            self.vpcd = VpcdClient(card_for_profile(load_profile(s.card)), clock=self.clock, port=port)
            reader = open_reader("pcsc://Virtual PCD 00 00?poll=0.2", clock=self.clock)
        elif s.reader_url:
            reader = open_reader(s.reader_url, clock=self.clock)
        else:
            sim = SimReader(self.clock)
            card = card_for_profile(load_profile(s.card))
            if s.stripe_keep is not None:
                card = StripeOverride(card, truncated_stripe(card, s.stripe_keep))
            sim.default_card = card
            reader = sim
        if s.reader_faults is not None:
            reader = FaultyReader(reader, s.reader_faults, self.clock)
        return reader

    async def open_terminal(self) -> Rig:
        s = self.setup
        resolver: Resolver = system_resolver
        host_name = None
        if s.dns == "fail":
            resolver, host_name = failing_resolver(), "acquirer.example"
        elif s.dns == "slow":
            host, port = self.host_address().rsplit(":", 1)
            resolver = slow_resolver(system_resolver, s.dns_delay, self.clock, (host, int(port)))
            host_name = "acquirer.example"
        cfg = replace(s.cfg, host=self.host_address())
        pins = s.pins or [load_profile(s.card).pin]
        with _env("PCSCLITE_CSOCK_NAME", None if s.pcsc_service else str(self.state / "no-pcscd.comm")):
            reader = await self._reader()
        pinpad: PinPad = CancelPinPad() if s.cancel_pin else ScriptedPinPad(*pins)
        rig = await open_rig(cfg, clock=self.clock, state_dir=self.state / "terminal", pinpad=pinpad,
                             reader=reader, resolver=resolver, host_name=host_name)
        if rig.cardholder is not None:
            rig.cardholder.prefer_chip = s.prefer_chip
            rig.cardholder.removes_card = s.removes_card
            if s.swipe is not None:
                from hardware.magstripe import Damage, SwipeParams

                sw = dict(s.swipe)
                dmg = sw.pop("damage", None)
                params = SwipeParams(speed_ips=float(sw.get("speed_ips", 10.0)),
                                     accel_ips2=float(sw.get("accel_ips2", 0.0)),
                                     skew_deg=float(sw.get("skew_deg", 0.0)), dirt_um=float(sw.get("dirt_um", 0.0)),
                                     noise=float(sw.get("noise", 0.0)), seed=s.seed)
                if dmg is not None:
                    params = replace(params, damage=(Damage(*dmg),))
                rig.cardholder.swipe_params = params
        rig.terminal.add_display(lambda sc: self.screens.append(sc.code))
        if self.vpcd is not None:
            rig.terminal.add_display(self._vpcd_cardholder)
        if self.display is not None:
            rig.terminal.add_display(self.display)
        self.rig = rig
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

    async def close(self) -> None:
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


_ADHOC_SCENARIO = Scenario("adhoc", {}, (), None, ())
_ADHOC_FAULT = Fault("adhoc", ("A1",), "hardware", "-", "-", "reader", (), (), "-", "-", "-", "-", "any", "demo",
                     "balance", (_ADHOC_SCENARIO,))

DEFAULT_STEPS = {"balance": ["sign_on", "balance"], "purchase": ["sign_on", "purchase"],
                 # the transaction set: each with the original it needs first (issue 12)
                 "preauth": ["sign_on", "preauth"], "void": ["sign_on", "purchase", "void"],
                 "refund": ["sign_on", "purchase", "refund"], "complete": ["sign_on", "preauth", "complete"],
                 "settle": ["sign_on", "purchase", "settle"], "sign_off": ["sign_on", "sign_off"]}
_ACTIONABLE = {"void": ("purchase", "preauth", "completion"), "refund": ("purchase", "completion"),
               "complete": ("preauth",)}


async def _steps(run: Run, result: RunResult) -> None:
    s = run.setup
    rig = await run.open_terminal()
    steps = s.steps or DEFAULT_STEPS.get(s.txn, ["sign_on", s.txn])
    for step in steps:
        name, _, arg = step.partition(":")
        t = rig.terminal
        if name == "sign_on":
            out = await t.sign_on()
        elif name == "balance":
            out = await t.balance_inquiry()
        elif name == "purchase":
            out = await t.purchase(int(arg) if arg else s.amount)
        elif name == "preauth":
            out = await t.preauth(int(arg) if arg else s.amount)
        elif name in _ACTIONABLE:
            # ``void[:journal id]``, ``refund[:amount]``, ``complete[:amount]``: the last original that fits
            orig = rig.journal.get(int(arg)) if name == "void" and arg else rig.journal.last(_ACTIONABLE[name])
            if orig is None:
                raise PosemuError(f"scenario step {step!r}: no transaction to act on in the journal")
            if name == "void":
                out = await t.void(orig.id)
            elif name == "refund":
                out = await t.refund(int(arg) if arg else orig.amount, original_id=orig.id)
            else:
                out = await t.complete(orig.id, int(arg) if arg else None)
        elif name == "settle":
            out = await t.settle()
        elif name == "sign_off":
            out = await t.sign_off()
        elif name == "operator":
            t.operator_login(arg)
            continue
        elif name == "reversals":
            await t.send_pending_reversals()
            continue
        elif name == "clean":
            r = rig.reader
            if isinstance(r, FaultyReader):
                r.clean()
            continue
        elif name == "crash_purchase":
            # the application dies right after the purchase request left: the task is killed
            assert run.host is not None
            sent = asyncio.Event()

            def on_request(m: Message, ev: asyncio.Event = sent) -> None:
                if m.mti == "0200":
                    ev.set()

            run.host.observers.append(on_request)
            task = asyncio.ensure_future(t.purchase(int(arg) if arg else s.amount))
            await sent.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, PosemuError):
                await task
            continue
        elif name == "restart":
            await rig.terminal.close()
            rig.journal.close()
            run.rig = None
            rig = await run.open_terminal()
            continue
        else:
            raise PosemuError(f"unknown scenario step {step!r}")
        result.outcomes.append(out)


def _journal_checks(run: Run, result: RunResult) -> list[Check]:
    rig = run.rig
    assert rig is not None and run.host is not None
    entries = rig.journal.entries(1000)
    checks = []
    pending = [e for e in entries if e.status is Status.PENDING]
    checks.append(Check("journal: nothing left pending", not pending, f"{len(pending)} pending"))
    stans = [e.stan for e in entries]
    checks.append(Check("journal: no duplicated transaction", len(stans) == len(set(stans)), ""))
    unknown = [e for e in entries if e.kind in _MONEY_KINDS and e.status is Status.UNKNOWN]
    unreversed = [e for e in unknown if e.reversal is not Reversal.DONE]
    checks.append(Check("journal: every unknown purchase reversed and acknowledged", not unreversed,
                        f"{len(unreversed)} not reversed"))
    want = result.scenario.journal
    txn = [e for e in entries if e.kind in ("balance", *_MONEY_KINDS)]
    last = txn[-1] if txn else None
    if want == "none":
        ok, got = not txn, f"{len(txn)} entries"
    elif want == "reversed":
        ok = any(e.reversal is Reversal.DONE for e in txn)
        got = ", ".join(f"{e.status.value}/{e.reversal.value}" for e in txn)
    elif want == "any":
        ok, got = True, ""
    else:
        ok = last is not None and last.status.value == want
        got = last.status.value if last else "no entry"
    checks.append(Check(f"journal shows: {want}", ok, got))
    # money: the host moved exactly the approved, unreversed purchases
    card = run.host.store.card(run.pan)
    if card is not None:
        after = run.host.store.balance(card.account_id)[0]
        spent = -journal_money(rig.journal, txn)
        checks.append(Check("money: balance moved by approved purchases only", after == run.balance_before - spent,
                            f"before {run.balance_before}, after {after}, approved purchases {spent}"))
    return checks


_MONEY_KINDS = ("purchase", "void", "refund", "preauth", "preauth_void", "completion", "completion_void")


def journal_money(journal: Journal, entries: list[Entry]) -> int:
    """What the approved transactions of the journal moved on the cardholder's account (a
    pre-authorization's hold counts as moved): the host's balance must have moved by exactly this."""
    def amount_of(entry_id: int | None) -> int:
        try:
            return journal.get(entry_id).amount if entry_id is not None else 0
        except KeyError:
            return 0

    total = 0
    for e in entries:
        if e.status is not Status.APPROVED:
            continue
        if e.kind in ("purchase", "preauth"):
            total -= e.amount
        elif e.kind in ("void", "refund", "preauth_void"):
            total += e.amount
        elif e.kind == "completion":
            total += amount_of(e.original_id) - e.amount
        elif e.kind == "completion_void":
            completion = journal.get(e.original_id) if e.original_id is not None else None
            total += e.amount - (amount_of(completion.original_id) if completion is not None else 0)
    return total


def _evidence_check(run: Run, kind: str) -> Check:
    rig = run.rig
    stats: dict[str, int] = {}
    reader = rig.reader if rig else None
    if isinstance(reader, FaultyReader):
        stats.update({f"reader.{k}": v for k, v in reader.stats.items()})
    if run.proxy is not None:
        stats.update({f"link.{k}": v for k, v in run.proxy.stats.items()})
    value = stats.get(kind, 0)
    return Check(f"evidence: {kind} > 0", value > 0, f"{kind} = {value}")


async def run_setup(setup: Setup, *, clock: Clock, state: Path,
                    display: Callable[[Screen], None] | None = None) -> tuple[Run, list[Outcome], Diagnosis]:
    """Build the world for ``setup``, run its steps, self-test and diagnose. The caller closes the run."""
    run = Run(setup, clock, state)
    run.display = display
    result = RunResult(_ADHOC_FAULT, _ADHOC_SCENARIO)
    await run.start_host()
    await _steps(run, result)
    rig = run.rig
    if rig is None:
        raise PosemuError("the scenario left no terminal running")
    measurements = await self_test(rig)
    if setup.ambient_emi_v:
        measurements["line_noise_v"] = max(measurements.get("line_noise_v", 0.0), setup.ambient_emi_v)
    return run, result.outcomes, diagnose(list(rig.trace), result.outcomes, measurements)


async def run_scenario(fault: Fault, scenario: Scenario, *, clock: Clock, state: Path, seed: int = 7,
                       overrides: dict[str, Any] | None = None, setup: Setup | None = None) -> RunResult:
    result = RunResult(fault, scenario)
    t0_wall, t0_virtual = time.perf_counter(), clock.now()
    setup = setup or build_setup(fault, scenario, seed=seed, overrides=overrides)
    if setup.reader_url == "vpcd" and not vpcd_available():
        result.skipped = "needs pcscd with the vsmartcard vpcd driver (started by `make test`)"
        return result
    run: Run | None = None
    try:
        run, result.outcomes, result.diagnosis = await run_setup(setup, clock=clock, state=state)
        rig = run.rig
        assert rig is not None
        result.codes = run.screens
        result.trace = [e.to_json() for e in rig.trace]
        result.checks.append(Check("screens", subsequence(scenario.expect, result.codes),
                                   f"expected {list(scenario.expect)} in {result.codes}"))
        final = result.outcomes[-1] if result.outcomes else None
        if scenario.approved is not None:
            got = final.approved if final else None
            result.checks.append(Check("outcome", got == scenario.approved,
                                       f"expected approved={scenario.approved}, got {got}"))
        named = result.diagnosis.cause_ids
        missing = [c for c in scenario.diagnosis if c not in named]
        result.checks.append(Check("diagnosis", not missing,
                                   f"expected {list(scenario.diagnosis)}, diagnosed {sorted(named)}"))
        result.checks.extend(_journal_checks(run, result))
        if scenario.evidence:
            result.checks.append(_evidence_check(run, scenario.evidence))
    except PosemuError as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        if run is not None:
            await run.close()
    result.wall_s = time.perf_counter() - t0_wall
    result.virtual_s = clock.now() - t0_virtual
    return result


def all_scenarios(cat: Catalogue, only: list[str] | None = None) -> list[tuple[Fault, Scenario]]:
    out = []
    for f in cat.faults.values():
        if only and f.id not in only:
            continue
        for s in f.scenarios:
            out.append((f, s))
    return out


def run_one(fault: Fault, scenario: Scenario, state: Path, seed: int = 7,
            overrides: dict[str, Any] | None = None) -> RunResult:
    """Run one scenario on a fresh virtual clock (blocking)."""
    clock = VirtualClock()
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        return runner.run(run_scenario(fault, scenario, clock=clock, state=state, seed=seed, overrides=overrides))


__all__ = ["Check", "Msg", "RunResult", "all_scenarios", "load", "run_one", "run_scenario"]
