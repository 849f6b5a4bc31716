"""Injectors: how each kind of fault is put into a terminal setup, by wrapping, never editing.

An injector takes the fault's parameters and changes a :class:`Setup` — the plan from which the
regression runner (and ``posemu inquiry --fault``) builds the terminal, reader, link and host:
it wraps the reader (:mod:`faults.reader`), puts a proxy on the network path
(:mod:`faults.network`), wraps the resolver, adds host rules or account state, changes the
terminal's configuration, or gives the scripted cardholder other habits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from emulator.config import TerminalConfig
from emulator.host.rules import HostRule, HostRules
from emulator.host.store import HostStore
from faults.network import LinkFaults
from faults.reader import ReaderFaults
from protocol.errors import ConfigError

StoreChange = Callable[[HostStore, str], None]      # (store, card PAN)


@dataclass(slots=True)
class Setup:
    cfg: TerminalConfig
    card: str = "demo"
    txn: str = "balance"
    amount: int = 10_00
    pins: list[str] | None = None
    reader_faults: ReaderFaults | None = None
    swipe: dict[str, Any] | None = None
    prefer_chip: bool = True
    removes_card: bool = True
    stripe_keep: int | None = None
    host_rules: HostRules = field(default_factory=HostRules)
    store_changes: list[StoreChange] = field(default_factory=list)
    link: LinkFaults | None = None
    dns: str | None = None              # "fail" | "slow"
    dns_delay: float = 0.0
    host_override: str | None = None    # terminal points somewhere else (wrong address/port)
    steps: list[str] | None = None
    reader_url: str | None = None
    hold_port: bool = False             # another program holds the serial port
    pcsc_service: bool = True
    cancel_pin: bool = False
    ambient_emi_v: float = 0.0          # the room's electromagnetic noise (what an oscilloscope shows)
    seed: int = 0


def _num(params: dict[str, Any], key: str, default: float) -> float:
    v = params.get(key, default)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"fault parameter {key}={v!r} is not a number") from None


def inject_reader(setup: Setup, p: dict[str, Any]) -> None:
    known = {k: v for k, v in p.items() if k in ReaderFaults.__dataclass_fields__}
    rf = ReaderFaults.from_params({k: str(v) for k, v in known.items()})
    setup.reader_faults = replace(rf, seed=setup.seed)
    if "fallback" in p:
        setup.cfg = replace(setup.cfg, allow_fallback=_num(p, "fallback", 1.0) >= 0.5)
    if "chip_retries" in p:
        setup.cfg = replace(setup.cfg, chip_retries=int(_num(p, "chip_retries", 3)))
    if p.get("removes_card") in (0, "0", False):
        setup.removes_card = False


def inject_swipe(setup: Setup, p: dict[str, Any]) -> None:
    setup.prefer_chip = False
    if "ambient_emi_v" in p:
        setup.ambient_emi_v = _num(p, "ambient_emi_v", 0.0)
    setup.swipe = {k: v for k, v in p.items() if k in ("speed_ips", "skew_deg", "noise", "dirt_um", "accel_ips2")}
    if "damage_start" in p:
        setup.swipe["damage"] = (float(p["damage_start"]), float(p.get("damage_end", float(p["damage_start"]) + 0.3)),
                                 float(p.get("damage_severity", 1.0)))


def inject_stripe_data(setup: Setup, p: dict[str, Any]) -> None:
    setup.prefer_chip = False
    setup.stripe_keep = int(_num(p, "keep_chars", 12))


def inject_pin(setup: Setup, p: dict[str, Any]) -> None:
    if p.get("cancel") in (1, "1", True):
        setup.cancel_pin = True
        return
    wrong = str(p.get("wrong_pin", "000000"))
    setup.pins = [wrong] * int(_num(p, "times", 1)) + ([str(p["then"])] if "then" in p else [])


def inject_host_rule(setup: Setup, p: dict[str, Any]) -> None:
    spec = str(p.get("rule", "respond:rc=96"))
    for part in spec.split(";"):
        setup.host_rules.add(HostRule.parse(part))


def inject_host_state(setup: Setup, p: dict[str, Any]) -> None:
    status = p.get("card_status")
    card_perms = p.get("card_permissions")
    term_perms = p.get("terminal_permissions")
    min_version = p.get("min_version")

    def change(store: HostStore, pan: str) -> None:
        from emulator.demo import DEMO_TID

        card = store.card(pan)
        if card is not None:
            if status is not None:
                store.update_card(pan, status=str(status))
            if card_perms is not None:
                store.update_card(pan, permissions=frozenset(filter(None, str(card_perms).split("+"))))
        term = store.terminal(DEMO_TID)
        if term is not None:
            if term_perms is not None:
                term = replace(term, permissions=frozenset(filter(None, str(term_perms).split("+"))))
            if min_version is not None:
                term = replace(term, min_version=int(_num(p, "min_version", 0)))
            store.set_terminal(term)

    setup.store_changes.append(change)


def inject_link(setup: Setup, p: dict[str, Any]) -> None:
    setup.link = LinkFaults.from_params({**{k: v for k, v in p.items() if k in LinkFaults.__dataclass_fields__},
                                         "seed": setup.seed})


def inject_dns(setup: Setup, p: dict[str, Any]) -> None:
    setup.dns = str(p.get("mode", "fail"))
    setup.dns_delay = _num(p, "delay", 0.0)


def inject_config(setup: Setup, p: dict[str, Any]) -> None:
    cfg = setup.cfg
    if "disabled_entry" in p:
        cfg = replace(cfg, disabled_entry=tuple(filter(None, str(p["disabled_entry"]).split("+"))))
    if "software_version" in p:
        cfg = replace(cfg, software_version=int(_num(p, "software_version", 0x31)))
    if "tmk" in p:
        cfg = replace(cfg, tmk=bytes.fromhex(str(p["tmk"])))
    if "profile" in p:
        setup.host_rules = setup.host_rules   # the host keeps its own profile; only the terminal changes
        cfg = replace(cfg, profile=str(p["profile"]))
    if "wrong_port" in p:
        setup.host_override = "127.0.0.1:1"
    if "response_timeout" in p:
        cfg = replace(cfg, timeouts=replace(cfg.timeouts, response=_num(p, "response_timeout", 60)))
    setup.cfg = cfg


def inject_steps(setup: Setup, p: dict[str, Any]) -> None:
    steps = p.get("steps")
    if steps is not None:
        setup.steps = str(steps).split()
    if "pull_after_apdus" in p:
        setup.reader_faults = ReaderFaults(pull_after_apdus=int(_num(p, "pull_after_apdus", 3)), seed=setup.seed)


def inject_port_busy(setup: Setup, p: dict[str, Any]) -> None:
    setup.hold_port = True


def inject_pcsc(setup: Setup, p: dict[str, Any]) -> None:
    # "service-down" points pyscard at a socket with no pcscd behind it; pyscard reads that setting
    # once per process, so the regression suite uses "driver-missing" (works with or without pcscd)
    # and the service-down path is tested in a subprocess (tests/test_pcsc.py).
    mode = str(p.get("mode", "driver-missing"))
    if mode == "service-down":
        setup.pcsc_service = False
        setup.reader_url = "pcsc://0"
    else:   # driver missing / no such reader
        setup.reader_url = "pcsc://posemu-missing-reader"


INJECTORS: dict[str, Callable[[Setup, dict[str, Any]], None]] = {
    "reader": inject_reader,
    "swipe": inject_swipe,
    "stripe-data": inject_stripe_data,
    "pin": inject_pin,
    "host-rule": inject_host_rule,
    "host-state": inject_host_state,
    "link": inject_link,
    "dns": inject_dns,
    "config": inject_config,
    "steps": inject_steps,
    "port-busy": inject_port_busy,
    "pcsc": inject_pcsc,
}
