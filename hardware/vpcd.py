"""Present a :class:`~hardware.ports.VirtualCard` to PC/SC through vsmartcard's ``vpcd`` driver.

``vpcd`` is a pcscd reader driver (Debian ``vsmartcard-vpcd``) that listens on TCP
(127.0.0.1:35963 for the slot "Virtual PCD 00 00", 35964 for "… 00 01"). A virtual card
*connects* to it; from then on every PC/SC application (pyscard, OpenSC, a browser) sees a
card in that reader. Source: frankmorgner/vsmartcard ``virtualsmartcard/src/vpcd/vpcd.c``.

Wire format, both directions: a 2-byte big-endian length, then the payload.

==========  ===========================  ================================
payload     meaning (vpcd → card)        card's reply
==========  ===========================  ================================
``00``      power off                    none
``01``      power on                     none
``02``      reset                        none
``04``      get ATR (also presence poll) the ATR
longer      a C-APDU                     the R-APDU (data + SW1 SW2)
==========  ===========================  ================================

A zero-length reply makes vpcd drop the connection (card ejected), so a card with no ATR
cannot be served. Card *insertion* is connecting; *removal* is closing the socket. The driver
reports T=1 to pcscd, so no T=0 procedure bytes cross this link.

The module has two layers, h11-style:

* sans-IO, in the :mod:`protocol.sansio` vocabulary — :func:`encode_frame` and
  :class:`VpcdDecoder` (the length framing of :mod:`protocol.framing`), :func:`parse_message`,
  :class:`VpcdCardSession` (``receive_data`` → ``next_event`` → ``data_to_send``, no sockets);
* I/O — :class:`VpcdClient`, an asyncio client that connects (retrying until vpcd is up),
  serves the card, and can be removed and re-inserted.

>>> d = VpcdDecoder()
>>> d.receive_data(bytes.fromhex("0001 04 0005 00a4"))    # get ATR, then half an APDU (a short read)
>>> d.next_event(), d.next_event()
(ControlMessage(control=<Control.GET_ATR: 4>), NEED_DATA)
>>> d.receive_data(bytes.fromhex("040000")); d.next_event()
ApduMessage(apdu=b'\\x00\\xa4\\x04\\x00\\x00')
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from dataclasses import dataclass
from typing import Any

from hardware.clock import Clock
from hardware.errors import CardMuteError, ServiceUnavailableError
from hardware.ports import VirtualCard
from protocol.errors import ConfigError, DecodeError, EncodeError
from protocol.framing import HEADER_LEN, Framer, frame
from protocol.sansio import NEED_DATA, NeedData

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963
MAX_PAYLOAD = 0xFFFF


class Control(enum.IntEnum):
    """vpcd's 1-byte control messages (``vpcd.h``: VPCD_CTRL_*)."""

    POWER_OFF = 0x00
    POWER_ON = 0x01
    RESET = 0x02
    GET_ATR = 0x04


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A 1-byte control message from vpcd: power off, power on, reset or get ATR."""

    control: Control


@dataclass(frozen=True, slots=True)
class ApduMessage:
    """A C-APDU from vpcd, answered with the card's R-APDU."""

    apdu: bytes


VpcdMessage = ControlMessage | ApduMessage


def encode_frame(payload: bytes) -> bytes:
    """Prefix a payload with its 2-byte big-endian length (:func:`protocol.framing.frame`).

    Unlike an ISO 8583 frame, an empty payload is allowed: it is how a card with no ATR
    answers vpcd's ATR request (vpcd then takes the card as absent).

    >>> encode_frame(b"\\x04").hex()
    '000104'
    """
    if not isinstance(payload, bytes | bytearray):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    if not payload:
        return b"\x00\x00"
    return frame(bytes(payload), MAX_PAYLOAD)


def encode_message(msg: VpcdMessage) -> bytes:
    """The framed bytes vpcd would send for ``msg``."""
    if isinstance(msg, ControlMessage):
        return encode_frame(bytes([msg.control]))
    if len(msg.apdu) < 2:
        raise EncodeError(f"a vpcd APDU message needs at least 2 bytes, got {len(msg.apdu)}")
    return encode_frame(msg.apdu)


def parse_message(payload: bytes) -> VpcdMessage:
    """Classify one payload from vpcd: a control byte or a C-APDU."""
    if len(payload) == 0:
        raise DecodeError("empty vpcd message", field="vpcd", pos=0, raw=payload)
    if len(payload) == 1:
        try:
            return ControlMessage(Control(payload[0]))
        except ValueError:
            raise DecodeError(
                f"unknown vpcd control byte {payload[0]:02X}", field="vpcd.control", pos=0, raw=payload
            ) from None
    return ApduMessage(bytes(payload))


class VpcdDecoder:
    """vpcd messages from a byte stream, sans-IO (:mod:`protocol.sansio`): the length framing is
    :class:`protocol.framing.Framer`'s, each payload is classified by :func:`parse_message`.

    >>> d = VpcdDecoder()
    >>> d.receive_data(b"\\x00"); d.next_event()
    NEED_DATA
    >>> d.receive_data(b"\\x01\\x04\\x00\\x01"); d.next_event(), d.next_event()
    (ControlMessage(control=<Control.GET_ATR: 4>), NEED_DATA)
    """

    __slots__ = ("_framer", "_pos")

    def __init__(self) -> None:
        self._framer = Framer(MAX_PAYLOAD)
        self._pos = 0                 # stream offset of the next frame, for error positions

    def receive_data(self, data: bytes) -> None:
        self._framer.receive_data(data)

    @property
    def buffered(self) -> int:
        return self._framer.buffered

    def next_event(self) -> VpcdMessage | NeedData:
        """The next parsed message, or ``NEED_DATA``; a bad frame raises :class:`DecodeError`."""
        start = self._pos
        payload = self._framer.next_event()
        if payload is NEED_DATA:
            return NEED_DATA
        self._pos += HEADER_LEN + len(payload)
        try:
            return parse_message(payload)
        except DecodeError as e:
            raise e.at("frame", start + HEADER_LEN) from None


@dataclass(slots=True)
class SessionStats:
    """What vpcd has asked of the card on one connection, counted by kind."""

    apdus: int = 0
    atr_polls: int = 0
    power_ons: int = 0
    resets: int = 0
    power_offs: int = 0


class VpcdCardSession:
    """The card side of the vpcd protocol, sans-IO: feed bytes from vpcd, get bytes to send.

    Power on and reset both reset the card's volatile state (ISO 7816-3 cold/warm reset).
    An APDU to an unpowered card is answered anyway (vpcd powers the card before use; being
    lenient here matches vpcd's own reference card). A card that returns fewer than 2 bytes
    is answered with ``6F00`` (no precise diagnosis) rather than an empty frame, which vpcd
    would take as the card being pulled.
    """

    def __init__(self, card: VirtualCard) -> None:
        self.card = card
        self.powered = False
        self.stats = SessionStats()
        self._decoder = VpcdDecoder()
        self._out = bytearray()

    def receive_data(self, data: bytes) -> None:
        """Bytes from vpcd (any split); :meth:`next_event` handles the messages they complete."""
        self._decoder.receive_data(data)

    def next_event(self) -> VpcdMessage | NeedData:
        """Handle the next complete message (its reply goes to :meth:`data_to_send`) and return
        it, or ``NEED_DATA``."""
        msg = self._decoder.next_event()
        if msg is NEED_DATA:
            return NEED_DATA
        reply = self.handle(msg)
        if reply is not None:
            self._out += encode_frame(reply)
        return msg

    def data_to_send(self) -> bytes:
        """The reply frames owed to vpcd so far (possibly ``b""``)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def contacted(self) -> bool:
        """vpcd has sent at least one message (the card is in its reader)."""
        st = self.stats
        return bool(st.apdus or st.atr_polls or st.power_ons or st.resets or st.power_offs)

    def handle(self, msg: VpcdMessage) -> bytes | None:
        """One message in, the reply payload out (``None``: no reply)."""
        if isinstance(msg, ApduMessage):
            self.stats.apdus += 1
            resp = self.card.execute(msg.apdu)
            return resp if len(resp) >= 2 else b"\x6f\x00"
        ctl = msg.control
        if ctl is Control.GET_ATR:
            self.stats.atr_polls += 1
            return self.card.atr
        if ctl is Control.POWER_ON:
            self.stats.power_ons += 1
            self.card.reset()
            self.powered = True
        elif ctl is Control.RESET:
            self.stats.resets += 1
            self.card.reset()
            self.powered = True
        else:
            self.stats.power_offs += 1
            self.powered = False
        return None


def _quickack(sock: Any) -> None:
    """Acknowledge the next segment at once (Linux ``TCP_QUICKACK``; the kernel clears it again).

    vpcd does not set ``TCP_NODELAY``; with the kernel's delayed ACK on our side, every APDU
    would wait ~40 ms for a Nagle/delayed-ACK timer (measured: 21 APDU/s instead of ~10 000).
    """
    opt = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or opt is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, opt, 1)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"127.0.0.1:35963"`` → ``("127.0.0.1", 35963)``; a bare port means 127.0.0.1.

    >>> parse_endpoint("35964"), parse_endpoint("localhost:1")
    (('127.0.0.1', 35964), ('localhost', 1))
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"vpcd endpoint {text!r}: port {port!r} is not a number") from None
    if not 0 < p < 65536:
        raise ConfigError(f"vpcd endpoint {text!r}: port out of range")
    return (host or DEFAULT_HOST, p)


class VpcdClient:
    """Serve one virtual card to one vpcd slot over TCP, on the caller's event loop.

    ``await insert()`` connects (retrying every ``retry_interval`` clock seconds for up to
    ``connect_timeout``, so it works when started before pcscd) and starts answering vpcd;
    ``await remove()`` closes the socket — to PC/SC, the card was pulled out. ``insert`` and
    ``remove`` can alternate any number of times. ``await wait_removed()`` returns when the
    connection ends from either side (e.g. pcscd stopped).
    """

    def __init__(
        self,
        card: VirtualCard,
        *,
        clock: Clock,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        connect_timeout: float = 30.0,
        retry_interval: float = 0.2,
    ) -> None:
        if not card.atr:
            raise CardMuteError(
                "this card has no chip (empty ATR), so vpcd cannot present it; use a chip card profile"
            )
        self.card = card
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        self._clock = clock
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._active = asyncio.Event()
        self.session: VpcdCardSession | None = None
        self.insertions = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def inserted(self) -> bool:
        return self._task is not None and not self._task.done()

    async def insert(self) -> None:
        """Connect to vpcd (the card enters the reader) and start serving in the background."""
        if self.inserted:
            return
        reader, writer = await self._connect()
        self._writer = writer
        self._active = asyncio.Event()
        self.session = VpcdCardSession(self.card)
        self.insertions += 1
        self._task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer, self.session), name=f"vpcd-card {self.endpoint}"
        )

    async def remove(self) -> None:
        """Close the connection: to PC/SC the card has been pulled out."""
        task, self._task = self._task, None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def active(self) -> bool:
        """Connected, and vpcd has talked to the card on this connection (a power-on, an ATR
        request, an APDU): the card is in the reader."""
        return self._active.is_set() and self.inserted

    async def wait_active(self, timeout: float | None = None) -> bool:
        """Wait until vpcd first talks to the card on this connection: ``True`` (also when the
        connection has ended since); ``False`` when ``timeout`` (loop seconds) passes first or
        the connection ends before vpcd said anything.

        Connecting is not enough to be in the reader: vpcd serves one card per slot, and while
        another card holds the slot the kernel still completes our TCP handshake (the listening
        socket's backlog) but vpcd does not read from us until that card leaves. The first
        message — pcscd polls presence with an ATR request every few hundred milliseconds —
        is what says the card is in.
        """
        task = self._task
        if task is None:
            return False
        waiter = asyncio.ensure_future(self._active.wait())
        try:
            await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return self._active.is_set()

    async def wait_removed(self) -> None:
        """Return when the connection has ended (removed here, or vpcd/pcscd went away)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        attempts = max(1, int(self.connect_timeout / self.retry_interval) + 1)
        last: OSError | None = None
        for i in range(attempts):
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError as e:
                last = e
            if i + 1 < attempts:
                await self._clock.sleep(self.retry_interval)
        raise ServiceUnavailableError(
            f"cannot connect to vpcd at {self.endpoint} ({last}); is pcscd running with the vsmartcard "
            "vpcd driver? Check `systemctl status pcscd` (or start `pcscd -f`) and /etc/reader.conf.d/vpcd"
        )

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: VpcdCardSession
    ) -> None:
        sock = writer.get_extra_info("socket")
        try:
            while True:                  # one iteration per read; ends at EOF or on remove()
                _quickack(sock)
                data = await reader.read(4096)
                if not data:
                    return
                session.receive_data(data)
                while session.next_event() is not NEED_DATA:
                    pass
                out = session.data_to_send()
                if session.contacted:
                    self._active.set()
                if out:
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, OSError):
            return
        except DecodeError:
            return                       # vpcd sent garbage: drop the card like a bad contact
        finally:
            writer.close()

