"""The desktop emulator (``posemu ui``): a Textual app around the terminal.

Layout: the terminal's face (screen with the bilingual catalogue messages, status line, keypad)
on the left; panes on the right — card slot, trace, swipe view, faults, diagnosis. See
``docs/ui.md``.
"""

from __future__ import annotations

from emulator.ui.app import PosemuApp

__all__ = ["PosemuApp"]
