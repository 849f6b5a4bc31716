"""What the main screen draws: the terminal's display, its status and hint lines, the card slot's
state, the screens history, the trace and diagnosis panes, the host-wait progress bar.

The pure part — which screens are current (:func:`shown_screens`), the hint (:func:`hint`), the
status lines (:func:`status_text`) — takes plain values, so it can be read and tested without a
running app. :class:`TerminalRendering` is the screen's drawing layer: it is the
:class:`emulator.ui.session.SessionView` the session reports to (the terminal's display port,
its trace, the action's start and end) and keeps the widgets in step; it never starts anything.

The display shows what a real terminal's does: the action, its amount and the card (masked 6+4),
the current screen and the entry line; every screen the terminal showed is in the *Screens* pane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text
from textual import events
from textual.timer import Timer
from textual.widgets import ProgressBar, Static

from emulator import config as configmod
from emulator.app import Rig
from emulator.fsm import Event
from emulator.messages import Lang, Msg, Screen, format_amount, render
from emulator.receipt import RECEIPT_KINDS
from emulator.terminal import Outcome
from emulator.trace import Kind, TraceEntry
from emulator.ui.face import FaceState, Page, face_renderable
from emulator.ui.fault_panel import FaultTree
from emulator.ui.faults_adapter import ActiveFault, CauseReport
from emulator.ui.keypad import Txn
from emulator.ui.layout import TerminalLayout
from emulator.ui.readers import SIM_URL, find_sim
from emulator.ui.session import Severity
from emulator.ui.trace_view import field_names
from hardware.cards.profiles import load_profile
from protocol.errors import PosemuError
from protocol.masking import mask_pan

LANGS: tuple[Lang, ...] = ("both", "zh", "en")
WAITING_FOR_HOST = frozenset({Msg.PROCESSING, Msg.SIGNING_ON, Msg.REVERSAL_PENDING, Msg.CONNECTING})
FLOW_STEPS = WAITING_FOR_HOST | {Msg.INSERT_OR_SWIPE, Msg.READING_CARD, Msg.ENTER_PIN, Msg.PIN_RETRY}
"""Screens of a flow under way; what follows the last of them is the result (a chip error or a swipe
to do again can be the result's detail line, so they are not among them)."""
HEADINGS: dict[str, Msg] = {"sign on": Msg.MENU_SIGN_ON, "sign_on": Msg.MENU_SIGN_ON,
                            "balance inquiry": Msg.MENU_BALANCE, "balance": Msg.MENU_BALANCE,
                            "purchase": Msg.MENU_PURCHASE, "reversals": Msg.MENU_REVERSAL,
                            "void": Msg.MENU_VOID, "preauth_void": Msg.MENU_VOID, "completion_void": Msg.MENU_VOID,
                            "refund": Msg.MENU_REFUND, "preauth": Msg.MENU_PREAUTH,
                            "completion": Msg.MENU_COMPLETION, "settle": Msg.MENU_SETTLE,
                            "sign off": Msg.MENU_SIGN_OFF, "sign_off": Msg.MENU_SIGN_OFF}
"""The display's heading by the action running (its name) or done (the outcome's kind)."""
TXN_HEADINGS: dict[Txn, Msg] = {Txn.PURCHASE: Msg.MENU_PURCHASE, Txn.PREAUTH: Msg.MENU_PREAUTH,
                                Txn.VOID: Msg.MENU_VOID, Txn.REFUND: Msg.MENU_REFUND,
                                Txn.COMPLETION: Msg.MENU_COMPLETION}
"""The heading while the amount or the original's voucher number is typed."""
PRINTED = frozenset(RECEIPT_KINDS) - {"balance"}
"""Kinds whose approval prints a receipt (签购单; a settlement prints its totals; an inquiry's slip is
printed only when asked for)."""


def lang_of(value: str) -> Lang:
    """The display language named in the configuration (``both`` when it names none we know)."""
    for lang in LANGS:
        if value == lang:
            return lang
    return "both"


#: the next step while the terminal works, by the screen it shows (keys of the virtual card slot)
_BUSY_HINTS = {
    "INSERT_OR_SWIPE": "w swipe · i insert · Esc cancel",
    "ENTER_PIN": "type the PIN · Enter · k test PIN · Esc",
    "PIN_RETRY": "type the PIN · Enter · k test PIN · Esc",
    "REMOVE_CARD": "r remove the card",
    "INSERT_CHIP": "chip card: r remove, i insert the chip · Esc cancel",
    "FALLBACK_SWIPE": "chip unreadable: r remove, then w swipe · Esc cancel",
    "SWIPE_AGAIN": "w swipe again, steady (g: swipe view) · Esc cancel",
    "READING_CARD": "reading the card, do not remove it",
    "READER_ERROR": "chip error: r remove, i reinsert the card or w swipe · Esc cancel",
    "READER_PROBLEM": "chip error: r remove, i reinsert the card or w swipe · Esc cancel",
}
#: the same with a real reader: the card is in the user's hand, not behind a key
_REAL_HINTS = {
    "INSERT_OR_SWIPE": "insert or swipe the card at the reader · Esc cancel",
    "REMOVE_CARD": "take the card out of the reader",
    "INSERT_CHIP": "chip card: insert it into the reader · Esc cancel",
    "FALLBACK_SWIPE": "chip unreadable: take it out and swipe it · Esc cancel",
    "SWIPE_AGAIN": "swipe again, steady · Esc cancel",
    "READER_ERROR": "chip error: take the card out and reinsert it, or swipe it · Esc cancel",
    "READER_PROBLEM": "chip error: take the card out and reinsert it, or swipe it · Esc cancel",
    "ENTER_PIN": "type the PIN on the keypad · Enter · Esc",
    "PIN_RETRY": "type the PIN on the keypad · Enter · Esc",
}


def hint(page: Page, codes: Sequence[str], *, busy: bool, signed_on: bool, real_reader: bool = False,
         locked: bool = False, unlocking: bool = False, printed: bool = False) -> str:
    """The next step, in one line (UI chrome). ``codes``: the screens shown, the last one current;
    ``printed``: the result printed a receipt (9 shows it)."""
    if page is Page.AMOUNT:
        return "amount in cents · Enter confirm · Esc back"
    if page is Page.VOUCHER:
        return "voucher no. (or 12-digit ref. no.) · Enter · Esc back"
    if page is Page.MORE:
        return "1 void · 2 refund · 3 pre-auth · 4 completion · 5 settle · 6 sign off · Esc"
    if page is Page.OPERATOR:
        return ("administrator password (admin_password) · Enter · Esc back" if unlocking
                else "operator password · Enter confirm · Esc back")
    if busy:
        table = {**_BUSY_HINTS, **_REAL_HINTS} if real_reader else _BUSY_HINTS
        for code in reversed(codes[-2:]):        # a detail line (READER_PROBLEM) follows its screen
            if code in table:
                return table[code]
        last = codes[-1] if codes else ""
        return "waiting for the host · Esc cancels" if last in {m.value for m in WAITING_FOR_HOST} else "Esc cancels"
    if locked:
        return "locked: 6 then the administrator password unlocks · ? help"
    if page is Page.RESULT:
        return ("Enter/Esc: menu · 9 receipt · t trace · h screens" if printed
                else "Enter/Esc: menu · d diagnosis · t trace · h screens")
    return "b balance · p purchase · s sign on · ? help" if signed_on else "s sign on · ? help"


def shown_screens(screens: Sequence[Screen], page: Page,
                  last_outcome: Outcome | None) -> tuple[tuple[Screen, ...], Screen | None]:
    """The current screen(s) of ``screens`` (the last one shown last) and the one before as context."""
    s = screens
    if not s:
        return (), None
    if page is Page.RESULT and last_outcome is not None:
        # the result: everything after the last step of the flow (headline, detail, a removal
        # failure), without the 请拔卡 prompt that was answered
        at = next((i + 1 for i in range(len(s) - 1, -1, -1) if s[i].msg in FLOW_STEPS), 0)
        result = [x for i, x in enumerate(s[at:], at) if x.msg is not Msg.REMOVE_CARD or i == len(s) - 1]
        if result:
            return tuple(result[-4:]), None
    return (s[-1],), (s[-2] if len(s) > 1 else None)


def status_text(rig: Rig | None, cfg: configmod.TerminalConfig, active: Sequence[ActiveFault],
                bridge_kind: str | None) -> Text:
    """The status lines under the display: sign-on or lock, host, reader, link and state, the armed
    faults, and a running proxy or relay (``bridge_kind``)."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if rig is None:
        t.append("○ terminal not open", "bold #b58900")
    elif rig.terminal.locked:
        t.append("■ 已锁定 locked", "bold #dc322f")
    elif rig.terminal.signed_on:
        t.append("● 已签到 signed on", "bold #2aa198")
    else:
        t.append("○ 未签到 not signed on", "bold #b58900")
    host = "bundled" if cfg.host is None else cfg.host
    t.append(f"  host {host}")
    t.append("\n")
    t.append(f"reader {cfg.reader}")
    if rig is not None:
        up = rig.terminal.link.connected
        t.append("  link ")
        t.append("up" if up else "idle", "#2aa198" if up else "#839496")
        t.append(f"  {rig.terminal.fsm.state.value}", "#839496")
    if active:
        t.append(f"\nfaults: {', '.join(a.id for a in active)}", "bold #dc322f")
    if bridge_kind is not None:
        t.append(f"\n{bridge_kind} running: the fault panel drives it (y)", "bold #268bd2")
    return t


class TerminalRendering(TerminalLayout):
    """The main screen's drawing layer and the session's view (see the module's docstring)."""

    screens: list[Screen]
    last_outcome: Outcome | None
    menu_title: Screen | None
    note: str                                  # the display's own line (operator lock feedback)
    txn_amount: str
    txn_card: str
    operator_ok: bool                          # the operator's password was given since the terminal opened
    printed_id: int | None                     # the journal row whose receipt the last result printed
    _wait_since: float | None
    _progress_timer: Timer | None

    def notify_user(self, message: str, severity: Severity = "information", timeout: float | None = None) -> None:
        self.notify(message, severity=severity, timeout=timeout)

    # --- the terminal's display ------------------------------------------------------------------------
    def _shown(self) -> tuple[tuple[Screen, ...], Screen | None]:
        """The current screen(s) and the one before as context."""
        return shown_screens(self.screens, self.page, self.last_outcome)

    def face_state(self) -> FaceState:
        rig = self.rig
        title = None
        if rig is not None:
            if rig.terminal.locked:
                title = Screen(Msg.TERMINAL_LOCKED)
            elif not rig.terminal.signed_on:
                title = Screen(Msg.SIGN_ON_REQUIRED)
            else:
                title = self.menu_title or Screen(Msg.WELCOME)
        page = self.page
        keys = self.keys
        if page is Page.AMOUNT:
            optional = not keys.txn.needs_amount and not keys.by_rrn
            amount_prompt = Screen(Msg.ENTER_AMOUNT_OR_ORIGINAL if optional else Msg.ENTER_AMOUNT)
            return FaceState(page, (amount_prompt,), self.lang, format_amount(keys.amount, self.cfg.currency), title,
                             heading=TXN_HEADINGS[keys.txn], note=self.note or self._original_note())
        if page is Page.VOUCHER:
            ask = Screen(Msg.ENTER_VOUCHER_OR_RRN if keys.txn is Txn.REFUND else Msg.ENTER_VOUCHER)
            return FaceState(page, (ask,), self.lang, keys.shown_entry(), title, heading=TXN_HEADINGS[keys.txn],
                             note=self.note)
        if page is Page.MORE:
            return FaceState(page, (), self.lang, None, title, note=self.note)
        if page is Page.OPERATOR:
            prompt = (Screen(Msg.TERMINAL_LOCKED),) if self.keys.unlocking else (Screen(Msg.OPERATOR_PASSWORD),)
            note = self.note or ("管理员密码 / Administrator password" if self.keys.unlocking else "")
            return FaceState(page, prompt, self.lang, self.keys.shown_entry(), title,
                             heading=Msg.MENU_OPERATOR, note=note)
        current, context = self._shown()
        if self.pinpad.active:
            current, context = (current[-1:] if current else ()), None
        heading = HEADINGS.get(self.busy or "") or HEADINGS.get(self.last_outcome.kind if self.last_outcome
                                                               and page is Page.RESULT else "")
        return FaceState(page, current, self.lang, self.keys.shown_entry(), title, heading=heading,
                         amount=self.txn_amount, card=self.txn_card, context=context, note=self.note)

    def _original_note(self) -> str:
        """The original a refund or completion names, under its amount entry."""
        voucher = self.keys.voucher
        if not voucher:
            return ""
        if self.keys.by_rrn:
            return f"原参考号 Ref. no. {voucher}"
        return f"原凭证号 Voucher {voucher}"

    def lcd_text(self) -> str:
        """The terminal screen as plain text (what the user reads; for tests and the log)."""
        width = max(20, self.lcd.content_size.width or 38)
        console = Console(width=width, record=True, color_system=None, force_terminal=False, legacy_windows=False)
        with console.capture() as cap:
            console.print(face_renderable(self.face_state(), 50))
        return cap.get()

    def refresh_face(self) -> None:
        if self.is_mounted:
            self.lcd.show(self.face_state())
            self._refresh_hint()

    def _refresh_hint(self) -> None:
        rig = self.rig
        focused = self.focused
        if isinstance(focused, FaultTree):
            line = "fault tree: ↑↓ choose · Enter arm/disarm · Esc back to the terminal"
        else:
            line = hint(self.page, [s.code for s in self.screens], busy=self.is_busy,
                        signed_on=rig is not None and rig.terminal.signed_on,
                        real_reader=not self.cfg.reader.startswith(SIM_URL),
                        locked=rig is not None and rig.terminal.locked, unlocking=self.keys.unlocking,
                        printed=self.printed_id is not None)
        self.query_one("#hint", Static).update(Text(line, "#839496", no_wrap=True, overflow="ellipsis"))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._refresh_hint()

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self._refresh_hint()

    def refresh_status(self) -> None:
        if not self.is_mounted:
            return
        bridge = self.bridge.controller
        t = status_text(self.rig, self.cfg, self.active_faults, None if bridge is None else bridge.kind)
        self.query_one("#status", Static).update(t)

    def refresh_slot(self) -> None:
        if not self.is_mounted:
            return
        sim = find_sim(self.rig.reader) if self.rig is not None else None
        t = Text(no_wrap=True, overflow="ellipsis")
        if not self.cfg.reader.startswith(SIM_URL):
            t.append(f"real reader {self.cfg.reader}: present the card to it", "#839496")
        else:
            try:
                prof = load_profile(self.card_name)
                what = f"{self.card_name} {mask_pan(prof.pan)} ({'chip' if prof.chip else 'stripe'})"
            except PosemuError as e:
                what = f"{self.card_name}: {e}"
            if sim is not None and sim.card is not None:
                t.append("■ card in slot  ", "bold #b58900")
            else:
                t.append("□ slot empty  ", "#839496")
            t.append(what)
        self.slot.set_state(t)

    def refresh_all(self) -> None:
        self.refresh_face()
        self.refresh_status()
        self.refresh_slot()

    # --- what the terminal and the session tell the screen (SessionView) ---------------------------------
    def on_terminal_screen(self, s: Screen) -> None:
        """The terminal's display port."""
        self.screens.append(s)
        del self.screens[:-20]
        if "amount" in s.params:
            self.txn_amount = s.params["amount"]
        if self.is_mounted:
            self.history.write(Text(render(s, self.lang), "bold" if s.msg is not Msg.CANCELLED else "#dc322f"))
        if s.msg in WAITING_FOR_HOST:
            self._start_progress()
        else:
            self._stop_progress()
        self.refresh_face()
        self.refresh_status()

    def on_trace_entry(self, e: TraceEntry) -> None:
        self.trace_pane.add(e)
        self._card_from(e)
        if e.kind in (Kind.TCP, Kind.READER, Kind.STATE):
            self.refresh_status()
            self.refresh_slot()

    def _card_from(self, e: TraceEntry) -> None:
        """The masked card number for the display, as soon as the terminal has read it."""
        card = ""
        if e.kind is Kind.ISO_OUT:
            card = str(e.data.get("fields", {}).get("2", ""))
        elif e.kind is Kind.JOURNAL and e.what == "written before send" and self.rig is not None:
            try:
                card = self.rig.journal.get(int(e.data["id"])).pan_masked
            except (KeyError, ValueError, TypeError, PosemuError):
                card = ""
        elif e.kind is Kind.STATE and e.data.get("event") == Event.CARD_READ.value and self.rig is not None:
            sim = find_sim(self.rig.reader)
            profile: Any = getattr(sim.default_card, "profile", None) if sim is not None else None
            pan = getattr(profile, "pan", "")
            card = mask_pan(pan) if isinstance(pan, str) and pan else ""
        if card and card != self.txn_card:
            self.txn_card = card
            self.refresh_face()

    def session_opening(self, cfg: configmod.TerminalConfig, *, reopened: bool) -> None:
        if reopened:
            self.trace_pane.note("terminal reopened")
        self.trace_pane.names = field_names(cfg.profile)

    def session_opened(self, rig: Rig) -> None:
        self.cfg = rig.cfg
        self.operator_ok = False
        self.keys.to_menu()
        self.refresh_all()

    def session_open_failed(self, out: Outcome) -> None:
        self.diag.show_outcome(out, [], self.lang, ())
        self.keys.to_menu()
        self.refresh_all()

    def session_finished(self, out: Outcome, reports: Sequence[CauseReport], entries: Sequence[TraceEntry]) -> None:
        self.last_outcome = out
        self.menu_title = None
        if out.pan_masked:
            self.txn_card = out.pan_masked
        if out.amount:
            self.txn_amount = format_amount(out.amount, out.currency)
        if out.kind == "sign_on" and out.approved:
            self.menu_title = Screen(Msg.SIGN_ON_OK)
            self.keys.to_menu()                   # signed on: straight back to the menu
        self.printed_id = out.journal_id if out.approved and out.kind in PRINTED else None
        if self.printed_id is not None:
            self.notify_user(f"签购单已打印 Receipt printed ({out.kind}, voucher {out.stan or '—'}): "
                             "press 9 to see it, save it as text or PDF.")
        if out.approved:
            self.diag.show_approved(out, self.lang)
        else:
            self.diag.show_outcome(out, entries, self.lang, reports)
            if out.kind != "sign_on" or self.page is Page.BUSY:
                self.show_pane("diag")

    def session_idle(self) -> None:
        self._stop_progress()
        self.keys.idle()
        self.refresh_all()

    # --- host-wait progress ----------------------------------------------------------------------------
    def _start_progress(self) -> None:
        bars = self.query("#progress").results(ProgressBar)
        bar = next(bars, None)
        if bar is None:                            # the screen is going away
            return
        self._wait_since = asyncio.get_running_loop().time()
        bar.total = self.cfg.timeouts.response
        bar.progress = 0
        bar.display = True
        if self._progress_timer is None:
            self._progress_timer = self.set_interval(0.1, self._tick_progress)

    def _tick_progress(self) -> None:
        if self._wait_since is None:
            return
        elapsed = asyncio.get_running_loop().time() - self._wait_since
        for bar in self.query("#progress").results(ProgressBar):
            bar.progress = min(elapsed, self.cfg.timeouts.response)

    def _stop_progress(self) -> None:
        self._wait_since = None
        timer, self._progress_timer = self._progress_timer, None
        if timer is not None:
            timer.stop()
        for bar in self.query("#progress").results(ProgressBar):
            bar.display = False
