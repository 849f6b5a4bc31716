"""T=0 transport (ISO/IEC 7816-3 §10, §12.2): terminal TTL, card adapter, line seam, drivers."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.clock import VirtualClock
from hardware.errors import CardMuteError, TransmissionError
from hardware.t0 import (
    CharChannel,
    Complete,
    Direction,
    Executed,
    RxChar,
    Send,
    T0Card,
    T0Terminal,
    char_line_pair,
    serve_t0,
    t0_transmit,
    wire_t0,
)
from protocol.apdu import CommandApdu
from protocol.errors import EncodeError
from protocol.sansio import NEED_DATA


@dataclass
class ScriptedCard:
    """A VirtualCard answering every command with ``data`` + ``sw``; records what it got."""

    data: bytes = b""
    sw: bytes = b"\x90\x00"
    seen: list[bytes] = field(default_factory=list)

    @property
    def atr(self) -> bytes:
        return bytes.fromhex("3B6500008031806" "5B0")

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return (None, None, None)

    def reset(self) -> None:
        return None

    def execute(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        return self.data + self.sw


def run_terminal(tt: T0Terminal, card_bytes: bytes) -> tuple[bytes, bytes]:
    """Feed scripted card bytes; return (all bytes the terminal sent, response)."""
    sent = bytearray()
    feed = iter(card_bytes)
    while True:
        ev = tt.next_event()
        if isinstance(ev, Send):
            sent += ev.data
        elif isinstance(ev, Complete):
            return bytes(sent), ev.response
        else:
            assert ev is NEED_DATA
            tt.receive_data(bytes([next(feed)]))


# --- terminal side against scripted characters -----------------------------------------------------
def test_case1() -> None:
    sent, resp = run_terminal(T0Terminal(bytes.fromhex("80E80000")), bytes.fromhex("9000"))
    assert sent == bytes.fromhex("80E8000000") and resp == bytes.fromhex("9000")


def test_case2_with_6c_resend() -> None:
    tt = T0Terminal(bytes.fromhex("80CA9F1700"))
    _, resp = run_terminal(tt, bytes.fromhex("6C04" "CA" "9F170103" "9000"))
    assert [h.hex().upper() for h in tt.tpdu_headers] == ["80CA9F1700", "80CA9F1704"]
    assert resp == bytes.fromhex("9F1701039000")


def test_case3_ack_and_single_byte_procedures_and_nulls() -> None:
    tt = T0Terminal(bytes.fromhex("0020008008241234FFFFFFFFFF"))
    # NULL, INS^FF (one byte), NULL, INS (rest), NULL, SW
    sent, resp = run_terminal(tt, bytes.fromhex("60" "DF" "60" "20" "60" "63C2"))
    assert sent == bytes.fromhex("0020008008" "24" "1234FFFFFFFFFF")
    assert resp == bytes.fromhex("63C2")


def test_case4_get_response_chain() -> None:
    tt = T0Terminal(bytes.fromhex("00A4040007A000000003101000"))
    card = bytes.fromhex("A4" "6105" "C0" "0102030405" "9000")
    sent, resp = run_terminal(tt, card)
    assert sent == bytes.fromhex("00A4040007A0000000031010" "00C0000005")
    assert resp == bytes.fromhex("01020304059000")


def test_get_response_more_data_and_wrong_le() -> None:
    tt = T0Terminal(bytes.fromhex("80A8000002830000"))
    card = bytes.fromhex("A8" "6104" "6C02" "C0" "AABB" "6101" "C0" "CC" "9000")
    _, resp = run_terminal(tt, card)
    assert [h.hex().upper() for h in tt.tpdu_headers] == ["80A8000002", "00C0000004", "00C0000002", "00C0000001"]
    assert resp == bytes.fromhex("AABBCC9000")


def test_case4_warning_then_get_response_annex_a7() -> None:
    tt = T0Terminal(bytes.fromhex("00A4040002A00000"))
    card = bytes.fromhex("A4" "6283" "6C02" "C0" "6F00" "9000")
    sent, resp = run_terminal(tt, card)
    assert [h.hex().upper() for h in tt.tpdu_headers] == ["00A4040002", "00C0000000", "00C0000002"]
    assert resp == bytes.fromhex("6F006283")
    # a warning with no data behind it comes back alone
    tt = T0Terminal(bytes.fromhex("00A4040002A00000"))
    _, resp = run_terminal(tt, bytes.fromhex("A4" "6283" "6A88"))
    assert resp == bytes.fromhex("6283")
    assert sent.startswith(bytes.fromhex("00A4040002A000"))


def test_received_data_byte_by_byte() -> None:
    tt = T0Terminal(bytes.fromhex("00B2010C03"))
    _, resp = run_terminal(tt, bytes.fromhex("4D" "70" "4D" "01" "60" "4D" "00" "9000"))
    assert resp == bytes.fromhex("7001009000")


def test_invalid_procedure_byte() -> None:
    tt = T0Terminal(bytes.fromhex("00B2010C00"))
    assert isinstance(tt.next_event(), Send)
    tt.receive_data(b"\x42")
    with pytest.raises(TransmissionError, match="invalid procedure byte 42"):
        tt.next_event()


def test_extended_apdu_refused_and_loop_bounded() -> None:
    with pytest.raises(EncodeError):
        T0Terminal(CommandApdu(0, 0xB0, ne=1000))
    tt = T0Terminal(bytes.fromhex("00B2010C00"), max_tpdus=3)

    def card_keeps_announcing_more_data() -> None:
        for _ in range(10):
            tt.next_event()
            tt.receive_data(bytes.fromhex("6105"))

    with pytest.raises(TransmissionError, match="did not end"):
        card_keeps_announcing_more_data()
    # a second 6Cxx to the corrected command is the answer (Le is corrected once per command)
    tt = T0Terminal(bytes.fromhex("00B2010C00"))
    _, resp = run_terminal(tt, bytes.fromhex("6C05" "6C05"))
    assert resp == bytes.fromhex("6C05") and len(tt.tpdu_headers) == 2


# --- card side -------------------------------------------------------------------------------------
def test_card_case4_answers_61_then_get_response() -> None:
    card = ScriptedCard(bytes.fromhex("6F0A"), b"\x90\x00")
    t0 = T0Card(card)
    for b in bytes.fromhex("00A4040002A000"):
        t0.receive_data(bytes([b]))
        if len(card.seen) == 0 and t0.data_to_send() not in (b"", b"\xa4"):
            pytest.fail("unexpected output")
    assert card.seen == [bytes.fromhex("00A4040002A00000")]   # handed over as case 4, Le 00
    assert t0.data_to_send() == bytes.fromhex("6102")
    for b in bytes.fromhex("00C0000002"):
        t0.receive_data(bytes([b]))
    assert t0.data_to_send() == bytes.fromhex("C0" "6F0A" "9000")


def test_card_wrong_le_answers_6c_and_does_not_execute_twice() -> None:
    card = ScriptedCard(bytes.fromhex("9F170103"))
    t0 = T0Card(card, nulls=1)
    for b in bytes.fromhex("80CA9F1700"):
        t0.receive_data(bytes([b]))
    assert t0.data_to_send() == bytes.fromhex("60" "6C04")
    for b in bytes.fromhex("80CA9F1704"):
        t0.receive_data(bytes([b]))
    assert t0.data_to_send() == bytes.fromhex("60CA" "9F170103" "60" "9000")
    assert len(card.seen) == 1
    ev = t0.next_event()                                       # what the card executed, once
    assert isinstance(ev, Executed) and ev.command == bytes.fromhex("80CA9F1700")
    assert ev.response == bytes.fromhex("9F1701039000")
    assert t0.next_event() is NEED_DATA


def test_terminal_takes_any_split_of_the_cards_characters() -> None:
    tt = T0Terminal(bytes.fromhex("00A4040007A000000003101000"))
    assert isinstance(tt.next_event(), Send)
    tt.receive_data(bytes.fromhex("A4"))
    assert tt.next_event() == Send(bytes.fromhex("A0000000031010"))
    tt.receive_data(bytes.fromhex("6105" "C0" "0102030405" "9000"))   # everything at once
    assert tt.next_event() == Send(bytes.fromhex("00C0000005"))
    assert tt.next_event() == Complete(bytes.fromhex("01020304059000"))


def test_card_rejects_invalid_ins() -> None:
    t0 = T0Card(ScriptedCard())
    for b in bytes.fromhex("0060000000"):
        t0.receive_data(bytes([b]))
    assert t0.data_to_send() == bytes.fromhex("6D00")


# --- terminal ⇄ card through the wire ------------------------------------------------------------
INCOMING = [0xA4, 0x20, 0xAE]
OUTGOING = [0xB2, 0xCA, 0x84]


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[CommandApdu, bytes, bytes]:
    if draw(st.booleans()):
        ins = draw(st.sampled_from(INCOMING))
        data = draw(st.binary(min_size=1, max_size=255))
        ne = draw(st.none() | st.integers(1, 256))
    else:
        ins = draw(st.sampled_from(OUTGOING))
        data = b""
        ne = draw(st.none() | st.integers(1, 256))
    cmd = CommandApdu(0x00, ins, draw(st.integers(0, 255)), draw(st.integers(0, 255)), data, ne)
    resp = draw(st.binary(max_size=600))
    sw = draw(st.sampled_from([b"\x90\x00", b"\x6A\x82", b"\x62\x83", b"\x63\xC1"]))
    return cmd, resp, sw


@settings(max_examples=300)
@given(exchanges(), st.integers(0, 2), st.booleans(), st.booleans())
def test_wired_card_answers_like_the_bare_card(ex: tuple[CommandApdu, bytes, bytes], nulls: int,
                                                byte_by_byte: bool, warning_first: bool) -> None:
    cmd, data, sw = ex
    direct = ScriptedCard(data, sw).execute(cmd.encode())
    if warning_first and cmd.ne is None and sw != b"\x90\x00":
        return   # case 3: the warning-first card style needs a case 4 command to fetch the data
    wired = wire_t0(ScriptedCard(data, sw), nulls=nulls, byte_by_byte=byte_by_byte, warning_first=warning_first)
    assert wired.execute(cmd.encode()) == direct
    assert wired.stats.repeats == 0


class NoisyChannel:
    """Flags a parity error on a character with probability ``p`` (seeded)."""

    def __init__(self, p: float, seed: int) -> None:
        self.p = p
        self.rng = random.Random(seed)
        self.errors = 0

    def carry(self, direction: Direction, char: int) -> RxChar:
        if self.rng.random() < self.p:
            self.errors += 1
            return RxChar(char ^ 0x01, False)
        return RxChar(char, True)


@settings(max_examples=100)
@given(exchanges(), st.integers(0, 2**32 - 1))
def test_parity_errors_are_repeated_transparently(ex: tuple[CommandApdu, bytes, bytes], seed: int) -> None:
    cmd, data, sw = ex
    direct = ScriptedCard(data, sw).execute(cmd.encode())
    channel = NoisyChannel(0.05, seed)
    assert isinstance(channel, CharChannel)
    wired = wire_t0(ScriptedCard(data, sw), channel)
    try:
        assert wired.execute(cmd.encode()) == direct
        assert wired.stats.repeats == channel.errors
    except TransmissionError:
        pass   # four errors in a row on one character: legitimately given up


def test_dead_line_gives_up_after_three_repetitions() -> None:
    channel = NoisyChannel(1.0, 0)
    wired = wire_t0(ScriptedCard(), channel)
    with pytest.raises(TransmissionError, match="3 repetitions"):
        wired.execute(bytes.fromhex("00B2010C00"))
    assert channel.errors == 4
    # the card side is left clean: a good line works again
    wired.channel = NoisyChannel(0.0, 0)
    assert wired.execute(bytes.fromhex("00B2010C00")) == b"\x90\x00"


def test_mute_card_returns_nothing() -> None:
    class Mute(ScriptedCard):
        def execute(self, apdu: bytes) -> bytes:
            return b""

    assert wire_t0(Mute()).execute(bytes.fromhex("00A4040002A00000")) == b""


def test_wire_t0_options() -> None:
    with pytest.raises(TypeError):
        wire_t0(ScriptedCard(), colour=1)
    w = wire_t0(ScriptedCard(b"\x01"), max_repeats=1)
    assert w.atr == ScriptedCard().atr and w.stripe == (None, None, None)
    w.reset()
    assert w.execute(bytes.fromhex("00B2010C01")) == b"\x01\x90\x00"
    assert w.last_tpdus == (bytes.fromhex("00B2010C01"),)


# --- async drivers over an in-memory line, on virtual time ---------------------------------------
def test_async_drivers_on_virtual_time(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    async def scenario() -> tuple[bytes, float]:
        term, card_end = char_line_pair(vclock, char_time=0.00125)   # 12 etu at 9600 bit/s
        server = asyncio.create_task(serve_t0(ScriptedCard(bytes(20)), card_end))
        t0 = vclock.now()
        resp = await t0_transmit(term, bytes.fromhex("00A4040002A00000"))
        elapsed = vclock.now() - t0
        server.cancel()
        return resp, elapsed

    resp, elapsed = vrun.run(scenario())
    assert resp == bytes(20) + b"\x90\x00"
    # header 5 + ACK 1 + data 2 + 61xx 2 + GET RESPONSE 5 + ACK 1 + 20 data + SW 2 = 38 characters
    assert elapsed == pytest.approx(38 * 0.00125)


def test_async_mute_card_times_out(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    async def scenario() -> None:
        term, _card_end = char_line_pair()
        await t0_transmit(term, bytes.fromhex("00B2010C00"), wwt=1.0)

    t0 = vclock.now()
    with pytest.raises(CardMuteError):
        vrun.run(scenario())
    assert vclock.now() - t0 == pytest.approx(1.0)
