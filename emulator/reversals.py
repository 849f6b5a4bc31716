"""Reversals 冲正 owed to the host: sending the journal's pending 0400s until the host acknowledges them.

:class:`Reversals` is owned by :class:`emulator.terminal.Terminal`. A purchase whose outcome the
terminal does not know stays owed in the journal (written before the send); every pending reversal
is sent up to ``reversal.retries`` times before the next transaction, after a restart too. Each try
is a ``reverse`` event of the terminal's machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.errors import ConnectError, DnsError, HostLinkError
from emulator.fsm import Event, State
from emulator.messages import Msg
from emulator.outcome import KEYS_REFUSED, text
from emulator.trace import Kind
from protocol.txn import RC, reversal_request

if TYPE_CHECKING:
    from emulator.terminal import Terminal


class Reversals:
    """The terminal's owed reversals (see the module docstring)."""

    def __init__(self, terminal: Terminal) -> None:
        self.t = terminal

    async def send_pending(self) -> int:
        """Send every pending reversal, each up to ``reversal.retries`` times now; those not acknowledged
        stay pending and go again before the next transaction (also after a restart)."""
        t = self.t
        done = 0
        keys = t.keys
        if keys is None:
            return 0
        for entry, original in t.journal.pending_reversals():
            if t.machine.state is not State.IDLE:
                t.machine.abort()
            reason = RC.parse(entry.reversal_reason or "98") or RC.NO_RESPONSE
            for _attempt in range(max(1, t.cfg.reversal_retries)):
                t._fire(Event.REVERSE)
                t.show(Msg.REVERSAL_PENDING)
                req = reversal_request(t.profile, original, reason=reason, ids=t.ids)
                t.journal.reversal_attempted(entry.id)
                try:
                    ex = await t.link.exchange(req, mak=t._mak(keys))
                except HostLinkError as e:
                    t.trace.record(Kind.JOURNAL, "reversal not acknowledged", id=entry.id, error=str(e), code=e.code)
                    t._fire(Event.HOST_FAILED)
                    if isinstance(e, DnsError | ConnectError):
                        break           # no network: try again later, not now
                    continue
                rc = ex.response.get(39)
                mac = t._response_mac(ex)
                if mac is not None:
                    t.trace.record(Kind.JOURNAL, "reversal answer not authentic", id=entry.id, mac=mac.value,
                                   code=f"mac.{mac.value}")
                    t._fire(Event.HOST_FAILED)
                    continue
                if rc in ("00", "25", "12"):
                    t.journal.reversal_done(entry.id)
                    t.trace.record(Kind.JOURNAL, "reversal acknowledged", id=entry.id, rc=rc)
                    t.show(Msg.REVERSAL_DONE)
                    done += 1
                    t._fire(Event.REVERSAL_DONE)
                    break
                t.trace.record(Kind.JOURNAL, "reversal refused", id=entry.id, rc=rc, code=f"host.rc.{text(rc)}")
                t._fire(Event.HOST_FAILED)
                if rc in KEYS_REFUSED:
                    t.machine.session.sign_on_owed = True
                    break
        return done
