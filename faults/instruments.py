"""The technician's self-test: the articles' detection methods, done with the instruments a
technician carries, through the same ports and physics the faults act on.

* a **multimeter** on the contacts (Ω), before and after cleaning them; a **voltmeter** on the
  supply, and a logging voltmeter's minimum during the transaction (the reader wrapper's contact
  model: :mod:`faults.reader`);
* a **thermometer** and a **field meter** in the room (:class:`faults.environment.Environment`);
* a look at the card in the slot, the latch, and the card-seat switch with the slot empty;
* a known-good **test card** in the same reader;
* the reader's driver counters, and whether the reader (and its PC/SC service) answers at all;
* **DNS lookup**, **ping** over the link, a TCP connect and an ISO 8583 **echo test** (0800/301)
  to the configured host;
* the sign-on **key check value** of the terminal master key against the acquirer's key sheet,
  the terminal's parameters against the acquirer's parameter sheet, its clock against a
  reference, and its free storage.

Nothing here reads a fault's parameters: every reading goes through a port or a physical model
the fault changed. A reading that cannot be taken here (a real PC/SC reader has no multimeter
lead, an external host has no key sheet) is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

from emulator.app import Rig
from faults.injectors import Points
from faults.reader import find_faulty
from hardware.sim import SimReader, card_for_profile
from protocol import keys as keymod
from protocol.errors import PosemuError
from protocol.session import check_mac
from protocol.txn import NetCode, network_request

Readings = dict[str, Any]
ECHO_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Sheet:
    """What the acquirer says the terminal should be: its parameter sheet and key sheet."""

    host: str | None = None               # "host:port" the terminal should use
    profile: str | None = None
    min_version: int | None = None
    tmk_kcv: bytes | None = None
    entry_modes: tuple[str, ...] = ("swipe", "chip")


def _find_sim(reader: object) -> SimReader | None:
    r: object = reader
    for _ in range(16):
        if isinstance(r, SimReader):
            return r
        r = getattr(r, "inner", None)
        if r is None:
            return None
    return None


async def self_test(rig: Rig, points: Points | None = None, sheet: Sheet | None = None, *,
                    seed: int = 0) -> Readings:
    """Take every reading this setup allows (see the module docstring)."""
    sheet = sheet or Sheet()
    rng = random.Random(seed ^ 0x5E1F7E57)
    m: Readings = {}
    reader = rig.reader
    faulty = find_faulty(reader)
    sim = _find_sim(reader)
    # --- the reader and the card slot ---------------------------------------------------------
    try:
        present = await reader.card_present()
        m["reader.responds"] = True
    except PosemuError as e:
        present = False
        m["reader.responds"] = False
        m["reader.error"] = e.code
    m["slot.card_in"] = sim.card is not None if sim is not None else None
    m["slot.reader_says_present"] = present
    if faulty is not None:
        m["inspection.seating"] = faulty.inspect_card()
        m["latch.releases"] = faulty.latch_releases()
        for k, v in faulty.counters().items():
            m[f"reader.counter.{k}"] = v
        m["voltmeter.min_card_v"] = faulty.logged_min_card_v()
        m["multimeter.contact_ohms"] = faulty.measure_contacts()
        m["voltmeter.supply_v"] = faulty.measure_supply()
        faulty.clean()
        m["multimeter.after_cleaning_ohms"] = faulty.measure_contacts()
    if faulty is not None and points is not None:
        m["thermometer.c"] = points.environment.thermometer(rng)
        m["fieldmeter.v"] = points.environment.field_meter(rng)
    if sim is not None and m["reader.responds"]:
        # the slot with the card taken out: does the reader still say a card is in?
        card = sim.card
        if card is not None:
            sim.remove()
        with contextlib.suppress(PosemuError):
            m["seat.empty_reads_present"] = await reader.card_present()
        m["testcard.ok"] = await _test_card(reader, sim)
        if card is not None and sim.card is None and m.get("latch.releases") is False:
            sim.insert(card)                  # a stuck latch holds the customer's card
    if sim is not None and sim.default_card is not None and sim.default_card.stripe[1]:
        # the technician swipes the customer's card slowly and level through the same head
        from hardware.magstripe import SwipeParams
        from hardware.sim import physical_swipe

        noise = points.environment.field_v if points is not None else 0.0
        got = physical_swipe(sim.default_card, SwipeParams(speed_ips=10.0, noise=noise, seed=seed + 1))
        t2 = got.track(2)
        m["swipe.careful_ok"] = t2 is not None and t2.ok
    # --- network, host, parameters --------------------------------------------------------------
    link = rig.terminal.link
    t0 = rig.clock.now()
    try:
        async with asyncio.timeout(15):
            await link.resolver(link.host, link.port)
        m["dns.ok"] = True
    except (PosemuError, TimeoutError) as e:
        m["dns.ok"] = False
        m["dns.error"] = getattr(e, "code", "dns.timeout")
    m["dns.seconds"] = round(rig.clock.now() - t0, 3)
    if points is not None and points.link is not None:
        replies, rtt = await points.link.ping()
        m["ping.replies"] = replies
        m["ping.rtt_s"] = None if rtt is None else round(rtt, 3)
    await _echo(rig, m)
    cfg = rig.terminal.cfg
    if sheet.host is not None:
        m["config.host_matches"] = f"{link.host}:{link.port}" == sheet.host or cfg.host == sheet.host
    if sheet.profile is not None:
        m["config.profile_matches"] = cfg.profile == sheet.profile
    if sheet.min_version is not None:
        m["config.version_ok"] = cfg.software_version >= sheet.min_version
    m["config.entry_disabled"] = sorted(set(cfg.disabled_entry) & set(sheet.entry_modes))
    if sheet.tmk_kcv is not None:
        m["keys.kcv_match"] = keymod.kcv(cfg.tmk) == sheet.tmk_kcv
    clock = getattr(rig.clock, "reference", None)
    if callable(clock):
        m["clock.skew_s"] = round((rig.clock.wall() - clock()).total_seconds(), 1)
    m["storage.free_pages"] = _free_pages(rig)
    m["terminal.locked"] = rig.terminal.locked
    m["terminal.signed_on"] = rig.terminal.signed_on
    return m


async def _test_card(reader: Any, sim: SimReader) -> bool | None:
    """A known-good test card in the same reader: answer to reset and SELECT of the PSE."""
    from hardware.cards.profiles import load_profile

    if sim.card is not None:
        return None
    test = card_for_profile(load_profile("cup_debit"))
    sim.insert(test)
    try:
        with contextlib.suppress(PosemuError, TimeoutError):
            async with asyncio.timeout(10):
                await reader.power_on()
                resp = await reader.transmit(bytes.fromhex("00A404000E315041592E5359532E444446303100"))
                return len(resp) >= 2 and resp[-2:] == b"\x90\x00"
        return False
    finally:
        sim.remove()


async def _echo(rig: Rig, m: Readings, count: int = 3) -> None:
    """Echo tests (network management 301) over the terminal's own link, MACed when it has keys: the
    first one's result and time, and how many of ``count`` failed (no answer, a bad MAC, not 00)."""
    term = rig.terminal
    link = term.link
    failures = 0
    for i in range(count):
        keys = term.keys
        t0 = rig.clock.now()
        ok, rc, error, mac_ok = False, None, None, None
        try:
            req = network_request(term.profile, term.ids, NetCode.ECHO, stan=f"{term.journal.next_counter('stan'):06d}")
            async with asyncio.timeout(ECHO_TIMEOUT_S):
                ex = await link.exchange(req, mak=keys.mak if keys is not None and term.cfg.mac_required else None)
        except TimeoutError:
            error = "tcp.response_timeout"
            await link.close()
        except PosemuError as e:
            error = e.code
        else:
            got = ex.response.get(39)
            ok, rc = True, got if isinstance(got, str) else None
            if keys is not None and term.cfg.mac_required:
                mac_ok = check_mac(ex.response, ex.raw, term.profile, keys.mak).ok
        if not ok or rc != "00" or mac_ok is False:
            failures += 1
        if i == 0:
            m["echo.ok"] = ok
            if rc is not None:
                m["echo.rc"] = rc
            if error is not None:
                m["echo.error"] = error
            if mac_ok is not None:
                m["echo.mac_ok"] = mac_ok
            m["echo.seconds"] = round(rig.clock.now() - t0, 3)
    m["echo.count"] = count
    m["echo.failures"] = failures


def _free_pages(rig: Rig) -> int | None:
    try:
        db = rig.journal.db
        limit = int(db.execute("PRAGMA max_page_count").fetchone()[0])
        used = int(db.execute("PRAGMA page_count").fetchone()[0])
    except Exception:  # a closed or broken journal: no reading
        return None
    return max(0, limit - used)
