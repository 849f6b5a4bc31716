"""Reader and link backends chosen by URL, like pyserial's ``serial_for_url``.

* ``sim://<card-profile>[?present=1]`` — in-process virtual reader (:mod:`hardware.sim`).
* ``pcsc://<reader name or index>`` — any PC/SC reader through pyscard (:mod:`hardware.pcsc`).
* ``serial:///dev/ttyUSB0?baud=9600`` — an MSR605-family serial magstripe reader.

Other packages add schemes with :func:`register_reader` (the fault injector adds ``fault+…``);
backends are imported lazily, so pyscard is needed only for ``pcsc://``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
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

_LAZY: dict[str, str] = {
    "sim": "hardware.sim:open_sim_reader",
    "pcsc": "hardware.pcsc:open_pcsc_reader",
    "serial": "hardware.msr605:open_serial_reader",
}
_FACTORIES: dict[str, ReaderFactory] = {}
_PREFIX_FACTORIES: dict[str, ReaderFactory] = {}


def register_reader(scheme: str, factory: ReaderFactory, *, prefix: bool = False) -> None:
    """Add a scheme. With ``prefix=True`` the factory handles every ``scheme+inner://`` URL."""
    (_PREFIX_FACTORIES if prefix else _FACTORIES)[scheme] = factory


def _factory(scheme: str) -> ReaderFactory:
    if scheme in _FACTORIES:
        return _FACTORIES[scheme]
    head = scheme.split("+", 1)[0]
    if "+" in scheme and head in _PREFIX_FACTORIES:
        return _PREFIX_FACTORIES[head]
    if scheme in _LAZY:
        mod, _, attr = _LAZY[scheme].partition(":")
        fn: ReaderFactory = getattr(importlib.import_module(mod), attr)
        _FACTORIES[scheme] = fn
        return fn
    known = sorted({*_LAZY, *_FACTORIES, *(p + "+…" for p in _PREFIX_FACTORIES)})
    raise ConfigError(f"unknown reader scheme {scheme!r}; known: {', '.join(known)}")


def open_reader(url: str, *, clock: Clock) -> CardReader:
    """Open the reader a URL names."""
    parsed = ReaderURL.parse(url)
    return _factory(parsed.scheme)(parsed, clock)
