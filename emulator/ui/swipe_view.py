"""The swipe view: after each simulated swipe, the head signal of every track with its markers."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual import events
from textual.widgets import Static

from emulator.ui.swipe_plot import ACCEPTED, BREAK, DROPPED, LOCK, NOISE, THRESHOLD, break_window, plot_track
from hardware.magstripe import SwipeReport


def legend_line() -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    for label, style in (("▮ accepted", ACCEPTED), ("▮ dropped", DROPPED), ("▮ noise", NOISE),
                         ("⠁ threshold", THRESHOLD), ("▲ lock", LOCK), ("✗ break", BREAK)):
        t.append(label + "  ", style)
    return t


class SwipeView(Static):
    """Signal plots of the last swipe (``z`` zooms to where decoding broke)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.report: SwipeReport | None = None
        self.zoom = False

    def on_mount(self) -> None:
        self.redraw()

    def show_report(self, report: SwipeReport) -> None:
        self.report = report
        self.redraw()

    def toggle_zoom(self) -> None:
        self.zoom = not self.zoom
        self.redraw()

    def on_resize(self, event: events.Resize) -> None:
        self.redraw()

    def redraw(self) -> None:
        r = self.report
        if r is None:
            self.update(Text("No swipe yet: press w to swipe the selected card (set speed and tilt in the card pane).",
                             "#839496"))
            return
        width = max(20, (self.content_size.width or 40) - 1)
        p = r.params
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(f"swipe {p.speed_ips:g} in/s", "bold")
        if p.accel_ips2:
            head.append(f" {p.accel_ips2:+g} in/s²")
        head.append(f"  tilt {p.skew_deg:g}°  {r.duration_s * 1e3:.1f} ms", "bold")
        head.append("  zoom: break" if self.zoom else "  z: zoom to break", "#839496")
        parts: list[Text] = [head, legend_line()]
        for n, diag in enumerate(r.tracks, start=1):
            read = r.result.track(n)
            if diag is None:
                parts.append(Text(f"T{n} not recorded on this card", "#839496"))
                continue
            window = break_window(diag) if self.zoom else None
            parts.extend(plot_track(diag, read, width=width, rows=3, window=window))
        self.update(Group(*parts))
