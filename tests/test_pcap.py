"""protocol.pcap: synthesised Ethernet/IP/TCP around real bytes, read back and checked."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import pcap
from protocol.errors import DecodeError, EncodeError

CLIENT = pcap.Endpoint("127.0.0.1", 40001)
SERVER = pcap.Endpoint("127.0.0.1", 5000, pcap.SERVER_MAC)


def segments(frames: list[bytes]) -> list[pcap.Segment]:
    return [pcap.parse_tcp_frame(f) for f in frames]


def streams(segs: list[pcap.Segment], client_port: int) -> tuple[bytes, bytes]:
    """Reassemble both directions by sequence number (as a receiver would), checking there are
    no holes or overlaps."""
    out: dict[bool, dict[int, bytes]] = {True: {}, False: {}}
    isn: dict[bool, int] = {}
    for s in segs:
        up = s.sport == client_port
        if s.flags & pcap.SYN:
            isn[up] = s.seq
        if s.payload:
            out[up][s.seq] = s.payload
    result = []
    for up in (True, False):
        pos = (isn[up] + 1) & 0xFFFFFFFF
        data = b""
        for seq in sorted(out[up], key=lambda q: (q - isn[up]) & 0xFFFFFFFF):
            assert seq == pos, f"hole or overlap at {seq} (expected {pos})"
            data += out[up][seq]
            pos = (pos + len(out[up][seq])) & 0xFFFFFFFF
        result.append(data)
    return result[0], result[1]


def test_file_header_is_classic_little_endian_ethernet() -> None:
    h = pcap.file_header()
    assert len(h) == 24
    magic, major, minor, _tz, _sig, snaplen, linktype = struct.unpack("<IHHiIII", h)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, pcap.SNAPLEN, 1)
    assert h[:4] in pcap.PCAP_PREFIXES


def test_record_timestamp_and_lengths() -> None:
    r = pcap.record(1767258000.25, b"abc")
    assert struct.unpack("<IIII", r[:16]) == (1767258000, 250000, 3, 3)
    assert r[16:] == b"abc"
    assert pcap.record(5.0, b"x" * 10, snaplen=4)[8:16] == struct.pack("<II", 4, 10)
    with pytest.raises(EncodeError):
        pcap.record(-1.0, b"")


def test_handshake_data_and_close_have_consistent_seq_ack_and_checksums() -> None:
    flow = pcap.TcpFlow(CLIENT, SERVER, mss=50)
    frames = flow.open() + flow.send(True, b"R" * 120) + flow.send(False, b"A" * 30) + flow.close(False)
    segs = segments(frames)
    assert all(s.ip_checksum_ok and s.tcp_checksum_ok for s in segs)
    flags = [s.flags for s in segs]
    assert flags[:3] == [pcap.SYN, pcap.SYN | pcap.ACK, pcap.ACK]
    syn, synack, ack = segs[:3]
    assert synack.ack == syn.seq + 1 and ack.seq == syn.seq + 1 and ack.ack == synack.seq + 1
    data = [s for s in segs if s.payload]
    assert [len(s.payload) for s in data] == [50, 50, 20, 30]      # split at the MSS
    assert data[2].flags & pcap.PSH and not data[0].flags & pcap.PSH
    # every data segment is acknowledged by the next segment the other way
    for i, s in enumerate(segs):
        if s.payload:
            reply = next(r for r in segs[i + 1:] if r.sport != s.sport)
            assert reply.ack >= s.seq + len(s.payload)
    # the server closed first: FIN/ACK from 5000, ACK, FIN/ACK from the client, ACK
    tail = segs[-4:]
    assert [(s.sport, s.flags) for s in tail] == [
        (5000, pcap.FIN | pcap.ACK), (40001, pcap.ACK), (40001, pcap.FIN | pcap.ACK), (5000, pcap.ACK)]
    assert tail[1].ack == tail[0].seq + 1 and tail[3].ack == tail[2].seq + 1
    assert streams(segs, 40001) == (b"R" * 120, b"A" * 30)


def test_ipv6_frames_carry_valid_tcp_checksums() -> None:
    flow = pcap.TcpFlow(pcap.Endpoint("::1", 40001), pcap.Endpoint("::1", 5000, pcap.SERVER_MAC))
    segs = segments(flow.open() + flow.send(True, b"hello"))
    assert all(s.tcp_checksum_ok for s in segs)
    assert segs[0].src == "::1" and segs[3].payload == b"hello"


def test_a_corrupted_frame_fails_its_checksums() -> None:
    frame = bytearray(pcap.TcpFlow(CLIENT, SERVER).send(True, b"payload")[0])
    frame[-1] ^= 0x01
    assert not pcap.parse_tcp_frame(bytes(frame)).tcp_checksum_ok
    frame[14 + 8] ^= 0x01          # IPv4 TTL
    assert not pcap.parse_tcp_frame(bytes(frame)).ip_checksum_ok


def test_isn_is_reproducible_per_connection() -> None:
    a, b = pcap.TcpFlow(CLIENT, SERVER), pcap.TcpFlow(CLIENT, SERVER)
    c = pcap.TcpFlow(pcap.Endpoint("127.0.0.1", 40002), SERVER)
    assert (a.client_isn, a.server_isn) == (b.client_isn, b.server_isn) != (c.client_isn, c.server_isn)


def test_bad_endpoints_and_mixed_versions_are_encode_errors() -> None:
    with pytest.raises(EncodeError):
        pcap.Endpoint("not an ip", 1)
    with pytest.raises(EncodeError):
        pcap.Endpoint("127.0.0.1", 70000)
    with pytest.raises(EncodeError):
        pcap.tcp_frame(CLIENT, pcap.Endpoint("::1", 1), seq=0, ack=0, flags=pcap.SYN)
    flow = pcap.TcpFlow(CLIENT, SERVER)
    flow.close(True)
    with pytest.raises(EncodeError):
        flow.send(True, b"after FIN")


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=3000)), max_size=12),
       mss=st.integers(1, 1460), close_by_client=st.booleans())
def test_any_conversation_reassembles_to_what_was_sent(chunks: list[tuple[bool, bytes]], mss: int,
                                                       close_by_client: bool) -> None:
    flow = pcap.TcpFlow(CLIENT, SERVER, mss=mss)
    frames = flow.open()
    for up, data in chunks:
        frames += flow.send(up, data)
    frames += flow.close(close_by_client)
    data = pcap.file_header() + b"".join(pcap.record(1000.0 + i, f) for i, f in enumerate(frames))
    packets = pcap.read_records(data)
    assert [p.frame for p in packets] == frames
    segs = segments([p.frame for p in packets])
    assert all(s.ip_checksum_ok and s.tcp_checksum_ok for s in segs)
    assert all(len(s.payload) <= mss for s in segs)
    sent_up = b"".join(d for u, d in chunks if u)
    sent_down = b"".join(d for u, d in chunks if not u)
    assert streams(segs, 40001) == (sent_up, sent_down)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_reading_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    for blob in (data, pcap.file_header() + data):
        with contextlib.suppress(DecodeError):
            pcap.read_records(blob)
    with contextlib.suppress(DecodeError):
        pcap.parse_tcp_frame(data)
