"""A reader that cannot be used says why and what to do — on the screen's detail line, in the trace
and in the diagnosis input (issue 12 item 6): pcscd down (with its PC/SC code), a missing serial
device, permission denied, a malformed ``pcsc://`` URL."""

from __future__ import annotations

import asyncio
import errno
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emulator.app import UnusableReader, open_rig
from emulator.cli import main
from emulator.config import TerminalConfig
from emulator.messages import Msg, render
from emulator.ports import ScriptedPinPad
from emulator.terminal import Outcome
from emulator.trace import Kind
from hardware.clock import VirtualClock
from hardware.links import translate_serial_error
from hardware.pcsc_status import SCARD_E_NO_SERVICE, explain, pcsc_error


class PcscdDown(UnusableReader):
    """A PC/SC reader whose service is down: the very error :mod:`hardware.pcsc` raises then
    (``SCardEstablishContext`` → ``SCARD_E_NO_SERVICE``). A pcscd started for the test run cannot be
    hidden from a process whose pcsc-lite has already found it."""

    def __init__(self) -> None:
        super().__init__("pcsc://0", pcsc_error(SCARD_E_NO_SERVICE, "establish context"))


def inquiry(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
            reader: str) -> tuple[Outcome, list[dict[str, Any]]]:
    cfg = replace(TerminalConfig(), reader=reader)

    async def go() -> tuple[Outcome, list[dict[str, Any]]]:
        rig = await open_rig(cfg, clock=vclock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"),
                             reader=PcscdDown() if reader == "pcsc://0" else None)
        try:
            assert (await rig.terminal.sign_on()).approved
            out = await rig.terminal.balance_inquiry()
            notes = [e.data for e in rig.trace if e.kind is Kind.READER and "remedy" in e.data]
            return out, notes
        finally:
            await rig.close()

    return vrun.run(go())


@pytest.mark.parametrize(("reader", "code", "remedy"), [
    ("pcsc://0?bogus=1", "reader.url_malformed", "fix the reader URL"),
    ("serial:///dev/posemu-no-such-tty", "serial.not_found", "check its driver"),
    ("pcsc://0", "pcsc.0x8010001D", "pcscd"),
])
def test_the_reason_and_remedy_reach_screen_and_trace(vrun: asyncio.Runner, vclock: VirtualClock, tmp_path: Path,
                                                      reader: str, code: str, remedy: str) -> None:
    out, notes = inquiry(vrun, vclock, tmp_path, reader)
    assert not out.approved and out.detail is Msg.NO_READER
    assert out.codes[-1] == "READER_PROBLEM"
    line = out.screens[-1]
    assert line.params["code"] == code and remedy in line.params["remedy"]
    assert code in render(line, "en") and "原因" in render(line, "zh")
    assert code in out.evidence
    assert notes and notes[-1]["code"] == code and remedy in notes[-1]["remedy"]


def test_permission_denied_on_a_serial_device_names_the_dialout_group() -> None:
    err = translate_serial_error(PermissionError(errno.EACCES, "Permission denied"), "/dev/ttyUSB0", "open")
    assert err.code == "serial.permission_denied"       # type: ignore[attr-defined]
    p = explain(err.code, str(err))                       # type: ignore[attr-defined]
    assert "dialout" in p.remedy and "dialout" in p.remedy_zh


def test_every_pcsc_status_posemu_readers_knows_is_explained() -> None:
    from hardware import pcsc_status

    for status, (_, what, hint) in pcsc_status._TABLE.items():
        p = explain(f"pcsc.0x{status:08X}")
        assert (p.reason, p.remedy) == (what, hint) and p.reason_zh and p.remedy_zh


def test_a_malformed_reader_url_is_a_usage_error_with_the_reason_on_screen(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--state", str(tmp_path), "--lang", "en",
                                    "--reader", "pcsc://0?bogus=1"])
    assert res.exit_code == 2, res.output
    assert "[READER_PROBLEM] Reason: reader URL 'pcsc://0?bogus=1': unknown parameter(s) bogus " \
           "(reader.url_malformed)  Remedy: fix the reader URL" in res.output
