"""The codes of terminal transactions: what each transaction is (:class:`TxnType`: MTI, processing
code, POS condition code, CUP type code 60.1), network management codes (:class:`NetCode`),
settlement codes (:class:`SettleCode`), response codes (:class:`RC`) and POS entry modes
(:class:`EntryMode`). The transaction table they follow, with its sources, is in :mod:`protocol.txn`;
the builders that use them are there too.
"""

from __future__ import annotations

import enum
import functools

from protocol.iso import Message


class TxnType(enum.Enum):
    """Transaction types: processing code (field 3) and CUP type code (60.1); the MTI, POS condition
    code (field 25) and the rest are properties (see the table in :mod:`protocol.txn`)."""

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


class SettleCode(enum.Enum):
    """Network management code (60.3) of settlement messages (LiaoYang_POS ``TrTable``, batch upload end)."""

    SETTLE = "201"               # 0500 settlement, 0320 batch upload of one transaction
    AFTER_UPLOAD = "202"         # the 0500 sent again once every transaction was uploaded
