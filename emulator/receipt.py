"""Receipts (签购单) from the journal: text and PDF, in the usual two-copy layout.

A POS terminal prints two copies of every approved card transaction: the merchant copy
(商户存根, signed by the cardholder and kept by the merchant) and the cardholder copy
(持卡人存根). Each shows who (merchant, terminal, operator), the card (masked PAN 6+4 and how it
was read), what (transaction type, amount) and the references the acquirer needs to find it again
— batch number, voucher number (the STAN, 凭证号), authorization code (38), retrieval reference
number (37), date and time —, and, for a void, refund or completion, the original it names. A
reprint of any journal row is marked 重打印 / DUPLICATE. A settlement row prints the batch totals
(结算总计单).

:func:`receipt_lines` is pure (the journal row in, lines out); :func:`write_pdf` renders the same
lines with fpdf2 in a CJK font found on the machine (:func:`find_cjk_font`: Debian's
``fonts-wqy-microhei``, ``fonts-noto-cjk``…, or ``POSEMU_CJK_FONT``). PANs are only ever the
journal's masked ones.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.journal import Entry, Status
from protocol.errors import EnvironmentProblem


class Copy(enum.Enum):
    MERCHANT = ("商户存根", "MERCHANT COPY")
    CARDHOLDER = ("持卡人存根", "CARDHOLDER COPY")

    @property
    def zh(self) -> str:
        return self.value[0]

    @property
    def en(self) -> str:
        return self.value[1]


#: transaction type as printed (CUP slips: Chinese name, English in capitals)
TXN_NAMES = {
    "balance": ("余额查询", "BALANCE"), "purchase": ("消费", "SALE"), "void": ("消费撤销", "VOID"),
    "refund": ("退货", "REFUND"), "preauth": ("预授权", "AUTH"), "preauth_void": ("预授权撤销", "CANCEL"),
    "completion": ("预授权完成(请求)", "AUTH COMPLETE"), "completion_void": ("预授权完成撤销", "COMPLETE VOID"),
    "settle": ("结算", "SETTLEMENT"),
}
#: journal kinds with a receipt (what ``posemu receipt --last`` and the UI's 重打印 reprint)
RECEIPT_KINDS = tuple(TXN_NAMES)
#: how the card was read (the letter CUP slips put after the card number)
ENTRY_NAMES = {"SWIPE": ("S", "刷卡"), "CHIP": ("I", "插卡"), "CONTACTLESS": ("C", "挥卡"),
               "FALLBACK": ("F", "降级刷卡")}
#: kinds that give money back to the cardholder: printed as a negative amount
_CREDITS = frozenset({"void", "refund", "preauth_void", "completion_void"})
WIDTH = 40            # a 40-column receipt printer (a CJK character takes two)


@dataclass(frozen=True, slots=True)
class Merchant:
    """What the slip names of the merchant (the journal keeps the ids; the name is the merchant's own)."""

    name: str = "posemu 演示商户 DEMO MERCHANT"
    operator: str = "01"


def _money(minor: int, currency: str, negative: bool = False) -> str:
    names = {"156": "RMB", "840": "USD", "978": "EUR", "344": "HKD", "392": "JPY"}
    sign = "-" if negative and minor else ""
    return f"{names.get(currency, currency)} {sign}{minor // 100:,}.{minor % 100:02d}"


def _when(entry: Entry) -> str:
    """``YYYY/MM/DD hh:mm:ss`` of the row's creation (the terminal's clock)."""
    t = entry.created
    return t[:10].replace("-", "/") + " " + t[11:19] if len(t) >= 19 else t


def receipt_lines(entry: Entry, copy: Copy, *, merchant: Merchant | None = None, reprint: bool = False) -> list[str]:
    """The lines of one copy of a receipt for a journal row."""
    merchant = merchant or Merchant()
    if entry.kind == "settle":
        return _settlement_lines(entry, copy, merchant, reprint)
    zh, en = TXN_NAMES.get(entry.kind, (entry.kind, entry.kind.upper()))
    letter, how = ENTRY_NAMES.get(entry.entry, ("", ""))
    out = ["POS签购单 / POS SALES SLIP", f"{copy.zh} / {copy.en}", "-" * WIDTH,
           f"商户名称 MERCHANT NAME: {merchant.name}",
           f"商户编号 MERCHANT NO.: {entry.mid}",
           f"终端编号 TERMINAL NO.: {entry.tid}",
           f"操作员号 OPERATOR NO.: {merchant.operator}",
           "-" * WIDTH,
           f"卡号 CARD NO.: {entry.pan_masked} {letter}".rstrip() + (f" ({how})" if how else ""),
           f"交易类型 TRANS TYPE: {zh} {en}",
           f"批次号 BATCH NO.: {entry.batch}",
           f"凭证号 VOUCHER NO.: {entry.stan}",
           f"授权码 AUTH NO.: {entry.auth_code or ''}".rstrip(),
           f"参考号 REFER NO.: {entry.rrn or ''}".rstrip(),
           f"日期/时间 DATE/TIME: {_when(entry)}",
           f"金额 AMOUNT: {_money(entry.amount, entry.currency, entry.kind in _CREDITS)}"]
    ref = entry.original_ref or {}
    if ref.get("stan") and ref.get("stan") != "000000":
        out.append(f"原凭证号 ORIG VOUCHER: {ref['stan']}  原批次 BATCH: {ref.get('batch', '')}")
    if ref.get("rrn"):
        out.append(f"原参考号 ORIG REFER NO.: {ref['rrn']}")
    if ref.get("auth_code") and entry.kind != "refund":
        out.append(f"原授权码 ORIG AUTH NO.: {ref['auth_code']}")
    if entry.status is not Status.APPROVED:
        out.append(f"*** 交易未成功 NOT APPROVED: {entry.status.value} {entry.rc or ''} ***".replace("  ", " "))
    elif entry.voided_by is not None:
        out.append(f"*** 已撤销 VOIDED (#{entry.voided_by}) ***")
    out.append("-" * WIDTH)
    if reprint:
        out.append("重打印凭证 / DUPLICATE")
    if copy is Copy.MERCHANT:
        out += ["持卡人签名 CARDHOLDER SIGNATURE:", "", "", "_" * WIDTH,
                "本人确认以上交易，同意将其记入本卡账户",
                "I ACKNOWLEDGE SATISFACTORY RECEIPT OF",
                "RELATIVE GOODS/SERVICES"]
    else:
        out.append("请妥善保管 / PLEASE KEEP THIS RECEIPT")
    return out


def _settlement_lines(entry: Entry, copy: Copy, merchant: Merchant, reprint: bool) -> list[str]:
    t = entry.original_ref or {}
    out = ["结算总计单 / SETTLEMENT", f"{copy.zh} / {copy.en}", "-" * WIDTH,
           f"商户名称 MERCHANT NAME: {merchant.name}", f"商户编号 MERCHANT NO.: {entry.mid}",
           f"终端编号 TERMINAL NO.: {entry.tid}", f"批次号 BATCH NO.: {entry.batch}",
           f"日期/时间 DATE/TIME: {_when(entry)}", "-" * WIDTH,
           f"借记 DEBIT: {t.get('debits', '0')} 笔  {_money(int(t.get('debit', '0') or 0), entry.currency)}",
           f"贷记 CREDIT: {t.get('credits', '0')} 笔  {_money(int(t.get('credit', '0') or 0), entry.currency)}",
           f"结果 RESULT: {'结算成功 SETTLED' if entry.status is Status.APPROVED else '未结算 NOT SETTLED'}",
           "-" * WIDTH]
    if reprint:
        out.append("重打印凭证 / DUPLICATE")
    return out


def receipt_text(entry: Entry, *, copies: Iterable[Copy] = (Copy.MERCHANT, Copy.CARDHOLDER),
                 merchant: Merchant | None = None, reprint: bool = False) -> str:
    """Both copies (or those asked for) as text, separated by a cut line."""
    parts = ["\n".join(receipt_lines(entry, c, merchant=merchant, reprint=reprint)) for c in copies]
    return ("\n\n" + "✂ " + "- " * (WIDTH // 2 - 1) + "\n\n").join(parts) + "\n"


# --- PDF ------------------------------------------------------------------------------------------------
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",        # Debian fonts-wqy-microhei
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",          # fonts-wqy-zenhei
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # fonts-droid-fallback
    "/usr/share/fonts/truetype/arphic/uming.ttc",            # fonts-arphic-uming
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
FONT_PACKAGE = "fonts-wqy-microhei"


def find_cjk_font() -> Path:
    """A font file with the Chinese glyphs a receipt needs: ``POSEMU_CJK_FONT``, else the first of
    :data:`FONT_CANDIDATES` that exists; an :class:`EnvironmentProblem` (with the package to
    install) when there is none."""
    given = os.environ.get("POSEMU_CJK_FONT")
    if given:
        p = Path(given)
        if not p.is_file():
            raise EnvironmentProblem(f"POSEMU_CJK_FONT={given}: no such font file")
        return p
    for c in FONT_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    raise EnvironmentProblem("no font with Chinese glyphs for the PDF receipt; install one: "
                             f"sudo apt-get install -y {FONT_PACKAGE} (or set POSEMU_CJK_FONT to a .ttf/.ttc file)")


def pdf_bytes(entry: Entry, *, copies: Iterable[Copy] = (Copy.MERCHANT, Copy.CARDHOLDER),
              merchant: Merchant | None = None, reprint: bool = False, font: Path | None = None) -> bytes:
    """The receipt as a PDF: one 80 mm roll page per copy, in a CJK font (fpdf2 embeds the subset used)."""
    from fpdf import FPDF

    font = font or find_cjk_font()
    pages = [[t.replace("_" * WIDTH, "_" * 36).replace("-" * WIDTH, "-" * 48)
              for t in receipt_lines(entry, c, merchant=merchant, reprint=reprint)] for c in copies]
    line_h, margin, width = 4.6, 4.0, 80.0

    def new_pdf(height: float) -> Any:
        pdf = FPDF(unit="mm", format=(width, height))
        pdf.set_auto_page_break(False)
        pdf.set_margins(margin, margin, margin)
        try:
            pdf.add_font("cjk", "", str(font))
        except Exception as e:   # fpdf2/fontTools raise many types for an unreadable font file
            raise EnvironmentProblem(f"cannot use the font {font} for the PDF receipt: {e}") from None
        return pdf

    def rows(pdf: Any, lines: list[str]) -> int:
        """Printed rows of a page: long lines wrap to the 80 mm roll."""
        n = 0
        for i, text in enumerate(lines):
            pdf.set_font("cjk", size=10 if i == 0 else 7.5)
            n += len(pdf.multi_cell(width - 2 * margin, line_h, text, dry_run=True, output="LINES"))
        return n

    probe = new_pdf(297)
    probe.add_page()
    pdf = new_pdf(margin * 2 + line_h * (max(rows(probe, p) for p in pages) + 1))
    for lines in pages:
        pdf.add_page()
        for i, text in enumerate(lines):
            pdf.set_font("cjk", size=10 if i == 0 else 7.5)
            pdf.multi_cell(width - 2 * margin, line_h, text, new_x="LMARGIN", new_y="NEXT",
                           align="C" if i < 2 else "L")
    pdf.set_title(f"POS receipt {entry.kind} {entry.stan}")
    pdf.set_creator("posemu")
    return bytes(pdf.output())


def write_pdf(entry: Entry, path: str | Path, *, copies: Iterable[Copy] = (Copy.MERCHANT, Copy.CARDHOLDER),
              merchant: Merchant | None = None, reprint: bool = False) -> None:
    """Write :func:`pdf_bytes` to ``path`` (the caller checks the path first)."""
    Path(path).write_bytes(pdf_bytes(entry, copies=copies, merchant=merchant, reprint=reprint))
