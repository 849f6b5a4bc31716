"""Codec: build + encode + decode of a full balance inquiry, posemu's API vs raw pyiso8583.

Both sides do the same work on the same message: build it (posemu: ``financial_request``; raw:
a dict literal), encode it, decode the bytes. Target: posemu ≤ 1.2× raw.
"""

from __future__ import annotations

import datetime as dt
import timeit

import iso8583

from protocol.iso import decode, encode
from protocol.specs import CUP, ISO87ASCII, Profile
from protocol.txn import CardData, EntryMode, TerminalIds, TxnType, financial_request
from tests.bench import BenchResult

PAN = "9900010000000019"
NOW = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
CARD = CardData(PAN, EntryMode.SWIPE, "3012", PAN + "=30121010000000000")
PINBLOCK = bytes.fromhex("0123456789ABCDEF")


def _ours(profile: Profile, ids: TerminalIds) -> None:
    msg = financial_request(profile, ids, TxnType.BALANCE, CARD, stan="000123", now=NOW, pin_block=PINBLOCK)
    decode(encode(msg, profile), profile)


def _raw_doc(profile: Profile) -> dict[str, str]:
    """The same message as pyiso8583 wants it (hex for binary and BCD-with-D track data).

    No field 64: ``financial_request`` leaves the MAC to ``session.seal``, so neither side has it.
    """
    cup = profile is CUP
    doc = {
        "t": "0200", "2": PAN, "3": "310000", "11": "000123", "12": "090000", "13": "0101", "14": "3012",
        "22": "021", "25": "00", "26": "12", "35": (PAN + "D30121010000000000") if cup else CARD.track2 or "",
        "41": "POSEMU01", "42": "898310012345678", "49": "156", "52": PINBLOCK.hex(),
        "53": "2600000000000000", "60": "01000001000",
    }
    if cup:
        doc["h"] = CUP.default_header.hex()
    else:
        doc["7"] = "0101090000"
    return doc


def _raw(profile: Profile) -> None:
    doc = _raw_doc(profile)
    data, _ = iso8583.encode(doc, profile.spec)
    iso8583.decode(bytes(data), profile.spec)


def _paired(ours: object, raw: object, n: int, rounds: int = 9) -> tuple[float, float, float]:
    """Interleaved rounds (ours, raw, ours, raw…) so both sides see the same machine state; returns
    the best ns/op of each and the median of the per-round ratios (robust to noisy neighbours)."""
    t_ours, t_raw = timeit.Timer(ours), timeit.Timer(raw)  # type: ignore[arg-type]
    a, b, ratios = [], [], []
    for _ in range(rounds):
        x = t_ours.timeit(number=n)
        y = t_raw.timeit(number=n)
        a.append(x)
        b.append(y)
        ratios.append(x / y)
    ratios.sort()
    return min(a) / n * 1e9, min(b) / n * 1e9, ratios[len(ratios) // 2]


def run() -> list[BenchResult]:
    out = []
    for profile in (CUP, ISO87ASCII):
        ids = TerminalIds("POSEMU01", "898310012345678", profile.default_header)
        # same message on both sides
        ours = encode(financial_request(profile, ids, TxnType.BALANCE, CARD, stan="000123", now=NOW,
                                        pin_block=PINBLOCK), profile)
        raw, _ = iso8583.encode(_raw_doc(profile), profile.spec)
        same = ours == bytes(raw)
        ns_ours, ns_raw, ratio = _paired(lambda p=profile, i=ids: _ours(p, i), lambda p=profile: _raw(p), 2000)
        out.append(BenchResult(f"{profile.name}: posemu build+encode+decode", ns_ours, "ns/op"))
        out.append(BenchResult(f"{profile.name}: raw pyiso8583 same message", ns_raw, "ns/op",
                               note="identical bytes" if same else "BYTES DIFFER"))
        out.append(BenchResult(f"{profile.name}: ratio posemu/raw (median of paired rounds)", ratio, "x", "<= 1.2x",
                               ratio <= 1.2 and same, note="" if same else "not comparable: bytes differ"))
    return out
