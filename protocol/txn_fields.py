"""The data of terminal transactions as ISO 8583 field values: what the terminal read from a card
(:class:`CardData`), who the terminal is (:class:`TerminalIds`), CUP field 60 (:class:`Field60`),
balances in field 54 (:class:`Balance`), how a transaction names its original (:class:`OriginalRef`,
fields 37, 38, 61), settlement totals in field 48 (:class:`BatchTotals`) and one transaction of a
batch upload (:class:`UploadItem`). The messages that carry them are built in :mod:`protocol.txn`.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import DecodeError, EncodeError
from protocol.masking import mask_pan
from protocol.txn_codes import EntryMode, TxnType


@dataclass(frozen=True, slots=True)
class CardData:
    """What the terminal read from a card, ready for a request. ``repr`` never shows it."""

    pan: str
    entry: EntryMode
    expiry: str | None = None          # YYMM
    track2: str | None = None          # between sentinels, "=" separator
    track3: str | None = None
    pan_seq: str | None = None
    icc: bytes | None = None           # BER-TLV for field 55
    service_code: str | None = None

    def __repr__(self) -> str:
        return f"CardData(pan={mask_pan(self.pan)}, entry={self.entry.name})"


@dataclass(frozen=True, slots=True)
class TerminalIds:
    """Who the terminal is: field 41/42, the header bytes, the current batch."""

    tid: str
    mid: str
    header: bytes = b""
    batch: str = "000001"

    def __post_init__(self) -> None:
        if len(self.tid) != 8:
            raise EncodeError("terminal id (field 41) must be 8 characters", field="41")
        if len(self.mid) != 15:
            raise EncodeError("merchant id (field 42) must be 15 characters", field="42")
        if len(self.batch) != 6 or not self.batch.isdigit():
            raise EncodeError("batch number must be 6 digits", field="60.2")


@dataclass(frozen=True, slots=True)
class Field60:
    """CUP field 60: 60.1 type code (n2), 60.2 batch (n6), 60.3 network management code (n3)."""

    type_code: str
    batch: str
    net_code: str = "000"

    def encode(self) -> str:
        return self.type_code + self.batch + self.net_code

    @classmethod
    def parse(cls, text: str) -> Field60:
        if len(text) < 8 or not text.isdigit():
            raise DecodeError("field 60 must be at least 8 digits", field="60", raw=text.encode())
        return cls(text[:2], text[2:8], text[8:11] or "000")


@dataclass(frozen=True, slots=True)
class Balance:
    """One entry of field 54: account type, amount type (01 ledger, 02 available), currency,
    signed amount in minor units."""

    amount: int
    currency: str = "156"
    account_type: str = "10"
    amount_type: str = "02"

    def encode(self) -> str:
        sign = "C" if self.amount >= 0 else "D"
        if abs(self.amount) >= 10**12:
            raise EncodeError("balance does not fit 12 digits", field="54")
        return f"{self.account_type}{self.amount_type}{self.currency}{sign}{abs(self.amount):012d}"


def encode_balances(entries: list[Balance]) -> str:
    return "".join(b.encode() for b in entries)


def parse_balances(text: str) -> list[Balance]:
    """Parse field 54 (20 characters per entry).

    >>> parse_balances("1002156C000001234567")
    [Balance(amount=1234567, currency='156', account_type='10', amount_type='02')]

    Only ASCII digits count (``"²".isdigit()`` is true in Python, and ``int("١٢")`` is 12).
    """
    if not isinstance(text, str):
        raise DecodeError(f"field 54 must be text, not {type(text).__name__}", field="54")
    if not text or len(text) % 20:
        raise DecodeError(f"field 54 length {len(text)} is not a multiple of 20", field="54",
                          raw=text.encode("ascii", "replace"))
    out = []
    for i in range(0, len(text), 20):
        e = text[i:i + 20]
        sign, digits = e[7], e[8:]
        if sign not in ("C", "D") or not (e.isascii() and digits.isdigit() and e[:7].isdigit()):
            raise DecodeError("malformed balance entry", field=f"54[{i // 20}]", pos=i,
                              raw=e.encode("ascii", "replace"))
        amt = int(digits)
        out.append(Balance(amt if sign == "C" else -amt, e[4:7], e[:2], e[2:4]))
    return out


@dataclass(frozen=True, slots=True)
class OriginalRef:
    """How a void, refund or completion names its original: batch, STAN and date (CUP field 61:
    61.1 batch n6, 61.2 STAN n6, 61.3 date MMDD), retrieval reference number (37) and authorization
    code (38) as the host gave them."""

    batch: str
    stan: str
    date: str
    rrn: str | None = None
    auth_code: str | None = None

    def __post_init__(self) -> None:
        for name, value, n in (("batch", self.batch, 6), ("STAN", self.stan, 6), ("date", self.date, 4)):
            if not (isinstance(value, str) and len(value) == n and value.isascii() and value.isdigit()):
                raise EncodeError(f"original {name} must be {n} digits", field="61")
        if self.rrn is not None and not (len(self.rrn) == 12 and self.rrn.isascii() and self.rrn.isalnum()):
            raise EncodeError("original retrieval reference number must be 12 characters", field="37")
        if self.auth_code is not None and not (0 < len(self.auth_code) <= 6 and self.auth_code.isascii()
                                               and self.auth_code.isalnum()):
            raise EncodeError("original authorization code must be 1 to 6 characters", field="38")

    def field61(self) -> str:
        return self.batch + self.stan + self.date

    @classmethod
    def parse61(cls, text: str) -> tuple[str, str, str]:
        """(batch, STAN, date) of a field 61 (the date may be absent: ``0000``)."""
        if not isinstance(text, str) or len(text) < 12 or not text[:16].isascii() or not text[:12].isdigit():
            raise DecodeError("field 61 must start with batch (6) and STAN (6) digits", field="61")
        date = text[12:16] if len(text) >= 16 and text[12:16].isdigit() else "0000"
        return text[:6], text[6:12], date


@dataclass(frozen=True, slots=True)
class BatchTotals:
    """Field 48 of a settlement (0500/0510), CUP layout: debit amount n12 + count n3, credit amount
    n12 + count n3, result flag, then the same for foreign cards. Debits are the batch's approved,
    unvoided purchases and completions; credits its refunds. The flag is ``0`` in the request; in
    the answer ``1`` the host's totals agree, ``2`` they do not.

    >>> t = BatchTotals(12_50, 1, 3_00, 1)
    >>> t.encode()
    '00000000125000100000000030000100000000000000000000000000000000'
    >>> BatchTotals.parse(t.encode()) == t
    True
    """

    debit_amount: int = 0
    debit_count: int = 0
    credit_amount: int = 0
    credit_count: int = 0
    flag: str = "0"
    foreign_debit_amount: int = 0
    foreign_debit_count: int = 0
    foreign_credit_amount: int = 0
    foreign_credit_count: int = 0
    foreign_flag: str = "0"

    def encode(self) -> str:
        for n, v in ((12, self.debit_amount), (3, self.debit_count), (12, self.credit_amount),
                     (3, self.credit_count), (12, self.foreign_debit_amount), (3, self.foreign_debit_count),
                     (12, self.foreign_credit_amount), (3, self.foreign_credit_count)):
            if not 0 <= v < 10**n:
                raise EncodeError(f"settlement total {v} does not fit {n} digits", field="48")
        return (f"{self.debit_amount:012d}{self.debit_count:03d}{self.credit_amount:012d}{self.credit_count:03d}"
                f"{self.flag}{self.foreign_debit_amount:012d}{self.foreign_debit_count:03d}"
                f"{self.foreign_credit_amount:012d}{self.foreign_credit_count:03d}{self.foreign_flag}")

    @classmethod
    def parse(cls, text: str) -> BatchTotals:
        if not isinstance(text, str) or len(text) < 31 or not text.isascii():
            raise DecodeError("field 48 is not settlement totals (at least 31 characters)", field="48")
        text = text.ljust(62, "0")
        digits = text[:30] + text[31:61]
        if not digits.isdigit():
            raise DecodeError("settlement totals must be digits", field="48", raw=text.encode())
        return cls(int(text[0:12]), int(text[12:15]), int(text[15:27]), int(text[27:30]), text[30],
                   int(text[31:43]), int(text[43:46]), int(text[46:58]), int(text[58:61]), text[61])

    def same_totals(self, other: BatchTotals) -> bool:
        return (self.debit_amount, self.debit_count, self.credit_amount, self.credit_count) == (
            other.debit_amount, other.debit_count, other.credit_amount, other.credit_count)

    @property
    def agreed(self) -> bool:
        return self.flag == "1"


@dataclass(frozen=True, slots=True)
class UploadItem:
    """One transaction of a batch upload: what the journal keeps of it (never the full PAN)."""

    txn: TxnType
    amount: int
    original: OriginalRef          # its own batch, STAN, date, RRN and authorization code
