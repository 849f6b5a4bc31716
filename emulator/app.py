"""Wiring: build a running terminal (and the bundled host, when no host is configured).

:func:`open_rig` is what the CLI, the UI, the regression suite and the pytest plugin use:
one place that turns a :class:`TerminalConfig` into a terminal with its reader, journal, host
link and trace, all on the given clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from protocol.specs import get_profile


def default_state_dir() -> Path:
    """The per-user state folder (journal, host database)."""
    return user_state_dir()


@dataclass(slots=True)
class Rig:
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
                   host_name: str | None = None, auto_cardholder: bool = True) -> Rig:
    """Start everything a terminal needs. With ``cfg.host`` unset, the bundled host runs
    in-process on an ephemeral loopback port with its database in ``state_dir``.

    With a ``sim://`` reader and ``auto_cardholder``, a scripted :class:`Cardholder` answers the
    terminal's prompts (the CLI and the regression suite); an interactive UI passes ``False`` and
    lets its user insert, swipe and remove cards."""
    private_dir(state_dir)
    trace = Trace(clock)
    host: HostServer | None = None
    if cfg.host is None:
        host = await HostServer.start(get_profile(cfg.profile), clock=clock, db=state_dir / "host.sqlite3",
                                      rules=host_rules)
        addr, port = host.address
    else:
        addr, port = parse_hostport(cfg.host)
    if host_name is not None:
        addr = host_name
    opened = reader or _open_reader(cfg.reader, clock)
    journal = Journal(state_dir / "journal.sqlite3", clock=clock, local_key=LocalKey.at(state_dir / "local.key"),
                      legacy_key_material=cfg.tmk)
    link = HostLink(addr, port, get_profile(cfg.profile), clock=clock, trace=trace,
                    connect_timeout=cfg.timeouts.connect, response_timeout=cfg.timeouts.response,
                    resolver=resolver, connector=connector)
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
