"""Bounded resources from cards (issue 8 item 4): no card answer makes the EMV kernel allocate
or work without bound, and it raises only our errors.

Limits under test: a DOL entry asks for at most 252 bytes and a DOL's data fits one short
command (``protocol.tlv.MAX_DOL_ENTRY``, ``PDOL_DATA_MAX``, ``SHORT_LC_MAX``); one command's
response is at most 256 bytes (``MAX_RESPONSE_DATA``); a card session takes at most
``MAX_COMMANDS`` commands and an offline PIN check at most ``MAX_VERIFY`` VERIFYs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.emv import ChipReadError, EmvError, EmvKernel, Transaction
from hardware.atr import build_atr
from hardware.clock import VirtualClock
from hardware.errors import CardAbsentError
from hardware.sim import SimReader
from protocol import tlv
from protocol.errors import DecodeError
from protocol.tlv import Tlv

UN = bytes.fromhex("A1B2C3D4")
AID = bytes.fromhex("A000000333010101")
ATR = build_atr(protocols=(0,), historical=b"").encode()
MEMORY_BOUND = 2 * 1024 * 1024
"""Peak bytes the kernel may allocate for one card session, whatever the card answers."""

OK = b"\x90\x00"


def dol(entries: list[tuple[int, int]]) -> bytes:
    return tlv.encode_dol(entries)


def fci(aid: bytes, pdol: bytes | None) -> bytes:
    prop = [Tlv(0x50, b"TEST")]
    if pdol is not None:
        prop.append(Tlv(0x9F38, pdol))
    return Tlv(0x6F, children=(Tlv(0x84, aid), Tlv(0xA5, children=tuple(prop)))).encode()


def record(cdol1: bytes, cdol2: bytes | None = None, cvm: bytes | None = None) -> bytes:
    kids = [Tlv(0x5A, bytes.fromhex("9900010000000019")), Tlv(0x5F24, bytes.fromhex("301231")),
            Tlv(0x8C, cdol1)]
    if cdol2 is not None:
        kids.append(Tlv(0x8D, cdol2))
    if cvm is not None:
        kids.append(Tlv(0x8E, cvm))
    return Tlv(0x70, children=tuple(kids)).encode()


GPO_OK = Tlv(0x77, children=(Tlv(0x82, b"\x18\x00"), Tlv(0x94, bytes.fromhex("08010100")))).encode()
AC_OK = Tlv(0x80, bytes.fromhex("80" "0001" "1122334455667788")).encode()


class ScriptedCard:
    """A virtual card answering by INS from ``answer(apdu)``; no state, no checks."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.commands = 0

    @property
    def atr(self) -> bytes:
        return ATR

    @property
    def stripe(self) -> tuple[str | None, str | None, str | None]:
        return (None, None, None)

    def reset(self) -> None:
        pass

    def execute(self, apdu: bytes) -> bytes:
        self.commands += 1
        return self.answer(apdu)


def well_behaved(*, pdol: bytes | None = None, cdol1: bytes = dol([(0x9F02, 6), (0x9F37, 4)]),
                 verify: bytes = OK, cvm: bytes | None = None) -> Callable[[bytes], bytes]:
    def answer(apdu: bytes) -> bytes:
        ins = apdu[1]
        if ins == 0xA4:
            if apdu[5:5 + apdu[4]] == b"1PAY.SYS.DDF01":
                return b"\x6A\x82"
            return fci(AID, pdol) + OK
        if ins == 0xA8:
            return GPO_OK + OK
        if ins == 0xB2:
            return record(cdol1, cvm=cvm) + OK
        if ins == 0xAE:
            return AC_OK + OK
        if ins == 0x20:
            return verify
        return b"\x6A\x88"
    return answer


def run_kernel(card: ScriptedCard, pins: Callable[[int | None], str | None] = lambda _t: "1234"
               ) -> tuple[object, int]:
    """Read the card; return (the result or the exception, peak bytes allocated meanwhile)."""
    clock = VirtualClock(dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    reader = SimReader(clock, timing=False)
    reader.insert(card)
    kernel = EmvKernel(reader, clock, unpredictable=lambda: UN)

    async def pin_entry(tries: int | None) -> str | None:
        return pins(tries)

    outcome: object
    tracemalloc.start()
    try:
        with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
            try:
                outcome = runner.run(kernel.read(Transaction(100), pin_entry))
            except (EmvError, CardAbsentError) as e:
                outcome = e
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return outcome, peak


# --- the reported cases -------------------------------------------------------------------------
@pytest.mark.parametrize("length", [253, 1 << 26, 1 << 30, 0xFFFFFFFF])
def test_a_huge_pdol_entry_is_a_chip_read_error_not_an_allocation(length: int) -> None:
    card = ScriptedCard(well_behaved(pdol=dol([(0x9F37, length)])))
    outcome, peak = run_kernel(card)
    assert isinstance(outcome, ChipReadError)
    assert "PDOL" in str(outcome) and str(length) in str(outcome)
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("length", [253, 1 << 26, 0xFFFFFFFF])
def test_a_huge_cdol_entry_is_a_chip_read_error_not_an_allocation(length: int) -> None:
    card = ScriptedCard(well_behaved(cdol1=dol([(0x9F02, 6), (0x9F37, length)])))
    outcome, peak = run_kernel(card)
    assert isinstance(outcome, ChipReadError)
    assert "CDOL" in str(outcome)
    assert peak < MEMORY_BOUND


def test_dol_totals_are_capped_by_one_short_command() -> None:
    # each entry is allowed, together they ask for more than the command carries
    pdol = dol([(0x9F37, 200), (0x9F02, 53)])            # 253 > 252 (83 81 FC + data = 255)
    outcome, _ = run_kernel(ScriptedCard(well_behaved(pdol=pdol)))
    assert isinstance(outcome, ChipReadError) and "253 bytes" in str(outcome)
    cdol = dol([(0x9F37, 252), (0x9F02, 4)])             # 256 > 255 = short Lc
    outcome, _ = run_kernel(ScriptedCard(well_behaved(cdol1=cdol)))
    assert isinstance(outcome, ChipReadError) and "256 bytes" in str(outcome)
    # exactly at the limits the read goes through
    outcome, _ = run_kernel(ScriptedCard(well_behaved(pdol=dol([(0x9F37, 200), (0x9F02, 52)]))))
    assert not isinstance(outcome, Exception), outcome
    outcome, _ = run_kernel(ScriptedCard(well_behaved(cdol1=dol([(0x9F37, 252), (0x9F02, 3)]))))
    assert not isinstance(outcome, Exception), outcome


def test_tlv_dol_limits() -> None:
    assert tlv.MAX_DOL_ENTRY == tlv.PDOL_DATA_MAX == 252 and tlv.SHORT_LC_MAX == 255
    assert tlv.decode_dol(dol([(0x9F37, 252)])) == ((0x9F37, 252),)
    with pytest.raises(DecodeError, match="more than 252"):
        tlv.decode_dol(dol([(0x9F37, 253)]))
    with pytest.raises(DecodeError, match="more than 252"):
        tlv.build_dol_data([(0x9F37, 1 << 32)], {})
    with pytest.raises(DecodeError, match="more than the 252"):
        tlv.build_dol_data(dol([(0x9F37, 252), (0x9A, 3)]), {}, max_total=tlv.PDOL_DATA_MAX)
    assert len(tlv.build_dol_data(dol([(0x9F37, 252), (0x9A, 3)]), {})) == 255
    # a value claiming 4 GiB is a decode error at once (the length is checked against the input)
    with pytest.raises(DecodeError, match="runs past the end"):
        tlv.decode(bytes.fromhex("5A84FFFFFFFF00"))


def test_a_response_longer_than_a_short_le_allows_is_refused() -> None:
    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xB2:
            return Tlv(0x70, children=(Tlv(0x9F4D, bytes(300)),)).encode() + OK
        return well_behaved()(apdu)
    outcome, _ = run_kernel(ScriptedCard(answer))
    assert isinstance(outcome, ChipReadError) and "more than 256 bytes" in str(outcome)


def test_a_card_that_never_stops_asking_for_get_response_is_bounded() -> None:
    card = ScriptedCard(lambda apdu: b"\x61\x00" if apdu[1] == 0xC0 else b"\x61\x10")
    outcome, _ = run_kernel(card)
    assert isinstance(outcome, ChipReadError)
    assert card.commands <= 2 * 16


def test_a_card_whose_directory_never_ends_is_bounded() -> None:
    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA4 and apdu[5:5 + apdu[4]] == b"1PAY.SYS.DDF01":
            return Tlv(0x6F, children=(Tlv(0x84, b"1PAY.SYS.DDF01"),
                                       Tlv(0xA5, children=(Tlv(0x88, b"\x01"),)))).encode() + OK
        if apdu[1] == 0xB2:
            return Tlv(0x70, children=(Tlv(0x61, children=(Tlv(0x4F, AID),)),)).encode() + OK
        if apdu[1] == 0xA8:
            return b"\x69\x85"               # every candidate refused: selection goes round again
        return well_behaved()(apdu)
    card = ScriptedCard(answer)
    outcome, _ = run_kernel(card)
    assert isinstance(outcome, EmvError)
    from emulator.emv import MAX_COMMANDS
    assert card.commands <= MAX_COMMANDS


def test_a_pin_try_counter_that_never_counts_down_is_bounded() -> None:
    cvm = bytes(8) + bytes.fromhex("0100")       # offline plaintext PIN, always

    def answer(apdu: bytes) -> bytes:
        if apdu[1] == 0xA8:   # AIP with cardholder verification supported
            return Tlv(0x77, children=(Tlv(0x82, b"\x18\x00"), Tlv(0x94, bytes.fromhex("08010100")))).encode() + OK
        return well_behaved(verify=b"\x63\xC3", cvm=cvm)(apdu)
    card = ScriptedCard(answer)
    asked: list[int | None] = []
    outcome, _ = run_kernel(card, lambda t: asked.append(t) or "1234")   # type: ignore[func-returns-value]
    assert isinstance(outcome, ChipReadError) and "does not count down" in str(outcome)
    from emulator.emv import MAX_VERIFY
    assert len(asked) == MAX_VERIFY


# --- the property -------------------------------------------------------------------------------
LENGTHS = st.one_of(st.integers(0, 40), st.integers(0, 0xFFFFFFFF),
                    st.sampled_from([252, 253, 255, 256, 1 << 24, 1 << 30, 0xFFFFFFFF]))
TAGS = st.sampled_from([0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x9F35, 0x8A, 0x9F45, 0xDF01])
DOLS = st.lists(st.tuples(TAGS, LENGTHS), max_size=6).map(dol)
GARBAGE = st.binary(max_size=300)


def hostile_answers(data: st.DataObject) -> Callable[[bytes], bytes]:
    """Every answer drawn when asked: EMV-shaped with hostile DOLs and lengths, or bytes."""
    def sw() -> bytes:
        return data.draw(st.sampled_from([OK, b"\x6A\x82", b"\x69\x85", b"\x61\x00", b"\x61\x20",
                                           b"\x6C\x10", b"\x63\xC2", b"\x69\x83", b"\x6A\x83"]))

    def answer(apdu: bytes) -> bytes:
        ins = apdu[1]
        choice = data.draw(st.integers(0, 19))
        if choice == 0:
            return data.draw(GARBAGE)
        if choice == 1:
            return sw()
        if ins == 0xA4:
            name = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
            if name == b"1PAY.SYS.DDF01" and data.draw(st.booleans()):
                return fci(name, None)[:-2] + OK if data.draw(st.booleans()) else b"\x6A\x82"
            return fci(name or AID, data.draw(st.none() | DOLS)) + OK
        if ins == 0xA8:
            afl = data.draw(st.lists(st.tuples(st.integers(1, 10), st.integers(1, 3), st.integers(0, 2)),
                                     min_size=1, max_size=3))
            raw = b"".join(bytes((sfi << 3, first, first + more, 0)) for sfi, first, more in afl)
            return Tlv(0x77, children=(Tlv(0x82, data.draw(st.binary(min_size=2, max_size=2))),
                                       Tlv(0x94, raw))).encode() + OK
        if ins == 0xB2:
            return record(data.draw(DOLS), data.draw(st.none() | DOLS),
                          data.draw(st.none() | st.binary(max_size=20))) + sw()
        if ins == 0xAE:
            return data.draw(st.sampled_from([AC_OK, AC_OK[:-3]])) + sw()
        return data.draw(GARBAGE)
    return answer


@pytest.mark.slow
@settings(max_examples=80, deadline=dt.timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_card_answer_makes_the_kernel_allocate_or_work_without_bound(data: st.DataObject) -> None:
    card = ScriptedCard(hostile_answers(data))
    outcome, peak = run_kernel(card)
    # only our errors come out (anything else escapes run_kernel and fails the test) …
    assert not isinstance(outcome, BaseException) or isinstance(outcome, EmvError | CardAbsentError)
    # … after a bounded amount of work and memory
    from emulator.emv import MAX_COMMANDS
    assert card.commands <= MAX_COMMANDS
    assert peak < MEMORY_BOUND, f"peak {peak} bytes"
