"""``posemu proxy`` between a terminal and a host posemu did not write (tests/plain_iso.py: pyiso8583
and asyncio only), over real loopback sockets on the virtual clock; the control API over HTTP; the
command in its own process with its trace, pcap and ``posemu diagnose``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from emulator.commands.diagnose import command as diagnose_command
from emulator.trace import Kind, read_trace
from faults.control import parse_schedule, run_schedule
from faults.diagnose import diagnose
from faults.wire import MessageProxy, MessageRule, answer_for
from hardware.clock import VirtualClock
from protocol.errors import ConfigError
from protocol.iso import Message
from protocol.pcap import read_records
from protocol.specs import get_profile
from tests.plain_iso import CUP, ISO87, Envelope, PlainHost, PlainTerminal

PAN = "9912345678901234"
PROFILE = {id(ISO87): "iso87ascii", id(CUP): "cup"}


@asynccontextmanager
async def rig(clock: VirtualClock, env: Envelope = ISO87, **kw: Any) -> AsyncIterator[
        tuple[PlainHost, MessageProxy, PlainTerminal]]:
    host = PlainHost(env)
    addr = await host.start()
    proxy = MessageProxy(addr, get_profile(PROFILE[id(env)]), clock=clock, **kw)
    await proxy.start()
    term = PlainTerminal(env, proxy.address)
    await term.connect()
    try:
        yield host, proxy, term
    finally:
        await term.close()
        await proxy.stop()
        await host.close()


def balance(term: PlainTerminal, timeout: float = 30.0) -> Awaitable[dict[str, Any]]:
    return term.exchange("0200", timeout, f2=PAN, f3="310000", f4="000000000000")


def codes(proxy: MessageProxy) -> list[str]:
    return [str(e.data["code"]) for e in proxy.trace if "code" in e.data]


# --- clean: both envelopes --------------------------------------------------------------------------
@pytest.mark.parametrize("env", [ISO87, CUP], ids=["iso87ascii", "cup"])
def test_clean_pass_through_both_envelopes(env: Envelope, vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock, env) as (host, proxy, term):
            sign_on = await term.exchange("0800", f3="990000")
            answer = await balance(term)
            assert sign_on["39"] == "00" and answer["39"] == "00" and answer["54"] == "1001156C000000012345"
            assert host.requests[1]["2"] == PAN and host.requests[1]["3"] == "310000"     # as the terminal sent it
            entries = list(proxy.trace)
            ends = [e.data for e in entries if e.kind is Kind.TXN and e.what == "end"]
            assert [(d["txn"], d["approved"]) for d in ends] == [("sign_on", True), ("balance", True)]
            out = next(e for e in entries if e.kind is Kind.ISO_OUT and e.what == "0200")
            assert out.data["fields"]["2"] == "991234******1234"          # masked 6 + 4
            assert PAN not in "".join(e.to_json() for e in entries)
            assert diagnose(entries).groups == []
            assert vclock.now() < 1.0                                       # nothing waited

    vrun.run(main())


# --- message rules ----------------------------------------------------------------------------------
def test_rule_grammar() -> None:
    r = MessageRule.parse("drop-response:mti=0200+0400,pc=00,f41=TERM0001,nth=2")
    assert r.mti == frozenset({"0200", "0400"}) and r.pc == "00" and r.fields == {41: "TERM0001"}
    assert (r.first, r.count) == (2, 1) and not r.response_side
    assert MessageRule.parse("corrupt:mti=0210").response_side
    assert MessageRule.parse("delay:dir=response,delay=3").response_side
    for bad, why in [("explode", "unknown action"), ("respond:rc=9999", "rc must be"),
                     ("respond:mti=0210", "acts on requests"), ("rewrite:mti=0210", "needs setN"),
                     ("delay:delay=-1", "delay must be"), ("respond:mti=02x0", "4 digits"), ("drop:f1=x", "field 1"),
                     ("drop:nth=0", "nth"), ("drop:colour=red", "unknown key"), ("drop:mti", "not key=value")]:
        with pytest.raises(ConfigError, match=why):
            MessageRule.parse(bad)


def test_answer_on_the_hosts_behalf_swaps_the_tpdu() -> None:
    req = Message("0200", {3: "310000", 11: "000007", 41: "TERM0001", 52: b"\x00" * 8, 64: b"\x01" * 8},
                  bytes.fromhex("6000030000603100311312"))
    ans = answer_for(req, "96", get_profile("cup"))
    assert ans.mti == "0210" and ans.fields == {3: "310000", 11: "000007", 41: "TERM0001", 39: "96"}
    assert ans.header.hex() == "6000000003603100311312"


def test_message_rules_act_on_the_selected_messages(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (host, proxy, term):
            proxy.arm("rule:respond:rc=96,mti=0200", name="busy")
            assert (await balance(term))["39"] == "96" and host.requests == []      # the host never saw it
            proxy.disarm("busy")
            proxy.arm("rule:rewrite:mti=0210,set39=51,unset=54", name="rw")
            got = await balance(term)
            assert got["39"] == "51" and "54" not in got and len(host.requests) == 1
            proxy.disarm("rw")
            proxy.arm("rule:respond:rc=91,pc=31,nth=2", name="second")
            assert [(await balance(term))["39"] for _ in range(3)] == ["00", "91", "00"]
            proxy.disarm("second")
            proxy.arm("rule:respond:rc=05,f41=OTHER001")                            # selects nothing here
            assert (await balance(term))["39"] == "00"
            proxy.reset()
            proxy.arm("rule:duplicate:mti=0200")
            before = len(host.requests)
            assert (await balance(term))["39"] == "00"
            assert (await term.receive())["39"] == "00"                            # the duplicate's answer
            assert len(host.requests) == before + 2

    vrun.run(main())


def test_delay_only_reversals(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            proxy.arm("rule:delay:mti=0400,delay=30")
            t0 = vclock.now()
            assert (await balance(term))["39"] == "00"
            assert vclock.now() - t0 < 1.0
            t1 = vclock.now()
            rev = await term.exchange("0400", 60, f3="000000", f4="000000001000")
            assert rev["39"] == "00" and vclock.now() - t1 >= 30.0                # on the virtual clock

    vrun.run(main())


def test_lost_answer_is_diagnosed_from_the_proxys_trace(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (host, proxy, term):
            proxy.arm("rule:drop-response:mti=0200")
            with pytest.raises(TimeoutError):
                await balance(term, timeout=30)                   # the terminal gives up
            assert len(host.requests) == 1                        # the host did process it
            await term.close()
            for _ in range(5):
                await asyncio.sleep(0)
            assert "tcp.response_timeout" in codes(proxy)
            assert diagnose(list(proxy.trace)).groups == ["lost-answer"]

    vrun.run(main())


# --- catalogue faults through the seam --------------------------------------------------------------
def test_catalogue_host_faults_are_played_by_the_proxy(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            assert (await term.exchange("0800", f3="990000"))["39"] == "00"
            toxic = proxy.arm("host.overload")                          # onset: the next transaction
            assert toxic.enabled and not toxic.armed
            assert (await balance(term))["39"] == "96"
            assert proxy.toxics()[0].armed
            assert diagnose(list(proxy.trace)).groups == ["host-busy"]
            proxy.reset()
            proxy.arm("host.wrong-stan")
            term.stan = 10
            got = await balance(term)
            assert got["11"] != "000011"
            assert "iso.unmatched" in codes(proxy)

    vrun.run(main())


def test_weak_wifi_resets_the_connection_and_names_the_network(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            proxy.arm("network.weak-wifi@drops:loss=1.0")
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await balance(term, timeout=300)
            assert "tcp.reset" in codes(proxy)
            assert proxy.status()["link"]["retransmissions"] > 0          # TCP's retransmissions first
            assert diagnose(list(proxy.trace)).groups[0] == "network"

    vrun.run(main())


def test_link_down_refuses_and_congestion_delays(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            proxy.arm("network.congestion@slow")                          # 6 s each way
            t0 = vclock.now()
            assert (await balance(term, timeout=60))["39"] == "00"
            assert vclock.now() - t0 >= 12.0
            proxy.reset()
            proxy.arm("network.link-down:onset=power-on", name="down")
            again = PlainTerminal(ISO87, proxy.address)
            await again.connect()
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await again.balance()
            await again.close()
            assert "tcp.refused" in codes(proxy)
            assert diagnose(list(proxy.trace)).groups[0] == "network"
            proxy.disarm("down")
            third = PlainTerminal(ISO87, proxy.address)
            await third.connect()
            assert (await third.balance())["39"] == "00"
            await third.close()

    vrun.run(main())


def test_dns_fault_on_the_upstream_name(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            assert (await balance(term))["39"] == "00"
            proxy.arm("network.dns:onset=power-on")
            again = PlainTerminal(ISO87, proxy.address)
            await again.connect()
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await again.balance()
            await again.close()
            assert "dns.nxdomain" in codes(proxy)
            assert diagnose(list(proxy.trace)).groups == ["dns"]

    vrun.run(main())


def test_faults_the_proxy_cannot_apply_are_refused_before_anything_runs(vclock: VirtualClock) -> None:
    proxy = MessageProxy(("127.0.0.1", 9), get_profile("cup"), clock=vclock)
    with pytest.raises(ConfigError, match="card reader, which the proxy does not have"):
        proxy.arm("reader.dirty-contacts")
    with pytest.raises(ConfigError, match="cannot see the moment card-read"):
        proxy.arm("host.overload:onset=card-read")
    with pytest.raises(ConfigError, match="unknown fault"):
        proxy.arm("network.nope")
    proxy.arm("rule:drop", name="x")
    with pytest.raises(ConfigError, match="already there"):
        proxy.arm("rule:drop", name="x")
    assert [t.name for t in proxy.toxics()] == ["x"]


# --- schedule ---------------------------------------------------------------------------------------
def test_schedule_arms_and_disarms_on_the_clock(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    schedule = parse_schedule("""
        [[at]]
        t = 10
        arm = "rule:respond:rc=96,mti=0200"
        name = "busy"
        [[at]]
        t = 20
        disarm = "busy"
    """)
    for bad in ("[[at]]\nt = -1\nreset = true", "[[at]]\nt = 1", "[[at]]\nt = 1\narm = 'x'\nreset = true",
                "x = 1", "[[at]]\nt = 1\nname = 'n'\nreset = true"):
        with pytest.raises(ConfigError):
            parse_schedule(bad)

    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            task = asyncio.ensure_future(run_schedule(proxy, schedule, vclock))
            seen = []
            for at in (5, 15, 25):
                await vclock.sleep(at - vclock.now())
                seen.append((await balance(term))["39"])
            await task
            assert seen == ["00", "96", "00"]

    vrun.run(main())


# --- the HTTP control API -------------------------------------------------------------------------
def test_control_api_over_http(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    from emulator.control_http import ControlServer

    async def main() -> None:
        async with rig(vclock) as (_host, proxy, term):
            server = await ControlServer.start(proxy)
            base = "http://{}:{}".format(*server.address)
            try:
                async with aiohttp.ClientSession() as http:
                    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                        async with http.request(method, base + path, json=body) as r:
                            text = await r.text()
                            return r.status, json.loads(text) if text else None

                    st, doc = await call("GET", "/version")
                    assert st == 200 and doc["kind"] == "proxy" and doc["api"] == 1
                    st, doc = await call("POST", "/toxics", {"spec": "rule:respond:rc=96,mti=0200", "name": "busy"})
                    assert st == 201 and doc["name"] == "busy" and doc["kind"] == "rule" and doc["armed"]
                    assert (await balance(term))["39"] == "96"
                    st, doc = await call("POST", "/toxics/busy", {"enabled": False})
                    assert st == 200 and doc["enabled"] is False
                    assert (await balance(term))["39"] == "00"
                    assert (await call("POST", "/toxics/busy", {"enabled": True}))[0] == 200
                    assert (await balance(term))["39"] == "96"
                    st, doc = await call("POST", "/toxics", {"spec": "rule:respond:rc=96", "name": "busy"})
                    assert st == 409
                    st, doc = await call("POST", "/toxics", {"spec": "reader.dirty-contacts"})
                    assert st == 400 and "does not have" in doc["error"]
                    assert (await call("POST", "/toxics", {"nope": 1}))[0] == 400
                    st, doc = await call("POST", "/toxics", {"spec": "host.overload", "name": "cat"})
                    assert st == 201 and doc["kind"] == "fault" and doc["group"] == "host-busy"
                    st, doc = await call("GET", "/toxics")
                    assert [t["name"] for t in doc] == ["busy", "cat"]
                    assert (await call("DELETE", "/toxics/busy"))[0] == 204
                    assert (await call("DELETE", "/toxics/busy"))[0] == 404
                    assert (await call("GET", "/toxics/cat"))[1]["onset"] == "transaction"
                    st, doc = await call("GET", "/events?since=0")
                    assert st == 200 and doc["next"] == len(doc["events"]) > 0
                    assert any(e["kind"] == "iso-in" and e["fields"]["39"] == "96" for e in doc["events"])
                    assert PAN not in json.dumps(doc)
                    st, doc = await call("POST", "/status", {"enabled": False})
                    assert st == 200 and doc["enabled"] is False
                    late = PlainTerminal(ISO87, proxy.address)
                    await late.connect()
                    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                        await late.balance()
                    await late.close()
                    assert (await call("POST", "/reset"))[0] == 204
                    assert (await call("GET", "/status"))[1]["toxics"] == []
                    fresh = PlainTerminal(ISO87, proxy.address)
                    await fresh.connect()
                    assert (await fresh.balance())["39"] == "00"
                    await fresh.close()
            finally:
                await server.close()

    vrun.run(main())


# --- the command, in its own process ----------------------------------------------------------------
def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "emulator.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


async def _line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    assert line.startswith(prefix), (line, proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
    return line.strip()


def test_proxy_command_end_to_end(tmp_path: Path) -> None:
    """``posemu proxy`` in front of the plain host: a rule from the command line, switched off over HTTP,
    Ctrl-C; its trace names the host as busy, its pcap holds both legs with the card number masked."""
    trace, pcap = tmp_path / "proxy.jsonl", tmp_path / "proxy.pcap"

    async def main() -> None:
        host = PlainHost(ISO87)
        addr = await host.start()
        proc = _start(["proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{addr[1]}", "--profile",
                       "iso87ascii", "--rule", "respond:rc=96,mti=0200", "--control", "127.0.0.1:0", "--trace",
                       str(trace), "--pcap", str(pcap)])
        try:
            listen = (await _line(proc, "posemu proxy: listening on 127.0.0.1:")).split()[4]
            api = (await _line(proc, "posemu proxy: control API on http://127.0.0.1:")).split()[-1]
            term = PlainTerminal(ISO87, ("127.0.0.1", int(listen.rsplit(":", 1)[1])))
            await term.connect()
            assert (await balance(term))["39"] == "96"
            async with aiohttp.ClientSession() as http:
                async with http.get(api + "toxics") as r:
                    name = (await r.json())[0]["name"]
                async with http.delete(f"{api}toxics/{name}") as r:
                    assert r.status == 204
            assert (await balance(term))["39"] == "00"
            await term.close()
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            await host.close()

    asyncio.run(main())
    assert os.stat(trace).st_mode & 0o077 == 0
    text = trace.read_text()
    assert PAN not in text and "991234******1234" in text
    entries = read_trace(trace)
    assert [e.data.get("approved") for e in entries if e.kind is Kind.TXN and e.what == "end"] == [False, True]
    out = CliRunner().invoke(diagnose_command, ["--trace", str(trace), "--json"])
    assert out.exit_code == 1, out.output
    assert [g["group"] for g in json.loads(out.output)["diagnosis"]["groups"] if g["named"]] == ["host-busy"]
    data = pcap.read_bytes()
    assert len(read_records(data)) > 10 and PAN.encode() not in data and b"991234" in data


def test_proxy_command_refuses_other_addresses_and_bad_faults(tmp_path: Path) -> None:
    for args, why in [(["--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:9"], "not a loopback"),
                      (["--upstream", "127.0.0.1:9", "--control", "10.0.0.1:0"], "not a loopback"),
                      (["--upstream", "nowhere"], "HOST:PORT"),
                      (["--upstream", "127.0.0.1:9", "--fault", "reader.dirty-contacts"], "does not have"),
                      (["--upstream", "127.0.0.1:9", "--rule", "explode"], "unknown action")]:
        r = subprocess.run([sys.executable, "-m", "emulator.cli", "proxy", "--listen", "127.0.0.1:0", *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)




def test_proxy_speaks_the_dialect_of_a_terminal_config(tmp_path: Path) -> None:
    """``--config`` gives the proxy the host dialect of a terminal config, as ``posemu host --config``:
    here iso87ascii fields behind a TPDU. The rule selects the 0200 only because the proxy reads the
    message past the TPDU; the answer it makes on the host's behalf swaps the TPDU's addresses."""
    tpdu = bytes.fromhex("6000030000")
    env = Envelope(ISO87.spec, tpdu)
    cfg = tmp_path / "terminal.toml"
    cfg.write_text('[host.spec]\nbase = "iso87ascii"\n[host.envelope]\ntpdu = "6000030000"\n', encoding="utf-8")
    # (the plain host frames with a 2-byte binary length, the dialect's default; a 4-digit ASCII
    # length header is checked in-process below)

    async def main() -> None:
        host = PlainHost(env)
        addr = await host.start()
        proc = _start(["proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{addr[1]}", "--config",
                       str(cfg), "--rule", "respond:rc=91,mti=0200,nth=2"])
        try:
            banner = await _line(proc, "posemu proxy: listening on 127.0.0.1:")
            assert f"iso87ascii dialect of {cfg}" in banner
            term = PlainTerminal(env, ("127.0.0.1", int(banner.split()[4].rsplit(":", 1)[1])))
            await term.connect()
            assert (await balance(term))["39"] == "00"                     # forwarded through the TPDU
            assert (await balance(term))["39"] == "91"                     # the 2nd 0200, answered by the proxy
            assert len(host.requests) == 1
            await term.close()
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.communicate, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            await host.close()

    asyncio.run(main())
    r = subprocess.run([sys.executable, "-m", "emulator.cli", "proxy", "--upstream", "127.0.0.1:9", "--config",
                        str(cfg), "--profile", "cup"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "disagree" in r.stderr, r.stderr


def test_the_proxy_frames_with_the_dialects_length_header(tmp_path: Path) -> None:
    from emulator import config as configmod
    from faults.wire import frame_for, framer_for
    from protocol.sansio import NEED_DATA

    cfg = tmp_path / "terminal.toml"
    cfg.write_text('[host.spec]\nbase = "iso87ascii"\n[host.envelope]\nlength_size = 4\nlength_encoding = "ascii"\n',
                   encoding="utf-8")
    prof = configmod.load(cfg).wire_profile()
    payload = b"0800" + bytes(30)
    framed = frame_for(prof, payload)
    assert framed[:4] == b"0034" and framed[4:] == payload
    framer = framer_for(prof)
    framer.receive_data(framed[:3])
    assert framer.next_event() is NEED_DATA
    framer.receive_data(framed[3:] + framed)
    assert framer.next_event() == payload and framer.next_event() == payload
    assert framer.next_event() is NEED_DATA
