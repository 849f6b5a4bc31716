"""``python -m emulator.wireshark``: regenerate the dissector's data block from the profiles.

Run from a source checkout after changing :mod:`protocol.specs` (or the response-code, entry-mode,
network-code or EMV tag tables); the test suite checks that the shipped file is up to date.
"""

from __future__ import annotations

from pathlib import Path

from emulator.wireshark import DISSECTOR_FILE, render


def main() -> None:
    path = Path(__file__).with_name(DISSECTOR_FILE)
    old = path.read_text(encoding="utf-8")
    new = render(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
        print(f"updated {path}")
    else:
        print(f"{path} is up to date")


if __name__ == "__main__":
    main()
