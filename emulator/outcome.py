"""What a terminal flow produces and passes between its parts: the result types and small pure helpers.

:class:`Outcome` is what a transaction ended with; :class:`Failure` why a step could not go on (a
value, not an exception); :class:`ChipCard` what the card read gave; :class:`Ref` how the host and
the terminal name one transaction. The helpers map a response code or a link error to its screen,
and find the hardware error under a kernel error.
Everything here is re-exported by :mod:`emulator.terminal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.errors import ConnectError, DnsError, HostTimeout, JournalError, LinkLost
from emulator.fsm import Event
from emulator.messages import Msg, Screen, format_amount
from hardware.errors import HardwareError
from protocol.errors import PosemuError
from protocol.txn import BatchTotals, CardData

RC_SCREENS: dict[str, Msg] = {
    "12": Msg.NOT_PERMITTED, "13": Msg.DECLINED, "14": Msg.INVALID_CARD, "30": Msg.FORMAT_ERROR,
    "51": Msg.INSUFFICIENT_FUNDS, "54": Msg.EXPIRED_CARD, "55": Msg.WRONG_PIN, "57": Msg.NOT_PERMITTED,
    "58": Msg.NOT_PERMITTED, "62": Msg.RESTRICTED_CARD, "75": Msg.PIN_TRIES_EXCEEDED, "91": Msg.HOST_BUSY,
    "94": Msg.DUPLICATE, "96": Msg.HOST_BUSY, "77": Msg.SIGN_ON_REQUIRED, "A0": Msg.MAC_ERROR,
    "A4": Msg.VERSION_REJECTED, "25": Msg.ORIGINAL_NOT_FOUND, "64": Msg.AMOUNT_MISMATCH,
}
KEYS_REFUSED = frozenset({"77", "A0"})          # the host no longer takes our working keys: sign on again


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a step of the flow could not go on (a value, not an exception)."""

    detail: Msg
    code: str                      # evidence code
    reason: str
    event: Event = Event.READ_FAILED
    removal: bool = False          # the card left the reader mid-transaction: 拔出卡失败
    retry: bool = False            # a chip read that may be tried again (READER_ERROR, then fallback)
    hint: dict[str, str] | None = None   # reason/remedy params of a READER_PROBLEM line under the detail


@dataclass(frozen=True, slots=True)
class ChipCard:
    """What the card read gave: the card data, how the cardholder was verified and, for a chip, the
    kernel that completes the transaction with the card after the host's answer."""

    card: CardData
    online_pin: str | None = field(default=None, repr=False)
    offline_pin_ok: bool = False
    kernel: Any = field(default=None, repr=False, compare=False)     # emulator.emv.EmvKernel


@dataclass(frozen=True, slots=True)
class Ref:
    """How the host and the terminal refer to one transaction: STAN (11), RRN (37), authorization code (38)."""

    stan: str | None = None
    rrn: str | None = None
    auth_code: str | None = None


@dataclass(slots=True)
class Outcome:
    """What a transaction ended with, with the data a receipt and the journal need."""

    kind: str
    approved: bool
    headline: Msg
    detail: Msg | None = None
    rc: str | None = None
    balance: int | None = None
    currency: str = "156"
    journal_id: int | None = None
    screens: list[Screen] = field(default_factory=list)
    error: str | None = None
    amount: int | None = None
    pan_masked: str = ""
    stan: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    batch: str = ""
    tid: str = ""
    mid: str = ""
    when: str = ""
    entry: str = ""
    evidence: list[str] = field(default_factory=list)
    totals: BatchTotals | None = None          # a settlement's batch totals
    original_id: int | None = None             # the journal row a void, refund or completion names

    @property
    def codes(self) -> list[str]:
        return [s.code for s in self.screens]


def amount_params(amount: int | None, currency: str) -> dict[str, str]:
    """The ``amount`` parameter of a screen, when there is an amount."""
    return {} if amount is None else {"amount": format_amount(amount, currency)}


def error_screen(e: PosemuError) -> Msg:
    """The detail line for a host link or journal error."""
    if isinstance(e, JournalError):
        return Msg.JOURNAL_FULL
    if isinstance(e, DnsError):
        return Msg.DNS_FAILED
    if isinstance(e, ConnectError):
        return Msg.CONNECT_FAILED
    if isinstance(e, HostTimeout):
        return Msg.TIMEOUT
    if isinstance(e, LinkLost):
        return Msg.FORMAT_ERROR if e.code == "iso.undecodable" else Msg.LINK_LOST
    return Msg.CONNECT_FAILED


def root_cause(e: BaseException) -> PosemuError:
    """The hardware error under a kernel error (the card's or the reader's own), else ``e`` itself."""
    seen: BaseException | None = e
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, HardwareError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e if isinstance(e, PosemuError) else PosemuError(str(e))


def text(v: object) -> str | None:
    """A message field's value when it is text, else ``None``."""
    return v if isinstance(v, str) else None
