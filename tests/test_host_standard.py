"""The bundled host speaks the standard (issue 11 item 3): 0100/0110 authorization beside 0200,
the MAC rule per terminal set from the host side, a TLS listener, one masked log line per message,
and `posemu host accounts` to administer cards, balances, permissions and terminals."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator import config as configmod
from emulator.app import open_rig
from emulator.cli import main
from emulator.demo import DEMO_TID
from emulator.host import admin
from emulator.host.server import HostServer, mangle
from emulator.host.store import HostStore
from emulator.messages import Msg
from emulator.ports import ScriptedPinPad
from hardware.clock import VirtualClock
from protocol.errors import PosemuError
from protocol.framing import Framer, LengthHeader, frame
from protocol.iso import Message, decode, encode
from protocol.specs import CUP, ISO87ASCII, PROFILES, Profile, build_profile
from protocol.txn import RC, TxnType, parse_balances
from tests.test_host import CARDS, Client, run_host
from tests.tls_pki import Pki, make_pki

OK = CARDS["ok"]


def _auth(client: Client, msg: Message) -> Message:
    """The same request as an 0100 authorization."""
    return msg.replace(mti="0100")


def _preauth(client: Client, amount: int, *, stan: str | None = None) -> Message:
    req = client.request(TxnType.PURCHASE, OK, amount=amount, stan=stan)
    return req.replace(mti="0100", f3="030000", f60="10" + req.text(60)[2:])


# --- 0100 / 0110 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_authorization_balance_and_preauthorization(vrun: asyncio.Runner, vclock: VirtualClock,
                                                     profile: Profile) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        r = await c.send(_auth(c, c.request(TxnType.BALANCE, OK)))
        assert r.mti == "0110" and r.get(39) == "00"
        assert parse_balances(r.text(54))[-1].amount == 100_00
        r = await c.send(_preauth(c, 30_00))
        assert r.mti == "0110" and r.get(39) == "00" and len(r.text(38)) == 6 and 37 in r
        assert parse_balances(r.text(54))[-1].amount == 70_00           # the amount is held
        card = host.store.card(OK.pan)
        assert card is not None and host.store.balance(card.account_id)[0] == 70_00
        r = await c.send(_preauth(c, 80_00))
        assert r.get(39) == RC.INSUFFICIENT_FUNDS.value                   # over what is left
        held = [t for t in host.store.transactions() if t.kind == "preauth" and t.rc == "00"]
        assert len(held) == 1 and held[0].mti == "0100" and held[0].amount == 30_00

    run_host(vrun, vclock, profile, body)


def test_a_preauthorization_retransmitted_holds_once_and_its_reversal_releases(vrun: asyncio.Runner,
                                                                                vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        req = _preauth(c, 25_00)
        first = await c.send(req)
        again = await c.send(req)                       # the same 0100 again: same answer, one hold
        assert first.get(39) == again.get(39) == "00" and first.get(38) == again.get(38)
        card = host.store.card(OK.pan)
        assert card is not None and host.store.balance(card.account_id)[0] == 75_00
        rev = Message("0400", {n: v for n, v in req.fields.items() if n not in (52, 26, 64)}, req.header)
        rev = rev.replace(f39="98", f61=c.ids.batch + req.text(11) + req.text(13))
        for _ in range(2):                              # idempotent
            r = await c.send(rev)
            assert r.mti == "0410" and r.get(39) == "00"
        assert host.store.balance(card.account_id)[0] == 100_00

    run_host(vrun, vclock, CUP, body)


def test_preauthorization_needs_the_permission(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        term = host.store.terminal(DEMO_TID)
        assert term is not None
        admin.set_terminal(host.store, term, permissions=frozenset({"balance"}))
        assert (await c.send(_preauth(c, 1_00))).get(39) == RC.NOT_PERMITTED_TERMINAL.value
        admin.set_terminal(host.store, term, permissions=frozenset({"balance", "preauth"}))
        card = host.store.card(OK.pan)
        assert card is not None
        admin.set_card(host.store, card, permissions=frozenset({"balance"}))
        assert (await c.send(_preauth(c, 1_00))).get(39) == RC.NOT_PERMITTED_CARDHOLDER.value
        admin.set_card(host.store, card, permissions=frozenset({"preauth"}))
        assert (await c.send(_preauth(c, 1_00))).get(39) == "00"
        # an 0200 with processing code 03 is not a transaction this host knows
        bad = c.request(TxnType.PURCHASE, OK, amount=1_00).replace(f3="030000")
        assert (await c.send(bad)).get(39) == RC.INVALID_TRANSACTION.value

    run_host(vrun, vclock, CUP, body)


# --- the MAC rule per terminal, from the host side ----------------------------------------------------------
def test_mac_requirement_is_set_per_terminal(vrun: asyncio.Runner, vclock: VirtualClock) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        unmaced = c.request(TxnType.BALANCE, OK)
        assert (await c.send(unmaced, mac=False)).get(39) == RC.MAC_ERROR.value      # required by default
        term = host.store.terminal(DEMO_TID)
        assert term is not None
        admin.set_terminal(host.store, term, mac_required=False)
        assert (await c.send(c.request(TxnType.BALANCE, OK), mac=False)).get(39) == "00"
        admin.set_terminal(host.store, host.store.terminal(DEMO_TID), mac_required=True)  # type: ignore[arg-type]
        assert (await c.send(c.request(TxnType.BALANCE, OK), mac=False)).get(39) == RC.MAC_ERROR.value

    run_host(vrun, vclock, ISO87ASCII, body)


# --- one masked line per message -------------------------------------------------------------------------
def test_wire_log_is_one_masked_line_per_message(vrun: asyncio.Runner, vclock: VirtualClock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async def body(host: HostServer, c: Client) -> None:
        await c.sign_on()
        await c.send(c.request(TxnType.PURCHASE, OK, amount=12_50))

    with caplog.at_level(logging.INFO, logger="posemu.host.wire"):
        run_host(vrun, vclock, CUP, body)
    lines = [r.getMessage() for r in caplog.records if r.name == "posemu.host.wire"]
    assert len(lines) == 4
    assert "<- 0800" in lines[0] and "-> 0810" in lines[1] and "rc=00" in lines[1]
    assert "<- 0200" in lines[2] and "amount=000000001250" in lines[2] and "mac" in lines[2]
    assert "-> 0210" in lines[3] and "auth=" in lines[3]
    text = "\n".join(lines)
    assert OK.pan not in text and f"pan={OK.pan[:6]}" in text and OK.pan[-4:] in text


# --- TLS listener -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_listener_with_the_full_terminal(tmp_path: Path, pki: Pki) -> None:
    """The bundled host behind TLS, the terminal with sign-on and MAC over it."""
    from emulator.commands.host import tls_context

    clock = VirtualClock()
    ctx = tls_context(str(pki.server_cert), str(pki.server_key), str(pki.ca))

    async def main() -> None:
        host = await HostServer.start(CUP, clock=clock, tls=ctx)
        try:
            cfg = configmod.from_dict({"host": {"address": f"127.0.0.1:{host.port}", "tls": {
                "ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}}})
            rig = await open_rig(cfg, clock=clock, state_dir=tmp_path, pinpad=ScriptedPinPad("123456"))
            try:
                assert (await rig.terminal.sign_on()).approved
                out = await rig.terminal.balance_inquiry()
                assert out.approved and out.headline is Msg.APPROVED_BALANCE
            finally:
                await rig.close()
        finally:
            await host.close()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as r:
        r.run(main())


def test_tls_options_are_checked(tmp_path: Path, pki: Pki) -> None:
    from emulator.commands.host import tls_context
    from protocol.errors import ConfigError, UsageError

    assert tls_context(None, None, None) is None
    with pytest.raises(UsageError):
        tls_context(None, str(pki.server_key), None)
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki.server_key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        tls_context(str(pki.server_cert), str(loose), None)
    with pytest.raises(ConfigError, match="--tls-cert"):
        tls_context(str(pki.ca), str(pki.server_key), None)           # a key that is not the certificate's
    ctx = tls_context(str(pki.server_cert), str(pki.server_key), None)
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode is ssl.CERT_NONE
    code = CliRunner().invoke(main, ["host", "--tls-key", str(pki.server_key)]).exit_code
    assert code == 2


# --- posemu host accounts -----------------------------------------------------------------------------------
def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["host", "accounts", *args], catch_exceptions=False)
    return res.exit_code, res.output


def test_accounts_list_show_set_reset(tmp_path: Path) -> None:
    db = ["--db", str(tmp_path / "host.sqlite3")]
    code, out = cli("list", *db)
    assert code == 0 and f"terminal {DEMO_TID}" in out and "card 990001******0019" in out
    assert "9900010000000019" not in out                      # PANs masked
    code, out = cli("set", "demo", "--balance", "42.00", "--status", "restricted", "--permissions", "balance",
                    "--json", *db)
    assert code == 0, out
    row = json.loads(out)[0]
    assert (row["balance"], row["status"], row["permissions"]) == (42_00, "restricted", ["balance"])
    code, out = cli("set", DEMO_TID, "--no-mac-required", "--permissions", "balance,preauth", *db)
    assert code == 0 and "mac_required=no" in out and "permissions=balance,preauth" in out
    code, out = cli("show", "9900010000000019", "--json", *db)
    assert json.loads(out)[0]["balance"] == 42_00
    store = HostStore(tmp_path / "host.sqlite3")                # what the host will read at its start
    term = store.terminal(DEMO_TID)
    assert term is not None and not term.mac_required and term.permissions == {"balance", "preauth"}
    store.close()
    code, out = cli("reset", *db)
    assert code == 0 and "reset" in out
    code, out = cli("show", "demo", "--json", *db)
    assert json.loads(out)[0]["balance"] == 1234567 and json.loads(out)[0]["status"] == "active"
    code, out = cli("show", DEMO_TID, "--json", *db)
    assert json.loads(out)[0]["mac_required"] is True


def test_accounts_change_what_the_terminal_sees(tmp_path: Path) -> None:
    """The bundled host reads the database at its start: a balance set by `accounts set` is what the
    next inquiry shows."""
    assert cli("set", "demo", "--balance", "7.25", "--state", str(tmp_path))[0] == 0
    res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--state", str(tmp_path), "--lang", "en"])
    assert res.exit_code == 0 and "balance: CNY 7.25" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["show", "nobody"], "neither a card profile"),
    (["show", "1234567890123"], "no card 123456"),
    (["set", DEMO_TID, "--balance", "1.00"], "is a terminal"),
    (["set", "demo", "--no-mac-required"], "is a card"),
    (["set", "demo", "--balance", "1e3"], "not an amount"),
    (["set", "demo", "--permissions", "Balance!"], "not a word"),
    (["set", "demo", "--pin-tries", "9"], "PIN tries"),
    (["set", DEMO_TID, "--min-version", "300"], "0 to 255"),
])
def test_accounts_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    code, out = cli(*args, "--db", str(tmp_path / "host.sqlite3"))
    assert code == 2 and message in out and "Traceback" not in out


@pytest.mark.slow        # a real host process and a real-time inquiry (the cardholder's pace): about 6 s
def test_posemu_host_with_tls_a_dialect_and_v(tmp_path: Path, pki: Pki) -> None:
    """The real command: `posemu host -v --tls-cert … --config terminal.toml` serves the terminal of that
    config in its dialect over TLS, logging one masked line per message; `posemu inquiry` with the
    same config is approved through it."""
    import os
    import signal
    import subprocess
    import sys

    cfg = tmp_path / "terminal.toml"
    cfg.write_text(f'''terminal_id = "SHOP0042"
[keys]
pik = "0123456789ABCDEFFEDCBA9876543210"
mak = "2323232323232323"
[host]
sign_on = false
[host.spec]
base = "iso87ascii"
[host.envelope]
length_size = 4
length_encoding = "ascii"
[host.tls]
ca = "{pki.ca}"
server_name = "acquirer.test"
''', encoding="utf-8")
    root = Path(__file__).parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "-v",
                             "--db", str(tmp_path / "host.sqlite3"), "--config", str(cfg),
                             "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "over TLS, listening on 127.0.0.1:" in line, line
        port = line.rsplit(":", 1)[1].split(",")[0]
        res = CliRunner().invoke(main, ["inquiry", "--config", str(cfg), "--host", f"127.0.0.1:{port}",
                                        "--state", str(tmp_path / "terminal"), "--lang", "en"])
        assert res.exit_code == 0, res.output
        assert "balance: CNY 12,345.67" in res.output
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wire = [ln for ln in err.splitlines() if "posemu.host.wire" in ln]
    assert len(wire) == 2 and "<- 0200 tid=SHOP0042" in wire[0] and "-> 0210" in wire[1] and "rc=00" in wire[1]
    assert "9900010000000019" not in err and "990001******0019" in wire[0]


def test_the_in_process_host_keeps_what_the_administrator_set(tmp_path: Path) -> None:
    """The in-process host changes its terminal row only as far as the dialect needs: a MAC switched off
    by `accounts set` stays off under a default config; a config without MAC switches it off."""
    assert cli("set", DEMO_TID, "--no-mac-required", "--state", str(tmp_path))[0] == 0
    res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--state", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads(cli("show", DEMO_TID, "--json", "--state", str(tmp_path))[1])[0]["mac_required"] is False
    cli("reset", DEMO_TID, "--state", str(tmp_path))
    (tmp_path / "terminal.toml").write_text('[host]\nmac = "none"\n', encoding="utf-8")
    res = CliRunner().invoke(main, ["inquiry", "--virtual-time", "--state", str(tmp_path)])
    assert res.exit_code == 0 and "SIGN_ON_OK" in res.output, res.output         # a sign-on without MAC
    row = json.loads(cli("show", DEMO_TID, "--json", "--state", str(tmp_path))[1])[0]
    assert row["mac_required"] is False and row["sign_on_mac"] is False


# --- host rules on a dialect's envelope --------------------------------------------------------------
@pytest.mark.parametrize("mode", ["garbage", "truncated", "bad-bitmap"])
def test_a_garbage_rule_spoils_the_answer_inside_a_dialects_envelope(mode: str) -> None:
    """GARBAGE rules (faults) on a host speaking a dialect: the length header stays the dialect's, so the
    terminal receives one frame and finds it undecodable — the fault the rule names, not a framing one."""
    header = LengthHeader(4, "ascii")
    prof = build_profile("iso87ascii", tpdu=bytes.fromhex("6000030000"), length_header=header)
    answer = Message("0210", {3: "310000", 11: "000042", 39: "00", 41: "POSEMU01"}, prof.default_header)
    raw = frame(encode(answer, prof), header=header)
    out = mangle(raw, mode, prof)
    framer = Framer(header=header)
    framer.receive_data(out)
    payloads = framer.frames()
    assert len(payloads) == 1 and framer.buffered == 0               # exactly one frame, as announced
    body = payloads[0]
    if mode == "truncated":
        assert body == raw[4:4 + len(body)] and len(body) < len(raw) - 4
    elif mode == "bad-bitmap":
        at = 5 + 4                                                    # after the TPDU and the ASCII MTI
        assert body[:at] == raw[4:4 + at] and body[at + 8:] == raw[4 + at + 8:]
        assert body[at:at + 8] != raw[4 + at:4 + at + 8]
    else:
        assert len(body) == len(raw) - 4 and body != raw[4:]
    with pytest.raises(PosemuError):
        decode(body, prof)
