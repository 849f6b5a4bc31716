"""Tests against a real, attached card reader (marker ``hardware``).

Skipped — with the reason — unless ``POSEMU_HARDWARE_READER`` names the reader::

    POSEMU_HARDWARE_READER='pcsc://0' .venv/bin/pytest -m hardware -s tests/test_hardware_physical.py
    POSEMU_HARDWARE_READER='serial:///dev/ttyUSB0?baud=9600' POSEMU_HARDWARE_SWIPE=1 \\
        .venv/bin/pytest -m hardware -s tests/test_hardware_physical.py

A ``pcsc://`` run talks to the *system* pcscd (no private test daemon) and asks you to insert a
chip card — any EMV card, or a test card; card data is never printed. ``POSEMU_HARDWARE_TIMEOUT``
(seconds, default 30) bounds every wait for you. See docs/readers.md.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from hardware.clock import RealClock
from hardware.msr605 import Command, FirmwareReply, ModelReply, SerialMsrReader
from hardware.pcsc import PcscReader, list_readers
from hardware.ports import CardReader, ReaderEventKind, TrackStatus
from hardware.registry import open_reader
from protocol.masking import mask_pan

URL = os.environ.get("POSEMU_HARDWARE_READER", "")
TIMEOUT = float(os.environ.get("POSEMU_HARDWARE_TIMEOUT", "30"))
SELECT_PSE = bytes.fromhex("00A404000E315041592E5359532E444446303100")
SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(
        not URL,
        reason="no physical reader: set POSEMU_HARDWARE_READER=pcsc://<index or name> or "
               "serial:///dev/ttyUSB0 to run these (docs/readers.md)",
    ),
]


def prompt(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n>>> {text}", flush=True)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def reader(runner: asyncio.Runner) -> Iterator[CardReader]:
    r = open_reader(URL, clock=RealClock())
    yield r
    runner.run(r.close())


def _need(kind: type[object], reader: CardReader) -> None:
    if not isinstance(reader, kind):
        pytest.skip(f"{URL} is not a {kind.__name__} reader")


def test_pcsc_reader_is_listed(runner: asyncio.Runner, reader: CardReader) -> None:
    _need(PcscReader, reader)
    assert isinstance(reader, PcscReader)
    runner.run(reader.open())
    names = [r.name for r in runner.run(list_readers(RealClock()))]
    assert reader.reader_name in names


def test_pcsc_card_insert_atr_apdus_remove(
    runner: asyncio.Runner, reader: CardReader, capsys: pytest.CaptureFixture[str]
) -> None:
    _need(PcscReader, reader)
    assert isinstance(reader, PcscReader)

    async def main() -> None:
        if not await reader.card_present():
            prompt(capsys, f"insert a chip card into {reader.name} (within {TIMEOUT:g} s)")
        ev = await reader.next_event(TIMEOUT)
        assert ev is not None and ev.kind is ReaderEventKind.CARD_INSERTED, "no card was inserted"
        atr = await reader.power_on()
        assert atr[0] in (0x3B, 0x3F), f"ATR starts with {atr[0]:02X}, not TS 3B/3F"
        assert reader.protocol in ("T=0", "T=1")
        for apdu in (SELECT_PSE, SELECT_PPSE):
            resp = await reader.transmit(apdu)
            assert len(resp) >= 2
            assert resp[-2] not in (0x61, 0x6C), "61xx/6Cxx must be handled below the port"
        await reader.power_off()
        assert await reader.power_on() == atr                        # a cold reset gives the same ATR
        await reader.power_off()
        prompt(capsys, f"remove the card from {reader.name} (within {TIMEOUT:g} s)")
        ev = await reader.next_event(TIMEOUT)
        assert ev is not None and ev.kind is ReaderEventKind.CARD_REMOVED, "the card was not removed"

    runner.run(main())


def test_serial_reader_answers(runner: asyncio.Runner, reader: CardReader) -> None:
    _need(SerialMsrReader, reader)
    assert isinstance(reader, SerialMsrReader)

    async def main() -> None:
        await reader.open()                                         # reset, comm test → ESC y, reset
        assert isinstance(await reader.query(Command.FIRMWARE), FirmwareReply)
        assert isinstance(await reader.query(Command.MODEL), ModelReply)

    runner.run(main())


@pytest.mark.skipif(not os.environ.get("POSEMU_HARDWARE_SWIPE"), reason="set POSEMU_HARDWARE_SWIPE=1 to swipe")
def test_serial_reader_swipe(runner: asyncio.Runner, reader: CardReader, capsys: pytest.CaptureFixture[str]) -> None:
    _need(SerialMsrReader, reader)
    prompt(capsys, f"swipe a magstripe card through {reader.name} (within {TIMEOUT:g} s)")
    ev = runner.run(reader.next_event(TIMEOUT))
    assert ev is not None and ev.kind is ReaderEventKind.CARD_SWIPED and ev.swipe is not None
    t2 = ev.swipe.track(2)
    assert t2 is not None and t2.status is TrackStatus.OK, t2
    pan = t2.data.split("=", 1)[0]
    prompt(capsys, f"track 2 read OK, PAN {mask_pan(pan)}")
