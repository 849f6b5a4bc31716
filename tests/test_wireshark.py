"""Wireshark reads everything posemu sends: the shipped Lua dissector, run by a real tshark, on
captures written by ``posemu inquiry|purchase|regress|host --pcap``.

The tshark tests are skipped with the reason when tshark is not installed — except under
``CI=true``, where that is a failure (``make sysdeps`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emulator.capture import PcapRecorder, WireConn, WireEvent, WireKind
from emulator.cli import main
from emulator.demo import DEMO_MID, DEMO_TID
from emulator.wireshark import (
    BEGIN,
    END,
    dissector_path,
    dissector_source,
    generated_block,
    lua_tables,
    personal_plugin_dir,
)
from protocol import pcap
from protocol.framing import Framer, frame
from protocol.iso import Message, decode, encode
from protocol.specs import CUP, ISO87ASCII, Profile, get_profile
from protocol.txn import TerminalIds, sign_on_request
from protocol.wiremask import mask_digits
from tests.pcsc_fixtures import in_ci

ROOT = Path(__file__).resolve().parent.parent
PI_ERROR = 0x00800000            # expert severity "error" (epan/proto.h PI_ERROR)


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


# --- the shipped file ---------------------------------------------------------------------------

def test_the_shipped_dissector_matches_the_profiles() -> None:
    """The generated block is what protocol/specs.py (and the code tables) say today.
    If this fails after a profile change: ``python -m emulator.wireshark``."""
    source = dissector_source()
    assert source.count(BEGIN) == 1 and source.count(END) == 1
    assert generated_block(source) == lua_tables()
    for name, prof in (("cup", CUP), ("iso87ascii", ISO87ASCII)):
        assert f'["{name}"] = {{' in source
        assert f"header_len = {prof.header_len}," in source
    assert '[22] = { kind = "n", enc = "b", len_enc = "bcd", len_type = 0, max_len = 3, nibbles = true, ' \
           'left_pad = "", right_pad = "0"' in source                     # cup field 22 left-aligned
    assert "[128] = " in source                                            # iso87ascii up to 128


def test_path_and_install(tmp_path: Path) -> None:
    code, out = run("dissector", "path")
    assert code == 0 and Path(out.strip()) == dissector_path() and dissector_path().is_file()
    code, out = run("dissector", "install", "--dest", str(tmp_path / "plugins"))
    assert code == 0, out
    installed = tmp_path / "plugins" / "posemu_iso8583.lua"
    assert installed.read_text(encoding="utf-8") == dissector_source()
    assert str(installed) in out
    # a folder that cannot be created: exit 3, one line
    (tmp_path / "file").write_text("x")
    code, out = run("dissector", "install", "--dest", str(tmp_path / "file" / "sub"))
    assert code == 3 and "cannot install the dissector" in out


def test_personal_plugin_folder_from_tshark_or_default() -> None:
    folders = "Personal configuration:\t/home/u/.config/wireshark\nPersonal Lua Plugins:\t/home/u/.local/lib/w/p\n"
    assert personal_plugin_dir(folders) == Path("/home/u/.local/lib/w/p")
    assert personal_plugin_dir(None).parts[-3:] == ("lib", "wireshark", "plugins")


def test_pcap_options_are_checked_before_anything_runs(tmp_path: Path) -> None:
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path), "--pcap-clear")
    assert code == 2 and "--pcap-clear needs --pcap" in out
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path), "--pcap", str(other))
    assert code == 2 and "not a pcap from posemu" in out and other.read_text() == "my notes\n"
    code, out = run("host", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "h.db"), "--pcap", str(tmp_path))
    assert code == 2 and "is a directory" in out


def test_cli_pcap_is_private_masked_by_default_and_clear_on_request(tmp_path: Path) -> None:
    masked, clear = tmp_path / "m.pcap", tmp_path / "c.pcap"
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "s"), "--card", "intl_debit",
                    "--pcap", str(masked))
    assert code == 0, out
    assert stat.S_IMODE(masked.stat().st_mode) == 0o600
    assert "WARNING" not in out and "card numbers masked" in out
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "s"), "--card", "intl_debit",
                    "--pcap", str(clear), "--pcap-clear")
    assert code == 0, out
    assert "WARNING: --pcap-clear" in out
    assert stat.S_IMODE(clear.stat().st_mode) == 0o600
    pan = "9900040000000032"
    req_masked = [m for up, m in pcap_messages(masked.read_bytes(), CUP) if up and m.mti == "0200"]
    req_clear = [m for up, m in pcap_messages(clear.read_bytes(), CUP) if up and m.mti == "0200"]
    assert req_clear[0][2] == pan
    # the bundled test cards have zeros in the middle (and in track 2's discretionary data), so the
    # masking shows in tests/test_capture.py, with a card whose middle digits are not zeros
    assert req_masked[0][2] == mask_digits(pan) == pan
    # a new capture over an old one is allowed (it is a pcap)
    code, out = run("inquiry", "--virtual-time", "--state", str(tmp_path / "s"), "--pcap", str(clear))
    assert code == 0 and "WARNING" not in out


def pcap_messages(data: bytes, profile: Profile) -> list[tuple[bool, Message]]:
    """(client→server, message) of every frame in a capture of one or more connections."""
    out: list[tuple[bool, Message]] = []
    framers: dict[tuple[int, int], Framer] = {}
    servers: set[int] = set()
    for p in pcap.read_records(data):
        s = pcap.parse_tcp_frame(p.frame)
        if s.flags == pcap.SYN:
            servers.add(s.dport)
        if not s.payload:
            continue
        f = framers.setdefault((s.sport, s.dport), Framer())
        f.receive_data(s.payload)
        out += [(s.dport in servers, decode(x, profile)) for x in f.frames()]
    return out


# --- tshark ---------------------------------------------------------------------------------------

def require_tshark() -> str:
    """tshark's path; skip with the reason when it is missing — fail under ``CI=true``."""
    exe = shutil.which("tshark")
    if exe is None:
        reason = "tshark is not installed (make sysdeps installs it)"
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="module")
def tshark() -> str:
    return require_tshark()


def test_missing_tshark_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="tshark is not installed"):
        require_tshark()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but tshark"):
        require_tshark()


def decode_with_tshark(tshark: str, capture: Path, home: Path, *prefs: str) -> list[dict[str, Any]]:
    """The packets tshark dissects with the shipped dissector, as JSON layers; stderr must be clean."""
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}  # no user plugins/prefs
    args = [tshark, "-n", "-X", f"lua_script:{dissector_path()}", "-r", str(capture), "-T", "json",
            "--no-duplicate-keys", "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]
    for p in prefs:
        args += ["-o", p]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
    noise = [line for line in done.stderr.splitlines() if line.strip() and "Running as user" not in line]
    assert done.returncode == 0 and not noise, done.stderr
    packets: list[dict[str, Any]] = json.loads(done.stdout)
    return [p["_source"]["layers"] for p in packets]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def problems(layers: list[dict[str, Any]]) -> list[str]:
    """Malformed packets, Lua errors and expert errors (bad checksums included) anywhere."""
    out = []
    for i, lay in enumerate(layers, 1):
        for k, v in walk(lay):
            if k in ("_ws.malformed", "_ws.lua.error") or "Lua Error" in k or (isinstance(v, str) and "Lua Error" in v):
                out.append(f"packet {i}: {k} {v}")
            elif k == "_ws.expert.severity" and int(v) >= PI_ERROR:
                out.append(f"packet {i}: expert error {lay.get('_ws.expert', '')}")
            elif k == "tcp.analysis.flags":
                out.append(f"packet {i}: TCP analysis flags {v}")
    return out


def iso_layers(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for lay in layers:
        v = lay.get("posemu8583")
        if isinstance(v, list):
            out += v
        elif isinstance(v, dict):
            out.append(v)
    return out


def assert_same_messages(layers: list[dict[str, Any]], capture: Path, profile: Profile) -> list[dict[str, Any]]:
    """tshark shows every message of the capture, and fields 3, 11, 39 and 54 as the codec decodes them."""
    iso = iso_layers(layers)
    msgs = [m for _, m in pcap_messages(capture.read_bytes(), profile)]
    assert [x["posemu8583.mti"] for x in iso] == [m.mti for m in msgs]
    assert all(x["posemu8583.profile"] == profile.name for x in iso)
    for x, m in zip(iso, msgs, strict=True):
        for n in (2, 3, 4, 11, 35, 39, 41, 54, 60):
            if n in m:
                assert x[f"posemu8583.f{n}"] == (m.text(n) if profile is not CUP or n != 35
                                                 else m.text(n).replace("=", "D")), n
            else:
                assert f"posemu8583.f{n}" not in x
        if 55 in m:
            assert x["posemu8583.f55"].replace(":", "") == m.binary(55).hex()
    return iso


@pytest.mark.parametrize("profile", ["cup", "iso87ascii"])
def test_tshark_decodes_an_inquiry_and_a_purchase(tshark: str, tmp_path: Path, profile: str) -> None:
    """The CI check of issue 11: no malformed packet; fields 3, 11, 39 and 54 present and right."""
    prof = get_profile(profile)
    state = tmp_path / "state"
    for kind, extra in (("inquiry", []), ("purchase", ["--amount", "12.50"])):
        cap = tmp_path / f"{kind}.pcap"
        code, out = run(kind, *extra, "--virtual-time", "--profile", profile, "--card", "cup_debit",
                        "--state", str(state), "--pcap", str(cap))
        assert code == 0, out
        layers = decode_with_tshark(tshark, cap, tmp_path / "home")
        assert problems(layers) == []
        iso = assert_same_messages(layers, cap, prof)
        # the transaction itself: 0200 → 0210 approved, with the balance
        req = next(x for x in iso if x["posemu8583.mti"] == "0200")
        rsp = next(x for x in iso if x["posemu8583.mti"] == "0210")
        assert req["posemu8583.f3"] == rsp["posemu8583.f3"] == ("310000" if kind == "inquiry" else "000000")
        assert req["posemu8583.f11"] == rsp["posemu8583.f11"] and len(rsp["posemu8583.f11"]) == 6
        assert rsp["posemu8583.f39"] == "00"
        balance = 1234567 if kind == "inquiry" else 1234567 - 1250
        assert rsp["posemu8583.f54"].endswith(f"1002156C{balance:012d}")
        if kind == "purchase":
            assert req["posemu8583.f4"] == "000000001250"
        if profile == "iso87ascii" and kind == "inquiry":                 # sign-on: field 70, secondary bitmap
            sign_on = next(x for x in iso if x["posemu8583.mti"] == "0800")
            assert sign_on["posemu8583.f70"] == "001" and "posemu8583.bitmap2" in sign_on
        if profile == "cup":
            assert req["posemu8583.tpdu"] == "60:00:03:00:00"
            assert req["posemu8583.f60_tree"]["posemu8583.f60.type"] == ("01" if kind == "inquiry" else "22")
            assert req["posemu8583.f22"] in ("051", "052")                  # chip, left-aligned
            assert "posemu8583.tlv" in json.dumps(req["posemu8583.f55_tree"])


def _synthetic(path: Path, profile: Profile, frames: list[tuple[bool, bytes]], *, ports: tuple[int, int],
               mss: int = pcap.DEFAULT_MSS) -> None:
    rec_buf = bytearray()
    rec = PcapRecorder(rec_buf.extend, clear=True, mss=mss)
    conn = WireConn("client", ("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]), profile)
    t = 1767258000.0
    rec(WireEvent(WireKind.OPEN, conn, t))
    for i, (up, data) in enumerate(frames):
        rec(WireEvent(WireKind.SENT if up else WireKind.RECEIVED, conn, t + i, data))
    rec(WireEvent(WireKind.CLOSED, conn, t + len(frames)))
    path.write_bytes(bytes(rec_buf))


def _pair(profile: Profile) -> list[tuple[bool, bytes]]:
    req = Message("0200", {2: "9912345678901239", 3: "310000", 11: "000123", 22: "051", 25: "00",
                           35: "9912345678901239=30122201000000000", 41: "POSEMU01", 42: "898310012345678",
                           49: "156", 52: bytes(8), 55: bytes.fromhex("9F2608A1B2C3D4E5F607189F270180"),
                           60: "01000001000", 64: bytes(8)}, profile.default_header)
    rsp = Message("0210", {3: "310000", 11: "000123", 39: "00", 41: "POSEMU01",
                           54: "1001156C0000012345671002156C000001234567", 64: bytes(8)}, profile.default_header)
    return [(True, frame(encode(req, profile))), (False, frame(encode(rsp, profile)))]


@pytest.mark.parametrize("profile", [CUP, ISO87ASCII], ids=lambda p: p.name)
def test_tshark_reassembles_split_segments_on_any_port(tshark: str, tmp_path: Path, profile: Profile) -> None:
    """Heuristics find the messages on ports nobody configured; 16-byte segments are reassembled;
    several messages in one segment are all shown."""
    cap = tmp_path / "split.pcap"
    frames = _pair(profile)
    _synthetic(cap, profile, frames, ports=(41234, 47000), mss=16)
    layers = decode_with_tshark(tshark, cap, tmp_path / "home")
    assert problems(layers) == []
    assert [x["posemu8583.f39"] for x in iso_layers(layers) if "posemu8583.f39" in x] == ["00"]
    both = tmp_path / "both.pcap"
    _synthetic(both, profile, [(True, frames[0][1] + frames[0][1])], ports=(41235, 47001))
    assert [x["posemu8583.mti"] for x in iso_layers(decode_with_tshark(tshark, both, tmp_path / "home"))] == \
        ["0200", "0200"]
    # heuristics off and no port configured: not ours; the port preference brings it back
    off = decode_with_tshark(tshark, cap, tmp_path / "home", "posemu8583.heuristic:FALSE")
    assert iso_layers(off) == []
    on = decode_with_tshark(tshark, cap, tmp_path / "home", "posemu8583.heuristic:FALSE", "posemu8583.ports:47000")
    assert [x["posemu8583.mti"] for x in iso_layers(on)] == ["0200", "0210"]


@pytest.mark.parametrize("profile", [CUP, ISO87ASCII], ids=lambda p: p.name)
def test_tshark_flags_a_malformed_message(tshark: str, tmp_path: Path, profile: Profile) -> None:
    """The 'no malformed packet' check can fail: a frame whose last field (64) is cut short is flagged."""
    good = _pair(profile)[1][1]
    bad = frame(good[2:-4])           # the bitmap still announces an 8-byte MAC; 4 bytes are there
    cap = tmp_path / "bad.pcap"
    _synthetic(cap, profile, [(True, bad)], ports=(41236, 5000))
    layers = decode_with_tshark(tshark, cap, tmp_path / "home")
    found = problems(layers)
    assert found and any("expert error" in p for p in found), found
    assert "posemu8583.malformed" in json.dumps(layers)


def test_regress_pcap_holds_every_run(tmp_path: Path) -> None:
    cap = tmp_path / "regress.pcap"
    res = CliRunner().invoke(main, ["regress", "--fault", "user.wrong-pin", "--pcap", str(cap)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = cap.read_bytes()
    packets = pcap.read_records(data)
    times = [p.ts for p in packets]
    assert times == sorted(times)
    syns = [s for s in (pcap.parse_tcp_frame(p.frame) for p in packets) if s.flags == pcap.SYN]
    assert len(syns) >= 3                                      # one connection (at least) per scenario
    msgs = pcap_messages(data, CUP)
    assert any(m.mti == "0210" and m.get(39) == "55" for up, m in msgs if not up)     # wrong PIN


def test_host_pcap_is_written_while_it_runs(tmp_path: Path) -> None:
    """``posemu host --pcap``: the server's view, on disk before the host stops."""
    cap = tmp_path / "host.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "emulator.cli", "host", "--listen", "127.0.0.1:0", "--db",
                             str(tmp_path / "h.db"), "--pcap", str(cap)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = line.split("listening on 127.0.0.1:")[1].split(",")[0]
        with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as sock:   # a plain client: sign-on
            ids = TerminalIds(DEMO_TID, DEMO_MID, CUP.default_header)
            sock.sendall(frame(encode(sign_on_request(CUP, ids, stan="000001"), CUP)))
            framer = Framer()
            while not (got := framer.frames()):
                chunk = sock.recv(4096)
                assert chunk, "the host closed the connection"
                framer.receive_data(chunk)
        assert decode(got[0], CUP).mti == "0810"        # (A0: this client sends no sign-on proof; fine here)
        assert stat.S_IMODE(cap.stat().st_mode) == 0o600
        msgs = pcap_messages(cap.read_bytes(), CUP)                # on disk while the host still runs
        assert [(up, m.mti) for up, m in msgs] == [(True, "0800"), (False, "0810")]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err and "pcap written" in err


@pytest.mark.parametrize("profile", [CUP, ISO87ASCII], ids=lambda p: p.name)
def test_tshark_never_hits_a_lua_error_on_damaged_messages(tshark: str, tmp_path: Path, profile: Profile) -> None:
    """Cut, flipped and garbage frames, each on its own connection: malformed at worst, never a Lua
    error (the dissector's 'arbitrary bytes raise only a decode error')."""
    import random

    rnd = random.Random(11)
    good = [f for _, f in _pair(profile)]
    buf = bytearray()
    rec = PcapRecorder(buf.extend, clear=True)
    for i in range(150):
        f = bytearray(rnd.choice(good))
        how = i % 3
        if how == 0:                                   # flip a few bytes after the length header
            for _ in range(rnd.randint(1, 4)):
                f[rnd.randrange(2, len(f))] = rnd.randrange(256)
        elif how == 1:                                 # cut, with the length header saying so
            f = bytearray(frame(bytes(f[2:rnd.randrange(3, len(f))])))
        else:                                          # the real header, then garbage
            body = bytes(f[2:2 + profile.header_len + (2 if profile is CUP else 4)])
            f = bytearray(frame(body + rnd.randbytes(rnd.randrange(0, 60))))
        conn = WireConn("client", ("127.0.0.1", 30000 + i), ("127.0.0.1", 5000), profile)
        rec(WireEvent(WireKind.OPEN, conn, 1767258000.0 + i))
        rec(WireEvent(WireKind.SENT, conn, 1767258000.0 + i, bytes(f)))
    cap = tmp_path / "damaged.pcap"
    cap.write_bytes(bytes(buf))
    layers = decode_with_tshark(tshark, cap, tmp_path / "home", f"posemu8583.profile:{profile.name}")
    lua = [p for p in problems(layers) if "Lua" in p or "lua" in p]
    assert lua == []
    assert len(iso_layers(layers)) == 150
