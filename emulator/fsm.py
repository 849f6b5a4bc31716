"""The terminal's state: every transition in one table, and the session flags in one object.

After h11's ``_state.py``: the terminal (:mod:`emulator.terminal`) fires events, :class:`Machine`
checks each against :data:`TRANSITIONS` and records it — including aborts, locks and the failed
removal — so a flow can be read, tested and diagnosed. The flags that steer the flow (signed on,
locked, failed operator passwords, a sign-on owed after the host refused our keys) live in
:class:`Session` on the machine, not on the terminal. ::

    IDLE ─sign_on→ SIGNING_ON ─signed_on/sign_on_failed→ IDLE      IDLE ─sign_off→ SIGNING_OFF → IDLE
    IDLE ─start→ WAIT_CARD ─inserted/swiped→ READING_CARD ─card_read→ PIN_ENTRY ─pin/no_pin→ ONLINE
         ONLINE ─response/host_failed→ RESULT     ONLINE ─complete→ COMPLETING ─completed→ RESULT
    a failure on the way (read_failed, reader_failed, card_pulled, cancel, timeout) → RESULT
    RESULT ─no_card→ IDLE      RESULT ─card_in_slot→ REMOVE_CARD ─card_removed→ IDLE
    REMOVE_CARD ─removal_timeout→ REMOVE_CARD_FAILED ─card_removed / removal_acknowledged→ IDLE
    IDLE ─reverse→ REVERSING ─reversal_done/host_failed→ IDLE
    IDLE ─settle→ SETTLING ─settled/settle_failed→ IDLE    SETTLING ─upload→ UPLOADING ─settle→ SETTLING
    IDLE ─lock→ LOCKED ─unlock→ IDLE          any state but IDLE ─abort→ IDLE
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import StateError


class State(enum.Enum):
    """Where the terminal is in its flow (the diagram above)."""

    IDLE = "idle"
    SIGNING_ON = "signing on"
    SIGNING_OFF = "signing off"
    WAIT_CARD = "waiting for card"
    READING_CARD = "reading card"
    PIN_ENTRY = "PIN entry"
    ONLINE = "online"
    COMPLETING = "completing with the card"      # second GENERATE AC after the host's answer
    RESULT = "result"
    REMOVE_CARD = "remove card"
    REMOVE_CARD_FAILED = "card removal failed"
    REVERSING = "reversing"
    SETTLING = "settling"                        # 0500 with the batch totals
    UPLOADING = "uploading the batch"            # 0320 of each transaction after a 95
    LOCKED = "locked"


class Event(enum.Enum):
    """What happened; :data:`TRANSITIONS` says where it leads from each state that allows it."""

    SIGN_ON = "sign on"
    SIGNED_ON = "signed on"
    SIGN_ON_FAILED = "sign-on failed"
    SIGN_OFF = "sign off"
    SIGNED_OFF = "signed off"
    SIGN_OFF_FAILED = "sign-off failed"
    START = "start transaction"
    CARD_INSERTED = "card inserted"
    CARD_SWIPED = "card swiped"
    CARD_READ = "card read"
    READ_FAILED = "card read failed"
    RETRY_READ = "retry read"                    # swipe again / insert the chip / fall back to the stripe
    READER_FAILED = "reader failed"              # the reader itself went away or its service is down
    CARD_PULLED = "card pulled"                  # the card left (or was reset) in the middle of the flow
    PIN_ENTERED = "PIN entered"
    NO_PIN = "no PIN needed"
    CANCEL = "cancel"
    TIMEOUT = "timeout"                          # nobody presented a card / typed the PIN in time
    SENT = "request sent"
    RESEND = "resend under a new STAN"           # the host refused a reused STAN (94)
    RESPONSE = "response"
    HOST_FAILED = "host failed"
    COMPLETE = "complete with the card"
    COMPLETED = "card completed"
    CARD_IN_SLOT = "card still in slot"
    NO_CARD = "no card in slot"
    CARD_REMOVED = "card removed"
    REMOVAL_TIMEOUT = "removal timeout"
    REMOVAL_ACKNOWLEDGED = "removal failure acknowledged"   # the operator goes on; the seat switch is faulty
    REVERSE = "reverse"
    REVERSAL_DONE = "reversal done"
    SETTLE = "settle"
    UPLOAD = "upload the batch"                  # the host's totals differ (95)
    SETTLED = "settled"
    SETTLE_FAILED = "settlement failed"
    LOCK = "lock"
    UNLOCK = "unlock"
    ABORT = "abort"


S, E = State, Event

_IN_FLOW = (S.WAIT_CARD, S.READING_CARD, S.PIN_ENTRY, S.ONLINE, S.COMPLETING)

TRANSITIONS: dict[tuple[State, Event], State] = {
    # sign-on / sign-off
    (S.IDLE, E.SIGN_ON): S.SIGNING_ON,
    (S.SIGNING_ON, E.SIGNED_ON): S.IDLE,
    (S.SIGNING_ON, E.SIGN_ON_FAILED): S.IDLE,
    (S.IDLE, E.SIGN_OFF): S.SIGNING_OFF,
    (S.SIGNING_OFF, E.SIGNED_OFF): S.IDLE,
    (S.SIGNING_OFF, E.SIGN_OFF_FAILED): S.IDLE,
    # card acquisition
    (S.IDLE, E.START): S.WAIT_CARD,
    (S.WAIT_CARD, E.CARD_INSERTED): S.READING_CARD,
    (S.WAIT_CARD, E.CARD_SWIPED): S.READING_CARD,
    (S.WAIT_CARD, E.CANCEL): S.RESULT,
    (S.WAIT_CARD, E.TIMEOUT): S.RESULT,
    (S.WAIT_CARD, E.READER_FAILED): S.RESULT,
    (S.WAIT_CARD, E.READ_FAILED): S.RESULT,      # a card the terminal will not take (type disabled…)
    (S.READING_CARD, E.CARD_READ): S.PIN_ENTRY,
    (S.READING_CARD, E.RETRY_READ): S.WAIT_CARD,
    (S.READING_CARD, E.READ_FAILED): S.RESULT,
    (S.READING_CARD, E.READER_FAILED): S.RESULT,
    (S.READING_CARD, E.CARD_PULLED): S.RESULT,
    (S.READING_CARD, E.CANCEL): S.RESULT,        # cardholder cancelled at the chip's offline PIN
    # cardholder verification
    (S.PIN_ENTRY, E.PIN_ENTERED): S.ONLINE,
    (S.PIN_ENTRY, E.NO_PIN): S.ONLINE,
    (S.PIN_ENTRY, E.CANCEL): S.RESULT,
    (S.PIN_ENTRY, E.TIMEOUT): S.RESULT,
    (S.PIN_ENTRY, E.CARD_PULLED): S.RESULT,
    (S.PIN_ENTRY, E.READ_FAILED): S.RESULT,      # offline PIN blocked / a local check failed
    # online
    (S.ONLINE, E.SENT): S.ONLINE,
    (S.ONLINE, E.RESEND): S.ONLINE,
    (S.ONLINE, E.RESPONSE): S.RESULT,
    (S.ONLINE, E.HOST_FAILED): S.RESULT,
    (S.ONLINE, E.CARD_PULLED): S.ONLINE,         # noted; the host's answer still decides
    (S.ONLINE, E.COMPLETE): S.COMPLETING,
    (S.COMPLETING, E.COMPLETED): S.RESULT,
    (S.COMPLETING, E.CARD_PULLED): S.RESULT,
    (S.COMPLETING, E.READ_FAILED): S.RESULT,
    # end of transaction
    (S.RESULT, E.CARD_IN_SLOT): S.REMOVE_CARD,
    (S.RESULT, E.NO_CARD): S.IDLE,
    (S.REMOVE_CARD, E.CARD_REMOVED): S.IDLE,
    (S.REMOVE_CARD, E.REMOVAL_TIMEOUT): S.REMOVE_CARD_FAILED,
    (S.REMOVE_CARD_FAILED, E.CARD_REMOVED): S.IDLE,
    (S.REMOVE_CARD_FAILED, E.REMOVAL_ACKNOWLEDGED): S.IDLE,
    # reversals
    (S.IDLE, E.REVERSE): S.REVERSING,
    (S.REVERSING, E.REVERSAL_DONE): S.IDLE,
    (S.REVERSING, E.HOST_FAILED): S.IDLE,
    # settlement (结算) and batch upload (批上送)
    (S.IDLE, E.SETTLE): S.SETTLING,
    (S.SETTLING, E.UPLOAD): S.UPLOADING,
    (S.UPLOADING, E.SETTLE): S.SETTLING,
    (S.SETTLING, E.SETTLED): S.IDLE,
    (S.SETTLING, E.SETTLE_FAILED): S.IDLE,
    (S.UPLOADING, E.SETTLE_FAILED): S.IDLE,
    # operator lock (B12)
    (S.IDLE, E.LOCK): S.LOCKED,
    (S.LOCKED, E.UNLOCK): S.IDLE,
    # an aborted flow (the UI's Esc, a crash of the flow's task) goes back to IDLE, recorded
    **{(s, E.ABORT): S.IDLE for s in State if s not in (S.IDLE, S.LOCKED)},
}


@dataclass(slots=True)
class Session:
    """The flags that steer the terminal between transactions."""

    keys: Any = None                    # protocol.keys.WorkingKeys once signed on
    operator_failures: int = 0
    sign_on_owed: bool = False          # the host refused our keys (77/A0): sign on again before the next one

    @property
    def signed_on(self) -> bool:
        return self.keys is not None

    def __repr__(self) -> str:
        return f"Session(signed_on={self.signed_on}, operator_failures={self.operator_failures})"


@dataclass(slots=True)
class Machine:
    """The terminal's state, the recorded path of every transition and the session flags; only :meth:`fire` moves it."""

    state: State = State.IDLE
    path: list[tuple[State, Event, State]] = field(default_factory=list)
    session: Session = field(default_factory=Session)

    @property
    def locked(self) -> bool:
        return self.state is State.LOCKED

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

    def abort(self) -> bool:
        """Back to IDLE from the middle of a flow, recorded as an ``abort``; ``False`` if already idle."""
        if not self.can(Event.ABORT):
            return False
        self.fire(Event.ABORT)
        return True


def reachable(start: State = State.IDLE) -> set[State]:
    """Every state some sequence of events leads to from ``start``."""
    seen, todo = {start}, [start]
    while todo:
        s = todo.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is s and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen
