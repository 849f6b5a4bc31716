"""``pcsc://<reader index or name>`` — any PC/SC reader, through pyscard and pcscd.

URL forms (see docs/readers.md):

* ``pcsc://0`` — the first reader pcscd lists (``pcsc://1`` the second, …);
* ``pcsc://Virtual PCD 00 01`` — the first reader whose name contains the text (case-insensitive;
  an exact name wins). URL-encode spaces in shells if needed (``Virtual%20PCD``).

Query parameters: ``protocol=t0|t1|any`` (default ``any``), ``share=shared|exclusive`` (default
``shared``), ``getresponse=1|0`` (default 1: handle ``61xx``/``6Cxx`` here), ``poll=SECONDS``
(default 0.5: how long one blocking ``SCardGetStatusChange`` may take before the wait loop looks
at its own deadline again).

Every pyscard call blocks, so each runs in a worker thread announced to the clock
(:func:`hardware.clock.run_external`); the event loop never blocks, and a virtual clock follows
real time while a call is in flight. Hot-plug monitoring polls ``SCardGetStatusChange`` with the
last known reader state (including pcsc-lite's event counter in the high 16 bits), so a card
removed and re-inserted between two polls is still reported as removal + insertion.

Every PC/SC status is translated into :mod:`hardware.errors` (:func:`pcsc_error`, with the status
table, in :mod:`hardware.pcsc_status`), with a message that says what to check. pyscard itself
is imported lazily: only ``pcsc://`` needs it.

Transport (ISO/IEC 7816-3 §10.3.3 / 7816-4 §5.1.3; EMV Book 1 §9.3.1): pcscd and pyscard hand
``61xx`` and ``6Cxx`` back to the caller (pyscard's ``transmit`` does not issue GET RESPONSE), so
the backend runs posemu's one exchange helper, :func:`protocol.apdu.exchange`: ``61xx`` →
``GET RESPONSE 00 C0 00 00 xx`` (chained, data concatenated), ``6Cxx`` → the same command again
with ``Le = xx``. A card that never ends the chain is a :class:`TransmissionError`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hardware.clock import Clock, poll_slice, run_external
from hardware.errors import (
    CardAbsentError,
    CardMuteError,
    NoReaderError,
    ReaderError,
    ServiceUnavailableError,
    TransmissionError,
)
from hardware.pcsc_status import (
    _HINT_MUTE,
    _HINT_NO_READER,
    SCARD_E_CANCELLED,
    SCARD_E_INVALID_HANDLE,
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_E_NO_SMARTCARD,
    SCARD_E_READER_UNAVAILABLE,
    SCARD_E_SERVICE_STOPPED,
    SCARD_E_TIMEOUT,
    SCARD_E_UNKNOWN_READER,
    SCARD_S_SUCCESS,
    SCARD_W_REMOVED_CARD,
    STATE_CHANGED,
    STATE_PRESENT,
    STATE_UNAWARE,
    STATE_UNKNOWN,
    CardState,
    _u32,
    card_state,
    derive_events,
    pcsc_error,
)
from hardware.ports import ReaderEvent, ReaderEventKind
from hardware.registry import ReaderURL
from protocol.apdu import ExchangeError, exchange
from protocol.errors import ConfigError, DecodeError

__all__ = [
    "CardState",
    "PcscReader",
    "PcscReaderInfo",
    "card_state",
    "list_readers",
    "list_readers_blocking",
    "open_pcsc_reader",
    "pcsc_error",
    "select_reader",
]


def _scard() -> ModuleType:
    try:
        scard: ModuleType = importlib.import_module("smartcard.scard")
    except ImportError as e:
        raise ServiceUnavailableError(
            f"pyscard is not installed ({e}); install it with `pip install 'posemu[pcsc]'` "
            "(building it needs swig and libpcsclite-dev)"
        ) from None
    return scard


def _check(hr: int, action: str, reader: str = "") -> None:
    if _u32(hr) != SCARD_S_SUCCESS:
        raise pcsc_error(hr, action, reader)


def _guarded(action: str, reader: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a pyscard function; anything pyscard raises becomes a :class:`ReaderError`."""
    try:
        return fn(*args)
    except ReaderError:
        raise
    except Exception as e:  # pyscard raises its own and SWIG errors: translate at the boundary
        raise ReaderError(f"{action} ({reader or 'PC/SC'}): pyscard failed: {type(e).__name__}: {e}") from None


# --- listing ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PcscReaderInfo:
    """One reader as pcscd lists it: its index, name, card state and the card's ATR."""

    index: int
    name: str
    state: CardState
    atr: bytes = b""

    @property
    def present(self) -> bool:
        return self.state in (CardState.PRESENT, CardState.IN_USE, CardState.EXCLUSIVE, CardState.MUTE)


def list_readers_blocking() -> list[PcscReaderInfo]:
    """Every reader pcscd knows, with its card state. Blocks: call through ``run_external``."""
    s = _scard()
    hr, ctx = _guarded("connect to pcscd", "", s.SCardEstablishContext, s.SCARD_SCOPE_USER)
    _check(hr, "connect to pcscd")
    try:
        hr, names = _guarded("list readers", "", s.SCardListReaders, ctx, [])
        if _u32(hr) == SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hr, "list readers")
        if not names:
            return []
        hr, states = _guarded(
            "read reader states", "", s.SCardGetStatusChange, ctx, 0, [(n, STATE_UNAWARE) for n in names]
        )
        if _u32(hr) != SCARD_S_SUCCESS:
            return [PcscReaderInfo(i, n, CardState.UNKNOWN) for i, n in enumerate(names)]
        out = []
        for i, (name, flags, atr) in enumerate(states):
            out.append(PcscReaderInfo(i, str(name), card_state(int(flags)), bytes(atr or b"")))
        return out
    finally:
        with contextlib.suppress(Exception):
            s.SCardReleaseContext(ctx)


async def list_readers(clock: Clock) -> list[PcscReaderInfo]:
    """:func:`list_readers_blocking` off the event loop."""
    return await run_external(clock, list_readers_blocking)


def select_reader(names: list[str], selector: str) -> str:
    """Pick a reader by index (``"0"``) or name (exact, else case-insensitive substring).

    >>> select_reader(["Virtual PCD 00 00", "Virtual PCD 00 01"], "00 01")
    'Virtual PCD 00 01'
    >>> select_reader(["A", "B"], "1")
    'B'
    """
    if not names:
        raise NoReaderError(f"no PC/SC reader is available; {_HINT_NO_READER}")
    sel = selector.strip()
    if sel == "" and names:
        return names[0]
    if sel.isdigit():
        i = int(sel)
        if i < len(names):
            return names[i]
        raise NoReaderError(
            f"there is no PC/SC reader #{i} (pcscd lists {len(names)}: {', '.join(names)}); {_HINT_NO_READER}"
        )
    if sel in names:
        return sel
    for n in names:
        if sel.lower() in n.lower():
            return n
    raise NoReaderError(f"no PC/SC reader matches {selector!r} (pcscd lists: {', '.join(names)})")


# --- the reader ---------------------------------------------------------------------------------
_PROTOCOLS = {"t0": 0x0001, "t1": 0x0002, "any": 0x0003}
_SHARE = {"shared": 2, "exclusive": 1}   # SCARD_SHARE_SHARED, SCARD_SHARE_EXCLUSIVE
_LEAVE_CARD, _RESET_CARD, _UNPOWER_CARD = 0, 1, 2


class PcscReader:
    """A PC/SC reader as a :class:`hardware.ports.CardReader` (IC only: no magstripe head).

    Nothing is opened until first use; then two PC/SC contexts are established — one for card
    I/O, one for the blocking status-change wait — so waiting for a card never holds up a
    transmit. A card already in the reader at first use is reported as ``CARD_INSERTED``.
    """

    def __init__(
        self,
        selector: str,
        clock: Clock,
        *,
        protocol: str = "any",
        share: str = "shared",
        get_response: bool = True,
        poll: float = 0.5,
    ) -> None:
        if protocol not in _PROTOCOLS:
            raise ConfigError(f"pcsc reader: protocol must be t0, t1 or any, got {protocol!r}")
        if share not in _SHARE:
            raise ConfigError(f"pcsc reader: share must be shared or exclusive, got {share!r}")
        if not 0.01 <= poll <= 10:
            raise ConfigError("pcsc reader: poll must be between 0.01 and 10 seconds")
        self._selector = selector
        self._clock = clock
        self._protocols = _PROTOCOLS[protocol]
        self._share = _SHARE[share]
        self._get_response = get_response
        self._poll = poll
        self._reader = ""
        self._io_ctx: int | None = None
        self._mon_ctx: int | None = None
        self._hcard: int | None = None
        self._active_protocol = 0
        self._state = STATE_UNAWARE
        self._pending: collections.deque[ReaderEvent] = collections.deque()
        self._open_lock = asyncio.Lock()
        self._closed = False

    # --- properties -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._reader or f"pcsc://{self._selector}"

    @property
    def reader_name(self) -> str:
        """The PC/SC reader name (empty until first use)."""
        return self._reader

    @property
    def protocol(self) -> str:
        """The active protocol after power-on: ``"T=0"``, ``"T=1"`` or ``""``."""
        return {0x0001: "T=0", 0x0002: "T=1"}.get(self._active_protocol, "")

    # --- opening ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Establish the PC/SC contexts and find the reader (done implicitly on first use)."""
        async with self._open_lock:
            if self._closed:
                raise ReaderError(f"{self.name}: the reader has been closed")
            if self._io_ctx is None:
                await run_external(self._clock, self._open_blocking)

    def _open_blocking(self) -> None:
        s = _scard()
        io_ctx = mon_ctx = None
        try:
            hr, io_ctx = _guarded("connect to pcscd", "", s.SCardEstablishContext, s.SCARD_SCOPE_USER)
            _check(hr, "connect to pcscd")
            hr, mon_ctx = _guarded("connect to pcscd", "", s.SCardEstablishContext, s.SCARD_SCOPE_USER)
            _check(hr, "connect to pcscd")
            hr, names = _guarded("list readers", "", s.SCardListReaders, io_ctx, [])
            if _u32(hr) == SCARD_E_NO_READERS_AVAILABLE:
                names = []
            else:
                _check(hr, "list readers")
            reader = select_reader([str(n) for n in names], self._selector)
            hr, states = _guarded(
                "read reader state", reader, s.SCardGetStatusChange, io_ctx, 0, [(reader, STATE_UNAWARE)]
            )
            _check(hr, "read reader state", reader)
        except BaseException:
            for ctx in (io_ctx, mon_ctx):
                if ctx is not None:
                    with contextlib.suppress(Exception):
                        s.SCardReleaseContext(ctx)
            raise
        self._io_ctx, self._mon_ctx, self._reader = io_ctx, mon_ctx, reader
        self._state = int(states[0][1]) & ~STATE_CHANGED
        if self._state & STATE_PRESENT:
            self._pending.append(ReaderEvent(ReaderEventKind.CARD_INSERTED))

    def _drop_contexts(self) -> None:
        s = _scard()
        for ctx in (self._io_ctx, self._mon_ctx):
            if ctx is not None:
                with contextlib.suppress(Exception):
                    s.SCardReleaseContext(ctx)
        self._io_ctx = self._mon_ctx = self._hcard = None

    def _fail(self, hr: int, action: str) -> ReaderError:
        """Translate, and forget state that the error made invalid."""
        err = pcsc_error(hr, action, self._reader)
        code = _u32(hr)
        if code in (SCARD_E_NO_SERVICE, SCARD_E_SERVICE_STOPPED, SCARD_E_INVALID_HANDLE):
            self._drop_contexts()     # re-establish on next use (pcscd restarted)
        elif code in (SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD, SCARD_E_READER_UNAVAILABLE):
            self._release_card()
        return err

    def _release_card(self) -> None:
        """Drop the card handle (blocking). A handle left open after removal keeps the reader
        "in use" in pcscd, and would make the next exclusive connection a sharing violation."""
        hcard, self._hcard = self._hcard, None
        self._active_protocol = 0
        if hcard is not None:
            with contextlib.suppress(Exception):
                _scard().SCardDisconnect(hcard, _LEAVE_CARD)

    # --- events -----------------------------------------------------------------------------
    async def next_event(self, timeout: float | None = None) -> ReaderEvent | None:
        await self.open()
        deadline = None if timeout is None else self._clock.now() + max(0.0, timeout)
        while True:                   # each pass blocks at most `poll` s; ends by deadline or event
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                return None
            chunk = poll_slice(self._clock, deadline, self._poll)
            if chunk is None:
                return None
            new = await run_external(self._clock, self._wait_change, self._state, chunk)
            if new is None:
                continue
            kinds = derive_events(self._state, new)
            self._state = new
            if ReaderEventKind.CARD_REMOVED in kinds or ReaderEventKind.READER_LOST in kinds:
                await run_external(self._clock, self._release_card)
            self._pending.extend(ReaderEvent(k) for k in kinds)

    def _wait_change(self, current: int, seconds: float) -> int | None:
        """Block until the reader state differs from ``current`` or ``seconds`` pass."""
        s = _scard()
        ctx = self._mon_ctx
        if ctx is None:
            raise ReaderError(f"{self.name}: the reader is not open")
        hr, states = _guarded(
            "wait for card", self._reader, s.SCardGetStatusChange, ctx, max(1, int(seconds * 1000)),
            [(self._reader, current)],
        )
        code = _u32(hr)
        if code in (SCARD_E_TIMEOUT, SCARD_E_CANCELLED):
            return None
        if code in (SCARD_E_UNKNOWN_READER, SCARD_E_READER_UNAVAILABLE):
            return STATE_UNKNOWN | (current & 0xFFFF0000)
        if code != SCARD_S_SUCCESS:
            raise self._fail(hr, "wait for card")
        return int(states[0][1]) & ~STATE_CHANGED

    async def card_present(self) -> bool:
        await self.open()
        return await run_external(self._clock, self._present_blocking)

    def _present_blocking(self) -> bool:
        s = _scard()
        hr, states = _guarded(
            "read reader state", self._reader, s.SCardGetStatusChange, self._io_ctx, 0,
            [(self._reader, STATE_UNAWARE)],
        )
        if _u32(hr) != SCARD_S_SUCCESS:
            raise self._fail(hr, "read reader state")
        return bool(int(states[0][1]) & STATE_PRESENT)

    # --- card I/O ---------------------------------------------------------------------------
    async def power_on(self) -> bytes:
        await self.open()
        return await run_external(self._clock, self._power_on_blocking)

    def _power_on_blocking(self) -> bytes:
        s = _scard()
        if self._hcard is not None:
            hr, active = _guarded(
                "reset card", self._reader, s.SCardReconnect, self._hcard, self._share, self._protocols,
                _UNPOWER_CARD,
            )
            if _u32(hr) != SCARD_S_SUCCESS:
                stale, self._hcard = self._hcard, None
                with contextlib.suppress(Exception):
                    s.SCardDisconnect(stale, _LEAVE_CARD)
                raise self._fail(hr, "reset card")
        else:
            hr, hcard, active = _guarded(
                "connect to card", self._reader, s.SCardConnect, self._io_ctx, self._reader, self._share,
                self._protocols,
            )
            if _u32(hr) != SCARD_S_SUCCESS:
                raise self._fail(hr, "connect to card")
            self._hcard = hcard
        self._active_protocol = int(active)
        hr, _name, _state, _proto, atr = _guarded("read ATR", self._reader, s.SCardStatus, self._hcard)
        if _u32(hr) != SCARD_S_SUCCESS:
            raise self._fail(hr, "read ATR")
        if not atr:
            raise CardMuteError(f"{self.name}: the card gave no ATR; {_HINT_MUTE}")
        return bytes(atr)

    async def transmit(self, apdu: bytes) -> bytes:
        if not isinstance(apdu, bytes | bytearray):
            raise TypeError(f"apdu must be bytes, not {type(apdu).__name__}")
        if len(apdu) < 4:
            raise ConfigError(f"a C-APDU needs at least 4 bytes (CLA INS P1 P2), got {len(apdu)}")
        if self._hcard is None:
            raise CardAbsentError(f"{self.name}: the card is not powered; call power_on() first")
        return await run_external(self._clock, self._transmit_blocking, bytes(apdu))

    def _transmit_blocking(self, apdu: bytes) -> bytes:
        s = _scard()
        hcard = self._hcard
        if hcard is None:
            raise CardAbsentError(f"{self.name}: the card is not powered; call power_on() first")
        pci = s.SCARD_PCI_T0 if self._active_protocol == 0x0001 else s.SCARD_PCI_T1

        def send(cmd: bytes) -> bytes:
            hr, resp = _guarded("transmit", self._reader, s.SCardTransmit, hcard, pci, list(cmd))
            if _u32(hr) != SCARD_S_SUCCESS:
                raise self._fail(hr, "transmit")
            return bytes(resp)

        if self._get_response:
            try:
                resp = exchange(send, apdu)
            except (ExchangeError, DecodeError) as e:
                raise TransmissionError(f"{self.name}: {e}") from None
        else:
            resp = send(apdu)
        if len(resp) < 2:
            raise CardMuteError(f"{self.name}: the card's answer has no status word; {_HINT_MUTE}")
        return resp

    async def power_off(self) -> None:
        if self._hcard is None:
            return
        await run_external(self._clock, self._power_off_blocking)

    def _power_off_blocking(self) -> None:
        hcard, self._hcard = self._hcard, None
        self._active_protocol = 0
        if hcard is None:
            return
        s = _scard()
        hr = _guarded("disconnect", self._reader, s.SCardDisconnect, hcard, _UNPOWER_CARD)
        code = _u32(hr)
        if code not in (SCARD_S_SUCCESS, SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD, SCARD_E_INVALID_HANDLE):
            raise self._fail(hr, "disconnect")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._mon_ctx is not None:
            with contextlib.suppress(Exception):
                _scard().SCardCancel(self._mon_ctx)
        with contextlib.suppress(ReaderError):
            await self.power_off()
        if self._io_ctx is not None or self._mon_ctx is not None:
            await run_external(self._clock, self._drop_contexts)


def open_pcsc_reader(url: ReaderURL, clock: Clock) -> PcscReader:
    """Factory for ``pcsc://<index or name>[?protocol=t0|t1|any&share=…&getresponse=1&poll=0.5]``."""
    known = {"protocol", "share", "getresponse", "poll"}
    unknown = set(url.params) - known
    if unknown:
        raise ConfigError(f"reader URL {url.raw!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
    gr = url.params.get("getresponse", "1")
    if gr not in ("0", "1"):
        raise ConfigError(f"reader URL {url.raw!r}: getresponse must be 0 or 1")
    return PcscReader(
        url.target,
        clock,
        protocol=url.params.get("protocol", "any").lower(),
        share=url.params.get("share", "shared").lower(),
        get_response=gr == "1",
        poll=url.float_param("poll", 0.5),
    )
