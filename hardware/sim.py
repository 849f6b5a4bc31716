"""``sim://<card-profile>`` — an in-process virtual reader holding virtual cards.

The reader is product code, not a test fake: the CLI and the UI use it, and it behaves like a
real combined reader — a card-seat switch, an IC slot that powers a :class:`VirtualCard`, and a
magstripe head that reports what a swipe decoded. User actions (:meth:`SimReader.insert`,
:meth:`SimReader.swipe`, :meth:`SimReader.remove`) produce the reader events a real reader
would.

URL parameters: ``?present=1`` starts with the card inserted; ``?swipe=1`` queues one swipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from hardware.cards.profiles import CardProfile, load_profile
from hardware.clock import Clock
from hardware.errors import CardAbsentError, CardMuteError
from hardware.magstripe import Damage, SwipeParams, simulate_swipe
from hardware.ports import ReaderEvent, ReaderEventKind, SwipeResult, TrackRead, TrackStatus, VirtualCard
from hardware.registry import ReaderURL


class StripeOnlyCard:
    """A card with a magnetic stripe and no chip: every APDU gets no answer (mute)."""

    def __init__(self, profile: CardProfile) -> None:
        self.profile = profile

    @property
    def atr(self) -> bytes:
        return b""

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return (self.profile.track1, self.profile.track2, None)

    def reset(self) -> None:
        return None

    def execute(self, apdu: bytes) -> bytes:
        return b""


def card_for_profile(profile: CardProfile) -> VirtualCard:
    """The virtual card a profile describes.

    A profile with a chip (a ``[chip]`` table, or a 2xx/6xx service code) gets an
    :class:`hardware.cards.emv_card.EmvCard`; with ``chip.t0_wire = true`` the card is reached
    through the T=0 character-level adapter (:func:`hardware.t0.wire_t0`). Stripe-only
    profiles get a :class:`StripeOnlyCard`.
    """
    if profile.emv is None:
        return StripeOnlyCard(profile)
    from hardware.cards.emv_card import EmvCard  # lazy: keeps the sim importable without the chip stack

    card: VirtualCard = EmvCard(profile)
    if profile.emv.t0_wire:
        from hardware.t0 import wire_t0

        card = wire_t0(card)
    return card


def stripe_damage(card: VirtualCard) -> tuple[Damage, ...]:
    """The damaged regions a card's profile gives its stripe (``[stripe] damage = […]``)."""
    profile = None
    c: object = card
    for _ in range(4):                    # through wrappers (T=0 wire, stripe overrides)
        profile = getattr(c, "profile", None)
        if profile is not None:
            break
        c = getattr(c, "inner", None) or getattr(c, "card", None)
        if c is None:
            break
    regions = getattr(profile, "stripe_damage", ()) if profile is not None else ()
    return tuple(Damage(r.start_in, r.end_in, r.severity) for r in regions)


def ideal_swipe(card: VirtualCard) -> SwipeResult:
    """A perfect swipe: every track present on the stripe reads back exactly."""
    reads = []
    for i, data in enumerate(card.stripe, start=1):
        if data is None:
            reads.append(TrackRead(i, TrackStatus.NO_DATA))
        else:
            reads.append(TrackRead(i, TrackStatus.OK, data))
    return SwipeResult(tuple(reads))


# Card processing times (seconds) by INS, typical of contact EMV cards: GENERATE AC computes a
# 3DES/AES cryptogram, VERIFY writes the try counter to EEPROM.
CARD_PROCESSING_S: dict[int, float] = {0xAE: 0.25, 0x20: 0.06, 0xA8: 0.04, 0xB2: 0.02, 0xA4: 0.02, 0xCA: 0.01}


def transfer_seconds(n_chars: int, baud: int = 9600, etu_per_char: int = 12) -> float:
    """Time for ``n_chars`` characters on the I/O line (ISO/IEC 7816-3: 1 start + 8 data + parity
    + 2 guard etu; at the default 9600 bps, ~1.25 ms per character)."""
    return n_chars * etu_per_char / baud


def physical_swipe(card: VirtualCard, params: SwipeParams | None = None, seed: int | None = None) -> SwipeResult:
    """What a magstripe head decodes from one swipe of ``card``: through the physical model when
    ``params`` or ``seed`` is given or the card's stripe is damaged, else exactly (:func:`ideal_swipe`)."""
    worn = stripe_damage(card)
    if params is None and seed is None and not worn:
        return ideal_swipe(card)
    physics = params or SwipeParams()
    if worn:                              # the card's own stripe damage (its profile)
        physics = dataclasses.replace(physics, damage=physics.damage + worn)
    if seed is not None:
        physics = dataclasses.replace(physics, seed=seed)
    return simulate_swipe(card.stripe, physics).result


class SimReader:
    """A virtual combined IC + magstripe reader.

    With ``timing`` (the default) the card takes the time a real one does: characters cross the
    I/O line at ``baud`` and the card spends :data:`CARD_PROCESSING_S` on its commands, all on
    the Clock — real milliseconds in the UI, free on the virtual clock.
    """

    def __init__(self, clock: Clock, name: str = "posemu virtual reader", *, timing: bool = True,
                 baud: int = 9600) -> None:
        self._clock = clock
        self._name = name
        self.timing = timing
        self.baud = baud
        self._card: VirtualCard | None = None
        self._powered = False
        self._events: asyncio.Queue[ReaderEvent] = asyncio.Queue()
        self.default_card: VirtualCard | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def card(self) -> VirtualCard | None:
        return self._card

    # --- user actions -------------------------------------------------------------------
    def insert(self, card: VirtualCard | None = None) -> None:
        """Put a card in the IC slot (the card-seat switch closes)."""
        card = card or self.default_card
        if card is None:
            raise CardAbsentError("no card to insert")
        if self._card is not None:
            return
        self._card = card
        self._powered = False
        self._events.put_nowait(ReaderEvent(ReaderEventKind.CARD_INSERTED))

    def remove(self) -> None:
        """Pull the card out of the IC slot."""
        if self._card is None:
            return
        self._card = None
        self._powered = False
        self._events.put_nowait(ReaderEvent(ReaderEventKind.CARD_REMOVED))

    def swipe(
        self,
        card: VirtualCard | None = None,
        result: SwipeResult | None = None,
        params: SwipeParams | None = None,
        seed: int | None = None,
    ) -> SwipeResult:
        """Swipe a card through the magstripe head; returns (and queues) what the head decoded.

        ``result`` forces the outcome. With ``params`` (or just a ``seed``) the swipe runs through
        the physical model (:func:`hardware.magstripe.simulate_swipe`: speed, skew, dirt, noise,
        damage → head signal → reader-ASIC decoder); ``seed`` overrides ``params.seed``. With
        neither, every track on the stripe reads back exactly (:func:`ideal_swipe`).
        """
        card = card or self.default_card
        if card is None:
            raise CardAbsentError("no card to swipe")
        res = result if result is not None else physical_swipe(card, params, seed)
        self._events.put_nowait(ReaderEvent(ReaderEventKind.CARD_SWIPED, swipe=res))
        return res

    # --- CardReader port ----------------------------------------------------------------
    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        if timeout is None:
            return await self._events.get()
        try:
            async with asyncio.timeout(timeout):
                return await self._events.get()
        except TimeoutError:
            return None

    async def card_present(self) -> bool:
        return self._card is not None

    async def power_on(self) -> bytes:
        card = self._require_card()
        card.reset()
        atr = card.atr
        if not atr:
            raise CardMuteError("the card gave no answer to reset (no chip, or chip not contacted)")
        self._powered = True
        return atr

    async def transmit(self, apdu: bytes) -> bytes:
        card = self._require_card()
        if not self._powered:
            raise CardAbsentError("card is not powered; power it on first")
        resp = card.execute(apdu)
        if len(resp) < 2:
            raise CardMuteError("the card did not answer the command")
        if self.timing:
            ins = apdu[1] if len(apdu) > 1 else 0
            await self._clock.sleep(transfer_seconds(len(apdu) + len(resp) + 1, self.baud)
                                    + CARD_PROCESSING_S.get(ins, 0.01))
        return resp

    async def power_off(self) -> None:
        self._powered = False

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.power_off()

    def _require_card(self) -> VirtualCard:
        if self._card is None:
            raise CardAbsentError("no card in the reader")
        return self._card


def open_sim_reader(url: ReaderURL, clock: Clock) -> SimReader:
    """Factory for ``sim://<profile>[?protocol=t0|direct&present=1&swipe=1&timing=0|1&baud=9600]``."""
    unknown = set(url.params) - {"present", "swipe", "protocol", "timing", "baud"}
    if unknown:
        from protocol.errors import ConfigError

        raise ConfigError(f"sim:// has no parameter {', '.join(sorted(unknown))} "
                          "(known: present, swipe, protocol, timing, baud)")
    reader = SimReader(clock, timing=url.params.get("timing", "1") != "0", baud=url.int_param("baud", 9600))
    if url.target:
        reader.default_card = card_for_profile(load_profile(url.target))
    protocol = url.params.get("protocol")
    if protocol == "t0" and reader.default_card is not None and reader.default_card.atr:
        from hardware.t0 import T0WiredCard, wire_t0

        if not isinstance(reader.default_card, T0WiredCard):
            reader.default_card = wire_t0(reader.default_card)   # APDUs cross a T=0 character line
    elif protocol not in (None, "t0", "direct"):
        from protocol.errors import ConfigError

        raise ConfigError(f"sim:// protocol must be t0 or direct, got {protocol!r}")
    if url.params.get("present") == "1":
        reader.insert()
    if url.params.get("swipe") == "1":
        reader.swipe()
    return reader
