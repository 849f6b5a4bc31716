"""The card slot: the reader in use, the card profile, insert / swipe (speed, tilt) / remove."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from emulator.ui.readers import SIM_URL, ReaderChoice
from hardware.cards.profiles import list_profiles, load_profile
from protocol.errors import PosemuError


def profile_options() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in list_profiles():
        try:
            p = load_profile(name)
            kind = "chip" if p.chip else "stripe"
        except PosemuError:
            kind = "invalid"
        out.append((f"{name} ({kind})", name))
    return out


class CardSlot(Vertical):
    """Reader and card pickers, the slot's state, swipe controls and the card actions."""

    class Action(Message):
        """insert | swipe | remove | pin (the virtual cardholder types the test card's PIN)."""

        def __init__(self, action: str) -> None:
            super().__init__()
            self.action = action

    class ProfileChanged(Message):
        """The user picked another card profile (``name``) for the virtual slot."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class ReaderChanged(Message):
        """The user picked another reader (``url``: ``sim://``, ``pcsc://…`` or ``serial://…``); the
        screen reopens the terminal on it."""

        def __init__(self, url: str) -> None:
            super().__init__()
            self.url = url

    def __init__(self, *, profile: str, reader_url: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self._profile = profile
        self._reader_url = reader_url
        self._choices: list[ReaderChoice] = []
        self._quiet = 0

    def compose(self) -> ComposeResult:
        with Horizontal(classes="slot-row"):
            yield Label("Reader", classes="slot-label")
            yield Select(self._reader_options(), value=self._reader_value(), allow_blank=False, compact=True,
                         id="reader-select")
        with Horizontal(classes="slot-row"):
            yield Label("Card", classes="slot-label")
            yield Select(profile_options(), value=self._profile, allow_blank=False, compact=True,
                         id="profile-select")
        yield Static(id="slot-state")
        with Horizontal(classes="slot-row"):
            yield Label("Speed", classes="slot-label")
            yield Input("10", type="number", compact=True, id="swipe-speed", classes="num")
            yield Label("in/s  Tilt", classes="slot-unit")
            yield Input("0", type="number", compact=True, id="swipe-skew", classes="num")
            yield Label("°", classes="slot-unit")
        with Horizontal(classes="slot-buttons"):
            yield Button("Insert i", id="card-insert", compact=True)
            yield Button("Swipe w", id="card-swipe", compact=True)
            yield Button("Remove r", id="card-remove", compact=True)
        with Horizontal(classes="slot-buttons"):
            yield Button("Test PIN k", id="card-pin", compact=True)
        yield Static(id="reader-note")

    # --- readers ---------------------------------------------------------------------------
    def _reader_value(self) -> str:
        return SIM_URL if self._reader_url.startswith(SIM_URL) else self._reader_url

    def _reader_options(self) -> list[tuple[str, str]]:
        opts = [("virtual (sim://)", SIM_URL)]
        seen = {SIM_URL}
        for c in self._choices:
            if c.url not in seen:
                opts.append((c.label, c.url))
                seen.add(c.url)
        current = self._reader_value()
        if current not in seen:
            opts.append((f"{current} (configured)", current))
        return opts

    def set_readers(self, choices: list[ReaderChoice], note: str) -> None:
        """Refresh the reader list (hot-plug); keeps the current choice."""
        if choices != self._choices:
            self._choices = choices
            sel = self.query_one("#reader-select", Select)
            self._quiet += 1
            sel.set_options(self._reader_options())
            sel.value = self._reader_value()
            self.call_after_refresh(self._unquiet)
        self.query_one("#reader-note", Static).update(Text(note, "#839496") if note else "")

    def _unquiet(self) -> None:
        self._quiet = max(0, self._quiet - 1)

    def set_reader(self, url: str) -> None:
        self._reader_url = url
        virtual = url.startswith(SIM_URL)
        for bid in ("#card-insert", "#card-swipe", "#card-remove", "#card-pin", "#profile-select"):
            self.query_one(bid).disabled = not virtual

    def set_state(self, text: Text) -> None:
        self.query_one("#slot-state", Static).update(text)

    def swipe_values(self) -> tuple[str, str]:
        return (self.query_one("#swipe-speed", Input).value, self.query_one("#swipe-skew", Input).value)

    # --- events ----------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id or ""
        if bid.startswith("card-"):
            event.stop()
            self.post_message(self.Action(bid.removeprefix("card-")))

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if not isinstance(event.value, str):
            return
        if event.select.id == "profile-select" and event.value != self._profile:
            self._profile = event.value
            self.post_message(self.ProfileChanged(event.value))
        elif event.select.id == "reader-select" and not self._quiet and event.value != self._reader_value():
            self.post_message(self.ReaderChanged(event.value))
