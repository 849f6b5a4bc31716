"""Terminal ↔ host sessions over ISO 8583, sans-IO (after h11).

The caller owns the socket: it passes received bytes to ``receive_data`` and sends what
``send`` returns. ``next_event`` yields typed events or :data:`NEED_DATA`.

* :class:`ClientSession` (terminal side) pairs each response with its request by
  (request MTI, field 11, field 41); a response that matches nothing becomes
  :class:`UnmatchedResponse` — the classic "wrong STAN/terminal id" confusion — instead of being
  taken for the answer.
* :class:`ServerSession` (host side) turns frames into :class:`RequestReceived` or, for a frame
  that does not decode, :class:`MalformedRequest` (the framing is intact, so the connection
  goes on). A framing error (zero/oversized length) raises :class:`DecodeError`: the stream is
  lost and the caller closes the connection.

MACs: :func:`seal` encodes a message with its MAC as the last data element (field 64, or 128
when a secondary bitmap is present), computed over the encoded bytes from the MTI up to the MAC;
:func:`check_mac` checks a received message and says what is wrong (missing, misplaced, mismatch).
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from typing import Any

from protocol.errors import DecodeError, ProtocolError
from protocol.framing import Framer, frame
from protocol.iso import Message, decode, encode
from protocol.mac import MAC_SIZE, compute_mac
from protocol.sansio import NEED_DATA, NeedData
from protocol.specs import Profile
from protocol.txn import match_key


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response to an outstanding request, paired by :func:`protocol.txn.match_key` (MTI, STAN, terminal id)."""

    request: Message
    response: Message
    raw: bytes


@dataclass(frozen=True, slots=True)
class UnmatchedResponse:
    """A response for no outstanding request (wrong field 11/41, or a late answer)."""

    response: Message
    raw: bytes
    key: tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request that decoded, on the host side; ``raw`` is its frame payload."""

    request: Message
    raw: bytes


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """A frame that did not decode. ``mti``/``partial`` hold what could be read of it."""

    error: DecodeError
    raw: bytes
    mti: str | None
    partial: dict[str, Any]


ClientEvent = ResponseReceived | UnmatchedResponse | NeedData
ServerEvent = RequestReceived | MalformedRequest | NeedData


class MacStatus(enum.Enum):
    """What :func:`check_mac` found in a received message."""

    OK = "ok"
    MISSING = "missing"          # neither field 64 nor field 128
    MISPLACED = "misplaced"      # not the last data element, or both 64 and 128
    MISMATCH = "mismatch"        # present, but not the MAC of the message under this key

    @property
    def ok(self) -> bool:
        return self is MacStatus.OK


def mac_field(msg: Message, profile: Profile) -> int:
    """Where the MAC of ``msg`` goes: field 128 when the message has a secondary bitmap (a field
    above 64), else field 64.

    ISO 8583:1987 bit 64 / bit 128 and ISO 8583-1:2003 §4.3.5: the MAC is the *last* data element of
    the message, in the primary bitmap's last field when there is no secondary bitmap and in the
    secondary bitmap's last field when there is one. A reversal on ``iso87ascii`` carries field 90,
    so its MAC is field 128.
    """
    if any(n > 64 for n in msg.fields if n != 128) and profile.has_field(128):
        return 128
    return 64


def _mab(payload: bytes, profile: Profile) -> bytes:
    """The MAC block: the encoded message from the MTI up to the MAC field, which is the last data
    element — its 8 bytes end the payload (header bytes before the MTI are not MACed)."""
    return payload[profile.header_len:-MAC_SIZE]


def seal(msg: Message, profile: Profile, mak: bytes | None) -> bytes:
    """Encode ``msg``; with a MAK, place the MAC in field 64 or 128 (:func:`mac_field`) and fill it in.

    Any MAC value already in ``msg`` is replaced. Without a MAK the message is encoded as it is.
    """
    if mak is None:
        return encode(msg, profile)
    where = mac_field(msg, profile)
    fields = {n: v for n, v in msg.fields.items() if n not in (64, 128)}
    fields[where] = _ZERO_MAC
    payload = encode(Message(msg.mti, fields, msg.header), profile)
    return payload[:-MAC_SIZE] + compute_mac(profile.mac_alg, mak, _mab(payload, profile))


def check_mac(msg: Message, payload: bytes, profile: Profile, mak: bytes) -> MacStatus:
    """Check the MAC of a received message (``msg`` decoded from ``payload``), in constant time.

    The MAC field must be present, be the last data element and be the right one for the message's
    bitmap (:func:`mac_field`); a MAC anywhere else is :attr:`MacStatus.MISPLACED`, never skipped.
    """
    has64, has128 = 64 in msg.fields, 128 in msg.fields
    if not has64 and not has128:
        return MacStatus.MISSING
    where = 128 if has128 else 64
    if (has64 and has128) or max(msg.fields) != where or where != mac_field(msg, profile):
        return MacStatus.MISPLACED
    value = msg.fields[where]
    if not isinstance(value, bytes) or len(value) != MAC_SIZE or payload[-MAC_SIZE:] != value:
        return MacStatus.MISPLACED
    expected = compute_mac(profile.mac_alg, mak, _mab(payload, profile))
    return MacStatus.OK if hmac.compare_digest(expected, value) else MacStatus.MISMATCH


_ZERO_MAC = bytes(MAC_SIZE)


class ClientSession:
    """The terminal's side of a host connection."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._framer = Framer(profile.max_frame, profile.length_header)
        self._pending: dict[tuple[str, str, str], Message] = {}

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def send(self, msg: Message, *, mak: bytes | None = None) -> bytes:
        """Bytes to write for a request; the request now awaits its response."""
        key = match_key(msg)
        if key in self._pending:
            raise ProtocolError(f"a {key[0]} with STAN {key[1]} is already outstanding")
        data = frame(seal(msg, self.profile, mak), self.profile.max_frame, self.profile.length_header)
        self._pending[key] = msg
        return data

    def forget(self, msg: Message) -> None:
        """Stop waiting for a request's response (it timed out)."""
        self._pending.pop(match_key(msg), None)

    def receive_data(self, data: bytes) -> None:
        self._framer.receive_data(data)

    def next_event(self) -> ClientEvent:
        payload = self._framer.next_event()
        if payload is NEED_DATA:
            return NEED_DATA
        resp = decode(payload, self.profile)
        key = match_key(resp)
        req = self._pending.pop(key, None)
        if req is None or resp.mti != req.response_mti():
            return UnmatchedResponse(resp, payload, key)
        return ResponseReceived(req, resp, payload)


class ServerSession:
    """The host's side of one terminal connection."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._framer = Framer(profile.max_frame, profile.length_header)

    def receive_data(self, data: bytes) -> None:
        self._framer.receive_data(data)

    def next_event(self) -> ServerEvent:
        payload = self._framer.next_event()   # DecodeError here: stream lost, close
        if payload is NEED_DATA:
            return NEED_DATA
        try:
            return RequestReceived(decode(payload, self.profile), payload)
        except DecodeError as e:
            mti = e.partial.get("t")
            ok = isinstance(mti, str) and len(mti) == 4 and mti.isdigit()
            return MalformedRequest(e, payload, mti if ok else None, e.partial)

    def send(self, msg: Message, *, mak: bytes | None = None) -> bytes:
        return frame(seal(msg, self.profile, mak), self.profile.max_frame, self.profile.length_header)
