"""Malformed inputs raise only the project's own errors: configs, card profiles, scenario files,
host addresses, reader URLs, field 54, sealed journal records (hypothesis), plus the known crashes."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import config
from emulator.config import parse_hostport
from emulator.host.rules import HostRule
from emulator.journal import Journal, _reversal_from_doc
from faults import regress
from faults.catalogue import load as load_catalogue
from hardware.cards.profiles import load_profile, luhn_ok, parse_profile
from hardware.clock import VirtualClock
from hardware.registry import ReaderURL
from protocol.errors import ConfigError, CryptoError, DecodeError, PosemuError
from protocol.iso import Message
from protocol.txn import parse_balances

CAT = load_catalogue()
ROOT = Path(__file__).parent.parent
FUZZ = settings(max_examples=int(os.environ.get("POSEMU_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------------------

# text a user or a broken file may hold: Unicode digits (² ١ ５), separators, control characters
tricky_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789²³¹١٢٣５６⁰.:-+eE_ []/%?=&@", max_size=24),
    st.sampled_from(["", " ", "inf", "nan", "-1", "0", "1e3", "0x10", "²", "١٢٣٤", "１２３４", "1_000",
                     "\x00", "sim://[demo", "127.0.0.1:²", "[::1", "A0^B", "9" * 40]),
)
numbers = st.one_of(st.integers(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([math.inf, -math.inf, math.nan, 0, -1, 2**63, 1.5]))
scalars = st.one_of(st.booleans(), numbers, tricky_text)
toml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a TOML document (into tables and arrays of tables)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            if isinstance(v, dict | list):
                out.append((*prefix, i))
                out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A valid document with 1–3 values replaced by arbitrary ones, keys deleted or added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "add" or not paths:
            key = draw(st.one_of(st.sampled_from(extra_keys or ("x",)), st.text(max_size=8)))
            doc[key] = draw(toml_values)
            continue
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for k in path[:-1]:
            parent = parent[k]
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(toml_values)
    return doc


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


PROFILE_BASES = [_toml(p) for p in sorted((ROOT / "hardware/cards/profiles").glob("*.toml"))]
CONFIG_BASE = config.to_dict(config.TerminalConfig())
SCENARIO_BASES = [_toml(p) for p in sorted((ROOT / "faults/scenarios").glob("*.toml"))]


def _only_ours(fn: Any, *args: Any, **kw: Any) -> None:
    """Call ``fn``: it may succeed or raise the project's errors, nothing else."""
    with contextlib.suppress(PosemuError):
        fn(*args, **kw)


# --- configs, profiles, scenario files -----------------------------------------------------------

@FUZZ
@given(doc=mutated(CONFIG_BASE, ("terminal_id", "host", "reader", "currency", "software_version")))
def test_malformed_configs_raise_only_config_errors(doc: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        config.from_dict(doc, "fuzz.toml")


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(sorted(CONFIG_BASE)), toml_values, max_size=4))
def test_configs_of_arbitrary_values_raise_only_config_errors(doc: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        config.from_dict(doc, "fuzz.toml")


@FUZZ
@given(st.data())
def test_malformed_card_profiles_raise_only_config_errors(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(PROFILE_BASES))
    doc = data.draw(mutated(base, ("chip", "stripe", "account", "pin_tries")))
    try:
        profile = parse_profile(doc, "fuzz.toml")
    except ConfigError:
        return
    # whatever is accepted is usable: the tracks are ASCII and the PAN is Luhn-valid
    assert profile.track1.isascii() and profile.track2.isascii() and luhn_ok(profile.pan)


@FUZZ
@given(st.data())
def test_malformed_scenario_files_raise_only_config_errors(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(SCENARIO_BASES))
    doc = data.draw(mutated(base, ("seed", "steps", "config", "reader", "txn", "card")))
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):       # e.g. a key tomli-w cannot write: not a file anyone has
        return
    with contextlib.suppress(ConfigError):
        regress.load_scenario_file("fuzz.toml", CAT, text=text)


@FUZZ
@given(text=st.text(max_size=200))
def test_arbitrary_text_as_a_file_raises_only_config_errors(text: str, tmp_path_factory: Any) -> None:
    _only_ours(regress.load_scenario_file, "fuzz.toml", CAT, text=text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    _only_ours(config.from_dict, data, "fuzz.toml")
    _only_ours(parse_profile, data, "fuzz.toml")


ODD_VALUES: list[Any] = [math.inf, -math.inf, math.nan, -1, 2**70, 1.5, True, "", "²", "１２", [], [1], {}, {"x": 1}]


def _sweep(base: dict[str, Any]) -> list[dict[str, Any]]:
    """``base`` with each key, one at a time, set to each odd value (and deleted)."""
    out = []
    for path in _paths(base):
        for value in [*ODD_VALUES, None]:
            doc = copy.deepcopy(base)
            parent: Any = doc
            for k in path[:-1]:
                parent = parent[k]
            if value is None:
                if isinstance(parent, dict):
                    del parent[path[-1]]
            else:
                parent[path[-1]] = value
            out.append(doc)
    return out


def test_every_config_key_with_every_odd_value() -> None:
    for doc in _sweep(CONFIG_BASE):
        _only_config_errors(config.from_dict, doc, "sweep.toml")


def test_every_profile_key_with_every_odd_value() -> None:
    for base in PROFILE_BASES:
        for doc in _sweep(base):
            _only_config_errors(parse_profile, doc, "sweep.toml")


def test_every_scenario_key_with_every_odd_value() -> None:
    for base in SCENARIO_BASES:
        for doc in _sweep(base):
            _only_config_errors(regress.load_scenario_file, "sweep.toml", CAT, text=tomli_w.dumps(doc))


def _only_config_errors(fn: Any, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except ConfigError:
        pass
    except Exception as e:        # the document that broke it, in the failure message
        raise AssertionError(f"{type(e).__name__}: {e} from {args!r:.300}") from e


# --- one-line inputs -------------------------------------------------------------------------------

@FUZZ
@given(text=tricky_text)
def test_host_addresses_readers_and_rules_raise_only_config_errors(text: str) -> None:
    for fn in (parse_hostport, lambda t: parse_hostport(t, allow_zero=True), ReaderURL.parse, HostRule.parse):
        with contextlib.suppress(ConfigError):
            fn(text)


@st.composite
def balance_fields(draw: st.DrawFn) -> str:
    """Field 54 entries with now and then a character replaced by a look-alike (², ١, ５) or junk."""
    entries = []
    for _ in range(draw(st.integers(1, 3))):
        e = list(draw(st.sampled_from(["1002156C000001234567", "1001840D000000000001"])))
        for _ in range(draw(st.integers(0, 2))):
            e[draw(st.integers(0, 19))] = draw(st.sampled_from("²١５X -\x00é"))
        entries.append("".join(e))
    return "".join(entries)


@settings(max_examples=300)
@given(text=st.one_of(st.text(max_size=60), balance_fields()))
def test_field_54_raises_only_decode_errors(text: str) -> None:
    try:
        for b in parse_balances(text):
            assert isinstance(b.amount, int) and b.currency.isascii()
    except DecodeError:
        pass


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                           max_leaves=10)
GOOD_RECORD = {"mti": "0200", "header": "6000000000", "fields": {"3": ["000000", False], "55": ["9F26", True]}}


@FUZZ
@given(doc=st.one_of(json_values, mutated(GOOD_RECORD)))
def test_sealed_records_of_the_wrong_shape_raise_decode_errors(doc: Any) -> None:
    try:
        msg = _reversal_from_doc(json.dumps(doc).encode())
    except DecodeError:
        return
    assert isinstance(msg, Message) and all(isinstance(k, int) for k in msg.fields)


# --- the crashes reported in issue 8 item 7, one by one ------------------------------------------

def test_listen_port_with_a_unicode_digit() -> None:
    assert "²".isdigit()
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_hostport("127.0.0.1:²", allow_zero=True)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_hostport("127.0.0.1:١٢٣")


def test_host_names_are_checked() -> None:
    assert parse_hostport("[::1]:5000") == ("::1", 5000)
    assert parse_hostport("acquirer.example:5000") == ("acquirer.example", 5000)
    for bad in ("a b:1", "[nope]:1", "-x:1", "ä.example:1", "1.2.3.4.5.6:x"):
        with pytest.raises(ConfigError):
            parse_hostport(bad)


def test_reader_url_with_an_unbalanced_bracket() -> None:
    with pytest.raises(ConfigError, match="malformed"):
        ReaderURL.parse("sim://[demo")


@pytest.mark.parametrize(("change", "message"), [
    ({"pin_tries": math.inf}, "pin_tries must be a whole number"),
    ({"pin_tries": 2.7}, "pin_tries must be a whole number"),
    ({"pin_tries": "3"}, "pin_tries must be a whole number"),
    ({"account": {"balance": math.inf}}, "balance must be a whole number"),
    ({"account": {"balance": 10**13}}, "balance must be"),
    ({"account": {"permissions": 5}}, "permissions must be a list"),
    ({"account": {"currency": "１５６"}}, "currency must be 3 digits"),
    ({"account": "rich"}, r"\[account\] must be a table"),
    ({"pan": 9900010000000019}, "pan must be a string"),
    ({"pan": "99000100000000²9"}, "Luhn"),
    ({"expiry": "３０１２"}, "expiry must be YYMM"),
    ({"pin": "１２３４"}, "pin must be 4–12 digits"),
    ({"cardholder": "A^B"}, "cardholder"),
    ({"discretionary": "1" * 30}, "track 2 holds at most 37"),
    ({"stripe": {"damage": [{"start_in": 0, "end_in": math.inf}]}}, "finite"),
    ({"stripe": {"damage": [{"start_in": 0, "end_in": 10}]}}, "end_in <="),
    ({"stripe": {"damage": [{"start_in": math.nan, "end_in": 1}]}}, "finite"),
    ({"chip": {"protocols": [math.inf]}}, "protocols"),
    ({"chip": {"protocols": "01"}}, "protocols must be a list"),
    ({"chip": {"atc": "x"}}, "atc must be a whole number"),
    ({"chip": {"t0_wire": "no"}}, "t0_wire must be true or false"),
    ({"chip": {"language": "中文"}}, "language"),
    ({"chip": {"applications": [{"aid": "A0000000031010", "priority": math.inf}]}}, "priority"),
    ({"chip": {"applications": [{"aid": "A0000000031010", "cvm": 5}]}}, "cvm must be a list"),
    ({"chip": {"applications": [{"aid": "A0000000031010", "records": 5}]}}, "records must be an array"),
    ({"chip": {"applications": [{"aid": "A0000000031010", "records": [{"sfi": 1.0, "record": 1}]}]}},
     "integer sfi"),
    ({"chip": {"applications": [{"aid": "A0000000031010", "blocked": "no"}]}}, "blocked must be true or false"),
    ({"chip": {"applications": [{"aid": "A0000000031010", "currency": 156}]}}, "currency must be 4 digits"),
])
def test_card_profile_wrong_types_and_inf(change: dict[str, Any], message: str) -> None:
    base = {"name": "t", "pan": "9900020000000018", "expiry": "3012", "service_code": "220"}
    with pytest.raises(ConfigError, match=message):
        parse_profile({**base, **change}, "x.toml")


def test_card_profile_file_with_inf(tmp_path: Path) -> None:
    p = tmp_path / "inf.toml"
    p.write_text('name = "x"\npan = "9900020000000018"\nexpiry = "3012"\nservice_code = "101"\n'
                 "[account]\nbalance = inf\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{p}.*balance"):
        load_profile(str(p))


@pytest.mark.parametrize(("text", "message"), [
    ('[[fault]]\nparams = { contact_ohms = 40.0 }\n', "missing id"),
    ('seed = "x"\n[[fault]]\nid = "user.wrong-pin"\n', "seed must be a whole number"),
    ("seed = inf\n[[fault]]\nid = \"user.wrong-pin\"\n", "seed must be a whole number"),
    ("seed = 1.5\n[[fault]]\nid = \"user.wrong-pin\"\n", "seed must be a whole number"),
    ("seed = -1\n[[fault]]\nid = \"user.wrong-pin\"\n", "seed must be 0"),
    ('fault = "user.wrong-pin"\n', "fault must be an array"),
    ('fault = ["user.wrong-pin"]\n', "must be a table"),
    ('[[fault]]\nid = 5\n', "id must be a fault id"),
    ('[[fault]]\nid = "nope"\n', "unknown fault 'nope'"),
    ('[[fault]]\nid = "reader.dirty-contacts"\nparams = { contact_ohms = inf }\n', "contact_ohms"),
    ('[[fault]]\nid = "reader.dirty-contacts"\nparams = { contact_ohms = "lots" }\n', "contact_ohms"),
    ('[[fault]]\nid = "reader.dirty-contacts"\nparams = [1]\n', "params must be a table"),
    ('[[fault]]\nid = "user.wrong-pin"\nparams = { wrong_pins = "x" }\n', "wrong_pins='x' must be a whole number"),
    ('[[fault]]\nid = "user.wrong-pin"\nparams = { wrong_pins = 1e9 }\n', "wrong_pins=1e\\+09 is outside"),
    ('[[fault]]\nid = "user.wrong-pin"\nparams = { wrong_pins = 1.5 }\n', "wrong_pins must be a whole number"),
    ('[[fault]]\nid = "user.wrong-pin"\nparams = { times = 1 }\n', "unknown parameter 'times'"),
    ('[[fault]]\nid = "host.peak-hours"\nparams = { rule = "respond:every=0" }\n', "every"),
    ('card = "nope"\n[[fault]]\nid = "user.wrong-pin"\n', "unknown card profile"),
    ('txn = "teleport"\n[[fault]]\nid = "user.wrong-pin"\n', "txn must be one of"),
    ('steps = "sign_on"\n[[fault]]\nid = "user.wrong-pin"\n', "steps must be a list"),
    ('steps = ["dance"]\n[[fault]]\nid = "user.wrong-pin"\n', "unknown step"),
    ('steps = ["purchase:1e3"]\n[[fault]]\nid = "user.wrong-pin"\n', "minor units"),
    ('reader = "sim://[x"\n[[fault]]\nid = "user.wrong-pin"\n', "malformed"),
    ('config = { colour = "red" }\n[[fault]]\nid = "user.wrong-pin"\n', "colour"),
    ('config = { reversal_retries = inf }\n[[fault]]\nid = "user.wrong-pin"\n', "reversal.retries"),
    ('expect = 5\n[[fault]]\nid = "user.wrong-pin"\n', "expect must be a table"),
    ('[[fault]]\nid = "user.wrong-pin"\n[expect]\nscreens = "WRONG_PIN"\n', "expect.screens must be a list"),
    ('[[fault]]\nid = "user.wrong-pin"\n[expect]\napproved = "yes"\n', "approved must be true or false"),
    ('[[fault]]\nid = "user.wrong-pin"\n[expect]\ndiagnosis = ["Z9"]\n', "unknown cause group 'Z9'"),
    ('[[fault]]\nid = "user.wrong-pin"\n[expect]\njournal = "lost"\n', "journal must be one of"),
    ('[[fault]]\nid = "user.wrong-pin"\n[expect]\nscreen = ["WRONG_PIN"]\n', "unknown key 'screen'"),
    ('nmae = "typo"\n[[fault]]\nid = "user.wrong-pin"\n', "unknown key 'nmae'"),
])
def test_scenario_file_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        regress.load_scenario_file("s.toml", CAT, text=text)
    assert "s.toml" in str(e.value)


def test_bundled_scenario_files_still_load() -> None:
    assert len(regress.bundled_scenario_files(CAT)) == len(SCENARIO_BASES)


@pytest.mark.parametrize("text", ["[reversal]\nretries = inf", "[reversal]\nretries = 1.5",
                                  "[reversal]\nretries = -1", "[reversal]\nretries = true",
                                  "reversal = 3", "[timeouts]\nresponse = inf", "[timeouts]\nresponse = nan",
                                  "[timeouts]\nresponse = true", 'currency = "１５６"', "currency = 156",
                                  'terminal_id = "终端号码12"', "software_version = 300", 'operator_password = "x"',
                                  '[emv]\naids = ["zz"]', "[emv]\nallow_fallback = 1", '[emv]\nretries = 3',
                                  'disabled_entry = ["tap"]', 'reader = "sim://[demo"', 'host = "127.0.0.1:²"',
                                  '[keys]\ntmk = "０１"', "[keys]\ntmk = 5"])
def test_config_wrong_types_and_inf(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=str(p)):
        config.load(p)


@pytest.mark.parametrize("text", ["1002156C00000123456²", "1002156C0000012345١٢", "10021５6C000001234567",
                                  "1002156X000001234567"])
def test_parse_balances_on_unicode_digits(text: str) -> None:
    assert len(text) == 20
    with pytest.raises(DecodeError, match="malformed balance entry"):
        parse_balances(text)


@pytest.mark.parametrize("doc", [
    [], "x", {"mti": "0200"}, {"mti": 200, "header": "", "fields": {}},
    {"mti": "0200", "header": "zz", "fields": {}}, {"mti": "0200", "header": "", "fields": []},
    {"mti": "0200", "header": "", "fields": {"x": ["1", False]}},
    {"mti": "0200", "header": "", "fields": {"3": "000000"}},
    {"mti": "0200", "header": "", "fields": {"3": ["000000"]}},
    {"mti": "0200", "header": "", "fields": {"55": ["zz", True]}},
    {"mti": "0200", "header": "", "fields": {"3": [1, False]}},
])
def test_a_sealed_journal_record_of_the_wrong_shape(tmp_path: Path, doc: Any) -> None:
    """A record that decrypts (right key) but has the wrong shape: DecodeError, never KeyError/TypeError."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    j = Journal(tmp_path / "j.sqlite3", clock=VirtualClock())
    nonce = bytes(12)
    blob = nonce + AESGCM(j._key).encrypt(nonce, json.dumps(doc).encode(), b"posemu-reversal")
    j.db.execute("INSERT INTO journal (created, updated, kind, stan, date, status, reversal, reversal_blob)"
                 " VALUES ('', '', 'purchase', '000001', '0101', 'unknown', 'pending', ?)", (blob,))
    with pytest.raises(DecodeError, match="sealed reversal record"):
        j.pending_reversals()
    j.db.execute("UPDATE journal SET reversal_blob = ?", (b"short",))
    with pytest.raises(CryptoError):
        j.pending_reversals()
    j.close()
