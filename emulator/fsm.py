"""The terminal's transaction state machine: every transition in one table.

::

    IDLE ─sign_on→ SIGNING_ON ─ok/fail→ IDLE
    IDLE ─start→ WAIT_CARD ─inserted/swiped→ READING_CARD ─read_ok→ PIN_ENTRY ─pin→ ONLINE
         ONLINE ─response/host_failed→ RESULT ─(card in slot)→ REMOVE_CARD ─removed→ IDLE
    any failure on the way → RESULT; RESULT → IDLE when no card is in the slot
    REMOVE_CARD ─removal_timeout→ REMOVE_CARD_FAILED ─removed→ IDLE
    IDLE ─reverse→ REVERSING ─done/failed→ IDLE

The terminal (:mod:`emulator.terminal`) fires events; :class:`Machine` checks each against
:data:`TRANSITIONS` and records the path, so a flow can be read, tested and diagnosed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from emulator.errors import StateError


class State(enum.Enum):
    IDLE = "idle"
    SIGNING_ON = "signing on"
    WAIT_CARD = "waiting for card"
    READING_CARD = "reading card"
    PIN_ENTRY = "PIN entry"
    ONLINE = "online"
    RESULT = "result"
    REMOVE_CARD = "remove card"
    REMOVE_CARD_FAILED = "card removal failed"
    REVERSING = "reversing"


class Event(enum.Enum):
    SIGN_ON = "sign on"
    SIGNED_ON = "signed on"
    SIGN_ON_FAILED = "sign-on failed"
    START = "start transaction"
    CARD_INSERTED = "card inserted"
    CARD_SWIPED = "card swiped"
    CARD_READ = "card read"
    READ_FAILED = "card read failed"
    RETRY_READ = "retry read"            # swipe again / fallback to the stripe
    PIN_ENTERED = "PIN entered"
    NO_PIN = "no PIN needed"
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    CARD_REMOVED = "card removed"
    SENT = "request sent"
    RESEND = "resend under a new STAN"   # the host refused a reused STAN (94)
    RESPONSE = "response"
    HOST_FAILED = "host failed"
    CARD_IN_SLOT = "card still in slot"
    NO_CARD = "no card in slot"
    REMOVAL_TIMEOUT = "removal timeout"
    REVERSE = "reverse"
    REVERSAL_DONE = "reversal done"


S, E = State, Event

TRANSITIONS: dict[tuple[State, Event], State] = {
    # sign-on
    (S.IDLE, E.SIGN_ON): S.SIGNING_ON,
    (S.SIGNING_ON, E.SIGNED_ON): S.IDLE,
    (S.SIGNING_ON, E.SIGN_ON_FAILED): S.IDLE,
    # card acquisition
    (S.IDLE, E.START): S.WAIT_CARD,
    (S.WAIT_CARD, E.CARD_INSERTED): S.READING_CARD,
    (S.WAIT_CARD, E.CARD_SWIPED): S.READING_CARD,
    (S.WAIT_CARD, E.CANCEL): S.RESULT,
    (S.WAIT_CARD, E.TIMEOUT): S.RESULT,
    (S.READING_CARD, E.CARD_READ): S.PIN_ENTRY,
    (S.READING_CARD, E.RETRY_READ): S.WAIT_CARD,
    (S.READING_CARD, E.READ_FAILED): S.RESULT,
    (S.READING_CARD, E.CARD_REMOVED): S.RESULT,
    # cardholder verification
    (S.PIN_ENTRY, E.PIN_ENTERED): S.ONLINE,
    (S.PIN_ENTRY, E.NO_PIN): S.ONLINE,
    (S.PIN_ENTRY, E.CANCEL): S.RESULT,
    (S.PIN_ENTRY, E.TIMEOUT): S.RESULT,
    (S.PIN_ENTRY, E.CARD_REMOVED): S.RESULT,
    (S.PIN_ENTRY, E.READ_FAILED): S.RESULT,      # offline PIN blocked / chip failed during CVM
    # online
    (S.ONLINE, E.SENT): S.ONLINE,
    (S.ONLINE, E.RESEND): S.ONLINE,
    (S.ONLINE, E.RESPONSE): S.RESULT,
    (S.ONLINE, E.HOST_FAILED): S.RESULT,
    (S.ONLINE, E.CARD_REMOVED): S.ONLINE,        # noted; the host answer still decides
    # end of transaction
    (S.RESULT, E.CARD_IN_SLOT): S.REMOVE_CARD,
    (S.RESULT, E.NO_CARD): S.IDLE,
    (S.REMOVE_CARD, E.CARD_REMOVED): S.IDLE,
    (S.REMOVE_CARD, E.REMOVAL_TIMEOUT): S.REMOVE_CARD_FAILED,
    (S.REMOVE_CARD_FAILED, E.CARD_REMOVED): S.IDLE,
    (S.REMOVE_CARD_FAILED, E.CANCEL): S.IDLE,    # operator acknowledges; the seat switch is faulty
    # reversals
    (S.IDLE, E.REVERSE): S.REVERSING,
    (S.REVERSING, E.REVERSAL_DONE): S.IDLE,
    (S.REVERSING, E.HOST_FAILED): S.IDLE,
}


@dataclass(slots=True)
class Machine:
    state: State = State.IDLE
    path: list[tuple[State, Event, State]] = field(default_factory=list)

    def can(self, event: Event) -> bool:
        return (self.state, event) in TRANSITIONS

    def fire(self, event: Event) -> State:
        try:
            new = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise StateError(f"event {event.value!r} is not allowed in state {self.state.value!r}") from None
        self.path.append((self.state, event, new))
        self.state = new
        return new

    def reset(self) -> None:
        """Back to IDLE after an aborted flow (recorded as such)."""
        self.state = State.IDLE
