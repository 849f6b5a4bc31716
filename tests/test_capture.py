"""emulator.capture: the host link's and the host server's raw bytes, recorded as a pcap."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from emulator.app import Rig, open_rig
from emulator.capture import PcapRecorder, WireConn, WireEvent, WireKind, tap_terminals, terminal_taps
from emulator.config import TerminalConfig
from emulator.host.logic import seed_demo
from emulator.ports import ScriptedPinPad
from hardware.cards.profiles import load_profile
from hardware.clock import EPOCH, VirtualClock
from protocol import pcap
from protocol.framing import Framer
from protocol.iso import Message, decode
from protocol.specs import CUP, ISO87ASCII, Profile, get_profile
from protocol.wiremask import mask_digits
from tests.pcsc_fixtures import chip_profile

PAN = "9912345678901239"        # a test PAN (Luhn-valid) whose middle digits are not already zeros


@pytest.fixture
def card(tmp_path: Path) -> str:
    """A chip card profile like the bundled one, with :data:`PAN` (and a host that knows it)."""
    base = chip_profile() or "demo"
    src = (resources.files("hardware.cards") / "profiles" / f"{base}.toml").read_text(encoding="utf-8")
    old = load_profile(base).pan
    path = tmp_path / "card.toml"
    path.write_text(src.replace(f'pan = "{old}"', f'pan = "{PAN}"'), encoding="utf-8")
    assert load_profile(str(path)).pan == PAN
    return str(path)


def run_inquiry_and_purchase(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path, profile: str, card: str,
                             *, clear: bool = False) -> tuple[bytes, bytes, Rig]:
    """Sign-on, inquiry and purchase with a chip card; the terminal's and the host's captures."""
    term_buf, host_buf = bytearray(), bytearray()
    term_rec = PcapRecorder(term_buf.extend, clear=clear)
    host_rec = PcapRecorder(host_buf.extend, clear=clear)
    cfg = replace(TerminalConfig(), reader=f"sim://{card}", profile=profile)
    pin = load_profile(card).pin

    async def go() -> Rig:
        with tap_terminals(term_rec):
            rig = await open_rig(cfg, clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad(pin, pin))
        assert rig.host is not None
        seed_demo(rig.host.store, profiles=[card])
        rig.host.wire_observers.append(host_rec)
        assert (await rig.terminal.sign_on()).approved
        assert (await rig.terminal.balance_inquiry()).approved
        assert (await rig.terminal.purchase(1250)).approved
        await rig.close()
        return rig

    rig = vrun.run(go())
    term_rec.finish()
    host_rec.finish()
    assert term_rec.failed is None and host_rec.failed is None
    return bytes(term_buf), bytes(host_buf), rig


def conversation(data: bytes) -> list[tuple[float, bool, bytes]]:
    """(time, client→server, application bytes) of every data segment, in file order."""
    out = []
    client_port = None
    for p in pcap.read_records(data):
        s = pcap.parse_tcp_frame(p.frame)
        assert s.ip_checksum_ok and s.tcp_checksum_ok
        if s.flags == pcap.SYN:
            client_port = s.sport
        if s.payload:
            out.append((p.ts, s.sport == client_port, s.payload))
    return out


def messages(data: bytes, profile: Profile) -> list[tuple[bool, Message]]:
    framers = {True: Framer(), False: Framer()}
    out: list[tuple[bool, Message]] = []
    for _, up, payload in conversation(data):
        framers[up].receive_data(payload)
        out += [(up, decode(f, profile)) for f in framers[up].frames()]
    return out


@pytest.mark.parametrize("profile", ["cup", "iso87ascii"])
def test_terminal_capture_holds_every_message_masked(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
                                                     profile: str, card: str) -> None:
    term, _, _ = run_inquiry_and_purchase(vrun, vclock, tmp_path, profile, card)
    msgs = messages(term, get_profile(profile))
    assert [(up, m.mti) for up, m in msgs] == [
        (True, "0800"), (False, "0810"), (True, "0200"), (False, "0210"), (True, "0200"), (False, "0210")]
    requests = [m for up, m in msgs if up and m.mti == "0200"]
    for m in requests:
        assert m[2] == mask_digits(PAN) == "9912340000001239"
        assert 55 in m and bytes.fromhex(PAN) not in m.binary(55)        # a chip card: 5A and 57 masked
    assert [m[3] for m in requests] == ["310000", "000000"]
    assert requests[1][4] == "000000001250"
    responses = [m for up, m in msgs if not up and m.mti == "0210"]
    assert [m[39] for m in responses] == ["00", "00"]
    assert all(54 in m for m in responses)
    # the PAN is nowhere in the file, in ASCII or BCD
    assert PAN.encode() not in term and bytes.fromhex(PAN) not in term
    # virtual time: the capture starts at the virtual clock's epoch, and never goes backwards
    times = [t for t, _, _ in conversation(term)]
    assert times == sorted(times) and EPOCH.timestamp() <= times[0] < EPOCH.timestamp() + 60


def test_terminal_and_host_captures_show_the_same_bytes(vrun: asyncio.Runner, vclock: VirtualClock,
                                                        tmp_path: Path, card: str) -> None:
    term, host, _ = run_inquiry_and_purchase(vrun, vclock, tmp_path, "cup", card)

    def streams(data: bytes) -> tuple[bytes, bytes]:
        conv = conversation(data)
        return (b"".join(p for _, up, p in conv if up), b"".join(p for _, up, p in conv if not up))

    assert streams(term) == streams(host)
    # both capture the same TCP connection: the same two ports
    t, h = (pcap.parse_tcp_frame(pcap.read_records(d)[0].frame) for d in (term, host))
    assert (t.sport, t.dport) == (h.sport, h.dport)


def test_clear_capture_keeps_the_card_number(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
                                             card: str) -> None:
    term, _, _ = run_inquiry_and_purchase(vrun, vclock, tmp_path, "iso87ascii", card, clear=True)
    pan = PAN
    assert pan.encode() in term
    assert [m[2] for up, m in messages(term, ISO87ASCII) if up and 2 in m] == [pan, pan]


def test_taps_are_scoped_to_their_block() -> None:
    seen: list[WireEvent] = []
    assert terminal_taps() == ()
    with tap_terminals(seen.append):
        assert terminal_taps() == (seen.append,)
    assert terminal_taps() == ()


def test_recorder_timestamps_never_go_backwards_and_close_order() -> None:
    buf = bytearray()
    rec = PcapRecorder(buf.extend, clear=True)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    a = WireConn("client", ("127.0.0.1", 40001), ("127.0.0.1", 5000), CUP)
    b = WireConn("server", ("127.0.0.1", 5000), ("127.0.0.1", 40002), CUP)
    rec(WireEvent(WireKind.OPEN, a, t0 + 10))
    rec(WireEvent(WireKind.SENT, a, t0 + 11, b"\x00\x01x"))
    rec(WireEvent(WireKind.CLOSED, a, t0 + 12, by_peer=True))        # the server closed first
    rec(WireEvent(WireKind.RECEIVED, b, t0 + 0.5, b"\x00\x01y"))     # a new run: its clock restarted
    rec.finish()
    packets = pcap.read_records(bytes(buf))
    times = [p.ts for p in packets]
    assert times == sorted(times)
    assert times[-1] == pytest.approx(t0 + 13.0)                      # one second after the last packet
    segs = [pcap.parse_tcp_frame(p.frame) for p in packets]
    fins = [s.sport for s in segs if s.flags & pcap.FIN]
    assert fins[:2] == [5000, 40001]
    # the server's view: the peer is the client, and data it received flows client → server
    assert [(s.sport, s.dport) for s in segs if s.payload == b"\x00\x01y"] == [(40002, 5000)]
    assert rec.packets == len(packets)


def test_write_errors_stop_recording_without_raising() -> None:
    calls = []

    def sink(data: bytes) -> None:
        calls.append(data)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")

    rec = PcapRecorder(sink)
    conn = WireConn("client", None, None, ISO87ASCII)     # no socket: stand-in addresses
    rec(WireEvent(WireKind.OPEN, conn, 1.0))
    rec(WireEvent(WireKind.SENT, conn, 2.0, b"\x00\x04abcd"))
    assert isinstance(rec.error, OSError) and len(calls) == 2


def test_a_recording_problem_never_reaches_the_link() -> None:
    buf = bytearray()
    rec = PcapRecorder(buf.extend)
    conn = WireConn("client", ("127.0.0.1", 40001), ("127.0.0.1", 5000), CUP)
    rec(WireEvent(WireKind.OPEN, conn, 1.0))
    rec(WireEvent(WireKind.SENT, conn, 2.0 ** 40, b"\x00\x01x"))   # a time a classic pcap cannot hold
    assert rec.failed is not None and "timestamp" in rec.failed
    size = len(buf)
    rec(WireEvent(WireKind.SENT, conn, 3.0, b"\x00\x01y"))       # recording has stopped
    rec.finish()
    assert len(buf) == size
