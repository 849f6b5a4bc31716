"""PC/SC status: the status codes and reader-state flags of winscard / pcsc-lite, what each
means for posemu (:func:`pcsc_error`: a :mod:`hardware.errors` exception with a hint on what
to check), and what a change of reader state means (:func:`derive_events`). Pure: no pyscard,
no I/O — :mod:`hardware.pcsc` is the backend that uses it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hardware.errors import (
    CardAbsentError,
    CardMuteError,
    CardResetError,
    NoReaderError,
    ReaderError,
    ServiceUnavailableError,
    SharingViolationError,
    TransmissionError,
)
from hardware.ports import ReaderEventKind

# --- PC/SC status codes (winscard / pcsc-lite ``pcsclite.h``; identical on every platform) -------
SCARD_S_SUCCESS = 0x00000000
SCARD_F_INTERNAL_ERROR = 0x80100001
SCARD_E_CANCELLED = 0x80100002
SCARD_E_INVALID_HANDLE = 0x80100003
SCARD_E_INVALID_PARAMETER = 0x80100004
SCARD_E_NO_MEMORY = 0x80100006
SCARD_E_INSUFFICIENT_BUFFER = 0x80100008
SCARD_E_UNKNOWN_READER = 0x80100009
SCARD_E_TIMEOUT = 0x8010000A
SCARD_E_SHARING_VIOLATION = 0x8010000B
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_E_PROTO_MISMATCH = 0x8010000F
SCARD_E_NOT_READY = 0x80100010
SCARD_E_INVALID_VALUE = 0x80100011
SCARD_F_COMM_ERROR = 0x80100013
SCARD_E_INVALID_ATR = 0x80100015
SCARD_E_NOT_TRANSACTED = 0x80100016
SCARD_E_READER_UNAVAILABLE = 0x80100017
SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_SERVICE_STOPPED = 0x8010001E
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_E_COMM_DATA_LOST = 0x8010002F
SCARD_E_NO_ACCESS = 0x80100027
SCARD_W_UNSUPPORTED_CARD = 0x80100065
SCARD_W_UNRESPONSIVE_CARD = 0x80100066
SCARD_W_UNPOWERED_CARD = 0x80100067
SCARD_W_RESET_CARD = 0x80100068
SCARD_W_REMOVED_CARD = 0x80100069

# Reader state flags (SCARD_READERSTATE.dwEventState)
STATE_UNAWARE = 0x0000
STATE_CHANGED = 0x0002
STATE_UNKNOWN = 0x0004
STATE_UNAVAILABLE = 0x0008
STATE_EMPTY = 0x0010
STATE_PRESENT = 0x0020
STATE_EXCLUSIVE = 0x0080
STATE_INUSE = 0x0100
STATE_MUTE = 0x0200

_HINT_SERVICE = (
    "is pcscd running? Check `systemctl status pcscd` or start it (`pcscd -f` in a terminal); "
    "for virtual cards the vsmartcard vpcd driver must be installed (apt-get install pcscd vsmartcard-vpcd)"
)
_HINT_NO_READER = (
    "is the reader plugged in and seen by pcscd? `posemu readers` lists what is attached; for a "
    "virtual reader install vsmartcard-vpcd and restart pcscd"
)
_HINT_INSERT = "insert the card (or present a virtual one: `posemu card serve --profile <chip profile>`)"
_HINT_RESET = "the card was reset by another application or a power glitch; power it on again"
_HINT_MUTE = (
    "the card does not answer: is it inserted chip first and the right way up, are the contacts "
    "clean? A card without a chip cannot be powered"
)
_HINT_SHARING = (
    "another program holds the card or reader exclusively; close other smart-card software "
    "(pcsc_scan, a browser, a PKCS#11 middleware) or open this reader with ?share=shared"
)

_TABLE: dict[int, tuple[type[ReaderError], str, str]] = {
    SCARD_E_NO_SERVICE: (ServiceUnavailableError, "the PC/SC service is not running", _HINT_SERVICE),
    SCARD_E_SERVICE_STOPPED: (ServiceUnavailableError, "the PC/SC service stopped", _HINT_SERVICE),
    SCARD_E_NO_READERS_AVAILABLE: (NoReaderError, "no PC/SC reader is available", _HINT_NO_READER),
    SCARD_E_UNKNOWN_READER: (NoReaderError, "pcscd does not know this reader", _HINT_NO_READER),
    SCARD_E_READER_UNAVAILABLE: (NoReaderError, "the reader is no longer available", _HINT_NO_READER),
    SCARD_W_REMOVED_CARD: (CardAbsentError, "the card was removed", _HINT_INSERT),
    SCARD_E_NO_SMARTCARD: (CardAbsentError, "no card in the reader", _HINT_INSERT),
    SCARD_W_RESET_CARD: (CardResetError, "the card was reset", _HINT_RESET),
    SCARD_W_UNRESPONSIVE_CARD: (CardMuteError, "the card is unresponsive (no answer to reset)", _HINT_MUTE),
    SCARD_W_UNPOWERED_CARD: (CardMuteError, "the card is not powered", _HINT_MUTE),
    SCARD_E_INVALID_ATR: (CardMuteError, "the card's ATR is invalid", _HINT_MUTE),
    SCARD_W_UNSUPPORTED_CARD: (CardMuteError, "the reader cannot talk to this card", _HINT_MUTE),
    SCARD_E_SHARING_VIOLATION: (SharingViolationError, "sharing violation", _HINT_SHARING),
    SCARD_E_PROTO_MISMATCH: (
        ReaderError, "the card does not support the requested protocol", "try ?protocol=any"
    ),
    SCARD_E_NOT_TRANSACTED: (
        TransmissionError, "the command could not be exchanged with the card", _HINT_MUTE
    ),
    SCARD_F_COMM_ERROR: (
        TransmissionError, "communication error with the reader", "reconnect the reader; check its cable"
    ),
    SCARD_E_COMM_DATA_LOST: (TransmissionError, "data was lost between reader and card", _HINT_MUTE),
    SCARD_E_INVALID_HANDLE: (
        ReaderError,
        "the PC/SC handle is no longer valid",
        "pcscd may have restarted; close and reopen the reader",
    ),
    SCARD_E_NO_ACCESS: (
        ReaderError, "access to the reader was denied", "check the polkit rules for pcscd or run with rights"
    ),
    SCARD_E_CANCELLED: (ReaderError, "the PC/SC call was cancelled", "the reader was closed meanwhile"),
    SCARD_E_TIMEOUT: (ReaderError, "the PC/SC call timed out", "the reader or pcscd is not answering"),
}


@dataclass(frozen=True, slots=True)
class ReaderProblem:
    """Why a reader cannot be used and what to do, in English and Chinese, for a screen's detail
    line, the trace and the diagnosis (issue 12 item 6). ``code`` is the error's evidence code."""

    code: str
    reason: str
    remedy: str
    reason_zh: str
    remedy_zh: str

    def params(self) -> dict[str, str]:
        """Screen parameters of the terminal's READER_PROBLEM line."""
        return {"code": self.code, "reason": self.reason, "remedy": self.remedy, "reason_zh": self.reason_zh,
                "remedy_zh": self.remedy_zh}


_ZH_SERVICE = ("读卡服务 pcscd 未运行", "启动 pcscd（systemctl start pcscd），虚拟卡需安装 vsmartcard-vpcd")
_ZH_NO_READER = ("读卡器未连接或未被识别", "检查读卡器连接；`posemu readers` 列出可用读卡器")
_ZH_CARD = ("卡片未插入或已拔出", "请插入卡片")
_ZH_MUTE = ("卡片无应答", "检查卡片方向和芯片触点是否清洁")
_ZH_BUSY = ("读卡器被其他程序占用", "关闭其他读卡程序后重试")
_ZH_ACCESS = ("无权访问读卡器", "检查 pcscd 的 polkit 规则或以有权限的用户运行")
_ZH_OTHER = ("读卡器通讯错误", "重新连接读卡器后重试")
_ZH_BY_CLASS: dict[type[ReaderError], tuple[str, str]] = {
    ServiceUnavailableError: _ZH_SERVICE, NoReaderError: _ZH_NO_READER, CardAbsentError: _ZH_CARD,
    CardResetError: _ZH_CARD, CardMuteError: _ZH_MUTE, SharingViolationError: _ZH_BUSY,
}

#: reader problems that are not PC/SC statuses: serial devices, URLs, a reader that went away
_OTHER_PROBLEMS: dict[str, tuple[str, str, str, str]] = {
    "serial.not_found": ("the serial device does not exist", "plug the reader in and check its driver; "
                         "`posemu readers` lists the serial ports", "串口设备不存在",
                         "插好读卡器并检查驱动；`posemu readers` 列出串口"),
    "serial.permission_denied": ("permission denied on the serial device", "add your user to the dialout group "
                                 "(sudo usermod -aG dialout $USER) and log in again", "无权访问串口设备",
                                 "将用户加入 dialout 组后重新登录"),
    "serial.busy": ("another program holds the serial device", "close it (`fuser -v <device>` shows who)",
                    "串口被其他程序占用", "关闭占用串口的程序"),
    "reader.url_malformed": ("the reader URL is malformed", "fix the reader URL (e.g. pcsc://0, "
                             "serial:///dev/ttyUSB0, sim://demo)", "读卡器地址格式错误",
                             "改正读卡器地址，如 pcsc://0"),
    "reader.lost": ("the card reader went away", "reconnect the reader (USB cable, pcscd)",
                    "读卡器已断开", "重新连接读卡器"),
    "reader.absent": ("no card reader answered", "check that the reader is plugged in and powered; "
                      "`posemu readers` lists what is attached", "未检测到读卡器", "检查读卡器连接和电源"),
    "reader.service_down": ("the PC/SC service is not running", _HINT_SERVICE, *_ZH_SERVICE),
    "reader.no_pyscard": ("pyscard (PC/SC for Python) is not installed", "pip install pyscard "
                          "(make run installs it)", "未安装 pyscard", "安装 pyscard（make run 会安装）"),
}


def explain(code: str, message: str = "") -> ReaderProblem:
    """Reason and remedy for a reader error's evidence code (``pcsc.0x8010001D``,
    ``serial.not_found``, ``reader.url_malformed`` …), as ``posemu readers`` knows them.

    >>> p = explain("pcsc.0x8010001D")
    >>> p.reason, p.reason_zh
    ('the PC/SC service is not running', '读卡服务 pcscd 未运行')
    >>> explain("serial.permission_denied").remedy_zh
    '将用户加入 dialout 组后重新登录'
    """
    if code.startswith("pcsc.0x"):
        try:
            status = int(code[5:], 16)
        except ValueError:
            status = -1
        cls, what, hint = _TABLE.get(status, (ReaderError, "PC/SC error", "see `pcscd -f -d` output for details"))
        zh = next((v for k, v in _ZH_BY_CLASS.items() if issubclass(cls, k)), _ZH_OTHER)
        if status == SCARD_E_NO_ACCESS:
            zh = _ZH_ACCESS
        return ReaderProblem(code, what, hint, *zh)
    if code in _OTHER_PROBLEMS:
        reason, remedy, reason_zh, remedy_zh = _OTHER_PROBLEMS[code]
        if code == "reader.url_malformed" and message:      # what exactly is wrong with the URL
            reason = message.strip()[:160]
        return ReaderProblem(code, reason, remedy, reason_zh, remedy_zh)
    reason = message.split(";")[0].strip() or "card reader error"
    return ReaderProblem(code, reason[:120], "see `posemu readers` and docs/readers.md", "读卡器故障",
                         "运行 `posemu readers` 查看原因")


def _u32(hr: int) -> int:
    return hr & 0xFFFFFFFF


def pcsc_error(hr: int, action: str, reader: str = "") -> ReaderError:
    """The :mod:`hardware.errors` exception for a PC/SC status.

    >>> e = pcsc_error(0x8010001D, "list readers")
    >>> type(e).__name__, "pcscd" in str(e)
    ('ServiceUnavailableError', True)
    >>> type(pcsc_error(-2146435050, "transmit")).__name__      # negative hresult as on Windows
    'TransmissionError'
    """
    code = _u32(hr)
    cls, what, hint = _TABLE.get(code, (ReaderError, "PC/SC error", "see `pcscd -f -d` output for details"))
    where = f" ({reader})" if reader else ""
    return cls(f"{action}{where}: {what} [0x{code:08X}]; {hint}").with_code(f"pcsc.0x{code:08X}")


class CardState(enum.Enum):
    """A reader's card state, summarised from its ``dwEventState`` flags by :func:`card_state`."""

    EMPTY = "empty"
    PRESENT = "card present"
    IN_USE = "card in use"
    EXCLUSIVE = "card in use (exclusive)"
    MUTE = "card present, mute"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


def card_state(flags: int) -> CardState:
    """Summarise a reader's ``dwEventState`` flags."""
    if flags & STATE_UNKNOWN:
        return CardState.UNKNOWN
    if flags & STATE_UNAVAILABLE:
        return CardState.UNAVAILABLE
    if flags & STATE_PRESENT:
        if flags & STATE_MUTE:
            return CardState.MUTE
        if flags & STATE_EXCLUSIVE:
            return CardState.EXCLUSIVE
        if flags & STATE_INUSE:
            return CardState.IN_USE
        return CardState.PRESENT
    return CardState.EMPTY


def derive_events(old: int, new: int) -> list[ReaderEventKind]:
    """Reader events between two ``dwEventState`` values (high 16 bits: pcsc-lite's event counter)."""
    if new & (STATE_UNKNOWN | STATE_UNAVAILABLE) and not old & (STATE_UNKNOWN | STATE_UNAVAILABLE):
        return [ReaderEventKind.READER_LOST]
    was, now = bool(old & STATE_PRESENT), bool(new & STATE_PRESENT)
    flips = ((new >> 16) - (old >> 16)) & 0xFFFF
    if was and not now:
        return [ReaderEventKind.CARD_REMOVED]
    if now and not was:
        return [ReaderEventKind.CARD_INSERTED]
    if now and flips >= 2:        # removed and re-inserted between two polls
        return [ReaderEventKind.CARD_REMOVED, ReaderEventKind.CARD_INSERTED]
    return []
