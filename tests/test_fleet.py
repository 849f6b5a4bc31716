"""``posemu fleet`` (issue 13 item 1): many terminals, a mix, faults at rates, reconciliation — on the
virtual clock against the bundled host on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main
from emulator.demo import DEMO_TMK
from emulator.host.provision import fleet_card, fleet_pan, fleet_tid, fleet_tids, fleet_tmk
from faults.fleet import Fleet, FleetOptions, FleetReport, parse_fault_rates, parse_mix
from hardware.cards.profiles import load_profile, luhn_ok
from hardware.clock import VirtualClock
from protocol.errors import UsageError


def run_fleet(opts: FleetOptions) -> tuple[Fleet, FleetReport]:
    clock = VirtualClock()
    fleet = Fleet(opts, clock=clock)
    with asyncio.Runner(loop_factory=clock.new_event_loop) as runner:
        report = runner.run(fleet.run())
    return fleet, report


def test_fleet_identities_are_distinct_and_valid() -> None:
    tids = fleet_tids(300)
    assert tids[0] == "FLT00001" and len(set(tids)) == 300 and all(len(t) == 8 for t in tids)
    keys = {fleet_tmk(t) for t in tids}
    assert len(keys) == 300 and DEMO_TMK not in keys
    assert fleet_tmk("FLT00001", DEMO_TMK) != fleet_tmk("FLT00001", bytes(16))   # derived from the base key
    pans = {fleet_pan(i) for i in range(1, 301)}
    assert len(pans) == 300 and all(luhn_ok(p) and p.startswith("990009") for p in pans)
    base = load_profile("cup_debit")
    card = fleet_card(base, 7)
    assert card.pan == fleet_pan(7) and card.pin == base.pin and card.emv == base.emv
    with pytest.raises(UsageError):
        fleet_tid(1, "TOOLONG")
    with pytest.raises(UsageError):
        fleet_tid(100_000)


def test_mix_parsing() -> None:
    assert parse_mix("balance=70,purchase=30") == {"balance": 70.0, "purchase": 30.0}
    assert parse_mix("balance=70,purchase=25,void=5") == {"balance": 70.0, "purchase": 25.0, "void": 5.0}
    for bad in ("teleport=5", "balance=x", "balance=0", "", "balance=1,balance=2", "balance=-1"):
        with pytest.raises(UsageError):
            parse_mix(bad)
    with pytest.raises(UsageError, match="available: balance, purchase, refund, void"):
        parse_mix("balance=70,teleport=5")


def test_fault_rates_parsing() -> None:
    rates = parse_fault_rates(["reader.dirty-contacts=2%,network.weak-wifi:loss=0.5,latency=0.1=1.5%"])
    assert [(r.spec.id, r.rate) for r in rates] == [("reader.dirty-contacts", 0.02), ("network.weak-wifi", 0.015)]
    assert rates[1].spec.values["loss"] == 0.5
    for bad in ("reader.dirty-contacts=2", "reader.dirty-contacts=0%", "reader.dirty-contacts=120%",
                "nope.fault=1%", "host.peak-hours=2%", "network.half-open=1%", "reader.dirty-contacts:ohms=3=1%"):
        with pytest.raises(UsageError):
            parse_fault_rates([bad])


def test_fleet_runs_its_mix_with_its_own_terminals_and_reconciles() -> None:
    _, rep = run_fleet(FleetOptions(terminals=8, duration=120, think=1.0, mix={"balance": 3, "purchase": 1},
                                        seed=3))
    st = rep.stats
    assert st.errors == 0 and st.done == st.started > 100
    assert st.sign_ons == 8 and st.approved == st.done
    share = st.kinds["purchase"] / st.done           # 25% purchases, within sampling noise
    assert 0.15 < share < 0.35, st.kinds
    # every terminal signed on with its own keys and transacted under its own id and card
    host_tids = Counter(r.tid for r in st.txns)
    assert set(host_tids) == set(fleet_tids(8))
    assert st.rcs["00"] == st.done + 8
    names = {e.name for e in st.exchanges}
    assert {"0800", "0200/310000", "0200/000000"} <= names
    rec = rep.reconciliation
    assert rec.ok and rec.checked_host and rec.lost == 0 and rec.pending == 0
    assert rec.terminal_rows == rec.host_rows == st.done
    assert rec.charged_terminal == rec.charged_host_log == rec.balance_moved > 0
    assert rep.percentiles()["p50"] >= 0


def test_voids_and_refunds_in_the_mix_move_the_money_back_and_reconcile() -> None:
    """The issue's mix: voids void the terminal's latest sale, refunds give part of one back; the money
    the journals say moved is what the host's log and the balances say, through faults."""
    faults = parse_fault_rates(["network.weak-wifi=10%"])
    _, rep = run_fleet(FleetOptions(terminals=6, duration=120, think=1.0, seed=4, faults=faults,
                                    mix={"balance": 40, "purchase": 30, "void": 15, "refund": 15}))
    st = rep.stats
    assert st.errors == 0
    names = Counter(e.name for e in st.exchanges)
    assert names["0200/200000"] > 5 and names["0220/200000"] > 5      # voids and refunds reached the host
    rec = rep.reconciliation
    assert rec.ok and rec.pending == 0 and rec.lost == 0, rec.problems
    assert rec.charged_terminal == rec.charged_host_log == rec.balance_moved > 0
    # (the journals count a void or refund as money given back: were they left out, the journals
    # would say more was charged than the host's balances moved)
    approved = Counter(r.kind for r in st.txns if r.approved)
    assert approved["void"] > 5 and approved["refund"] > 5, approved


def test_open_loop_rate() -> None:
    _, rep = run_fleet(FleetOptions(terminals=4, duration=60, rate=2.0, mix={"balance": 1}, seed=5))
    assert rep.stats.errors == 0 and rep.reconciliation.ok
    assert 80 <= rep.stats.done <= 160          # Poisson, 2/s for 60 s
    assert rep.stats.queued > 0                 # 4 terminals, 2 arrivals/s, each transaction takes seconds


def test_faults_at_rates_are_injected_diagnosed_and_reconciled() -> None:
    faults = parse_fault_rates(["network.weak-wifi=30%,reader.dirty-contacts=30%"])
    _, rep = run_fleet(FleetOptions(terminals=6, duration=90, think=1.0, faults=faults, seed=11,
                                    mix={"balance": 1, "purchase": 1}))
    st = rep.stats
    assert st.errors == 0
    wifi, dirt = st.faults["network.weak-wifi"], st.faults["reader.dirty-contacts"]
    for tally in (wifi, dirt):
        assert 0.15 * st.done < tally.injected < 0.45 * st.done
    assert wifi.failed > 0 and wifi.diagnosed >= wifi.failed * 0.8
    assert dirt.failed > 0 and dirt.diagnosed >= dirt.failed * 0.8
    assert st.screens["READER_ERROR"] > 0 and st.screens["LINK_LOST"] + st.screens["TIMEOUT"] > 0
    assert st.reversals_sent >= st.reversals_acked > 0        # unknown purchases reversed…
    rec = rep.reconciliation
    assert rec.ok and rec.pending == 0, rec.problems          # …and acknowledged: nobody charged twice or wrongly
    assert rec.charged_terminal == rec.charged_host_log == rec.balance_moved


def test_cli_writes_json_and_html(tmp_path: Path) -> None:
    js, page = tmp_path / "fleet.json", tmp_path / "fleet.html"
    r = CliRunner().invoke(main, ["fleet", "-n", "3", "--duration", "20", "--think", "2", "--virtual-time",
                                  "--faults", "reader.dirty-contacts=10%", "--json", str(js), "--html", str(page)])
    assert r.exit_code == 0, r.output
    assert "reconciled" in r.output and "0800" in r.output
    doc = json.loads(js.read_text())
    assert doc["reconciliation"]["ok"] and doc["options"]["terminals"] == 3
    assert doc["transactions"]["done"] > 0 and "p99" in doc["latency_ms"]
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "Host round trip over time" in text and "histogram" in text
    assert "plotly" in text.lower()


@pytest.mark.parametrize("args", [["--mix", "balance=1,teleport=1"], ["--faults", "reader.dirty-contacts=2"],
                                  ["--faults", "host.peak-hours=2%"], ["--card", "nope"], ["--prefix", "TOOLONG"],
                                  ["--host", "nohostport"]])
def test_cli_usage_errors(args: list[str]) -> None:
    r = CliRunner().invoke(main, ["fleet", "--virtual-time", "--duration", "1", *args])
    assert r.exit_code == 2, r.output


def test_load_client_open_loop_rate() -> None:
    """The load client's open-loop mode (bench_host's "p99 at half of peak"): every request sent on its
    schedule and answered, paired by STAN."""
    from emulator.demo import DEMO_MID, LOAD_TIDS
    from emulator.host.loadgen import run_load
    from emulator.host.logic import seed_demo
    from emulator.host.server import HostServer
    from hardware.clock import RealClock
    from protocol.specs import ISO87ASCII

    card = load_profile("load")

    async def main() -> None:
        host = await HostServer.start(ISO87ASCII, clock=RealClock(), seed=False)
        seed_demo(host.store, profiles=["load"])
        try:
            res = await run_load("127.0.0.1", host.port, ISO87ASCII, tids=LOAD_TIDS[:4], mid=DEMO_MID, pan=card.pan,
                                 expiry=card.expiry, total=300, concurrency=4, rate=3000.0)
        finally:
            await host.close()
        assert res.errors == 0 and res.sent == res.received == 300 and res.codes == {"00": 300}
        assert host.stats.requests == 300

    asyncio.run(main())


def test_reconcile_takes_its_inputs_explicitly_and_names_what_disagrees() -> None:
    """:func:`faults.fleet.reconcile` checks journals without a running fleet (no host: rows only)."""
    from emulator.journal import Journal, Status
    from faults.fleet import reconcile

    clock = VirtualClock()
    a, b = Journal(":memory:", clock=clock), Journal(":memory:", clock=clock)
    try:
        a.complete(a.begin(kind="balance", stan="000001", date="1204"), Status.APPROVED, rc="00")
        a.begin(kind="purchase", stan="000002", date="1204", amount=500)            # never completed
        b.complete(b.begin(kind="purchase", stan="000001", date="1204", amount=500), Status.APPROVED, rc="00")
        assert reconcile([("T1", b)], None, [], {}).ok
        b.complete(b.begin(kind="purchase", stan="000001", date="1204", amount=700), Status.DECLINED, rc="51")
        rec = reconcile([("T1", a), ("T2", b)], None, [], {})
        assert not rec.checked_host and rec.terminal_rows == 4
        assert (rec.pending, rec.duplicated_terminal, rec.lost) == (1, 1, 0) and not rec.ok
        assert rec.problems == ["T1 STAN 000002: still pending (pending/none)", "T2 STAN 000001: twice in its journal"]
    finally:
        a.close()
        b.close()
