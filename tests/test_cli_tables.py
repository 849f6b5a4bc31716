"""CLI output a payments engineer reads at 80 columns (issue 12 item 8): ``posemu faults list``
never cuts an id, a cause or a preset name; ``posemu train`` shows no literal ``{placeholder}``
and never offers the same remedy twice."""

from __future__ import annotations

import re

from click.testing import CliRunner

from emulator.cli import main
from faults.catalogue import load


def test_faults_list_keeps_every_id_whole_at_80_columns() -> None:
    cat = load()
    for columns in ("80", "200"):
        res = CliRunner().invoke(main, ["faults", "list"], env={"COLUMNS": columns})
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()
        assert max(len(line) for line in lines) <= int(columns)
        cells = {c.strip() for line in lines for c in line.split("│")}
        for f in cat.faults.values():
            assert f.id in cells, f"{f.id} cut at {columns} columns"
            for p in f.presets:
                assert p.name in cells or any(p.name in c.split() for c in cells), p.name
        assert "…" not in res.output
    narrow = CliRunner().invoke(main, ["faults", "list"], env={"COLUMNS": "80"}).output
    assert "posemu faults show ID" in narrow               # where the columns left out are


def test_train_fills_values_and_never_repeats_a_remedy() -> None:
    res = CliRunner().invoke(main, ["train", "--rounds", "4", "--seed", "3", "--answers", "1,1,1,1", "--lang", "both"])
    assert res.exit_code in (0, 1), res.output
    assert not re.search(r"\{\w+\}", res.output), res.output
    assert "CNY 12,345.67" in res.output                     # the balance the host answered
    for block in res.output.split("— round ")[1:]:
        remedies = re.findall(r"^  \d\. (.+)$", block, re.M)
        assert len(remedies) == 4 and len(set(remedies)) == 4, remedies
