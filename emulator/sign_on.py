"""Sign-on 签到 and sign-off 签退: the terminal's working keys for a session with the host.

:class:`KeySession` is owned by :class:`emulator.terminal.Terminal`. Sign-on (0800, MAC'd under the
terminal master key when the host asks for it) brings the working keys (field 62), the batch number
(60.2) and the host's time (fields 12/13); a host without sign-on (config ``[host] sign_on = false``)
takes the static keys of the configuration. The keys and the "sign-on owed" flag live on the
terminal's machine (:mod:`emulator.fsm`); each step is an event fired through it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from emulator.errors import HostLinkError, JournalError
from emulator.fsm import Event
from emulator.messages import Msg
from emulator.outcome import Outcome, error_screen
from emulator.trace import Kind
from protocol import keys as keymod
from protocol.errors import CryptoError, PosemuError
from protocol.txn import Field60, NetCode, TerminalIds, key_block, network_request, sign_on_request

if TYPE_CHECKING:
    from emulator.terminal import Terminal

CLOCK_TOLERANCE_S = 300.0
"""How far the terminal's clock may be from the host's (sign-on answer, fields 12/13) unnoticed."""


class KeySession:
    """Sign-on and sign-off for the terminal that owns it (see the module docstring)."""

    def __init__(self, terminal: Terminal) -> None:
        self.t = terminal

    async def sign_on(self, *, again: bool = False) -> Outcome:
        t = self.t
        cfg = t.cfg
        t._begin("sign_on")
        if t.machine.locked:
            t._note(Kind.NOTE, "terminal locked", "terminal.locked")
            t.show(Msg.TERMINAL_LOCKED)
            return t._end(t._outcome("sign_on", False, Msg.TERMINAL_LOCKED, error="terminal locked"))
        t._fire(Event.SIGN_ON)
        static = cfg.static_keys()
        if static is not None:
            return self._static_keys(static)
        t.show(Msg.SIGNING_ON_AGAIN if again else Msg.SIGNING_ON)
        try:
            req = sign_on_request(t.profile, t.ids, stan=t._stan(), operator=cfg.operator,
                                  key_scheme=cfg.key_scheme)
            # the MAC under the terminal master key proves to the host that the sign-on is ours
            ex = await t.link.exchange(req, mak=cfg.tmk if cfg.request_sign_on_mac else None)
        except (HostLinkError, JournalError) as e:
            t._note(Kind.ERROR, "sign-on not answered", e.code, error=str(e))
            return self._failed(error_screen(e), error=str(e))
        rc = str(ex.response.get(39, ""))
        t._note(Kind.NOTE, "sign-on answer", f"host.rc.{rc or 'none'}", rc=rc)
        if rc != "00":
            return self._failed(t._rc_screen(rc), rc=rc)
        try:
            keys = keymod.parse_field62(cfg.tmk, key_block(ex.response), keymod.KeyScheme(cfg.key_scheme))
        except (KeyError, TypeError, PosemuError) as e:
            code = "keys.check_value" if isinstance(e, CryptoError) else "keys.malformed"
            t._note(Kind.ERROR, "working keys refused", code, error=f"working keys: {e}")
            return self._failed(Msg.MAC_ERROR if isinstance(e, CryptoError) else Msg.FORMAT_ERROR,
                                error=f"working keys: {e}")
        t.machine.session.keys = keys
        t.machine.session.sign_on_owed = False
        f60 = ex.response.get(60)
        if isinstance(f60, str):
            with contextlib.suppress(PosemuError):
                batch = Field60.parse(f60).batch
                t.ids = TerminalIds(t.ids.tid, t.ids.mid, t.ids.header, batch)
        self._compare_clock(ex.response.get(12), ex.response.get(13))
        t._fire(Event.SIGNED_ON)
        t.show(Msg.SIGN_ON_OK)
        return t._end(t._outcome("sign_on", True, Msg.SIGN_ON_OK, rc="00"))

    def _compare_clock(self, hhmmss: object, mmdd: object) -> None:
        """The sign-on answer carries the host's local time (fields 12, 13): a terminal clock that
        is off by more than five minutes is noted in the trace (the year is not sent: the skew is
        taken within a year either way)."""
        if not (isinstance(hhmmss, str) and isinstance(mmdd, str) and len(hhmmss) == 6 and len(mmdd) == 4
                and hhmmss.isdigit() and mmdd.isdigit()):
            return
        mine = self.t.clock.wall()
        best: float | None = None
        for year in (mine.year - 1, mine.year, mine.year + 1):
            try:
                host = mine.replace(year=year, month=int(mmdd[:2]), day=int(mmdd[2:]), hour=int(hhmmss[:2]),
                                    minute=int(hhmmss[2:4]), second=int(hhmmss[4:]), microsecond=0)
            except ValueError:
                continue
            skew = (mine - host).total_seconds()
            if best is None or abs(skew) < abs(best):
                best = skew
        if best is not None and abs(best) >= CLOCK_TOLERANCE_S:
            self.t._note(Kind.NOTE, "terminal clock differs from the host's", "clock.host_skew", skew_s=round(best))

    def _static_keys(self, keys: keymod.WorkingKeys) -> Outcome:
        """A host without sign-on (config ``[host] sign_on = false``): the working keys installed in the
        config are the session's; nothing is sent."""
        t = self.t
        t.machine.session.keys = keys
        t.machine.session.sign_on_owed = False
        t.trace.record(Kind.NOTE, "static working keys from the config: this host has no sign-on",
                       code="keys.static")
        t._fire(Event.SIGNED_ON)
        t.show(Msg.SIGN_ON_OK)
        return t._end(t._outcome("sign_on", True, Msg.SIGN_ON_OK))

    def _failed(self, detail: Msg, *, rc: str | None = None, error: str | None = None) -> Outcome:
        t = self.t
        t._fire(Event.SIGN_ON_FAILED)
        t.show(Msg.SIGN_ON_FAILED)
        t.show(detail, rc=rc or "")
        return t._end(t._outcome("sign_on", False, Msg.SIGN_ON_FAILED, detail, rc=rc, error=error))

    async def sign_off(self) -> Outcome:
        """Sign off (签退): the host drops the working keys; so does the terminal."""
        t = self.t
        t._begin("sign_off")
        keys = t.keys
        if keys is None or not t.machine.can(Event.SIGN_OFF):
            return t._end(t._outcome("sign_off", False, Msg.SIGN_ON_REQUIRED))
        t._fire(Event.SIGN_OFF)
        t.show(Msg.SIGNING_OFF)
        try:
            req = network_request(t.profile, t.ids, NetCode.SIGN_OFF, stan=t._stan())
            ex = await t.link.exchange(req, mak=t._mak(keys) if t.cfg.mac_required else None)
        except (HostLinkError, JournalError) as e:
            t._note(Kind.ERROR, "sign-off not answered", e.code, error=str(e))
            t._fire(Event.SIGN_OFF_FAILED)
            t.show(Msg.SIGN_OFF_FAILED)
            return t._end(t._outcome("sign_off", False, Msg.SIGN_OFF_FAILED, error=str(e)))
        rc = str(ex.response.get(39, ""))
        t.machine.session.keys = None           # whatever the host said, these keys are done
        t._fire(Event.SIGNED_OFF if rc == "00" else Event.SIGN_OFF_FAILED)
        head = Msg.SIGN_OFF_OK if rc == "00" else Msg.SIGN_OFF_FAILED
        t.show(head)
        return t._end(t._outcome("sign_off", rc == "00", head, rc=rc))
