"""The Wireshark dissector posemu ships: where it is, how it is installed, and its data tables.

``posemu_iso8583.lua`` (package data beside this module) decodes both ISO 8583 profiles —
``cup`` with its TPDU, application header and BCD fields, ``iso87ascii`` with ASCII lengths and
fields up to 128 — from the same field tables the codec uses: the block between the
``BEGIN GENERATED`` and ``END GENERATED`` lines is :func:`lua_tables`, built from
:mod:`protocol.specs`, :mod:`protocol.txn` and :mod:`protocol.tlv`. A test checks the shipped
file against it; after changing a profile, run ``python -m emulator.wireshark`` (from a source
checkout) to regenerate the block.

Wireshark looks for Lua plugins in its personal plugin folder (``tshark -G folders``, "Personal
Lua Plugins"; ``~/.local/lib/wireshark/plugins`` on Linux and macOS, ``%APPDATA%\\Wireshark\\plugins``
on Windows); :func:`install` copies the dissector there.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from protocol.errors import EnvironmentProblem
from protocol.specs import PROFILES, Profile
from protocol.tlv import TAG_NAMES
from protocol.txn import RC, EntryMode, NetCode, TxnType

DISSECTOR_FILE = "posemu_iso8583.lua"
PROTO_ABBR = "posemu8583"
BEGIN = "-- BEGIN GENERATED"
END = "-- END GENERATED"
TPDU_ID = b"\x60"
"""First byte of a CUP TPDU (shared protocol facts §6): what tells a ``cup`` frame from the bytes."""


def dissector_source() -> str:
    """The shipped dissector's Lua text."""
    return (resources.files(__name__) / DISSECTOR_FILE).read_text(encoding="utf-8")


def dissector_path() -> Path:
    """The shipped dissector as a file on disk (package data of an installed or source tree)."""
    ref = resources.files(__name__) / DISSECTOR_FILE
    path = Path(str(ref))
    if not path.is_file():     # a zipped install: no stable path to hand to Wireshark
        raise EnvironmentProblem(f"the dissector is not a plain file here ({ref}); use `posemu dissector install`")
    return path


def personal_plugin_dir(folders_output: str | None = None) -> Path:
    """Wireshark's personal Lua plugin folder: from ``tshark -G folders`` output when given, else
    the documented default for this platform."""
    if folders_output:
        for line in folders_output.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == "personal lua plugins" and value.strip():
                return Path(value.strip())
    if sys.platform.startswith("win"):
        appdata = os.environ.get("APPDATA")
        if appdata:
            return Path(appdata) / "Wireshark" / "plugins"
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"


def install(dest: Path) -> Path:
    """Copy the dissector into ``dest`` (created if missing); returns the file written."""
    target = dest / DISSECTOR_FILE
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / f".{DISSECTOR_FILE}.{os.getpid()}.tmp"
        tmp.write_text(dissector_source(), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as e:
        raise EnvironmentProblem(f"cannot install the dissector into {dest}: {e.strerror or e}") from None
    return target


# --- the generated block -----------------------------------------------------------------------

def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _field_entry(profile: Profile, key: str) -> dict[str, Any]:
    f = profile.spec[key]
    enc = f["data_enc"]
    if enc not in ("b", "ascii"):
        raise ValueError(f"{profile.name} field {key}: data encoding {enc!r} is not supported by the dissector")
    if f["len_type"] and f["len_enc"] not in ("b", "bcd", "ascii"):
        raise ValueError(f"{profile.name} field {key}: length encoding {f['len_enc']!r} is not supported")
    return {
        "kind": profile.kinds[key].value,
        "enc": enc,
        "len_enc": f["len_enc"],
        "len_type": int(f["len_type"]),
        "max_len": int(f["max_len"]),
        "nibbles": f.get("len_count", "bytes") == "nibbles",
        "left_pad": (f.get("left_pad") or "")[:1],
        "right_pad": (f.get("right_pad") or "")[:1],
        "desc": str(f.get("desc", "")),
    }


def _lua_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return _lua_str(str(v))


def _profile_table(profile: Profile) -> list[str]:
    spec = profile.spec
    for k in ("t", "p"):
        if spec[k]["data_enc"] not in ("b", "ascii"):
            raise ValueError(f"{profile.name}: {k} encoding {spec[k]['data_enc']!r} is not supported")
    header_len = int(spec["h"]["max_len"]) if spec["h"]["max_len"] > 0 else 0
    if header_len != profile.header_len:
        raise ValueError(f"{profile.name}: spec header {header_len} != profile header_len {profile.header_len}")
    tpdu = profile.default_header[:1] == TPDU_ID
    lines = [
        f"  [{_lua_str(profile.name)}] = {{",
        f"    description = {_lua_str(profile.description)},",
        f"    header_len = {header_len},",
        f"    tpdu = {'true' if tpdu else 'false'},",
        f"    mti_enc = {_lua_str(spec['t']['data_enc'])},",
        f"    bitmap_enc = {_lua_str(spec['p']['data_enc'])},",
        f"    secondary_bitmap = {'true' if '1' in spec else 'false'},",
        f"    max_frame = {profile.max_frame},",
        "    fields = {",
    ]
    for key in sorted(profile.kinds, key=int):
        entry = _field_entry(profile, key)
        body = ", ".join(f"{k} = {_lua_value(v)}" for k, v in entry.items())
        lines.append(f"      [{int(key)}] = {{ {body} }},")
    lines += ["    },", "  },"]
    return lines


_ACRONYMS = {"pin": "PIN", "mac": "MAC"}


def _words(name: str) -> str:
    """``WRONG_PIN`` → ``Wrong PIN``."""
    words = name.lower().split("_")
    return " ".join(_ACRONYMS.get(w, w.capitalize() if i == 0 else w) for i, w in enumerate(words))


def lua_tables() -> str:
    """The generated block of the dissector (without its BEGIN/END lines)."""
    out = ["local PROFILES = {"]
    for name in sorted(PROFILES):
        out += _profile_table(PROFILES[name])
    out.append("}")
    out.append("local RESPONSE_CODES = {")
    out += [f"  [{_lua_str(rc.value)}] = {_lua_str(_words(rc.name))}," for rc in sorted(RC, key=lambda r: r.value)]
    out.append("}")
    out.append("local PROCESSING_CODES = {   -- field 3, first two digits")
    out += [f"  [{_lua_str(t.processing_code[:2])}] = {_lua_str(_words(t.name))},"
            for t in TxnType if t.processing_code]
    out.append("}")
    out.append("local TYPE_CODES = {         -- CUP field 60.1")
    out += [f"  [{_lua_str(t.type_code)}] = {_lua_str(_words(t.name))}," for t in TxnType]
    out.append("}")
    out.append("local NET_CODES = {          -- field 70, CUP field 60.3 of an 0820")
    out += [f"  [{_lua_str(c.value)}] = {_lua_str(_words(c.name))}," for c in NetCode]
    out.append("}")
    out.append("local ENTRY_MODES = {        -- field 22, first two digits")
    out += [f"  [{_lua_str(e.value)}] = {_lua_str(_words(e.name))}," for e in EntryMode]
    out.append("}")
    out.append("local TAG_NAMES = {          -- EMV tags (field 55)")
    out += [f"  [0x{tag:X}] = {_lua_str(name)}," for tag, name in sorted(TAG_NAMES.items())]
    out.append("}")
    return "\n".join(out) + "\n"


def render(source: str) -> str:
    """``source`` with its generated block replaced by the current :func:`lua_tables`."""
    head, sep1, rest = source.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep1 and sep2):
        raise ValueError(f"the dissector has no {BEGIN!r} … {END!r} block")
    first_line_end = rest.index("\n") + 1
    return head + BEGIN + rest[:first_line_end] + lua_tables() + END + tail


def generated_block(source: str) -> str:
    """The generated block as it stands in ``source``."""
    _, _, rest = source.partition(BEGIN)
    block, _, _ = rest.partition(END)
    return block[block.index("\n") + 1:]


__all__ = ["DISSECTOR_FILE", "PROTO_ABBR", "dissector_path", "dissector_source", "install", "lua_tables",
           "personal_plugin_dir", "render"]
