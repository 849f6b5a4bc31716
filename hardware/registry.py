"""Reader and link backends chosen by URL, like pyserial's ``serial_for_url``.

* ``sim://<card-profile>[?present=1]`` — in-process virtual reader (:mod:`hardware.sim`).
* ``pcsc://<reader name or index>`` — any PC/SC reader through pyscard (:mod:`hardware.pcsc`).
* ``serial:///dev/ttyUSB0?baud=9600`` — an MSR605-family serial magstripe reader.

Schemes are found by name, as pyserial finds its URL handlers: each is an entry point of the
``posemu.readers`` group (declared in ``pyproject.toml``), ``name = "module:factory"``. A URL whose
scheme is ``name+inner`` goes to the ``name`` entry, which wraps the reader of the inner URL: the
fault injector's ``fault`` entry handles ``fault+sim://demo?contact_ohms=12``. No package registers
itself by being imported, and the hardware layer never names a package above it. Backends are
loaded only when a URL names them (pyscard is needed only for ``pcsc://``). hardware's own three
schemes are also known without installed metadata (a source tree on ``PYTHONPATH``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from urllib.parse import parse_qsl, unquote, urlsplit

from hardware.clock import Clock
from hardware.ports import CardReader
from protocol.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ReaderURL:
    """A parsed reader URL: ``scheme://target?k=v&…``."""

    scheme: str
    target: str
    params: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @classmethod
    def parse(cls, url: str) -> ReaderURL:
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError(f"reader URL {url!r} has no scheme (expected e.g. sim://demo, pcsc://0)")
        try:
            parts = urlsplit(url)
        except ValueError as e:           # e.g. an unbalanced "[" (RFC 3986 §3.2.2 IP literal)
            raise ConfigError(f"reader URL {url!r} is malformed ({e})") from None
        if not parts.scheme:
            raise ConfigError(f"reader URL {url!r} has no scheme (expected e.g. sim://demo, pcsc://0)")
        target = unquote(parts.netloc + parts.path)
        try:
            params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
        except ValueError as e:
            raise ConfigError(f"reader URL {url!r}: bad query string ({e})") from None
        return cls(parts.scheme.lower(), target, params, url)

    def float_param(self, key: str, default: float) -> float:
        v = self.params.get(key)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            raise ConfigError(f"reader URL {self.raw!r}: {key}={v!r} is not a number") from None

    def int_param(self, key: str, default: int) -> int:
        v = self.params.get(key)
        if v is None:
            return default
        try:
            return int(v, 0)
        except ValueError:
            raise ConfigError(f"reader URL {self.raw!r}: {key}={v!r} is not an integer") from None


ReaderFactory = Callable[[ReaderURL, Clock], CardReader]

ENTRY_POINT_GROUP = "posemu.readers"
"""The entry-point group the registry reads: ``scheme = "module:factory"`` (``scheme+inner://…`` goes to ``scheme``)."""


def _open_sim(url: ReaderURL, clock: Clock) -> CardReader:
    from hardware.sim import open_sim_reader

    return open_sim_reader(url, clock)


def _open_pcsc(url: ReaderURL, clock: Clock) -> CardReader:
    from hardware.pcsc import open_pcsc_reader

    return open_pcsc_reader(url, clock)


def _open_serial(url: ReaderURL, clock: Clock) -> CardReader:
    from hardware.msr605 import open_serial_reader

    return open_serial_reader(url, clock)


_BUILTIN: dict[str, ReaderFactory] = {"sim": _open_sim, "pcsc": _open_pcsc, "serial": _open_serial}


@cache
def _entry_points() -> dict[str, EntryPoint]:
    """The ``posemu.readers`` entry points by name (read once per process)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    """Every scheme name a URL may start with."""
    return sorted({*_BUILTIN, *_entry_points()})


def _factory(scheme: str) -> ReaderFactory:
    eps = _entry_points()
    head, plus, _ = scheme.partition("+")
    if plus and head in _BUILTIN:
        raise ConfigError(f"reader scheme {scheme!r}: {head}:// does not wrap another reader")
    ep = eps.get(head)
    if ep is not None:
        try:
            fn: ReaderFactory = ep.load()
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"reader scheme {scheme!r}: its entry point {ep.value!r} does not load ({e})") from None
        return fn
    if scheme in _BUILTIN:
        return _BUILTIN[scheme]
    hint = "" if eps else f" (no {ENTRY_POINT_GROUP!r} entry points found: is posemu installed? pip install -e .)"
    raise ConfigError(f"unknown reader scheme {scheme!r}; known: {', '.join(known_schemes())}{hint}")


def open_reader(url: str, *, clock: Clock) -> CardReader:
    """Open the reader a URL names."""
    parsed = ReaderURL.parse(url)
    return _factory(parsed.scheme)(parsed, clock)
