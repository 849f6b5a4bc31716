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

MACs: :func:`seal` encodes a message with field 64 computed over MTI … last field before 64
(the encoded bytes with bit 64 set), :func:`mac_ok` checks a received payload.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from protocol.errors import DecodeError, ProtocolError
from protocol.framing import Framer, frame
from protocol.iso import Message, decode, encode
from protocol.mac import compute_mac
from protocol.sansio import NEED_DATA, NeedData
from protocol.specs import Profile
from protocol.txn import match_key


@dataclass(frozen=True, slots=True)
class ResponseReceived:
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


def mac_input(payload: bytes, profile: Profile) -> bytes:
    """The MAC block input: MTI … last field before 64 (the payload minus header and MAC)."""
    return payload[profile.header_len:-8]


def seal(msg: Message, profile: Profile, mak: bytes | None) -> bytes:
    """Encode ``msg``; if it carries field 64 and a MAK is given, fill in the MAC."""
    payload = encode(msg, profile)
    if mak is None or 64 not in msg.fields:
        return payload
    mac = compute_mac(profile.mac_alg, mak, mac_input(payload, profile))
    return payload[:-8] + mac


def mac_ok(payload: bytes, profile: Profile, mak: bytes) -> bool:
    """Does the MAC in field 64 (the last 8 bytes) match the message?"""
    if len(payload) < profile.header_len + 8:
        return False
    expected = compute_mac(profile.mac_alg, mak, mac_input(payload, profile))
    return hmac.compare_digest(expected, payload[-8:])


class ClientSession:
    """The terminal's side of a host connection."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._framer = Framer(profile.max_frame)
        self._pending: dict[tuple[str, str, str], Message] = {}

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def send(self, msg: Message, *, mak: bytes | None = None) -> bytes:
        """Bytes to write for a request; the request now awaits its response."""
        key = match_key(msg)
        if key in self._pending:
            raise ProtocolError(f"a {key[0]} with STAN {key[1]} is already outstanding")
        data = frame(seal(msg, self.profile, mak), self.profile.max_frame)
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
        self._framer = Framer(profile.max_frame)

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
        return frame(seal(msg, self.profile, mak), self.profile.max_frame)
