"""Terminal transactions as ISO 8583 messages: builders, response codes and private fields.

The shapes follow CUP-style POS usage (shared protocol facts §6):

* sign-on ``0800``/``0810`` — fields 11, 41, 42, 60 (60.1 ``00``, 60.2 batch, 60.3 key scheme:
  ``001`` single DES, ``003`` double length, ``004`` double + TDK), 63 operator; the response
  adds 12, 13, 32, 37, 39 and field 62 with the working keys under the terminal master key
  (binary on ``cup``; hex text where the profile's field 62 is text, as the ``ans`` field 62 of
  ISO 8583:1987 on ``iso87ascii``: :func:`key_block_value`, :func:`key_block`).
  On ``iso87ascii`` field 70 ``001`` marks the sign-on as well.
* balance inquiry ``0200``/``0210`` — processing code ``31xxxx``, 60.1 ``01``, balance in 54.
* purchase ``0200``/``0210`` — processing code ``00xxxx``, 60.1 ``22``, amount in field 4.
* reversal ``0400``/``0410`` — the original's data elements, field 39 the reason (``98`` no
  response, ``96`` …, ``A0`` response MAC error), the original's batch/STAN/date in field 61
  (``cup``) or field 90 (``iso87ascii``).

The rest of the standard set (issue 12) follows the transaction table of an open-source CUP POS
application (CaoEnXin/LiaoYang_POS ``Src/globalvar.c`` ``TrTable``: field 25, 60.1, 60.3 per
transaction; ``Src/tranproc.c``: the MTI, processing code and original-data fields of each):

============================ ====== ========= ==== ===== =====================================
transaction                  MTI    field 3   25   60.1  references the original by
============================ ====== ========= ==== ===== =====================================
void 消费撤销                0200   200000    00   23    37 RRN, 38 auth code, 61 batch+STAN
refund 退货                  0220   200000    00   25    37 RRN, 61 batch+STAN+date
pre-authorization 预授权     0100   030000    06   10    —
pre-auth void 预授权撤销     0100   200000    06   11    38 auth code, 61 batch+STAN+date
completion 预授权完成(请求)  0200   000000    06   20    38 auth code, 61 batch+STAN+date
completion void 完成撤销     0200   200000    06   21    37, 38, 61 batch+STAN+date
settlement 结算              0500   —         —    00    60.3 ``201`` (``202`` after a batch upload)
batch upload 批上送          0320   original  —    orig. 60.3 ``201``; 61 batch+STAN+date, 37, 38
============================ ====== ========= ==== ===== =====================================

Settlement totals travel in field 48 (:class:`BatchTotals`), laid out as that application lays them
(``Src/tranproc.c`` settlement): debit amount n12 + count n3, credit amount n12 + count n3, a result
flag (``0`` in the request; in the answer ``1`` totals agree, ``2`` they do not), then the same for
foreign cards. The answer's response code says it too (ISO 8583 ``95`` reconcile error): the
terminal then uploads each transaction of the batch (0320) and settles again.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from dataclasses import dataclass

from protocol.errors import DecodeError, EncodeError
from protocol.iso import Message, Value
from protocol.masking import mask_pan
from protocol.specs import Kind, Profile


class TxnType(enum.Enum):
    """Transaction types: processing code (field 3) and CUP type code (60.1); the MTI, POS condition
    code (field 25) and the rest are properties (see the table in the module docstring)."""

    SIGN_ON = ("", "00")
    BALANCE = ("310000", "01")
    PURCHASE = ("000000", "22")
    VOID = ("200000", "23")
    REFUND = ("200000", "25")
    PREAUTH = ("030000", "10")
    PREAUTH_VOID = ("200000", "11")
    COMPLETION = ("000000", "20")
    COMPLETION_VOID = ("200000", "21")

    @property
    def processing_code(self) -> str:
        return self.value[0]

    @property
    def type_code(self) -> str:
        return self.value[1]

    @property
    def mti(self) -> str:
        """The request MTI: 0100 for the pre-authorization family, 0220 for a refund, else 0200."""
        return _MTIS.get(self, "0200")

    @property
    def condition(self) -> str:
        """POS condition code (field 25): ``06`` pre-authorization family, ``00`` normal."""
        return "06" if self in _PREAUTH_FAMILY else "00"

    @property
    def kind(self) -> str:
        """The name the journal, the host log and the CLI use (``purchase``, ``void``, …)."""
        return self.name.lower() if self is not TxnType.BALANCE else "balance"

    @property
    def reversible(self) -> bool:
        """Moves money or a hold: an unknown outcome is reversed (0400)."""
        return self not in (TxnType.SIGN_ON, TxnType.BALANCE)

    @property
    def references_original(self) -> bool:
        """Names an earlier transaction (fields 37, 38, 61)."""
        return self in _REFERENCING

    @property
    def carries_chip_data(self) -> bool:
        """Asks the chip for an online cryptogram (field 55, second GENERATE AC after the answer):
        balance, purchase, pre-authorization. A void, refund or completion names an authorized
        original and sends the card's identity only."""
        return self in (TxnType.BALANCE, TxnType.PURCHASE, TxnType.PREAUTH)

    @property
    def credit(self) -> bool:
        """Gives money back to the cardholder (a credit in the settlement totals)."""
        return self is TxnType.REFUND

    @classmethod
    def from_kind(cls, kind: str) -> TxnType | None:
        for t in cls:
            if t.kind == kind:
                return t
        return None

    @classmethod
    def from_request(cls, msg: Message) -> TxnType | None:
        """The transaction a request asks for: by MTI, processing code and field 25 (60.1 confirms
        when present). ``None`` for anything else."""
        if msg.mti in ("0800", "0810"):
            return cls.SIGN_ON
        pc = msg.get(3)
        if not isinstance(pc, str) or len(pc) != 6:
            return None
        mti = msg.mti[:2] + str(int(msg.mti[2]) & ~1) + msg.mti[3] if msg.mti[2:3].isdigit() else msg.mti
        preauth = msg.get(25) == "06"
        f60 = msg.get(60)
        type_code = f60[:2] if isinstance(f60, str) and len(f60) >= 2 else None
        return _txn_of(mti, pc[:2], preauth, type_code)


@functools.lru_cache(maxsize=256)
def _txn_of(mti: str, pc2: str, preauth: bool, type_code: str | None) -> TxnType | None:
    """:meth:`TxnType.from_request` once the request is reduced to what decides it (memoised: a host
    asks it for every request)."""
    cls = TxnType
    for t in cls:
        if t is cls.SIGN_ON or t.mti != mti or t.processing_code[:2] != pc2:
            continue
        if type_code is not None and type_code == t.type_code:
            return t
    guess = {("0200", "31"): cls.BALANCE, ("0200", "00"): cls.COMPLETION if preauth else cls.PURCHASE,
             ("0200", "20"): cls.COMPLETION_VOID if preauth else cls.VOID, ("0220", "20"): cls.REFUND,
             ("0100", "03"): cls.PREAUTH, ("0100", "20"): cls.PREAUTH_VOID}
    return guess.get((mti, pc2))


_PREAUTH_FAMILY = frozenset({TxnType.PREAUTH, TxnType.PREAUTH_VOID, TxnType.COMPLETION, TxnType.COMPLETION_VOID})
_REFERENCING = frozenset({TxnType.VOID, TxnType.REFUND, TxnType.PREAUTH_VOID, TxnType.COMPLETION,
                          TxnType.COMPLETION_VOID})
_MTIS = {TxnType.PREAUTH: "0100", TxnType.PREAUTH_VOID: "0100", TxnType.REFUND: "0220", TxnType.SIGN_ON: "0800"}
#: what each void cancels
VOIDS = {TxnType.PURCHASE: TxnType.VOID, TxnType.PREAUTH: TxnType.PREAUTH_VOID,
         TxnType.COMPLETION: TxnType.COMPLETION_VOID}


class NetCode(enum.Enum):
    """Network management information code: ISO 8583:1987 field 70 (``iso87ascii``), or CUP 60.3
    of an 0820 (``cup``; a CUP 0800 is always a sign-on and its 60.3 names the key scheme)."""

    SIGN_ON = "001"
    SIGN_OFF = "002"
    ECHO = "301"

    @classmethod
    def of(cls, msg: Message) -> NetCode | None:
        """The network management function of an 08x0 message, or ``None`` if it has none."""
        if msg.mti[:3] not in ("080", "081", "082", "083"):
            return None
        f70 = msg.get(70)
        if isinstance(f70, str):
            try:
                return cls(f70)
            except ValueError:
                return None
        if msg.mti[:3] in ("080", "081"):
            return cls.SIGN_ON
        f60 = msg.get(60)
        code = f60[8:11] if isinstance(f60, str) and len(f60) >= 11 else ""
        try:
            return cls(code)
        except ValueError:
            return None


class RC(enum.Enum):
    """ISO 8583 response codes (field 39) the host simulator gives, with their meaning."""

    APPROVED = "00"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    INVALID_CARD = "14"
    FORMAT_ERROR = "30"
    EXPIRED_CARD = "54"
    WRONG_PIN = "55"
    NOT_PERMITTED_CARDHOLDER = "57"
    NOT_PERMITTED_TERMINAL = "58"
    INSUFFICIENT_FUNDS = "51"
    RESTRICTED_CARD = "62"
    PIN_TRIES_EXCEEDED = "75"
    UNKNOWN_ORIGINAL = "25"          # unable to locate the original (reversal, void, refund, completion)
    ORIGINAL_AMOUNT_INCORRECT = "64"  # CUP: 原始金额错误 (a void's amount is not its original's)
    RECONCILE_ERROR = "95"           # settlement totals do not agree: upload the batch
    ISSUER_UNAVAILABLE = "91"
    SYSTEM_MALFUNCTION = "96"
    SIGN_ON_REQUIRED = "77"          # CUP: batch/sign-on mismatch, terminal must sign on again
    DUPLICATE = "94"                 # duplicate transmission: a STAN reused for another transaction
    MAC_ERROR = "A0"
    VERSION_NOT_ACCEPTED = "A4"      # posemu: terminal software version no longer accepted
    NO_RESPONSE = "98"               # reversal reason: no response within the timeout
    TERMINAL_ERROR = "06"            # reversal reason: the terminal could not complete (card pulled out…)

    @classmethod
    def parse(cls, code: str) -> RC | None:
        try:
            return cls(code)
        except ValueError:
            return None


class EntryMode(enum.Enum):
    """POS entry mode, first two digits of field 22 (third: 1 PIN entered, 2 no PIN)."""

    SWIPE = "02"
    CHIP = "05"
    CONTACTLESS = "07"
    FALLBACK = "80"


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


def _amount(amount: int) -> str:
    if not 0 <= amount < 10**12:
        raise EncodeError("amount must be 0..999999999999 minor units", field="4")
    return f"{amount:012d}"


def sign_on_request(profile: Profile, ids: TerminalIds, *, stan: str, operator: str = "01",
                    key_scheme: str = "003") -> Message:
    fields: dict[int, Value] = {
        11: stan, 41: ids.tid, 42: ids.mid,
        60: Field60("00", ids.batch, key_scheme).encode(),
        63: operator.ljust(3),
    }
    if profile.has_field(70):
        fields[70] = "001"
    return Message("0800", fields, ids.header)


def network_request(profile: Profile, ids: TerminalIds, code: NetCode, *, stan: str) -> Message:
    """A network management request other than sign-on: sign-off or echo test.

    ``iso87ascii``: an 0800 with field 70 (002 sign-off, 301 echo). ``cup``: an 0820 with the code
    in 60.3, as CUP POS terminals send 签退 and 回响测试.
    """
    if code is NetCode.SIGN_ON:
        raise EncodeError("build a sign-on with sign_on_request", field="70")
    fields: dict[int, Value] = {11: stan, 41: ids.tid, 42: ids.mid}
    if profile.has_field(70):
        fields[70] = code.value
        return Message("0800", fields, ids.header)
    fields[60] = Field60("00", ids.batch, code.value).encode()
    return Message("0820", fields, ids.header)


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


def financial_request(profile: Profile, ids: TerminalIds, txn: TxnType, card: CardData, *, stan: str,
                      now: dt.datetime, amount: int | None = None, currency: str = "156",
                      pin_block: bytes | None = None, original: OriginalRef | None = None) -> Message:
    """A card transaction request: balance inquiry, purchase, void, refund, pre-authorization,
    completion or a pre-authorization's void (the MTI, field 3, 25 and 60.1 from :class:`TxnType`).
    The MAC is added when the request is sealed (:func:`protocol.session.seal`), in field 64 or 128
    as the bitmap requires. A transaction that names an original needs ``original``."""
    if txn is TxnType.SIGN_ON:
        raise EncodeError("a sign-on is not a financial request", field="3")
    pc, type_code = _TXN_CODES[txn]
    hh, mi, ss, mo, dd = now.hour, now.minute, now.second, now.month, now.day
    fields: dict[int, Value] = {2: card.pan, 3: pc, 11: stan, 12: f"{hh:02d}{mi:02d}{ss:02d}", 13: f"{mo:02d}{dd:02d}"}
    if txn is not TxnType.BALANCE:
        if amount is None:
            raise EncodeError(f"a {txn.kind} needs an amount", field="4")
        fields[4] = _amount(amount)
    if card.expiry:
        fields[14] = card.expiry
    fields[22] = _ENTRY_CODES[card.entry] + ("1" if pin_block is not None else "2")
    if card.pan_seq is not None:
        fields[23] = card.pan_seq.zfill(3)
    fields[25] = txn.condition
    if pin_block is not None:
        fields[26] = "12"
        fields[52] = pin_block
        fields[53] = "2600000000000000"   # format 0, double-length key
    if card.track2:
        fields[35] = card.track2
    if card.track3:
        fields[36] = card.track3
    if txn.references_original:
        if original is None:
            raise EncodeError(f"a {txn.kind} names its original (fields 37, 38, 61)", field="61")
        if original.rrn and txn in (TxnType.VOID, TxnType.REFUND, TxnType.COMPLETION_VOID):
            fields[37] = original.rrn
        if original.auth_code and txn is not TxnType.REFUND:
            fields[38] = original.auth_code
    fields[41] = ids.tid
    fields[42] = ids.mid
    fields[49] = currency
    if card.icc and txn.carries_chip_data:
        fields[55] = card.icc
    fields[60] = type_code + ids.batch + "000"          # Field60(type, batch, "000")
    if txn.references_original:
        assert original is not None
        # LiaoYang_POS VoidSaleAuth: a sale's void names batch + STAN only; the others add the date
        fields[61] = original.field61() if txn is not TxnType.VOID else original.batch + original.stan
    if 7 in profile.table:
        fields[7] = f"{mo:02d}{dd:02d}{hh:02d}{mi:02d}{ss:02d}"
    return Message(txn.mti, fields, ids.header)


_TXN_CODES = {t: (t.value[0], t.value[1]) for t in TxnType}
_ENTRY_CODES = {e: e.value for e in EntryMode}

_REVERSAL_KEEP = (2, 3, 4, 7, 11, 12, 13, 14, 22, 23, 25, 37, 38, 41, 42, 49, 55, 60)
_REVERSIBLE_MTIS = ("0100", "0200", "0220")


def reversal_request(profile: Profile, original: Message, *, reason: RC, ids: TerminalIds) -> Message:
    """A reversal (0400) carrying the original's data elements and the reason in field 39.

    Any request that moves money or a hold can be reversed (0100 pre-authorization family, 0200,
    0220 refund): the original's 60.1 (kept) and, on ``iso87ascii``, field 90's original MTI say
    which. The original's own reference to *its* original (61) is replaced by the reversed
    message's batch + STAN + date."""
    if original.mti not in _REVERSIBLE_MTIS:
        raise EncodeError(f"only a {'/'.join(_REVERSIBLE_MTIS)} can be reversed, not {original.mti}", field="t")
    fields: dict[int, Value] = {n: original.fields[n] for n in _REVERSAL_KEEP if n in original.fields}
    fields[39] = reason.value
    stan = original.text(11)
    date = original.text(13) if 13 in original else "0000"
    if profile.has_field(90):
        fields[90] = (original.mti + stan + original.text(7) if 7 in original else original.mti + stan + "0" * 10
                      ).ljust(20, "0") + "0" * 22
    else:
        batch = ids.batch
        f60 = original.get(60)
        if isinstance(f60, str) and len(f60) >= 8 and f60[2:8].isdigit():
            batch = f60[2:8]
        fields[61] = batch + stan + date
    return Message("0400", fields, ids.header)


def original_mti(reversal: Message) -> str:
    """The MTI of the request a 0400 reverses: field 90 (``iso87ascii``), else the kept 60.1 type
    code (``cup``), else 0200."""
    f90 = reversal.get(90)
    if isinstance(f90, str) and len(f90) >= 4 and f90[:4] in _REVERSIBLE_MTIS:
        return f90[:4]
    f60 = reversal.get(60)
    if isinstance(f60, str) and len(f60) >= 2:
        for t in TxnType:
            if t.type_code == f60[:2] and t is not TxnType.SIGN_ON and t.mti in _REVERSIBLE_MTIS:
                return t.mti
    return "0200"


# --- settlement -------------------------------------------------------------------------------------------
class SettleCode(enum.Enum):
    """Network management code (60.3) of settlement messages (LiaoYang_POS ``TrTable``, batch upload end)."""

    SETTLE = "201"               # 0500 settlement, 0320 batch upload of one transaction
    AFTER_UPLOAD = "202"         # the 0500 sent again once every transaction was uploaded


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


def settlement_request(profile: Profile, ids: TerminalIds, totals: BatchTotals, *, stan: str, now: dt.datetime,
                       currency: str = "156", after_upload: bool = False, operator: str = "01") -> Message:
    """Settlement 结算 (0500): the batch's totals in field 48, 60.3 ``201`` (``202`` when sent again
    after a batch upload); fields 11, 41, 42, 48, 49, 60, 63 as LiaoYang_POS ``Src/tranproc.c`` sends them."""
    code = SettleCode.AFTER_UPLOAD if after_upload else SettleCode.SETTLE
    fields: dict[int, Value] = {11: stan, 12: f"{now:%H%M%S}", 13: f"{now:%m%d}", 41: ids.tid, 42: ids.mid,
                                48: totals.encode(), 49: currency,
                                60: Field60("00", ids.batch, code.value).encode(), 63: operator.ljust(3)}
    return Message("0500", fields, ids.header)


@dataclass(frozen=True, slots=True)
class UploadItem:
    """One transaction of a batch upload: what the journal keeps of it (never the full PAN)."""

    txn: TxnType
    amount: int
    original: OriginalRef          # its own batch, STAN, date, RRN and authorization code


def batch_upload_request(profile: Profile, ids: TerminalIds, item: UploadItem, *, stan: str,
                         currency: str = "156") -> Message:
    """Batch upload 批上送 (0320) of one transaction: its processing code (3), amount (4), RRN (37),
    authorization code (38), type (60.1) with 60.3 ``201``, and its batch + STAN + date (61).

    Real terminals upload the PAN too (LiaoYang_POS ``BatchMagOnLineTrans``: 40-byte entries in
    field 48); posemu keeps no clear PAN after a transaction, so the host finds each upload by its
    STAN, date and RRN instead."""
    fields: dict[int, Value] = {3: item.txn.processing_code, 4: _amount(item.amount), 11: stan, 41: ids.tid,
                                42: ids.mid, 49: currency,
                                60: Field60(item.txn.type_code, ids.batch, SettleCode.SETTLE.value).encode(),
                                61: item.original.field61()}
    if item.original.rrn:
        fields[37] = item.original.rrn
    if item.original.auth_code:
        fields[38] = item.original.auth_code
    return Message("0320", fields, ids.header)


_ECHO = (2, 3, 4, 7, 11, 12, 13, 14, 22, 23, 25, 32, 37, 38, 41, 42, 48, 49, 60, 61, 70, 90)


def response_to(request: Message, rc: RC | str, *, tpdu_len: int | None = None, **extra: Value) -> Message:
    """The response to a request: response MTI, the echoed matching fields, field 39.

    The TPDU's destination and source addresses are swapped, as a host does (``tpdu_len``: how much
    of the header is a TPDU, :attr:`Profile.tpdu_len`; by default a header of 5 bytes or more starts
    with one).
    """
    code = rc.value if isinstance(rc, RC) else rc
    fields: dict[int, Value] = {n: request.fields[n] for n in _ECHO if n in request.fields}
    fields[39] = code
    for key, v in extra.items():
        fields[int(key.lstrip("f"))] = v
    header = request.header
    if (len(header) >= 5 if tpdu_len is None else tpdu_len == 5 and len(header) >= 5):
        header = header[:1] + header[3:5] + header[1:3] + header[5:]
    return Message(request.response_mti(), fields, header)


def key_block_value(block: bytes, profile: Profile) -> Value:
    """Field 62 of an 0810 as the profile carries it: the key block's bytes in a binary field,
    upper-case hex text in a text field (ISO 8583:1987's ``ans`` field 62, which pyiso8583's default
    spec and Wireshark decode as text)."""
    return block if profile.kinds.get("62") is Kind.B else block.hex().upper()


def key_block(msg: Message) -> bytes:
    """The working-key block of an 0810 (field 62), binary or hex text; ``DecodeError`` if absent or
    not hex.

    >>> key_block(Message("0810", {62: "0A0B"})), key_block(Message("0810", {62: b"\\x0a\\x0b"}))
    (b'\\n\\x0b', b'\\n\\x0b')
    """
    v = msg.get(62)
    if isinstance(v, bytes):
        return v
    if not isinstance(v, str):
        raise DecodeError("the sign-on answer carries no working keys (field 62)", field="62")
    try:
        if not v.isascii():
            raise ValueError
        return bytes.fromhex(v)
    except ValueError:
        raise DecodeError("field 62 is neither binary nor hex text", field="62") from None


def match_key(msg: Message) -> tuple[str, str, str]:
    """What pairs a response with its request: request MTI, STAN (11), terminal id (41)."""
    mti = msg.mti
    if mti[2] in "13579":
        mti = mti[:2] + str(int(mti[2]) - 1) + mti[3]
    stan = msg.get(11)
    tid = msg.get(41)
    return (mti, stan if isinstance(stan, str) else "", tid if isinstance(tid, str) else "")
