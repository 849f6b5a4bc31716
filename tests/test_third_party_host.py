"""posemu against a host it did not build (issue 11 item 2).

The host here is written in the test with nothing but pyiso8583's own default spec
(``iso8583.specs.default``) and sockets: no posemu code on the host side. It knows no sign-on and no
MAC. The terminal is configured for it through its TOML config alone — ``[host]`` sign_on = false
with static working keys, mac = "none" — and balance inquiries (with and without field 54) and a
purchase are approved; a purchase the host does not answer is reversed. The same again over TLS,
against a host whose certificate comes from a test CA made here (cryptography), with a client
certificate. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import iso8583
import iso8583.specs
import pytest

# the terminal side: posemu
from emulator import config as configmod
from emulator.app import Rig, open_rig
from emulator.journal import Reversal, Status
from emulator.messages import Msg
from emulator.ports import ScriptedPinPad
from emulator.terminal import Outcome
from hardware.clock import VirtualClock
from tests.tls_pki import Pki, make_pki

PIK = "0123456789ABCDEFFEDCBA9876543210"
DEMO_PAN = "9900010000000019"


# --- the third-party host: pyiso8583's default spec and a socket, nothing else -------------------------
@dataclass
class PlainHost:
    """An ISO 8583:1987 host on pyiso8583's default spec: 2-byte length, answers 0200 and 0400."""

    with_balance: bool = True
    ignore_purchases: int = 0                 # purchases to leave unanswered (the terminal times out)
    seen: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_ctx)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                doc, _ = iso8583.decode(body, iso8583.specs.default)
                self.seen.append(doc)
                answer = self._answer(doc)
                if answer is not None:
                    raw, _ = iso8583.encode(answer, iso8583.specs.default)
                    writer.write(len(raw).to_bytes(2, "big") + bytes(raw))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def _answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        echo: dict[str, Any] = {k: req[k] for k in ("2", "3", "4", "7", "11", "12", "13", "41", "42", "49") if k in req}
        if req["t"] == "0200":
            if req["3"].startswith("00") and self.ignore_purchases:
                self.ignore_purchases -= 1
                return None
            out = {"t": "0210", **echo, "37": "000000123456", "38": "A1B2C3", "39": "00"}
            if req["3"].startswith("31") and self.with_balance:
                out["54"] = "1002156C000000098765"
            return out
        if req["t"] == "0400":
            return {"t": "0410", **echo, "39": "00"}
        return {"t": f"{req['t'][:2]}{int(req['t'][2]) + 1}{req['t'][3]}", **echo, "39": "12"}


# --- the terminal, configured for that host by its TOML alone ----------------------------------------
def terminal_config(port: int, tmp: Path, *, tls: str = "") -> configmod.TerminalConfig:
    text = f'''
reader = "sim://demo"
[timeouts]
response = 30
[keys]
pik = "{PIK}"
[host]
address = "127.0.0.1:{port}"
sign_on = false
mac = "none"
[host.spec]
base = "iso87ascii"
{tls}'''
    path = tmp / "terminal.toml"
    path.write_text(text, encoding="utf-8")
    return configmod.load(path)


async def with_terminal(cfg: configmod.TerminalConfig, clock: VirtualClock, state: Path,
                        body: Callable[[Rig], Awaitable[None]]) -> None:
    rig = await open_rig(cfg, clock=clock, state_dir=state, pinpad=ScriptedPinPad("123456"))
    try:
        await body(rig)
    finally:
        await rig.close()


def run(clock: VirtualClock, coro: Awaitable[None]) -> None:
    with asyncio.Runner(loop_factory=clock.new_event_loop) as r:
        r.run(coro)  # type: ignore[arg-type]


def _approved(out: Outcome, head: Msg) -> None:
    assert out.approved, (out.codes, out.error)
    assert out.headline is head


# --- plain TCP ----------------------------------------------------------------------------------------
def test_inquiry_with_and_without_field_54_and_purchase(tmp_path: Path) -> None:
    clock = VirtualClock()
    host = PlainHost()

    async def main() -> None:
        port = await host.start()
        cfg = terminal_config(port, tmp_path)

        async def body(rig: Rig) -> None:
            t = rig.terminal
            assert t.signed_on                        # static keys: no sign-on to do
            out = await t.balance_inquiry()
            _approved(out, Msg.APPROVED_BALANCE)
            assert out.balance == 98765
            host.with_balance = False
            out = await t.balance_inquiry()
            _approved(out, Msg.APPROVED_NO_BALANCE)
            assert out.balance is None
            out = await t.purchase(12_50)
            _approved(out, Msg.APPROVED)
            assert (out.rrn, out.auth_code) == ("000000123456", "A1B2C3")

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    mtis = [d["t"] for d in host.seen]
    assert mtis == ["0200", "0200", "0200"]                      # no 0800: this host has no sign-on
    for d in host.seen:
        assert "64" not in d and "128" not in d                   # no MAC
        assert d["2"] == DEMO_PAN and d["41"] == "POSEMU01"
        assert len(d["52"]) == 16                                 # a PIN block (hex of 8 bytes)
    assert host.seen[2]["4"] == "000000001250"


def test_a_purchase_that_times_out_is_reversed(tmp_path: Path) -> None:
    clock = VirtualClock()
    host = PlainHost(ignore_purchases=1)

    async def main() -> None:
        port = await host.start()
        cfg = terminal_config(port, tmp_path)

        async def body(rig: Rig) -> None:
            out = await rig.terminal.purchase(20_00)
            assert not out.approved and out.detail is Msg.TIMEOUT
            entries = rig.journal.entries(limit=5)
            purchase = next(e for e in entries if e.kind == "purchase")
            # the journal shows a reversed purchase as reversed (issue 12 item 5)
            assert purchase.status is Status.REVERSED and purchase.reversal is Reversal.DONE

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    assert [d["t"] for d in host.seen] == ["0200", "0400"]
    original, reversal = host.seen
    assert reversal["39"] == "98"                                  # reason: no response in time
    assert reversal["11"] == original["11"] and reversal["4"] == original["4"]
    assert reversal["90"].startswith("0200" + original["11"])       # ISO 8583:1987 original data elements
    assert clock.now() >= 30                                       # the response timeout ran (virtual time)


def test_pin_block_format_from_the_config(tmp_path: Path) -> None:
    """pin_block = 1: the host decrypts field 52 under the PIK it shares and finds format 1 (no PAN)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    clock = VirtualClock()
    host = PlainHost()

    async def main() -> None:
        port = await host.start()
        cfg = terminal_config(port, tmp_path)
        cfg = replace(cfg, dialect=replace(cfg.dialect, pin_block=1)).validate()

        async def body(rig: Rig) -> None:
            _approved(await rig.terminal.balance_inquiry(), Msg.APPROVED_BALANCE)

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    key = bytes.fromhex(PIK)
    dec = Cipher(TripleDES(key + key[:8]), modes.ECB()).decryptor()
    clear = (dec.update(bytes.fromhex(host.seen[0]["52"])) + dec.finalize()).hex().upper()
    assert clear.startswith("16123456")                             # format 1, 6 digits, the PIN


# --- TLS: a test CA made here -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_context(pki: Pki, *, client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca)
    return ctx


def tls_table(pki: Pki, *, ca: Path | None = None, client: bool = True, pin: str | None = None,
              server_name: str | None = "acquirer.test") -> str:
    lines = ["[host.tls]", f'ca = "{ca or pki.ca}"']
    if server_name is not None:           # omitted: the address (127.0.0.1, an IP in the certificate)
        lines.append(f'server_name = "{server_name}"')
    if client:
        lines += [f'cert = "{pki.client_cert}"', f'key = "{pki.client_key}"']
    if pin is not None:
        lines.append(f'pin_sha256 = ["{pin}"]')
    return "\n".join(lines) + "\n"


def test_over_tls_with_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    clock = VirtualClock()
    host = PlainHost(ignore_purchases=1)

    async def main() -> None:
        port = await host.start(server_context(pki, client_cert=True))
        cfg = terminal_config(port, tmp_path, tls=tls_table(pki, pin=pki.server_sha256, server_name=None))

        async def body(rig: Rig) -> None:
            t = rig.terminal
            _approved(await t.balance_inquiry(), Msg.APPROVED_BALANCE)
            host.with_balance = False
            _approved(await t.balance_inquiry(), Msg.APPROVED_NO_BALANCE)
            out = await t.purchase(5_00)                  # not answered: timed out, then reversed
            assert not out.approved and out.detail is Msg.TIMEOUT
            assert rig.journal.pending_reversals() == []
            _approved(await t.purchase(5_00), Msg.APPROVED)
            events = [e for e in rig.trace.entries if e.what == "TLS established"]
            assert events and events[0].data["sha256"] == pki.server_sha256
            assert events[0].data["server_name"] == "127.0.0.1"

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    assert [d["t"] for d in host.seen] == ["0200", "0200", "0200", "0400", "0200"]


@pytest.mark.parametrize(("case", "code"), [
    ("untrusted CA", "tls.verify_failed"),
    ("wrong name", "tls.verify_failed"),
    ("pin mismatch", "tls.pin_mismatch"),
])
def test_tls_refusals_send_nothing(tmp_path: Path, pki: Pki, case: str, code: str) -> None:
    clock = VirtualClock()
    host = PlainHost()

    async def main() -> None:
        port = await host.start(server_context(pki, client_cert=True))
        table = {
            "untrusted CA": tls_table(pki, ca=pki.other_ca),
            "wrong name": tls_table(pki, server_name="bank.example"),
            "pin mismatch": tls_table(pki, pin="00" * 32),
        }[case]
        cfg = terminal_config(port, tmp_path, tls=table)

        async def body(rig: Rig) -> None:
            out = await rig.terminal.purchase(1_00)
            assert not out.approved and out.detail is Msg.CONNECT_FAILED
            assert code in out.evidence
            assert Msg.REVERSAL_PENDING.value not in out.codes     # nothing reached the host: nothing to reverse

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    assert host.seen == []


def test_a_host_that_refuses_our_missing_client_certificate(tmp_path: Path, pki: Pki) -> None:
    """TLS 1.3: the host checks the client certificate after the handshake completed for the terminal,
    so the purchase was written before the host hung up. It never reached the host's application, but
    the terminal cannot know that: the purchase stays unknown with its reversal pending (never a
    silent approval or a lost charge), and the evidence names the TLS refusal."""
    clock = VirtualClock()
    host = PlainHost()

    async def main() -> None:
        port = await host.start(server_context(pki, client_cert=True))
        cfg = terminal_config(port, tmp_path, tls=tls_table(pki, client=False))

        async def body(rig: Rig) -> None:
            out = await rig.terminal.purchase(1_00)
            assert not out.approved and out.detail is Msg.LINK_LOST
            assert "tls.closed_after_handshake" in out.evidence
            assert len(rig.journal.pending_reversals()) == 1

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    assert host.seen == []


def test_backup_host_and_per_transaction_connections(tmp_path: Path) -> None:
    """The primary refuses connections; the backup answers; every transaction opens its own connection."""
    import socket

    clock = VirtualClock()
    host = PlainHost()
    conns: list[int] = []

    async def main() -> None:
        port = await host.start()
        assert host.server is not None
        base = host._serve

        async def counting(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            conns.append(1)
            await base(r, w)

        host.server.close()
        await host.server.wait_closed()
        host.server = await asyncio.start_server(counting, "127.0.0.1", port)
        with socket.socket() as s:              # a port where nothing listens: the primary
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        cfg = terminal_config(dead, tmp_path)
        cfg = replace(cfg, dialect=replace(cfg.dialect, backup=f"127.0.0.1:{port}"),
                      persistent_connection=False).validate()

        async def body(rig: Rig) -> None:
            _approved(await rig.terminal.balance_inquiry(), Msg.APPROVED_BALANCE)
            _approved(await rig.terminal.balance_inquiry(), Msg.APPROVED_BALANCE)
            assert any(e.data.get("code") == "link.backup" for e in rig.trace.entries)
            assert not rig.terminal.link.connected            # hung up after each transaction

        try:
            await with_terminal(cfg, clock, tmp_path / "state", body)
        finally:
            await host.close()

    run(clock, main())
    assert len(conns) == 2 and [d["t"] for d in host.seen] == ["0200", "0200"]


# --- faults against this host: `posemu inquiry --fault … ` on a config that names it ----------------
def _fault_run(host: PlainHost, config: Callable[[int], configmod.TerminalConfig], fault: str, clock: VirtualClock,
               state: Path, ssl_ctx: ssl.SSLContext | None = None) -> tuple[int, Outcome | None, list[Any]]:
    """The fault runner on the config ``config(port)`` makes, against ``host`` as the user's host."""
    from faults.catalogue import load
    from faults.grammar import parse_spec
    from faults.runner import final_outcome, run_specs

    async def main() -> tuple[int, Outcome | None, list[Any]]:
        port = await host.start(ssl_ctx)
        try:
            ran = await run_specs([parse_spec(fault, load())], clock=clock, state=state, card="demo", txn="balance",
                                  steps=["balance"], cfg=replace(config(port), host=None),
                                  external_host=f"127.0.0.1:{port}", self_test_too=False)
            try:
                assert ran.run.rig is not None
                return port, final_outcome(ran.outcomes), list(ran.run.rig.trace.entries)
            finally:
                await ran.run.close()
        finally:
            await host.close()

    with asyncio.Runner(loop_factory=clock.new_event_loop) as r:
        return r.run(main())


def test_a_fault_run_reaches_the_tls_host_through_the_fault_proxy(tmp_path: Path, pki: Pki) -> None:
    """The run resolves its own name for the host to the fault proxy; TLS still checks the certificate
    against the host's address (no server_name configured), and the latency fault is on the path."""
    clock = VirtualClock()
    host = PlainHost()
    table = tls_table(pki, server_name=None)
    port, out, trace = _fault_run(host, lambda port: terminal_config(port, tmp_path, tls=table),
                                  "network.congestion:latency=2", clock, tmp_path / "run",
                                  server_context(pki, client_cert=True))
    assert out is not None and out.approved, (out and out.codes, out and out.error)
    tls = [e for e in trace if e.what == "TLS established"]
    assert tls and tls[0].data["server_name"] == "127.0.0.1" and tls[0].data["sha256"] == pki.server_sha256
    peers = {e.data.get("peer") for e in trace if e.what == "connected"}
    assert peers and f"127.0.0.1:{port}" not in peers                 # through the proxy, not straight to the host
    assert [d["t"] for d in host.seen] == ["0200"]
    assert clock.now() >= 4                                           # the latency was on the path (both ways)


def test_a_fault_run_does_not_go_round_a_link_fault_to_the_backup_host(tmp_path: Path) -> None:
    """The configured backup host would be reached directly, past the fault proxy: a fault run has one path."""
    clock = VirtualClock()
    host = PlainHost()

    def config(port: int) -> configmod.TerminalConfig:
        cfg = terminal_config(port, tmp_path)
        return replace(cfg, dialect=replace(cfg.dialect, backup=f"127.0.0.1:{port}")).validate()

    _, out, trace = _fault_run(host, config, "network.link-down", clock, tmp_path / "run")
    assert out is not None and not out.approved and out.detail is Msg.CONNECT_FAILED
    assert not any(e.data.get("code") == "link.backup" for e in trace)
    assert host.seen == []
