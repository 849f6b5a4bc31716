"""Is a file a whole SQLite database? Checked from its header before SQLite opens it.

A corrupt or truncated database must be refused with a message naming the file, and must not be
touched: SQLite itself notices a truncated file only when it reads a missing page, possibly after
it has written to the file (WAL recovery, a checkpoint on close). The header says how big the
file must be (SQLite file format §1.3, https://www.sqlite.org/fileformat.html):

* bytes 0–15: ``"SQLite format 3\\0"``;
* bytes 16–17: the page size, big-endian, a power of two from 512 to 32768, or 1 for 65536;
* bytes 28–31: the database size in pages, valid when non-zero and when the change counter
  (bytes 24–27) equals the version-valid-for number (bytes 92–95).
"""

from __future__ import annotations

import os
from pathlib import Path

from protocol.errors import EnvironmentProblem

MAGIC = b"SQLite format 3\x00"
HEADER_LEN = 100


def check_sqlite_file(path: str | Path, what: str) -> None:
    """Raise :class:`EnvironmentProblem` if ``path`` exists and is not a whole SQLite database.

    A missing or empty file is fine (SQLite creates the database)."""
    p = Path(path)
    if str(path) == ":memory:" or not p.exists():
        return
    if not p.is_file():
        raise EnvironmentProblem(f"{what} {p} is not a file")
    try:
        size = os.stat(p).st_size
        with open(p, "rb") as f:
            head = f.read(HEADER_LEN)
    except OSError as e:
        raise EnvironmentProblem(f"cannot read the {what} {p}: {e.strerror or e}") from None
    if size == 0:
        return
    if len(head) < HEADER_LEN:
        raise EnvironmentProblem(f"{what} {p} is truncated ({size} bytes, shorter than a SQLite header); "
                                 "restore it from a backup or move it away")
    if head[:16] != MAGIC:
        raise EnvironmentProblem(f"{what} {p} is not a SQLite database (corrupt?); restore it from a backup or "
                                 "move it away")
    page_size = int.from_bytes(head[16:18], "big")
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise EnvironmentProblem(f"{what} {p} has a corrupt header (page size {page_size})")
    pages = int.from_bytes(head[28:32], "big")
    header_size_valid = pages > 0 and head[24:28] == head[92:96]
    if size % page_size or (header_size_valid and size < pages * page_size):
        expected = f"{pages * page_size}" if header_size_valid else f"a multiple of {page_size}"
        raise EnvironmentProblem(f"{what} {p} is truncated ({size} bytes, expected {expected}); restore it from "
                                 "a backup or move it away")
