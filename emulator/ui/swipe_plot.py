"""Plot one track of a simulated swipe in text: the head signal in braille, with markers.

The head presents a pulse per flux transition (alternating polarity) plus noise; the reader's
peak detector accepts some of them, recovers the bit clock from their spacing, and decoding
may break (clock never locked, clock lost, parity, LRC). :func:`plot_track` draws, from a
:class:`hardware.magstripe.TrackDiagnostics`:

* the candidate peaks as stems from the zero line — accepted transition peaks, transition
  peaks the detector dropped, and noise peaks in different colours;
* the detector's threshold as dots;
* a marker row: ``▲`` where the clock locked, ``┬`` bit-cell boundaries when zoomed in (a
  ``─`` bar where cells were recovered otherwise), ``✗`` where decoding broke;
* a legend line with what broke and where.

The recovered bits are card data and are never drawn, only the cell boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from hardware.magstripe import TrackDiagnostics
from hardware.ports import TrackRead

# Accent colours chosen to read on dark and on light backgrounds (Solarized accents).
ACCEPTED = "#2aa198"
DROPPED = "#b58900"
NOISE = "#dc322f"
THRESHOLD = "#6c71c4"
BREAK = "bold #dc322f"
LOCK = "bold #268bd2"
DIM = "#839496"

_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
"""Braille dot bits by (row within the cell, column within the cell)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A range of ADC samples to plot, ``start`` ≤ sample < ``end``."""

    start: int
    end: int

    @property
    def span(self) -> int:
        return max(1, self.end - self.start)


def full_window(diag: TrackDiagnostics) -> Window:
    """Every candidate peak of the track, with a little margin."""
    if not diag.signal_samples:
        return Window(0, 1)
    lo, hi = min(diag.signal_samples), max(diag.signal_samples)
    pad = max(1, (hi - lo) // 50)
    return Window(max(0, lo - pad), hi + pad + 1)


def break_window(diag: TrackDiagnostics, cells: int = 24) -> Window | None:
    """About ``cells`` bit cells either side of where decoding broke (``None`` if it did not)."""
    if diag.break_sample is None:
        return None
    period = diag.clock.periods[-1] if diag.clock.periods else None
    if period is None or period <= 0:
        full = full_window(diag)
        period = full.span / 200
    half = max(4, int(period * cells))
    return Window(max(0, diag.break_sample - half), diag.break_sample + half)


def _column(sample: int, win: Window, dot_cols: int) -> int | None:
    if not win.start <= sample < win.end:
        return None
    return min(dot_cols - 1, (sample - win.start) * dot_cols // win.span)


def plot_track(diag: TrackDiagnostics, read: TrackRead | None, *, width: int, rows: int = 4,
               window: Window | None = None) -> list[Text]:
    """``rows`` lines of braille signal, one marker line and one legend line, ``width`` cells wide."""
    width = max(8, width)
    rows = max(1, rows)
    win = window or full_window(diag)
    dot_cols, dot_rows = width * 2, rows * 4
    half = dot_rows // 2
    accepted = set(diag.peaks.samples)
    heights = [h for s, h in zip(diag.signal_samples, diag.signal_heights, strict=False)
               if win.start <= s < win.end]
    ymax = max([*heights, *(t for t in diag.peaks.thresholds), 1e-9])
    bits = [[0] * width for _ in range(rows)]
    rank = [[0] * width for _ in range(rows)]  # 0 empty/threshold, 1 accepted, 2 dropped, 3 noise

    def dot(x: int, y: int, kind: int) -> None:
        cr, cc = divmod(y, 4)[0], x // 2
        bits[cr][cc] |= _DOTS[y % 4][x % 2]
        rank[cr][cc] = max(rank[cr][cc], kind)

    # threshold dots (one per column, from the accepted peak nearest to the left)
    thr_at: dict[int, float] = {}
    for s, t in zip(diag.peaks.samples, diag.peaks.thresholds, strict=False):
        col = _column(s, win, dot_cols)
        if col is not None:
            thr_at[col] = t
    last_thr: float | None = None
    for x in range(dot_cols):
        last_thr = thr_at.get(x, last_thr)
        if last_thr is not None and x % 4 == 0:
            dy = min(half - 1, round(last_thr / ymax * (half - 1)))
            dot(x, half - 1 - dy, 0)
            dot(x, half + dy, 0)
    # stems
    for s, h, pol, src in zip(diag.signal_samples, diag.signal_heights, diag.signal_polarities,
                              diag.signal_sources, strict=False):
        xs = _column(s, win, dot_cols)
        if xs is None:
            continue
        kind = 3 if src < 0 else (1 if s in accepted else 2)
        length = max(1, round(abs(h) / ymax * half))
        for k in range(length):
            dot(xs, half - 1 - k if pol >= 0 else half + k, kind)
    styles = {0: THRESHOLD, 1: ACCEPTED, 2: DROPPED, 3: NOISE}
    lines: list[Text] = []
    for r in range(rows):
        line = Text(no_wrap=True, overflow="crop")
        for c in range(width):
            line.append(chr(0x2800 + bits[r][c]), styles[rank[r][c]] if bits[r][c] else "")
        lines.append(line)
    lines.append(_markers(diag, win, width))
    lines.append(legend(diag, read))
    return lines


def _markers(diag: TrackDiagnostics, win: Window, width: int) -> Text:
    cells = [" "] * width
    styles = [""] * width
    bounds: Sequence[int] = diag.clock.boundaries
    in_win = [b for b in bounds if win.start <= b < win.end]
    if bounds:
        first = _column(max(bounds[0], win.start), win, width)
        last = _column(min(bounds[-1], win.end - 1), win, width)
        if first is not None and last is not None and bounds[0] < win.end and bounds[-1] >= win.start:
            for col in range(first, last + 1):
                cells[col], styles[col] = "─", ACCEPTED
        spacing = width * (diag.clock.periods[-1] if diag.clock.periods else 0) / win.span
        if spacing >= 2:
            for b in in_win:
                tick = _column(b, win, width)
                if tick is not None:
                    cells[tick], styles[tick] = "┬", ACCEPTED
    lock = diag.clock.lock_peak
    if lock is not None and lock < len(diag.peaks.samples):
        at = _column(diag.peaks.samples[lock], win, width)
        if at is not None:
            cells[at], styles[at] = "▲", LOCK
    if diag.break_sample is not None:
        brk = _column(diag.break_sample, win, width)
        if brk is not None:
            cells[brk], styles[brk] = "✗", BREAK
    out = Text(no_wrap=True, overflow="crop")
    for ch, st in zip(cells, styles, strict=True):
        out.append(ch, st)
    return out


def ms(diag: TrackDiagnostics, sample: int) -> float:
    """A sample index as milliseconds (rounded to 0.1 ms, never ``-0.0``)."""
    return round(sample / diag.adc_rate_hz * 1e3, 1) + 0.0


def legend(diag: TrackDiagnostics, read: TrackRead | None) -> Text:
    """One line: the track's status, the detector's counts, and where decoding broke."""
    status = read.status.value if read is not None else "?"
    ok = read is not None and read.ok
    out = Text(no_wrap=False)
    out.append(f"T{diag.track} ", "bold")
    out.append(status.upper(), ACCEPTED if ok else BREAK)
    accepted = sum(1 for s in diag.peaks.sources if s >= 0)
    out.append(f"  {accepted}/{diag.transitions} peaks", "")
    if diag.noise_peaks:
        out.append(f"  {diag.noise_peaks} noise", NOISE)
    if diag.missed_transitions:
        out.append(f"  {diag.missed_transitions} missed", DROPPED)
    if diag.clock.lock_peak is not None and diag.clock.lock_peak < len(diag.peaks.samples):
        out.append(f"  ▲ lock {ms(diag, diag.peaks.samples[diag.clock.lock_peak]):.1f} ms", LOCK)
    if diag.break_sample is not None or (read is not None and not read.ok):
        where = f" at {ms(diag, diag.break_sample):.1f} ms" if diag.break_sample is not None else ""
        bit = f", bit {diag.break_bit}" if diag.break_bit is not None else ""
        reason = diag.break_reason or (read.detail if read is not None else "")
        out.append(f"  ✗{where}{bit}: {reason}", BREAK)
    return out
