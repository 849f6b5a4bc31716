"""Physical models behind the reader/card faults.

**Contacts and power (ISO/IEC 7816-3 class A).** The reader supplies ``supply_v`` (5.0 V
nominal) through the VCC and GND contacts, each with resistance ``contact_ohms`` (a clean contact
is well under 1 Ω; dirt, oxide and wear raise it). The card draws ``idle_ma`` while idle and
``crypto_ma`` while it computes a cryptogram (GENERATE AC), so it sees
``V_card = V_supply − I · 2 · R_contact``; below ``v_min`` (4.5 V for class A) it browns out: no ATR
at power-up, or a reset in the middle of a crypto command.

The I/O line is pulled up to VCC by the reader (``pull_up_ohms``, 20 kΩ); the card drives a 0
through its output transistor (``driver_ohms``) and the I/O contact, so the low level is a divider,
and the reader reads a 0 as a 1 when noise lifts it over ``v_il`` (0.8 V). Noise has a floor,
grows with contact resistance (fretting noise of a dirty contact) and with EMI. Each character
is 10 bits (start, 8 data, parity); a parity error makes the receiver signal the error and the
sender repeat the character (ISO/IEC 7816-3 §7.3), up to ``max_repeats`` times before the
exchange fails.

**Temperature.** Contact resistance rises about 0.4 %/K; outside the card's operating range
(−25…+70 °C here) its oscillator and EEPROM misbehave: the card goes mute.

**Aging.** Every insertion scrapes the contacts: resistance grows by ``wear_ohms`` per insertion
(and by dirt accumulating until the contacts are cleaned).

All randomness comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

V_NOMINAL = 5.0


def q(x: float) -> float:
    """The Gaussian tail probability Q(x) = P(N(0,1) > x)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class ContactModel:
    """The electrical path from the supply through the contacts to the card: the card's voltage under
    load, brown-outs and the resistance a multimeter reads."""

    supply_v: float = V_NOMINAL
    contact_ohms: float = 0.05
    emi_v: float = 0.0
    temperature_c: float = 25.0
    idle_ma: float = 10.0
    crypto_ma: float = 30.0
    v_min: float = 4.5
    pull_up_ohms: float = 20_000.0
    driver_ohms: float = 200.0
    v_il: float = 0.8
    noise_floor_v: float = 0.05
    fretting_v_per_ohm: float = 0.02
    max_repeats: int = 3
    t_min_c: float = -25.0
    t_max_c: float = 70.0

    @property
    def effective_ohms(self) -> float:
        return self.contact_ohms * (1.0 + 0.004 * (self.temperature_c - 25.0))

    def card_voltage(self, crypto: bool = False) -> float:
        i = (self.crypto_ma if crypto else self.idle_ma) / 1000.0
        return self.supply_v - i * 2.0 * self.effective_ohms

    def browns_out(self, crypto: bool = False) -> bool:
        return self.card_voltage(crypto) < self.v_min

    @property
    def temperature_ok(self) -> bool:
        return self.t_min_c <= self.temperature_c <= self.t_max_c

    @property
    def io_low_v(self) -> float:
        r = self.driver_ohms + self.effective_ohms
        return self.supply_v * r / (r + self.pull_up_ohms)

    @property
    def io_noise_v(self) -> float:
        return math.hypot(self.noise_floor_v + self.fretting_v_per_ohm * self.effective_ohms, self.emi_v)

    @property
    def bit_error_rate(self) -> float:
        """Probability that one driven-low bit is read high."""
        return q((self.v_il - self.io_low_v) / self.io_noise_v)

    def char_error_rate(self) -> float:
        """Probability that a character arrives with a parity error (≈5 zero bits per character)."""
        return 1.0 - (1.0 - self.bit_error_rate) ** 5

    def exchange(self, n_chars: int, rng: random.Random) -> tuple[int, bool]:
        """Send ``n_chars`` characters: (repetitions needed, whether some character failed for good)."""
        p = self.char_error_rate()
        if p <= 0.0:
            return 0, False
        repeats = 0
        for _ in range(n_chars):
            tries = 0
            while rng.random() < p:
                tries += 1
                repeats += 1
                if tries > self.max_repeats:
                    return repeats, True
        return repeats, False

    def measured_ohms(self, rng: random.Random) -> float:
        """What a multimeter across a contact reads (±2 %)."""
        return self.effective_ohms * (1.0 + rng.uniform(-0.02, 0.02))

