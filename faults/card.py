"""Card-level faults: a virtual card whose stripe data is incomplete, or whose chip is dead."""

from __future__ import annotations

from hardware.ports import VirtualCard


class StripeOverride:
    """Wraps a card; its chip is unchanged, its stripe holds other (e.g. truncated) data."""

    def __init__(self, inner: VirtualCard, stripe: tuple[str | None, str | None, str | None]) -> None:
        self.inner = inner
        self._stripe = stripe

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return self._stripe

    def reset(self) -> None:
        self.inner.reset()

    def execute(self, apdu: bytes) -> bytes:
        return self.inner.execute(apdu)


def truncated_stripe(card: VirtualCard, keep: int) -> tuple[str | None, str | None, str | None]:
    """The stripe with every track cut to ``keep`` characters (data lost at the end of the stripe)."""
    return tuple(t[:keep] if t is not None else None for t in card.stripe)  # type: ignore[return-value]


class DeadChip:
    """Wraps a card whose chip no longer answers: no answer to reset (the stripe still reads)."""

    def __init__(self, inner: VirtualCard) -> None:
        self.inner = inner

    @property
    def atr(self) -> bytes:
        return b""

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return self.inner.stripe

    def reset(self) -> None:
        self.inner.reset()

    def execute(self, apdu: bytes) -> bytes:
        return b""
