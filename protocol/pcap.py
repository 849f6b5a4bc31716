"""A pure pcap writer: synthesised Ethernet / IPv4 or IPv6 / TCP around application bytes.

Nothing here touches a socket or a file: every function returns bytes, and the caller decides
where they go (:mod:`emulator.capture` writes them to a 0600 file). A capture is the classic
libpcap format (``a1b2c3d4``, microsecond timestamps, link type 1 = Ethernet, as described in
the *PCAP Capture File Format* Internet-Draft, draft-ietf-opsawg-pcap §4–§5).

:class:`TcpFlow` keeps one connection's sequence and acknowledgement numbers: the three-way
handshake (RFC 9293 §3.5), data segments of at most ``mss`` bytes, each acknowledged by the
peer, and the FIN exchange. IPv4 header checksums (RFC 791 §3.1) and TCP checksums over the
pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1 for IPv6) are computed, so Wireshark's checksum
validation passes.

>>> client, server = Endpoint("127.0.0.1", 40001), Endpoint("127.0.0.1", 5000)
>>> flow = TcpFlow(client, server)
>>> frames = flow.open() + flow.send(True, b"hello") + flow.close(True)
>>> len(frames), flow.client_next - flow.client_isn        # SYN + 5 bytes + FIN
(9, 7)
>>> data = file_header() + b"".join(record(1.5, f) for f in frames)
>>> data[:4].hex(), len(read_records(data))
('d4c3b2a1', 9)
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass, field

from protocol.errors import DecodeError, EncodeError

PCAP_MAGIC = 0xA1B2C3D4          # microsecond timestamps, written in this machine-independent order (LE)
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
DEFAULT_MSS = 1460               # Ethernet MTU 1500 − IPv4 header 20 − TCP header 20

#: what a classic pcap file starts with (either byte order, µs or ns timestamps)
PCAP_PREFIXES = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
IPPROTO_TCP = 6

CLIENT_MAC = bytes.fromhex("02504f530001")     # locally administered ("POS" 00 01)
SERVER_MAC = bytes.fromhex("02504f530002")


def file_header(snaplen: int = SNAPLEN, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    """The 24-byte pcap file header (little-endian)."""
    return struct.pack("<IHHiIII", PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, linktype)


def record(ts: float, frame: bytes, snaplen: int = SNAPLEN) -> bytes:
    """One packet record: timestamp (seconds since the epoch, microsecond resolution) and the frame.

    >>> record(1.9999996, b"ab")[:8].hex()       # rounds up into the next second
    '0200000000000000'
    """
    if ts < 0:
        raise EncodeError(f"a pcap timestamp cannot be negative ({ts})", field="ts")
    micros = round(ts * 1_000_000)
    sec, usec = divmod(micros, 1_000_000)
    if sec > 0xFFFFFFFF:
        raise EncodeError(f"timestamp {ts} does not fit a classic pcap record", field="ts")
    cap = frame[:snaplen]
    return struct.pack("<IIII", sec, usec, len(cap), len(frame)) + cap


def internet_checksum(data: bytes) -> int:
    """The ones' complement sum of 16-bit words (RFC 1071).

    >>> hex(internet_checksum(bytes.fromhex("45000073000040004011" "0000" "c0a80001c0a800c7")))
    '0xb861'
    """
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a connection: an IPv4 or IPv6 address, a TCP port, an Ethernet address."""

    addr: str
    port: int
    mac: bytes = CLIENT_MAC

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.addr)
        except ValueError:
            raise EncodeError(f"{self.addr!r} is not an IP address", field="ip") from None
        if not 0 <= self.port <= 0xFFFF:
            raise EncodeError(f"TCP port {self.port} is outside 0..65535", field="tcp.port")
        if len(self.mac) != 6:
            raise EncodeError("an Ethernet address is 6 bytes", field="eth")

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.addr)


def tcp_frame(src: Endpoint, dst: Endpoint, *, seq: int, ack: int, flags: int, payload: bytes = b"",
              window: int = 65535, ip_id: int = 0, options: bytes = b"") -> bytes:
    """An Ethernet frame holding one TCP segment, checksums filled in."""
    s_ip, d_ip = src.ip, dst.ip
    if s_ip.version != d_ip.version:
        raise EncodeError(f"cannot mix IPv{s_ip.version} and IPv{d_ip.version} in one segment", field="ip")
    if len(options) % 4:
        raise EncodeError("TCP options must fill whole 32-bit words", field="tcp.options")
    hlen = 20 + len(options)
    tcp = bytearray(struct.pack("!HHIIBBHHH", src.port, dst.port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                (hlen // 4) << 4, flags, window, 0, 0) + options + payload)
    seg_len = len(tcp)
    if s_ip.version == 4:
        pseudo = s_ip.packed + d_ip.packed + struct.pack("!BBH", 0, IPPROTO_TCP, seg_len)
    else:
        pseudo = s_ip.packed + d_ip.packed + struct.pack("!IxxxB", seg_len, IPPROTO_TCP)
    struct.pack_into("!H", tcp, 16, internet_checksum(pseudo + bytes(tcp)))
    if s_ip.version == 4:
        total = 20 + seg_len
        if total > 0xFFFF:
            raise EncodeError(f"an IPv4 packet of {total} bytes is too long", field="ip.len")
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ip_id & 0xFFFF, 0x4000, 64, IPPROTO_TCP, 0,
                                   s_ip.packed, d_ip.packed))
        struct.pack_into("!H", ip, 10, internet_checksum(bytes(ip)))
        ethertype = ETH_IPV4
    else:
        if seg_len > 0xFFFF:
            raise EncodeError(f"an IPv6 payload of {seg_len} bytes is too long", field="ipv6.plen")
        ip = bytearray(struct.pack("!IHBB16s16s", 0x60000000, seg_len, IPPROTO_TCP, 64, s_ip.packed, d_ip.packed))
        ethertype = ETH_IPV6
    return dst.mac + src.mac + struct.pack("!H", ethertype) + bytes(ip) + bytes(tcp)


def _isn(a: Endpoint, b: Endpoint, salt: int) -> int:
    """A reproducible initial sequence number for a connection (same 4-tuple, same ISN)."""
    return zlib.crc32(f"{a.addr}|{a.port}|{b.addr}|{b.port}|{salt}".encode()) & 0xFFFFFFFF


@dataclass(slots=True)
class TcpFlow:
    """One synthesised TCP connection, client ⇄ server: every call returns Ethernet frames."""

    client: Endpoint
    server: Endpoint
    mss: int = DEFAULT_MSS
    client_isn: int = -1
    server_isn: int = -1
    client_next: int = field(init=False, default=0)
    server_next: int = field(init=False, default=0)
    _ip_id: dict[bool, int] = field(init=False, default_factory=lambda: {True: 1, False: 1})
    _fin: set[bool] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        if not 1 <= self.mss <= 65495:
            raise EncodeError(f"MSS {self.mss} is outside 1..65495", field="tcp.mss")
        if self.client_isn < 0:
            self.client_isn = _isn(self.client, self.server, 1)
        if self.server_isn < 0:
            self.server_isn = _isn(self.client, self.server, 2)
        self.client_next = self.client_isn
        self.server_next = self.server_isn

    def _seg(self, from_client: bool, flags: int, payload: bytes = b"", options: bytes = b"") -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        seq = self.client_next if from_client else self.server_next
        ack = (self.server_next if from_client else self.client_next) if flags & ACK else 0
        ip_id = self._ip_id[from_client]
        self._ip_id[from_client] = (ip_id + 1) & 0xFFFF
        frame = tcp_frame(src, dst, seq=seq, ack=ack, flags=flags, payload=payload, ip_id=ip_id, options=options)
        used = len(payload) + (1 if flags & (SYN | FIN) else 0)
        if from_client:
            self.client_next = (self.client_next + used) & 0xFFFFFFFF
        else:
            self.server_next = (self.server_next + used) & 0xFFFFFFFF
        return frame

    def open(self) -> list[bytes]:
        """SYN, SYN/ACK, ACK — each SYN announces the MSS (option kind 2, RFC 9293 §3.7.1)."""
        mss_opt = struct.pack("!BBH", 2, 4, min(self.mss, 0xFFFF))
        return [self._seg(True, SYN, options=mss_opt), self._seg(False, SYN | ACK, options=mss_opt),
                self._seg(True, ACK)]

    def send(self, from_client: bool, data: bytes) -> list[bytes]:
        """``data`` in segments of at most ``mss`` bytes (PSH on the last), then the peer's ACK."""
        if not data:
            return []
        if from_client in self._fin:
            raise EncodeError("data after this side's FIN", field="tcp")
        out = []
        for i in range(0, len(data), self.mss):
            chunk = data[i:i + self.mss]
            last = i + self.mss >= len(data)
            out.append(self._seg(from_client, ACK | (PSH if last else 0), chunk))
        out.append(self._seg(not from_client, ACK))
        return out

    def close(self, from_client: bool) -> list[bytes]:
        """The orderly close begun by one side: FIN/ACK, ACK, FIN/ACK, ACK (RFC 9293 §3.6)."""
        out: list[bytes] = []
        for side in (from_client, not from_client):
            if side in self._fin:
                continue
            out.append(self._seg(side, FIN | ACK))
            self._fin.add(side)
            out.append(self._seg(not side, ACK))
        return out

    def reset(self, from_client: bool) -> list[bytes]:
        """An abort: RST/ACK from one side."""
        self._fin.update((True, False))
        return [self._seg(from_client, RST | ACK)]


@dataclass(frozen=True, slots=True)
class Packet:
    """One record read back from a pcap (for tests and tools): time, link-layer frame."""

    ts: float
    frame: bytes


def read_records(data: bytes) -> list[Packet]:
    """Read a classic little-endian microsecond pcap written by :func:`file_header`/:func:`record`."""
    if len(data) < 24 or data[:4] != PCAP_MAGIC.to_bytes(4, "little"):
        raise DecodeError("not a little-endian microsecond pcap", field="pcap.magic", pos=0, raw=data[:24])
    out = []
    pos = 24
    while pos < len(data):
        if pos + 16 > len(data):
            raise DecodeError("truncated record header", field="pcap.record", pos=pos)
        sec, usec, caplen, _orig = struct.unpack_from("<IIII", data, pos)
        pos += 16
        if pos + caplen > len(data):
            raise DecodeError("truncated record", field="pcap.record", pos=pos)
        out.append(Packet(sec + usec / 1_000_000, data[pos:pos + caplen]))
        pos += caplen
    return out


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment parsed from an Ethernet frame (for tests and tools)."""

    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes
    ip_checksum_ok: bool
    tcp_checksum_ok: bool


def parse_tcp_frame(frame: bytes) -> Segment:
    """Parse an Ethernet/IPv4-or-IPv6/TCP frame and verify its checksums."""
    if len(frame) < 14:
        raise DecodeError("frame shorter than an Ethernet header", field="eth", raw=frame)
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    ip_start = 14
    if ethertype == ETH_IPV4:
        if len(frame) < ip_start + 20:
            raise DecodeError("truncated IPv4 header", field="ip", raw=frame)
        ihl = (frame[ip_start] & 0x0F) * 4
        (total,) = struct.unpack_from("!H", frame, ip_start + 2)
        if frame[ip_start + 9] != IPPROTO_TCP or ihl < 20 or total > len(frame) - ip_start:
            raise DecodeError("not a whole IPv4 TCP packet", field="ip", raw=frame)
        ip_ok = internet_checksum(frame[ip_start:ip_start + ihl]) == 0
        s_raw, d_raw = frame[ip_start + 12:ip_start + 16], frame[ip_start + 16:ip_start + 20]
        tcp = frame[ip_start + ihl:ip_start + total]
        pseudo = s_raw + d_raw + struct.pack("!BBH", 0, IPPROTO_TCP, len(tcp))
    elif ethertype == ETH_IPV6:
        if len(frame) < ip_start + 40:
            raise DecodeError("truncated IPv6 header", field="ipv6", raw=frame)
        (plen,) = struct.unpack_from("!H", frame, ip_start + 4)
        if frame[ip_start + 6] != IPPROTO_TCP or plen > len(frame) - ip_start - 40:
            raise DecodeError("not a whole IPv6 TCP packet", field="ipv6", raw=frame)
        ip_ok = True
        s_raw, d_raw = frame[ip_start + 8:ip_start + 24], frame[ip_start + 24:ip_start + 40]
        tcp = frame[ip_start + 40:ip_start + 40 + plen]
        pseudo = s_raw + d_raw + struct.pack("!IxxxB", len(tcp), IPPROTO_TCP)
    else:
        raise DecodeError(f"ethertype {ethertype:#06x} is not IP", field="eth.type", raw=frame)
    if len(tcp) < 20:
        raise DecodeError("truncated TCP header", field="tcp", raw=frame)
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", tcp, 0)
    hlen = (off >> 4) * 4
    if hlen < 20 or hlen > len(tcp):
        raise DecodeError("bad TCP header length", field="tcp.hdr_len", raw=frame)
    return Segment(str(ipaddress.ip_address(s_raw)), sport, str(ipaddress.ip_address(d_raw)), dport, seq, ack,
                   flags, bytes(tcp[hlen:]), ip_ok, internet_checksum(pseudo + bytes(tcp)) == 0)
