"""What a request asks, read from its fields alone (no store, no clock): the kind of a financial or
authorization request, the permission it needs, its batch, the card it names, whether the chip
verified the PIN, and the masked one-line summary the host logs. Pure functions over
:class:`protocol.iso.Message`, used by :class:`emulator.host.logic.HostLogic` and its collaborators."""

from __future__ import annotations

from protocol import tlv
from protocol.errors import PosemuError
from protocol.iso import Message
from protocol.masking import mask_pan
from protocol.txn import TxnType


def permission(txn: TxnType) -> str:
    """The permission (card and terminal) a transaction of the set needs: ``preauth`` for the
    pre-authorization family (which ``purchase`` covers too, :func:`permitted`), else ``purchase``."""
    return "preauth" if txn in (TxnType.PREAUTH, TxnType.PREAUTH_VOID, TxnType.COMPLETION,
                                TxnType.COMPLETION_VOID) else "purchase"


TXNSET = frozenset({TxnType.VOID, TxnType.REFUND, TxnType.PREAUTH, TxnType.PREAUTH_VOID, TxnType.COMPLETION,
                    TxnType.COMPLETION_VOID})


def batch_of(req: Message) -> str | None:
    """The batch a request belongs to (60.2)."""
    f60 = req.get(60)
    return f60[2:8] if isinstance(f60, str) and len(f60) >= 8 and f60[2:8].isdigit() else None


MONEY_KINDS = frozenset({"purchase", "preauth"})
"""Transactions that move money (a pre-authorization holds it): idempotent, reversible."""


def txn_kind(req: Message) -> str | None:
    """What a financial or authorization request asks, by MTI and processing code (field 3):
    ``balance`` (31 in an 0100 or 0200), ``purchase`` (00 in an 0200), ``preauth`` (03, or 00 in an
    0100); ``None`` for anything else (answered 12).

    >>> [txn_kind(Message(m, {3: pc})) for m, pc in (("0200", "310000"), ("0100", "030000"), ("0200", "030000"))]
    ['balance', 'preauth', None]
    """
    if req.mti not in ("0100", "0200"):
        return None
    pc = req.fields.get(3)
    if not isinstance(pc, str) or len(pc) != 6:
        return None
    if pc.startswith("31"):
        return "balance"
    if req.mti == "0200":
        return "purchase" if pc.startswith("00") else None
    return "preauth" if pc[:2] in ("00", "03") else None


def permitted(kind: str, permissions: frozenset[str]) -> bool:
    """A permission list allows ``kind``; ``purchase`` covers a pre-authorization too."""
    return kind in permissions or (kind == "preauth" and "purchase" in permissions)


def summary(msg: Message) -> str:
    """One masked line for a log: MTI and the fields that say what happened (PAN 6+4, never track
    data, PIN block, keys or MAC).

    >>> summary(Message("0200", {2: "9900010000000019", 3: "000000", 4: "000000001250", 11: "000123",
    ...                          41: "POSEMU01", 52: b"\\x00" * 8}))
    '0200 tid=POSEMU01 stan=000123 pc=000000 amount=000000001250 pan=990001******0019'
    """
    f = msg.redacted()
    parts = [msg.mti]
    for n, name in ((41, "tid"), (11, "stan"), (3, "pc"), (4, "amount"), (70, "net"), (39, "rc"), (38, "auth"),
                    (2, "pan")):
        if n in f:
            parts.append(f"{name}={f[n]}")
    if 2 not in f and 35 in msg:
        t2 = msg.get(35)
        if isinstance(t2, str):
            parts.append(f"pan={mask_pan(t2.partition('=')[0])}")
    if 64 in msg or 128 in msg:
        parts.append("mac")
    return " ".join(parts)


def offline_pin_verified(req: Message) -> bool:
    """Chip data (field 55) says the card itself verified the PIN: CVM Results 9F34, method
    plaintext/enciphered offline PIN (01, 03, 04, 05) with result 02 successful (EMV Book 3 C3)."""
    icc = req.get(55)
    if not isinstance(icc, bytes) or not str(req.get(22, "")).startswith("05"):
        return False
    try:
        cvm = tlv.flatten(tlv.decode(icc)).get(0x9F34)
    except PosemuError:
        return False
    return cvm is not None and len(cvm) == 3 and (cvm[0] & 0x3F) in (0x01, 0x03, 0x04, 0x05) and cvm[2] == 0x02


def card_from(req: Message) -> tuple[str | None, str | None]:
    """The PAN and expiry (YYMM) a request names: fields 2 and 14, else from track 2 (35)."""
    f = req.fields
    pan = f.get(2)
    expiry = f.get(14)
    t2 = f.get(35)
    if isinstance(t2, str) and "=" in t2:
        tpan, _, rest = t2.partition("=")
        pan = pan if isinstance(pan, str) else tpan
        if not isinstance(expiry, str):
            expiry = rest[:4]
    return (pan if isinstance(pan, str) else None, expiry if isinstance(expiry, str) else None)
