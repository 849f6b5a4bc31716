"""Reader and card faults: a wrapper around any :class:`hardware.ports.CardReader`.

The wrapper changes what happens at the contacts, the supply and the card-seat switch — it
never edits the reader it wraps. Its effects follow :mod:`faults.physics`: mild contact dirt
costs parity retransmissions and still reads; more dirt browns the card out during GENERATE AC;
more still and there is no ATR. Like a real reader driver it keeps counters (``stats``) and can
be "measured" (``measure()``: contact resistance and supply voltage, as with a multimeter).

As a URL: ``fault+sim://demo?contact_ohms=12&seed=7`` (any reader URL after ``fault+``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any

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


@dataclass(frozen=True, slots=True)
class ReaderFaults:
    """What is wrong with the reader, its contacts, its supply or the card in it."""

    contact_ohms: float = 0.05          # per contact (VCC, GND, I/O)
    contact_from_apdu: int = 0          # schedule: contacts go bad from this APDU on (0 = from the start)
    supply_v: float = 5.0
    emi_v: float = 0.0                  # EMI noise on the contact line (V rms)
    temperature_c: float = 25.0
    dirt_per_insert_ohms: float = 0.0   # dirt accumulating with every insertion (until cleaned)
    wear_per_insert_ohms: float = 0.0   # aging: contacts wear with every insertion
    supply_wear_v: float = 0.0          # a battery/cable that wears out: supply drops by this per insertion
    sag_v: float = 0.0                  # supply sag depth…
    sag_from_apdu: int = 0              # …from this APDU (1-based; 0 = no sag)…
    sag_apdus: int = 1                  # …for this many APDUs
    seat_stuck: bool = False            # card-seat switch stuck closed: removal never detected
    sensor_dead: bool = False           # card-present sensor dead: insertion never detected
    pull_after_apdus: int = 0           # the card is pulled out after this many APDUs (0 = never)
    dead: bool = False                  # reader does not respond at all (dropped, damaged)
    flap_probability: float = 0.0       # intermittent reader: each operation may lose the reader
    no_contact: bool = False            # card inserted the wrong way / not fully: no chip contact
    chip_dead: bool = False             # chip damaged: never answers
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
                else:
                    values[k] = float(v)
            except ValueError:
                raise ConfigError(f"reader fault {k}={v!r} is not a number") from None
        return cls(**values)


class FaultyReader:
    """A :class:`CardReader` with faults at its contacts, supply, sensors or card."""

    def __init__(self, inner: CardReader, faults: ReaderFaults, clock: Clock | None = None) -> None:
        self.inner = inner
        self.faults = faults
        self.clock = clock
        self.rng = random.Random(faults.seed)
        self.insertions = 0
        self.apdus = 0
        self.extra_ohms = 0.0
        self.stats: dict[str, int] = {"retransmissions": 0, "resets": 0, "mute": 0, "lost": 0,
                                      "suppressed_removals": 0, "suppressed_insertions": 0}
        self._seat_closed = False

    # --- the model ----------------------------------------------------------------------------
    def model(self) -> ContactModel:
        f = self.faults
        supply = f.supply_v - f.supply_wear_v * self.insertions
        if f.sag_from_apdu and f.sag_from_apdu <= self.apdus < f.sag_from_apdu + f.sag_apdus:
            supply -= f.sag_v
        base = f.contact_ohms if not f.contact_from_apdu or self.apdus >= f.contact_from_apdu else 0.05
        return ContactModel(supply_v=supply, contact_ohms=base + self.extra_ohms, emi_v=f.emi_v,
                            temperature_c=f.temperature_c)

    def clean(self) -> None:
        """Maintenance: clean the contacts (accumulated dirt goes, wear stays)."""
        self.extra_ohms = self.insertions * self.faults.wear_per_insert_ohms

    def measure(self) -> dict[str, float]:
        """What a technician measures: contact resistance (Ω) and supply voltage (V) at rest."""
        m = self.model()
        return {"contact_ohms": round(m.measured_ohms(self.rng), 2), "supply_v": round(m.supply_v, 2),
                "card_v_idle": round(m.card_voltage(False), 2), "card_v_crypto": round(m.card_voltage(True), 2),
                "temperature_c": m.temperature_c}

    def _flap(self) -> None:
        if self.faults.dead:
            raise NoReaderError("the card reader does not respond (no USB/serial answer)")
        if self.faults.flap_probability and self.rng.random() < self.faults.flap_probability:
            self.stats["lost"] += 1
            raise NoReaderError("the card reader disappeared and came back (intermittent connection)")

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
                    continue
                self.insertions += 1
                self.extra_ohms += self.faults.dirt_per_insert_ohms + self.faults.wear_per_insert_ohms
                self._seat_closed = True
            if ev.kind is ReaderEventKind.CARD_REMOVED and self.faults.seat_stuck and self._seat_closed:
                self.stats["suppressed_removals"] += 1
                continue
            if ev.kind is ReaderEventKind.CARD_REMOVED:
                self._seat_closed = False
            return ev

    async def card_present(self) -> bool:
        if self.faults.dead:
            raise NoReaderError("the card reader does not respond (no USB/serial answer)")
        if self.faults.seat_stuck and self._seat_closed:
            return True
        if self.faults.sensor_dead:
            return False
        return await self.inner.card_present()

    async def power_on(self) -> bytes:
        self._flap()
        f = self.faults
        m = self.model()
        if f.no_contact:
            self.stats["mute"] += 1
            raise CardMuteError("no answer to reset: the chip does not touch the contacts "
                                "(card inserted the wrong way or not fully)")
        if f.chip_dead:
            self.stats["mute"] += 1
            raise CardMuteError("no answer to reset: the chip does not respond")
        if not m.temperature_ok:
            self.stats["mute"] += 1
            raise CardMuteError(f"no answer to reset at {m.temperature_c:g} °C (outside the card's range)")
        if m.browns_out(False):
            self.stats["mute"] += 1
            raise CardMuteError(f"no answer to reset: card supply {m.card_voltage():.2f} V under "
                                f"{m.v_min:g} V (contacts or power)")
        atr = await self.inner.power_on()
        repeats, failed = m.exchange(len(atr), self.rng)
        self.stats["retransmissions"] += repeats
        if failed:
            raise CardMuteError("ATR unreadable: parity errors on the I/O contact")
        return atr

    async def transmit(self, apdu: bytes) -> bytes:
        self._flap()
        self.apdus += 1
        f = self.faults
        if f.pull_after_apdus and self.apdus > f.pull_after_apdus:
            sim = getattr(self.inner, "remove", None)
            if callable(sim):
                sim()
            raise CardAbsentError("the card was removed during the transaction")
        m = self.model()
        ins = apdu[1] if len(apdu) > 1 else 0
        if m.browns_out(crypto=ins in CRYPTO_INS) or m.browns_out(False):
            self.stats["resets"] += 1
            raise CardResetError(f"card reset during the command (INS {ins:02X}): supply at the card "
                                 f"{m.card_voltage(ins in CRYPTO_INS):.2f} V")
        repeats, failed = m.exchange(len(apdu) + 1, self.rng)
        self.stats["retransmissions"] += repeats
        if failed:
            raise TransmissionError(f"parity errors: a character was repeated more than {m.max_repeats} times")
        resp = await self.inner.transmit(apdu)
        repeats, failed = m.exchange(len(resp), self.rng)
        self.stats["retransmissions"] += repeats
        if failed:
            raise TransmissionError(f"parity errors in the response (after {repeats} repetitions)")
        return resp

    async def power_off(self) -> None:
        await self.inner.power_off()

    async def close(self) -> None:
        await self.inner.close()


def with_faults(reader: CardReader, faults: ReaderFaults, clock: Clock | None = None) -> FaultyReader:
    return FaultyReader(reader, faults, clock)


def open_fault_url(url: ReaderURL, clock: Clock) -> CardReader:
    """``fault+<inner>://target?…``: the fault parameters are taken out, the rest goes to the inner
    reader (``fault+sim://cup_debit?contact_ohms=12&protocol=t0``). The ``fault+`` entry point of the
    ``posemu.readers`` group (pyproject.toml) names this factory."""
    from urllib.parse import urlencode

    inner_scheme = url.scheme.partition("+")[2]
    if not inner_scheme:
        raise ConfigError(f"reader URL {url.raw!r}: fault+ wraps another reader URL (fault+sim://demo?contact_ohms=12)")
    known = {f.name for f in fields(ReaderFaults)}
    faults = ReaderFaults.from_params({k: v for k, v in url.params.items() if k in known})
    rest = {k: v for k, v in url.params.items() if k not in known}
    inner_url = f"{inner_scheme}://{url.target}" + (f"?{urlencode(rest)}" if rest else "")
    return FaultyReader(open_reader(inner_url, clock=clock), faults, clock)


def faults_with(base: ReaderFaults, **changes: Any) -> ReaderFaults:
    return replace(base, **changes)


__all__ = ["FaultyReader", "ReaderFaults", "open_fault_url", "with_faults"]
