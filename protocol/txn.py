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
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from protocol.errors import DecodeError, EncodeError
from protocol.iso import Message, Value
from protocol.masking import mask_pan
from protocol.specs import Kind, Profile


class TxnType(enum.Enum):
    """Transaction types: processing code (field 3) and CUP type code (60.1)."""

    SIGN_ON = ("", "00")
    BALANCE = ("310000", "01")
    PURCHASE = ("000000", "22")

    @property
    def processing_code(self) -> str:
        return self.value[0]

    @property
    def type_code(self) -> str:
        return self.value[1]

    @classmethod
    def from_request(cls, msg: Message) -> TxnType | None:
        if msg.mti in ("0800", "0810"):
            return cls.SIGN_ON
        pc = msg.get(3)
        if not isinstance(pc, str) or len(pc) != 6:
            return None
        if pc.startswith("31"):
            return cls.BALANCE
        if pc.startswith("00"):
            return cls.PURCHASE
        return None


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
    UNKNOWN_ORIGINAL = "25"
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


def financial_request(profile: Profile, ids: TerminalIds, txn: TxnType, card: CardData, *, stan: str,
                      now: dt.datetime, amount: int | None = None, currency: str = "156",
                      pin_block: bytes | None = None) -> Message:
    """A balance inquiry or purchase (0200). The MAC is added when the request is sealed
    (:func:`protocol.session.seal`), in field 64 or 128 as the bitmap requires."""
    if txn is TxnType.SIGN_ON:
        raise EncodeError("a sign-on is not a financial request", field="3")
    pc, type_code = _TXN_CODES[txn]
    hh, mi, ss, mo, dd = now.hour, now.minute, now.second, now.month, now.day
    fields: dict[int, Value] = {2: card.pan, 3: pc, 11: stan, 12: f"{hh:02d}{mi:02d}{ss:02d}", 13: f"{mo:02d}{dd:02d}"}
    if txn is TxnType.PURCHASE:
        if amount is None:
            raise EncodeError("a purchase needs an amount", field="4")
        fields[4] = _amount(amount)
    if card.expiry:
        fields[14] = card.expiry
    fields[22] = _ENTRY_CODES[card.entry] + ("1" if pin_block is not None else "2")
    if card.pan_seq is not None:
        fields[23] = card.pan_seq.zfill(3)
    fields[25] = "00"
    if pin_block is not None:
        fields[26] = "12"
        fields[52] = pin_block
        fields[53] = "2600000000000000"   # format 0, double-length key
    if card.track2:
        fields[35] = card.track2
    if card.track3:
        fields[36] = card.track3
    fields[41] = ids.tid
    fields[42] = ids.mid
    fields[49] = currency
    if card.icc:
        fields[55] = card.icc
    fields[60] = type_code + ids.batch + "000"          # Field60(type, batch, "000")
    if 7 in profile.table:
        fields[7] = f"{mo:02d}{dd:02d}{hh:02d}{mi:02d}{ss:02d}"
    return Message("0200", fields, ids.header)


_TXN_CODES = {t: (t.value[0], t.value[1]) for t in TxnType}
_ENTRY_CODES = {e: e.value for e in EntryMode}

_REVERSAL_KEEP = (2, 3, 4, 7, 11, 12, 13, 14, 22, 23, 25, 38, 41, 42, 49, 55, 60)


def reversal_request(profile: Profile, original: Message, *, reason: RC, ids: TerminalIds) -> Message:
    """A reversal (0400) carrying the original's data elements and the reason in field 39."""
    if original.mti != "0200":
        raise EncodeError(f"only a 0200 can be reversed, not {original.mti}", field="t")
    fields: dict[int, Value] = {n: original.fields[n] for n in _REVERSAL_KEEP if n in original.fields}
    fields[39] = reason.value
    stan = original.text(11)
    date = original.text(13) if 13 in original else "0000"
    if profile.has_field(90):
        fields[90] = ("0200" + stan + original.text(7) if 7 in original else "0200" + stan + "0" * 10
                      ).ljust(20, "0") + "0" * 22
    else:
        fields[61] = ids.batch + stan + date
    return Message("0400", fields, ids.header)


_ECHO = (2, 3, 4, 7, 11, 12, 13, 14, 22, 23, 25, 32, 37, 41, 42, 49, 60, 61, 70, 90)


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
