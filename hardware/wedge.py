"""Keyboard-wedge magstripe readers: a USB HID reader that *types* what it read.

Such a reader decodes the stripe itself and types each track with its sentinels, without the
LRC, followed by Enter (ISO/IEC 7813 data between the sentinels)::

    %B9900010000000019^TEST/DEMO^30121010000000000?;9900010000000019=30121010000000000?⏎

A track it could not read is typed as ``SS E ES`` — ``%E?``, ``;E?``, ``+E?`` (MagTek, ID TECH
convention); a track absent from the card is not typed at all. Track 3 starts with ``+``, or with
a second ``;`` after track 2.

* :func:`parse_wedge` turns one typed swipe into a :class:`~hardware.ports.SwipeResult`.
* :class:`WedgeFeeder` takes keystrokes one at a time — what a UI receives — and tells swipes
  from a person typing: a swipe starts with a start sentinel and its keys arrive faster than
  ``inter_key_timeout`` apart, judged on the :class:`~hardware.clock.Clock` passed in.

>>> r = parse_wedge("%B9900010000000019^TEST/DEMO^30121010000000000?;E?\\r")
>>> [(t.track, t.status.name) for t in r.tracks]
[(1, 'OK'), (2, 'PARITY_ERROR'), (3, 'NO_DATA')]
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hardware.clock import Clock
from hardware.magstripe.tracks import track_spec
from hardware.ports import SwipeResult, TrackRead, TrackStatus
from protocol.errors import ConfigError, DecodeError

ENTER_KEYS = frozenset({"\r", "\n", "enter", "return"})
START_SENTINELS = frozenset({"%", ";", "+"})
MAX_SWIPE_KEYS = 300
"""More keys than three full tracks with sentinels (79 + 40 + 107) is not a swipe."""

_ERROR_MARK = "E"


def parse_wedge(text: str) -> SwipeResult:
    """Parse the keystrokes of one swipe (a trailing Enter is allowed) into tracks 1–3.

    Per-track conditions the reader reports become statuses: ``E`` → ``PARITY_ERROR`` (the reader
    says only that the track did not decode), a track not typed → ``NO_DATA``, a track cut off
    before its end sentinel → ``NO_END_SENTINEL``. Text that is not a swipe at all — no track,
    characters between the tracks, a character outside the track's set (a keyboard layout that
    does not match the reader's), more data than the track holds — raises
    :class:`~protocol.errors.DecodeError` with the path (``wedge.track2.data[3]``) and position.
    A track whose data is exactly ``E`` cannot be told from the error marker; it reads as one.
    """
    if not isinstance(text, str):
        raise TypeError(f"wedge text must be str, not {type(text).__name__}")
    body = text.rstrip("\r\n")
    reads: dict[int, TrackRead] = {}
    i = 0
    while i < len(body):
        c = body[i]
        if c == "%":
            n = 1
        elif c == "+":
            n = 3
        elif c == ";":
            n = 3 if 2 in reads else 2
        else:
            raise DecodeError("character outside any track (expected a start sentinel %, ; or +)",
                              field="wedge", pos=i)
        if n in reads:
            raise DecodeError(f"track {n} typed twice", field=f"wedge.track{n}", pos=i)
        end = body.find("?", i + 1)
        if end < 0:
            reads[n] = _check(n, body[i + 1:], i + 1, ended=False)
            break
        reads[n] = _check(n, body[i + 1:end], i + 1, ended=True)
        i = end + 1
    if not reads:
        raise DecodeError("no track in the typed text", field="wedge", pos=0)
    return SwipeResult(tuple(reads.get(n, TrackRead(n, TrackStatus.NO_DATA)) for n in (1, 2, 3)))


def _check(n: int, data: str, pos: int, *, ended: bool) -> TrackRead:
    spec = track_spec(n)
    if data == _ERROR_MARK:
        return TrackRead(n, TrackStatus.PARITY_ERROR, "", "the reader reported a read error (E)")
    allowed = spec.data_charset
    for k, ch in enumerate(data):
        if ch not in allowed:
            raise DecodeError(f"character {k} is not in the track {n} character set",
                              field=f"wedge.track{n}.data[{k}]", pos=pos + k)
    if len(data) > spec.max_data:
        raise DecodeError(f"track {n} holds at most {spec.max_data} characters, got {len(data)}",
                          field=f"wedge.track{n}.length", pos=pos)
    if not ended:
        return TrackRead(n, TrackStatus.NO_END_SENTINEL, "", "typed text ended before the end sentinel")
    return TrackRead(n, TrackStatus.OK, data)


class WedgeEventKind(enum.Enum):
    """What a run of keystrokes turned out to be."""

    SWIPE = "swipe"              # a complete swipe was typed: ``swipe`` holds it
    UNREADABLE = "unreadable"    # reader-speed keys that do not parse as a swipe: ``error`` says why
    KEYS = "keys"                # ordinary typing, not a swipe: hand ``keys`` to the UI as input


@dataclass(frozen=True, slots=True)
class WedgeEvent:
    """One result of :class:`WedgeFeeder`: a swipe, an unreadable swipe (``error``) or ordinary keys."""

    kind: WedgeEventKind
    swipe: SwipeResult | None = field(default=None, repr=False)   # holds track data: not in repr
    keys: str = field(default="", repr=False)
    error: DecodeError | None = None


class WedgeFeeder:
    """Keystrokes in, swipes out.

    Call :meth:`feed` with each key (one character, or ``"enter"``) and :meth:`poll` when the
    clock reaches :attr:`deadline`; both return the events that became complete. Keys typed when
    no swipe is in progress come straight back as ``KEYS`` events. A start sentinel begins a
    swipe; Enter ends it. If the next key takes longer than ``inter_key_timeout`` clock seconds,
    the keys so far were typed by a person (``KEYS``) — unless they already form complete tracks,
    as readers configured without the Enter suffix send them (``SWIPE``).
    """

    def __init__(self, clock: Clock, *, inter_key_timeout: float = 0.1) -> None:
        if not inter_key_timeout > 0:
            raise ConfigError(f"inter_key_timeout must be a positive number of seconds, got {inter_key_timeout}")
        self._clock = clock
        self._timeout = inter_key_timeout
        self._buf: list[str] = []
        self._last = 0.0

    @property
    def pending(self) -> bool:
        """A swipe is being typed."""
        return bool(self._buf)

    @property
    def deadline(self) -> float | None:
        """Clock time at which :meth:`poll` decides an unfinished swipe, or ``None``."""
        return self._last + self._timeout if self._buf else None

    def feed(self, key: str) -> tuple[WedgeEvent, ...]:
        if not isinstance(key, str) or not key:
            raise TypeError("a key is a non-empty str (a character or a key name such as 'enter')")
        now = self._clock.now()
        events = list(self._expire(now))
        if not self._buf:
            if key in START_SENTINELS:
                self._buf.append(key)
                self._last = now
            else:
                events.append(WedgeEvent(WedgeEventKind.KEYS, keys=key))
            return tuple(events)
        if key.lower() in ENTER_KEYS:
            events.append(self._finish(require_complete=False))
        elif len(key) != 1:
            events.append(self._flush_keys(key))        # a special key: a person at the keyboard
        else:
            self._buf.append(key)
            self._last = now
            if len(self._buf) > MAX_SWIPE_KEYS:
                events.append(self._flush_keys(""))
        return tuple(events)

    def poll(self) -> tuple[WedgeEvent, ...]:
        """Events due by the clock's current time (an unfinished swipe whose keys stopped)."""
        return self._expire(self._clock.now())

    def _expire(self, now: float) -> tuple[WedgeEvent, ...]:
        if self._buf and now - self._last > self._timeout:
            return (self._finish(require_complete=True),)
        return ()

    def _finish(self, *, require_complete: bool) -> WedgeEvent:
        text = "".join(self._buf)
        self._buf.clear()
        try:
            result = parse_wedge(text)
        except DecodeError as e:
            if require_complete:
                return WedgeEvent(WedgeEventKind.KEYS, keys=text)
            return WedgeEvent(WedgeEventKind.UNREADABLE, error=e)
        if require_complete and any(t.status is TrackStatus.NO_END_SENTINEL for t in result.tracks):
            return WedgeEvent(WedgeEventKind.KEYS, keys=text)
        return WedgeEvent(WedgeEventKind.SWIPE, swipe=result)

    def _flush_keys(self, extra: str) -> WedgeEvent:
        text = "".join(self._buf) + extra
        self._buf.clear()
        return WedgeEvent(WedgeEventKind.KEYS, keys=text)
