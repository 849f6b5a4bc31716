"""Checking PINs on the host: the PIN block decrypted under the terminal's PIK (ISO 9564 format 0, 1
or 3), compared with the card's salted PIN hash in a :class:`PinJob` a worker thread can run, and the
:class:`PinCache` of blocks already verified. :func:`check_pin` is the PIN step of a financial
request; it counts the tries on the card's row."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

from emulator.host.kinds import offline_pin_verified
from emulator.host.store import CardRow, HostStore, TerminalRow
from protocol.errors import PosemuError
from protocol.iso import Message
from protocol.pinblock import decrypt_pinblock_any
from protocol.txn import RC


class PinCache:
    """Which PIN blocks were verified correct, as keyed hashes: a hit skips the scrypt.

    An entry is HMAC-SHA256, under a random key of this process (never stored), of the PIK, the
    card's PAN, PIN salt and PIN hash, and the encrypted PIN block — neither the PIN nor the PIN block
    is kept, and the tag cannot be tested against guesses without the key. Why a hit is safe to
    accept: decrypting a PIN block and comparing its PIN with the card's hash is a deterministic
    function of exactly those inputs, so a block that verified once under this PIK for this card
    (with this PIN hash) verifies again; a new PIK (sign-on) or a changed PIN gives another tag.
    Only successes are recorded: a wrong PIN always pays the scrypt and costs a try, and the card's
    status and tries left are checked before the PIN as always. (A format 0 block is the same every
    time a PIN is typed for the same card under the same PIK; formats 1 and 3 carry random fill and
    never hit.) Bounded: the oldest entries go first."""

    def __init__(self, size: int = 65_536) -> None:
        self._key = os.urandom(32)
        self._size = size
        self._tags: dict[bytes, None] = {}
        self._lock = threading.Lock()        # PinJob.run records from a worker thread

    def tag(self, card: CardRow, pik: bytes, block: bytes) -> bytes:
        parts = (pik, card.pan.encode(), card.pin_salt, card.pin_hash, block)
        return hmac.new(self._key, b"".join(len(p).to_bytes(2, "big") + p for p in parts), hashlib.sha256).digest()

    def __contains__(self, tag: bytes) -> bool:
        return tag in self._tags

    def add(self, tag: bytes) -> None:
        with self._lock:
            self._tags[tag] = None
            while len(self._tags) > self._size:
                del self._tags[next(iter(self._tags))]


@dataclass(frozen=True, slots=True)
class PinJob:
    """A PIN to check off the event loop: :meth:`run` (a salted scrypt, slow on purpose) belongs in a
    worker thread; its answer goes back to :meth:`emulator.host.logic.HostLogic.handle` as ``pin_ok``. A correct PIN's
    block is recorded in ``cache`` (:class:`PinCache`) under ``tag``."""

    card: CardRow
    pin: str | None          # None: the PIN block did not decrypt to a PIN
    tag: bytes = b""
    cache: PinCache | None = None

    def run(self) -> bool:
        ok = self.pin is not None and self.card.pin_matches(self.pin)
        if ok and self.cache is not None and self.tag:
            self.cache.add(self.tag)
        return ok

    def __repr__(self) -> str:
        return f"PinJob({self.card!r})"


def decrypt_pin(block: bytes, pan: str, pik: bytes) -> str | None:
    """The PIN in an encrypted PIN block, or ``None`` if it does not decrypt to one."""
    try:
        return decrypt_pinblock_any(block, pan, pik)      # ISO 9564 format 0, 1 or 3, whichever it is
    except PosemuError:
        return None


def check_pin(store: HostStore, cache: PinCache, req: Message, term: TerminalRow, card: CardRow,
              pin_ok: bool | None) -> RC:
    """The PIN step of a financial request: ``00``, or why not (``55`` wrong, ``75`` no tries left,
    ``77`` no PIK). No PIN block passes when the card needs none or the chip verified the PIN
    offline. ``pin_ok`` is a :class:`PinJob`'s verdict when one ran off the event loop (``None``:
    checked here). A correct PIN resets the tries; a wrong one costs one (the card's row in
    ``store``)."""
    block = req.fields.get(52)
    if card.pin_tries_left <= 0:
        return RC.PIN_TRIES_EXCEEDED
    if not isinstance(block, bytes):
        if not card.pin_required or offline_pin_verified(req):
            return RC.APPROVED
        return RC.WRONG_PIN
    if term.pik is None:
        return RC.SIGN_ON_REQUIRED
    ok = pin_ok
    if ok is None:
        tag = cache.tag(card, term.pik, block)
        ok = tag in cache or PinJob(card, decrypt_pin(block, card.pan, term.pik), tag, cache).run()
    if ok:
        if card.pin_tries_left != card.pin_tries_max:
            store.update_card(card.pan, pin_tries_left=card.pin_tries_max)
        return RC.APPROVED
    left = card.pin_tries_left - 1
    store.update_card(card.pan, pin_tries_left=left)
    return RC.PIN_TRIES_EXCEEDED if left <= 0 else RC.WRONG_PIN
