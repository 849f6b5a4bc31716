"""The terminal's face: its screen, the status line and the keypad.

The screen shows only text from the message catalogue (:mod:`emulator.messages`), in the
language the user picked; entry lines show asterisks for PINs and passwords.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid
from textual.message import Message
from textual.widgets import Button, Static

from emulator.messages import Lang, Msg, Screen, text


class Page(enum.Enum):
    """What the terminal's screen is showing."""

    MENU = "menu"
    BUSY = "busy"          # a terminal action runs (its screens are shown)
    RESULT = "result"      # the last action's screens, until a key returns to the menu
    AMOUNT = "amount"      # amount entry (purchase, pre-authorization, refund, completion)
    OPERATOR = "operator"  # operator password entry
    MORE = "more"          # the menu of the rest of the transaction set (main menu 8)
    VOUCHER = "voucher"    # the original's voucher number (void, completion) or reference number (refund)


MENU: tuple[tuple[str, Msg], ...] = (
    ("1", Msg.MENU_SIGN_ON), ("2", Msg.MENU_BALANCE), ("3", Msg.MENU_PURCHASE), ("4", Msg.MENU_JOURNAL),
    ("5", Msg.MENU_SETTINGS), ("6", Msg.MENU_OPERATOR), ("7", Msg.MENU_REVERSAL), ("8", Msg.MENU_MORE),
    ("9", Msg.MENU_REPRINT),
)
MORE_MENU: tuple[tuple[str, Msg], ...] = (
    ("1", Msg.MENU_VOID), ("2", Msg.MENU_REFUND), ("3", Msg.MENU_PREAUTH), ("4", Msg.MENU_COMPLETION),
    ("5", Msg.MENU_SETTLE), ("6", Msg.MENU_SIGN_OFF),
)
"""Main menu 8 其他交易: void (of a purchase, pre-authorization or completion: the original decides),
refund, pre-authorization, its completion, settlement and sign-off."""


def say(msg: Msg, lang: Lang, params: dict[str, str] | None = None) -> str:
    """One catalogue message on one line (``zh en`` for both languages)."""
    if lang == "both":
        return f"{text(msg, 'zh', params)} {text(msg, 'en', params)}"
    return text(msg, lang, params)


def _plain(s: Screen) -> Screen:
    """The screen without its amount: the display shows the amount on its own line."""
    if "amount" not in s.params:
        return s
    return Screen(s.msg, {k: v for k, v in s.params.items() if k != "amount"})


def _screen_lines(s: Screen, lang: Lang, current: bool) -> list[Text]:
    s = _plain(s)
    if not current:
        line = say(s.msg, lang, s.params) if lang != "both" else (
            f"{text(s.msg, 'zh', s.params)} / {text(s.msg, 'en', s.params)}")
        return [Text(line, "#839496")]
    if lang == "both":
        return [Text(text(s.msg, "zh", s.params), "bold"), Text(text(s.msg, "en", s.params), "italic")]
    return [Text(text(s.msg, lang, s.params), "bold")]


_LABELS = {"amount": ("金额", "Amount"), "card": ("卡号", "Card")}


def _label(name: str, lang: Lang) -> str:
    zh, en = _LABELS[name]
    return {"zh": zh, "en": en}.get(lang, f"{zh} {en}")


@dataclass(frozen=True, slots=True)
class FaceState:
    """What the terminal's display shows: like a real terminal's, the action, its amount and the
    card (masked), the current screen (``screens``; ``context`` is the one before it, dimmed) and
    the entry line; on the menu page the menu. The whole history is in the screens pane."""

    page: Page
    screens: tuple[Screen, ...]
    lang: Lang
    entry: str | None = None       # the entry line (asterisks, an amount), or None
    title: Screen | None = None    # the menu's first line (e.g. 签到成功 or 请先签到)
    heading: Msg | None = None     # the action on show (消费 Purchase, 查询余额 Balance)
    amount: str = ""               # the action's amount, formatted
    card: str = ""                 # the card number, masked 6+4
    context: Screen | None = None  # the screen before the current one
    note: str = ""                 # a line of the emulator's own (operator lock, tries left)


def face_renderable(st: FaceState, max_lines: int) -> RenderableType:
    """What the terminal screen shows for ``st`` in at most ``max_lines`` lines (roughly: the
    current screen, the entry and the note are kept; the heading and the context go first)."""
    note = [Text(st.note, "bold #b58900")] if st.note else []
    if st.page in (Page.MENU, Page.MORE):
        return _menu(st, max_lines, note)
    lines: list[Text] = []
    if st.heading is not None:
        lines.append(Text(say(st.heading, st.lang), "bold reverse"))
    if st.amount:
        lines.append(Text.assemble((f"{_label('amount', st.lang)}  ", "#839496"), (st.amount, "bold")))
    if st.card:
        lines.append(Text.assemble((f"{_label('card', st.lang)}  ", "#839496"), st.card))
    if st.context is not None:
        lines.extend(_screen_lines(st.context, st.lang, current=False))
    for s in st.screens:
        lines.extend(_screen_lines(s, st.lang, current=True))
    if st.entry is not None:
        lines.append(Text(f"  {st.entry}", "bold reverse" if st.entry else "bold"))
    lines.extend(note)
    return Group(*lines[-max(1, max_lines):])


def _menu(st: FaceState, max_lines: int, note: list[Text]) -> RenderableType:
    """The main menu, or the menu of more transactions: one entry a line when the screen has the
    lines (and the first line wraps under a title), else two columns."""
    items, head_msg = (MENU, Msg.MAIN_MENU) if st.page is Page.MENU else (MORE_MENU, Msg.MENU_MORE)
    parts: list[RenderableType] = []
    head = Text(say(head_msg, st.lang), "bold" if st.page is Page.MENU else "bold reverse")
    if st.title is not None and st.page is Page.MENU:
        head.append("  ")
        head.append(say(st.title.msg, st.lang, st.title.params), "#839496")
    parts.append(head)
    cells = [Text.assemble((f"{k} ", "bold"), say(m, st.lang)) for k, m in items]
    one_column = len(items) + 2 + len(note) <= max_lines
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in range(1 if one_column else 2):
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    step = 1 if one_column else 2
    for i in range(0, len(cells), step):
        grid.add_row(*cells[i:i + step], *([Text("")] * (step - len(cells[i:i + step]))))
    parts.append(grid)
    parts.extend(note)
    return Group(*parts)


class ScreenView(Static):
    """The terminal's LCD."""

    def show(self, st: FaceState) -> None:
        height = self.content_size.height if self.is_mounted and self.content_size.height else 6
        self.update(face_renderable(st, height))


class KeyButton(Button, can_focus=False):
    """A keypad key: clickable, but never takes the keyboard focus (Enter stays 确认)."""


class Keypad(Grid):
    """Digits, 取消/Esc, 更正/Backspace, 确认/Enter, 菜单 (menu) and 00."""

    KEYS: tuple[tuple[str, str], ...] = (
        ("1", "1"), ("2", "2"), ("3", "3"), ("cancel", "取消 Esc"),
        ("4", "4"), ("5", "5"), ("6", "6"), ("correct", "更正 ⌫"),
        ("7", "7"), ("8", "8"), ("9", "9"), ("confirm", "确认 ⏎"),
        ("menu", "菜单 M"), ("0", "0"), ("00", "00"), ("help", "帮助 ?"),
    )

    class Pressed(Message):
        """A keypad key was clicked: ``key`` is a digit, ``00``, ``cancel``, ``correct``, ``confirm``,
        ``menu`` or ``help``."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def compose(self) -> ComposeResult:
        for key, label in self.KEYS:
            classes = "key digit" if key.isdigit() else f"key fn key-{key}"
            yield KeyButton(label, id=f"key-{key}", classes=classes, compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id and event.button.id.startswith("key-"):
            event.stop()
            self.post_message(self.Pressed(event.button.id.removeprefix("key-")))
