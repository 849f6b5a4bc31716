"""``posemu readers``: what card readers this machine offers.

Three sections: PC/SC readers with their card state (or one line saying why there are none —
pcscd down, pyscard missing), serial ports (candidates for ``serial://``), and the bundled
virtual cards (``sim://<profile>``). Card data is never shown; an ATR is not card data.
"""

from __future__ import annotations

import click

from emulator.commands._exit import exit_epilog
from hardware.cards.profiles import list_profiles, load_profile
from hardware.errors import NoReaderError, ServiceUnavailableError
from protocol.errors import PosemuError


def pcsc_lines() -> list[str]:
    try:
        from hardware.pcsc import list_readers_blocking

        readers = list_readers_blocking()
    except ServiceUnavailableError as e:
        return [f"  (PC/SC unavailable: {e})"]
    except NoReaderError:
        readers = []
    except PosemuError as e:
        return [f"  (PC/SC error: {e})"]
    if not readers:
        return ["  (pcscd is running but lists no reader; plug one in, or install vsmartcard-vpcd for "
                "virtual readers)"]
    lines = []
    for r in readers:
        atr = f"  ATR {r.atr.hex(' ').upper()}" if r.atr else ""
        lines.append(f"  pcsc://{r.index:<3} {r.name!r:<36} {r.state.value}{atr}")
    return lines


def serial_lines() -> list[str]:
    try:
        from serial.tools import list_ports
    except ImportError:
        return ["  (pyserial is not installed)"]
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        return ["  (no serial ports found; an emulated MSR605: `posemu device msr --pty`)"]
    out = []
    for p in ports:
        desc = p.description if p.description and p.description != "n/a" else ""
        hwid = p.hwid if p.hwid and p.hwid != "n/a" else ""
        out.append(f"  serial://{p.device:<24} {desc}  {hwid}".rstrip())
    return out


def sim_lines() -> list[str]:
    out = []
    for name in list_profiles():
        try:
            prof = load_profile(name)
            desc = prof.description
        except PosemuError as e:
            desc = f"(invalid profile: {e})"
        out.append(f"  sim://{name:<22} {desc}")
    return out or ["  (no bundled profiles)"]


@click.command("readers", epilog=exit_epilog("listed (a reader that is missing is listed with the reason)", None))
def command() -> None:
    """List PC/SC readers (with card state), serial ports and the virtual sim:// cards."""
    click.echo("PC/SC readers:")
    for line in pcsc_lines():
        click.echo(line)
    click.echo("Serial ports:")
    for line in serial_lines():
        click.echo(line)
    click.echo("Virtual readers (sim://<card profile>):")
    for line in sim_lines():
        click.echo(line)
