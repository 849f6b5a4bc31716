"""Wiring: build a running terminal (and the bundled host, when no host is configured).

:func:`open_rig` is what the CLI, the UI, the regression suite and the pytest plugin use:
one place that turns a :class:`TerminalConfig` into a terminal with its reader, journal, host
link and trace, all on the given clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emulator.cardholder import Cardholder
from emulator.config import TerminalConfig, parse_hostport
from emulator.host.rules import HostRules
from emulator.host.server import HostServer
from emulator.hostlink import Connector, HostLink, Resolver, system_resolver, tcp_connector
from emulator.journal import Journal
from emulator.keystore import LocalKey, private_dir, user_state_dir
from emulator.ports import Display, PinPad
from emulator.terminal import Terminal
from emulator.trace import Trace
from hardware.cards.profiles import load_profile
from hardware.clock import Clock
from hardware.errors import HardwareError, NoReaderError
from hardware.ports import CardReader, ReaderEvent
from hardware.registry import open_reader
from hardware.sim import SimReader, card_for_profile
from protocol.errors import ConfigError, PosemuError


def default_state_dir() -> Path:
    """The per-user state folder (journal, host database)."""
    return user_state_dir()


@dataclass(slots=True)
class Rig:
    """A terminal and what :func:`open_rig` started for it; :meth:`close` stops them all."""

    cfg: TerminalConfig
    clock: Clock
    trace: Trace
    terminal: Terminal
    reader: CardReader
    journal: Journal
    host: HostServer | None
    cardholder: Cardholder | None
    swipe_faults: dict[str, Any] = field(default_factory=dict)   # armed swipe faults (damage, noise…) for a UI

    async def close(self) -> None:
        await self.terminal.close()
        self.journal.close()
        if self.host is not None:
            await self.host.close()


async def open_rig(cfg: TerminalConfig, *, clock: Clock, state_dir: Path, pinpad: PinPad,
                   display: Display | None = None, reader: CardReader | None = None,
                   card_profile: str | None = None, host_rules: HostRules | None = None,
                   resolver: Resolver = system_resolver, connector: Connector = tcp_connector,
                   host_name: str | None = None, auto_cardholder: bool = True,
                   external_host: bool | None = None) -> Rig:
    """Start everything a terminal needs. With ``cfg.host`` unset, the bundled host runs
    in-process on an ephemeral loopback port with its database in ``state_dir``.

    With a ``sim://`` reader and ``auto_cardholder``, a scripted :class:`Cardholder` answers the
    terminal's prompts (the CLI and the regression suite); an interactive UI passes ``False`` and
    lets its user insert, swipe and remove cards."""
    private_dir(state_dir)
    trace = Trace(clock)
    host: HostServer | None = None
    profile = cfg.wire_profile()
    dialect = cfg.dialect
    tls = dialect.tls.client_context() if dialect.tls is not None and dialect.tls.enabled and cfg.host else None
    if cfg.host is None:
        host = await HostServer.start(profile, clock=clock, db=state_dir / "host.sqlite3", rules=host_rules)
        fit_bundled_host(host, cfg)
        addr, port = host.address
    else:
        addr, port = parse_hostport(cfg.host)
    if host_name is not None:
        addr = host_name
    opened = reader or _open_reader(cfg.reader, clock)
    journal = Journal(state_dir / "journal.sqlite3", clock=clock, local_key=LocalKey.at(state_dir / "local.key"),
                      legacy_key_material=cfg.tmk)
    link = HostLink(addr, port, profile, clock=clock, trace=trace,
                    connect_timeout=cfg.timeouts.connect, response_timeout=cfg.timeouts.response,
                    resolver=resolver, connector=connector, tls=tls,
                    server_name=dialect.tls.server_name if dialect.tls is not None else None,
                    tls_pins=dialect.tls.pin_sha256 if dialect.tls is not None else (),
                    backup=parse_hostport(dialect.backup) if dialect.backup else None,
                    external_peer=cfg.host is not None if external_host is None else external_host)
    terminal = Terminal(cfg, clock=clock, reader=opened, pinpad=pinpad, journal=journal, link=link, trace=trace,
                        display=display)
    cardholder = None
    sim = _find_sim(opened)
    if sim is not None:
        card = sim.default_card
        if card_profile is not None:
            card = card_for_profile(load_profile(card_profile))
            sim.default_card = card
        if card is not None and auto_cardholder:
            cardholder = Cardholder(sim, card)
            terminal.add_display(cardholder)
    return Rig(cfg, clock, trace, terminal, opened, journal, host, cardholder)


def _open_reader(url: str, clock: Clock) -> CardReader:
    """The configured reader; one that cannot even be opened (a malformed URL, a backend that is not
    installed) becomes an :class:`UnusableReader`, so the terminal starts and its screen, trace and
    diagnosis say why (issue 12 item 6)."""
    try:
        return open_reader(url, clock=clock)
    except ConfigError as e:
        return UnusableReader(url, NoReaderError(str(e)).with_code("reader.url_malformed"))
    except HardwareError as e:
        return UnusableReader(url, e)


class UnusableReader:
    """A reader that could not be opened: every use raises the reason (a :class:`NoReaderError`
    with its evidence code); nothing is ever present."""

    def __init__(self, url: str, error: PosemuError) -> None:
        self.url = url
        self.error = error

    @property
    def name(self) -> str:
        return self.url

    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        raise self.error

    async def card_present(self) -> bool:
        return False

    async def power_on(self) -> bytes:
        raise self.error

    async def transmit(self, apdu: bytes) -> bytes:
        raise self.error

    async def power_off(self) -> None:
        return None

    async def close(self) -> None:
        return None


def fit_bundled_host(host: HostServer, cfg: TerminalConfig, *, tmk: bool = False) -> None:
    """The bundled host in-process serves the configured terminal (added with the config's master key
    when it does not know its id) and speaks its dialect: with no sign-on it holds the config's static
    working keys for it, with no MAC (or no sign-on MAC) it asks none (``tmk``: and it takes the
    config's master key). Only what the dialect needs is changed: what an administrator set with
    ``posemu host accounts`` stays (a MAC the config does not switch off is not forced back on)."""
    store = host.store
    term = store.terminal(cfg.terminal_id)
    if term is None:
        store.begin()
        store.add_terminal(cfg.terminal_id, cfg.merchant_id, cfg.tmk)
        store.commit()
        term = store.terminal(cfg.terminal_id)
        assert term is not None
    keys = cfg.static_keys()
    want: dict[str, Any] = {}
    if not cfg.dialect.mac_enabled:
        want.update(mac_required=False)
    if not cfg.request_sign_on_mac:
        want.update(sign_on_proof=False)
    if keys is not None:
        want.update(pik=keys.pik, mak=keys.mak, signed_on=True, require_sign_on=False)
    if tmk:
        want["tmk"] = cfg.tmk
    changes = {k: v for k, v in want.items() if getattr(term, k) != v}
    if changes:
        store.begin()
        store.set_terminal(replace(term, **changes))
        store.commit()


def _find_sim(reader: CardReader) -> SimReader | None:
    """The sim reader at the bottom of a chain of wrappers (fault injectors wrap readers)."""
    seen = 0
    r: object = reader
    while seen < 16:
        if isinstance(r, SimReader):
            return r
        inner = getattr(r, "inner", None)
        if inner is None:
            return None
        r = inner
        seen += 1
    return None
