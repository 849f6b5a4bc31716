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

This module holds the builders and the response helpers; the codes (:class:`TxnType`, :class:`RC`,
:class:`NetCode`, :class:`SettleCode`, :class:`EntryMode`) are in :mod:`protocol.txn_codes`, the field
values (:class:`CardData`, :class:`TerminalIds`, :class:`Field60`, :class:`Balance`,
:class:`OriginalRef`, :class:`BatchTotals`, :class:`UploadItem`) in :mod:`protocol.txn_fields`. Every
name is importable from here.
"""

from __future__ import annotations

import datetime as dt

from protocol.errors import DecodeError, EncodeError
from protocol.iso import Message, Value
from protocol.specs import Kind, Profile
from protocol.txn_codes import RC, VOIDS, EntryMode, NetCode, SettleCode, TxnType
from protocol.txn_fields import (
    Balance,
    BatchTotals,
    CardData,
    Field60,
    OriginalRef,
    TerminalIds,
    UploadItem,
    encode_balances,
    parse_balances,
)

__all__ = [
    "RC", "VOIDS", "Balance", "BatchTotals", "CardData", "EntryMode", "Field60", "NetCode", "OriginalRef",
    "SettleCode", "TerminalIds", "TxnType", "UploadItem", "batch_upload_request", "encode_balances",
    "financial_request", "key_block", "key_block_value", "match_key", "network_request", "original_mti",
    "parse_balances", "response_to", "reversal_request", "settlement_request", "sign_on_request",
]



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
def settlement_request(profile: Profile, ids: TerminalIds, totals: BatchTotals, *, stan: str, now: dt.datetime,
                       currency: str = "156", after_upload: bool = False, operator: str = "01") -> Message:
    """Settlement 结算 (0500): the batch's totals in field 48, 60.3 ``201`` (``202`` when sent again
    after a batch upload); fields 11, 41, 42, 48, 49, 60, 63 as LiaoYang_POS ``Src/tranproc.c`` sends them."""
    code = SettleCode.AFTER_UPLOAD if after_upload else SettleCode.SETTLE
    fields: dict[int, Value] = {11: stan, 12: f"{now:%H%M%S}", 13: f"{now:%m%d}", 41: ids.tid, 42: ids.mid,
                                48: totals.encode(), 49: currency,
                                60: Field60("00", ids.batch, code.value).encode(), 63: operator.ljust(3)}
    return Message("0500", fields, ids.header)


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
