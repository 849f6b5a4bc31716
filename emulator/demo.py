"""Demo identities shared by the terminal's defaults and the bundled host's seed data.

All keys are well-known test keys; never use them outside an emulator.
"""

from __future__ import annotations

DEMO_TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
DEMO_TID = "POSEMU01"
DEMO_MID = "898310012345678"
LOAD_TIDS = tuple(f"LOAD{i:04d}" for i in range(1, 33))
ACQUIRER_ID = "00010000"
