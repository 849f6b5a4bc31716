"""The tables of ``docs/faults.md`` that come from the catalogue, so the page cannot drift from it.

``python -m faults.docgen`` prints the generated block; ``docs/faults.md`` holds it between
``<!-- generated: faults.docgen -->`` and ``<!-- end generated -->`` (a test compares them).
"""

from __future__ import annotations

from faults.catalogue import Catalogue, load

BEGIN = "<!-- generated: faults.docgen -->"
END = "<!-- end generated -->"
REMOVAL = ("REMOVE_CARD_FAILED", "CARD_REMOVED_EARLY")


def _order(cid: str) -> tuple[str, int]:
    return cid[0], int(cid[1:])


def cause_table(cat: Catalogue) -> str:
    lines = ["| cause | article wording | group | faults (@presets) |", "|---|---|---|---|"]
    for cid in sorted(cat.causes, key=_order):
        c = cat.causes[cid]
        faults = cat.covering(cid)
        groups = sorted({f.group for f in faults})
        cells = "; ".join(f"`{f.id}` ({', '.join('@' + p.name for p in f.presets)})" for f in faults)
        lines.append(f"| {cid} | {c.zh} {c.en} | {', '.join(groups)} | {cells} |")
    return "\n".join(lines)


def group_table(cat: Catalogue) -> str:
    lines = ["| group | causes | what the diagnosis names |", "|---|---|---|"]
    for g in sorted(cat.groups.values(), key=lambda g: g.id):
        lines.append(f"| `{g.id}` | {' '.join(g.causes)} | {g.title_zh} / {g.title_en} |")
    return "\n".join(lines)


def removal_table(cat: Catalogue) -> str:
    lines = ["| cause | presets that show 拔出卡失败 (REMOVE_CARD_FAILED) or CARD_REMOVED_EARLY |", "|---|---|"]
    for cid in sorted((c for c in cat.causes if c.startswith("B")), key=_order):
        shows = [f"`{f.id}@{p.name}`" for f in cat.covering(cid) for p in f.presets
                 if any(code in p.expect for code in REMOVAL)]
        lines.append(f"| {cid} | {', '.join(shows) or '— (see below)'} |")
    return "\n".join(lines)


def block(cat: Catalogue | None = None) -> str:
    cat = cat or load()
    return "\n\n".join([BEGIN, "### Causes → faults", cause_table(cat), "### Cause groups", group_table(cat),
                        "### 拔出卡失败 by cause", removal_table(cat), END])


if __name__ == "__main__":
    print(block())
