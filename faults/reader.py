"""Reader and card-seat faults: a wrapper around any :class:`hardware.ports.CardReader`.

The wrapper changes what happens at the contacts, the supply, the card-seat switch, the latch and
the reader's own electronics — it never edits the reader it wraps, and with nothing armed it is
transparent. Its effects follow :mod:`faults.physics`: mild contact dirt costs parity
retransmissions and still reads; more dirt browns the card out during GENERATE AC (the reader
reports the card reset, PC/SC ``0x80100068``); more still and there is no ATR. A contact that
bounces registers as a removal (``0x80100069``) while the card is still in. Temperature and EMI
come from the :class:`faults.environment.Environment`, which the technician's instruments read too.

Faults are **armed** and **disarmed** (:meth:`FaultyReader.arm`); several armed settings combine
(the worst of each). Like a real reader driver it keeps counters (``stats``), and it answers the
technician's instruments (:meth:`FaultyReader.instrument`) through the same contact model.

As a URL: ``fault+sim://demo?contact_ohms=12&seed=7`` (any reader URL after ``fault+``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

from faults.environment import Environment
from faults.physics import ContactModel
from hardware.clock import Clock
from hardware.errors import (
    CardAbsentError,
    CardMuteError,
    CardResetError,
    NoReaderError,
    TransmissionError,
)
from hardware.ports import CardReader, ReaderEvent, ReaderEventKind
from hardware.registry import ReaderURL, open_reader
from protocol.errors import ConfigError

CRYPTO_INS = {0xAE, 0x88}          # GENERATE AC, INTERNAL AUTHENTICATE: the card's current peaks
CLEAN_OHMS = 0.05
EMI_RESET_V = 1.0                  # above this field an EMI burst can reset the card mid-command
_NO_RESPONSE = "the card reader does not respond (no USB/serial answer)"


@dataclass(frozen=True, slots=True)
class ReaderFaults:
    """What is wrong with the reader, its contacts, its supply or the way the card sits in it."""

    contact_ohms: float = CLEAN_OHMS    # per contact (VCC, GND, I/O)
    supply_v: float = 5.0
    dirt_per_insert_ohms: float = 0.0   # dirt accumulating with every insertion (until cleaned)
    wear_per_insert_ohms: float = 0.0   # aging: contacts wear with every insertion
    supply_wear_v: float = 0.0          # a battery/cable that wears out: supply drops by this per insertion
    sag_v: float = 0.0                  # supply sag depth…
    sag_from_apdu: int = 0              # …from this APDU of a card session (1-based; 0 = no sag)…
    sag_apdus: int = 1                  # …for this many APDUs
    bounce_probability: float = 0.0     # per command: a contact bounce reads as the card removed
    seat_stuck: bool = False            # card-seat switch stuck closed: removal never detected
    latch_stuck: bool = False           # the card latch does not release: the card cannot come out
    sensor_dead: bool = False           # card-present sensor dead: insertion never detected
    dead: bool = False                  # reader does not respond at all (dropped, damaged)
    flap_probability: float = 0.0       # intermittent reader: each operation may lose the reader
    seating: str = "ok"                 # how the card sits: ok | reversed (no chip contact) | partial (flickers)
    wtx_s: float = 0.0                  # a slow chip: each command waits this long for its waiting-time extensions
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ReaderFaults:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for k, v in params.items():
            f = known.get(k)
            if f is None:
                raise ConfigError(f"unknown reader fault parameter {k!r}; known: {', '.join(sorted(known))}")
            try:
                if f.type in ("bool", bool):
                    values[k] = v.lower() in ("1", "true", "yes", "on")
                elif f.type in ("int", int):
                    values[k] = int(v)
                elif f.type in ("str", str):
                    values[k] = v
                else:
                    values[k] = float(v)
            except ValueError:
                raise ConfigError(f"reader fault {k}={v!r} is not a number") from None
        rf = cls(**values)
        if rf.seating not in ("ok", "reversed", "partial"):
            raise ConfigError("reader fault seating must be ok, reversed or partial")
        return rf


def combine(armed: list[ReaderFaults]) -> ReaderFaults:
    """Several armed faults at once: the worst of each quantity."""
    if not armed:
        return ReaderFaults()
    out: dict[str, Any] = {}
    for f in fields(ReaderFaults):
        vals = [getattr(a, f.name) for a in armed]
        if f.name == "supply_v":
            out[f.name] = min(vals)
        elif f.name == "seating":
            out[f.name] = next((v for v in vals if v != "ok"), "ok")
        elif f.name == "seed":
            out[f.name] = vals[0]
        elif f.name in ("sag_from_apdu", "sag_apdus"):
            out[f.name] = next((v for a, v in zip(armed, vals, strict=True) if a.sag_v), vals[0])
        elif isinstance(vals[0], bool):
            out[f.name] = any(vals)
        else:
            out[f.name] = max(vals)
    return ReaderFaults(**out)


class FaultyReader:
    """A :class:`CardReader` with faults at its contacts, supply, sensors or latch."""

    def __init__(self, inner: CardReader, faults: ReaderFaults | None = None, clock: Clock | None = None,
                 environment: Environment | None = None) -> None:
        self.inner = inner
        self.clock = clock
        self.environment = environment or Environment()
        self._armed: list[ReaderFaults] = []
        self.faults = ReaderFaults()
        self.rng = random.Random(0)
        self.insertions = 0
        self.apdus = 0                    # commands of the current card session
        self.dirt_ohms = 0.0              # accumulated since the last cleaning
        self.wear_ohms = 0.0              # accumulated for good
        self.stats: dict[str, int] = {"retransmissions": 0, "resets": 0, "mute": 0, "lost": 0, "bounces": 0,
                                      "suppressed_removals": 0, "suppressed_insertions": 0, "wtx": 0}
        self.struck = 0                   # times an armed fault changed what happened (for scoring only)
        self.hits: Counter[str] = Counter()   # …by mechanism: brownout, parity, bounce, temperature, emi, …
        self.cleaned = False              # the technician cleaned the contacts: the dirt film is gone
        self.min_card_v: float | None = None   # the lowest supply the card saw (a logging voltmeter)
        self._seat_closed = False
        if faults is not None:
            self.arm(faults)

    # --- arming ---------------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        """Is any fault armed (else this reader passes everything through)?"""
        return bool(self._armed)

    def arm(self, faults: ReaderFaults) -> None:
        if not self._armed:
            self.rng = random.Random(faults.seed)
        self._armed.append(faults)
        self.faults = combine(self._armed)

    def disarm(self, faults: ReaderFaults) -> None:
        if faults in self._armed:
            self._armed.remove(faults)
        self.faults = combine(self._armed)

    # --- the model ----------------------------------------------------------------------------
    def model(self) -> ContactModel:
        f = self.faults
        supply = f.supply_v - f.supply_wear_v * self.insertions
        if f.sag_from_apdu and f.sag_from_apdu <= self.apdus < f.sag_from_apdu + f.sag_apdus:
            supply -= f.sag_v
        env = self.environment
        film = CLEAN_OHMS if self.cleaned else f.contact_ohms
        return ContactModel(supply_v=supply, contact_ohms=film + self.dirt_ohms + self.wear_ohms,
                            emi_v=env.field_v, temperature_c=env.temperature_c)

    def clean(self) -> None:
        """Maintenance: clean the contacts (the dirt film and accumulated dirt go, wear stays)."""
        self.cleaned = True
        self.dirt_ohms = 0.0

    def _log_voltage(self, m: ContactModel, crypto: bool) -> None:
        v = m.card_voltage(crypto)
        self.min_card_v = v if self.min_card_v is None else min(self.min_card_v, v)

    def _flap(self) -> None:
        if self.faults.dead:
            self._hit("dead")
            raise NoReaderError(_NO_RESPONSE).with_code("reader.no_response")

    # --- CardReader port ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.inner.name

    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        self._flap()
        deadline = None if timeout is None or self.clock is None else self.clock.now() + timeout
        while True:
            left = timeout if deadline is None or self.clock is None else max(0.0, deadline - self.clock.now())
            ev = await self.inner.next_event(left)
            if ev is None:
                return None
            if ev.kind is ReaderEventKind.CARD_INSERTED:
                if self.faults.sensor_dead:
                    self.stats["suppressed_insertions"] += 1
                    self._hit("sensor")
                    continue
                self.insertions += 1
                self.apdus = 0
                self.dirt_ohms += self.faults.dirt_per_insert_ohms
                self.wear_ohms += self.faults.wear_per_insert_ohms
                self._seat_closed = True
            if ev.kind is ReaderEventKind.CARD_REMOVED and (self.faults.seat_stuck or self.faults.latch_stuck) \
                    and self._seat_closed:
                self.stats["suppressed_removals"] += 1
                self._hit("latch" if self.faults.latch_stuck else "seat")
                continue
            if ev.kind is ReaderEventKind.CARD_REMOVED:
                self._seat_closed = False
            return ev

    async def card_present(self) -> bool:
        if self.faults.dead:
            raise NoReaderError(_NO_RESPONSE).with_code("reader.no_response")
        if (self.faults.seat_stuck or self.faults.latch_stuck) and self._seat_closed:
            return True
        if self.faults.sensor_dead:
            return False
        return await self.inner.card_present()

    async def power_on(self) -> bytes:
        self._flap()
        self.apdus = 0
        f = self.faults
        m = self.model()
        self._log_voltage(m, False)
        if f.seating == "reversed":
            return self._mute("no answer to reset: the chip does not touch the contacts", "seating")
        if not m.temperature_ok:
            return self._mute(f"no answer to reset at {m.temperature_c:g} °C", "temperature")
        if m.browns_out(False):
            return self._mute(f"no answer to reset: card supply {m.card_voltage():.2f} V under {m.v_min:g} V",
                              "brownout")
        atr = await self.inner.power_on()
        repeats, failed = m.exchange(len(atr), self.rng)
        self.stats["retransmissions"] += repeats
        if failed:
            self._hit("parity")
            raise CardMuteError("ATR unreadable: parity errors on the I/O contact").with_code("reader.atr_parity")
        return atr

    def _hit(self, mechanism: str) -> None:
        """An armed fault changed what happened, through ``mechanism`` (scoring only)."""
        self.struck += 1
        self.hits[mechanism] += 1

    def _mute(self, why: str, mechanism: str) -> bytes:
        self.stats["mute"] += 1
        self._hit(mechanism)
        raise CardMuteError(why).with_code("reader.atr_timeout")

    async def transmit(self, apdu: bytes) -> bytes:
        f = self.faults
        if f.flap_probability and not f.dead and self.rng.random() < f.flap_probability:
            # a loose reader drops off the bus in the middle of a card session: the card is "gone"
            self.stats["lost"] += 1
            self._hit("flap")
            raise CardAbsentError("the reader went away during the command: card reported removed "
                                  "[0x80100069]").with_code("pcsc.0x80100069")
        self._flap()
        self.apdus += 1
        bounce = f.bounce_probability or (0.5 if f.seating == "partial" else 0.0)
        if bounce and self.rng.random() < bounce:
            self.stats["bounces"] += 1
            self._hit("bounce")
            raise CardAbsentError("the card-present contact opened during the command: reported as removed "
                                  "[0x80100069]").with_code("pcsc.0x80100069")
        m = self.model()
        ins = apdu[1] if len(apdu) > 1 else 0
        self._log_voltage(m, ins in CRYPTO_INS)
        if m.browns_out(crypto=ins in CRYPTO_INS) or m.browns_out(False):
            self.stats["resets"] += 1
            self._hit("brownout")
            raise CardResetError(f"card reset during the command (INS {ins:02X}): supply at the card "
                                 f"{m.card_voltage(ins in CRYPTO_INS):.2f} V [0x80100068]").with_code("pcsc.0x80100068")
        if not m.temperature_ok or m.emi_v > EMI_RESET_V:
            # an overheated (or frozen) card's supervisor, or an EMI burst, resets it mid-command
            self.stats["resets"] += 1
            self._hit("temperature" if not m.temperature_ok else "emi")
            raise CardResetError(f"the card reset during the command (INS {ins:02X}) [0x80100068]"
                                 ).with_code("pcsc.0x80100068")
        repeats, failed = m.exchange(len(apdu) + 1, self.rng)
        self.stats["retransmissions"] += repeats
        if failed:
            self._hit("parity")
            raise TransmissionError(f"parity errors: a character was repeated more than {m.max_repeats} times"
                                    ).with_code("reader.parity_failed")
        resp = await self.inner.transmit(apdu)
        if f.wtx_s > 0 and self.clock is not None:
            # the card asks for more time before it answers: T=0 NULL procedure bytes (ISO/IEC 7816-3
            # §10.3.3), T=1 S(WTX) requests (§11.6.2.3); the reader waits, the application sees a slow card
            self.stats["wtx"] += 1
            self._hit("wtx")
            await self.clock.sleep(f.wtx_s)
        repeats, failed = m.exchange(len(resp), self.rng)
        self.stats["retransmissions"] += repeats
        if failed:
            self._hit("parity")
            raise TransmissionError(f"parity errors in the response (after {repeats} repetitions)"
                                    ).with_code("reader.parity_failed")
        return resp

    async def power_off(self) -> None:
        await self.inner.power_off()

    async def close(self) -> None:
        await self.inner.close()

    # --- what the terminal itself senses ------------------------------------------------------------
    def health(self) -> dict[str, float]:
        """The terminal's own sensors (:class:`hardware.ports.HealthSensors`): its supply monitor
        (±1 %) and its case temperature sensor (±0.5 °C), through the same physics as the faults."""
        m = self.model()
        return {"supply_v": round(m.supply_v * (1.0 + self.rng.uniform(-0.01, 0.01)), 2),
                "temperature_c": round(m.temperature_c + self.rng.uniform(-0.5, 0.5), 1)}

    # --- what a technician measures -------------------------------------------------------------
    def measure_contacts(self) -> float:
        """A multimeter across a contact (Ω, ±2 %)."""
        return round(self.model().measured_ohms(self.rng), 2)

    def measure_supply(self) -> float:
        """A voltmeter on the reader's supply at rest (V)."""
        m = self.model()
        return round(m.supply_v + self.rng.uniform(-0.01, 0.01), 2)

    def logged_min_card_v(self) -> float | None:
        """A data-logging voltmeter left on the card's supply during the transaction: its minimum (V)."""
        return None if self.min_card_v is None else round(self.min_card_v, 2)

    def inspect_card(self) -> str:
        """Looking at how the card sits in the slot: ``ok``, ``reversed`` or ``partial``."""
        return self.faults.seating

    def latch_releases(self) -> bool:
        """Pressing the eject/latch: does it let go?"""
        return not self.faults.latch_stuck

    def counters(self) -> dict[str, int]:
        """The reader driver's error counters (what ``pcscd -d`` or a vendor tool shows)."""
        return dict(self.stats)


def with_faults(reader: CardReader, faults: ReaderFaults, clock: Clock | None = None) -> FaultyReader:
    return FaultyReader(reader, faults, clock)


def find_faulty(reader: object) -> FaultyReader | None:
    """The fault wrapper in a chain of reader wrappers, if any."""
    r: object = reader
    for _ in range(16):
        if isinstance(r, FaultyReader):
            return r
        r = getattr(r, "inner", None)
        if r is None:
            return None
    return None


_ENV_PARAMS = {"temperature_c", "emi_v"}


def open_fault_url(url: ReaderURL, clock: Clock) -> CardReader:
    """``fault+<inner>://target?…``: the fault parameters are taken out, the rest goes to the inner
    reader (``fault+sim://cup_debit?contact_ohms=12&protocol=t0``). ``temperature_c`` and ``emi_v``
    set the reader's surroundings. The ``fault+`` entry point of the ``posemu.readers`` group
    (pyproject.toml) names this factory."""
    from urllib.parse import urlencode

    if "+" not in url.scheme or not url.scheme.split("+", 1)[1]:
        raise ConfigError(f"reader URL {url.raw!r}: fault+ wraps another reader URL, e.g. "
                          "fault+sim://cup_debit?contact_ohms=12")
    inner_scheme = url.scheme.split("+", 1)[1]
    known = {f.name for f in fields(ReaderFaults)}
    if "fault" in url.params:
        return _catalogue_faults(url, inner_scheme, clock)
    faults = ReaderFaults.from_params({k: v for k, v in url.params.items() if k in known})
    env = Environment()
    try:
        if "temperature_c" in url.params:
            env.temperature_c = float(url.params["temperature_c"])
        if "emi_v" in url.params:
            env.field_v = float(url.params["emi_v"])
    except ValueError:
        raise ConfigError(f"reader URL {url.raw!r}: temperature_c and emi_v must be numbers") from None
    rest = {k: v for k, v in url.params.items() if k not in known and k not in _ENV_PARAMS}
    inner_url = f"{inner_scheme}://{url.target}" + (f"?{urlencode(rest)}" if rest else "")
    return FaultyReader(open_reader(inner_url, clock=clock), faults, clock, env)


def _catalogue_faults(url: ReaderURL, inner_scheme: str, clock: Clock) -> CardReader:
    """``fault+sim://cup_debit?fault=reader.dirty-contacts@mild``: catalogue faults (the CLI's grammar,
    several separated by ``;``) armed through the same seam as every other front end, from power-on.
    Only faults that act on the reader or its surroundings fit in a reader URL."""
    from dataclasses import replace as dc_replace
    from urllib.parse import urlencode

    from emulator.config import TerminalConfig
    from faults.catalogue import load
    from faults.environment import SkewedClock
    from faults.grammar import parse_spec
    from faults.injectors import Plan, Points
    from faults.model import Onset, OnsetKind
    from faults.seam import Injection

    cat = load()
    specs = [dc_replace(parse_spec(text, cat), onset=Onset(OnsetKind.POWER_ON))
             for text in url.params["fault"].split(";") if text.strip()]
    other = [s.id for s in specs if s.fault.injector not in ("reader", "environment")]
    if other:
        raise ConfigError(f"reader URL {url.raw!r}: {', '.join(other)} do not act on the reader; use "
                          "--fault with the command instead")
    rest = {k: v for k, v in url.params.items() if k != "fault"}
    inner_url = f"{inner_scheme}://{url.target}" + (f"?{urlencode(rest)}" if rest else "")
    env = Environment()
    reader = FaultyReader(open_reader(inner_url, clock=clock), None, clock, env)
    injection = Injection(specs)
    injection.prepare(Plan(cfg=TerminalConfig()))
    injection.attach(Points(environment=env, clock=SkewedClock(clock), reader=reader), None)
    return reader


__all__ = ["FaultyReader", "ReaderFaults", "combine", "find_faulty", "open_fault_url", "with_faults"]
