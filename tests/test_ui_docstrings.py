"""Every public class of the desktop emulator says what it is (issue 10, hygiene): an ast scan of
``emulator/ui/``, nested classes (Textual messages) included."""

from __future__ import annotations

import ast
from pathlib import Path

import emulator.ui

UI = Path(emulator.ui.__file__).parent


def undocumented(tree: ast.AST, prefix: str = "") -> list[str]:
    out: list[str] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            name = prefix + node.name
            if not node.name.startswith("_") and ast.get_docstring(node) is None:
                out.append(name)
            out += undocumented(node, name + ".")
    return out


def test_the_scan_finds_an_undocumented_class() -> None:
    tree = ast.parse("class A:\n    '''doc'''\n    class B:\n        pass\nclass _C:\n    pass\n")
    assert undocumented(tree) == ["A.B"]


def test_every_public_class_in_the_ui_has_a_docstring() -> None:
    files = sorted(UI.glob("*.py"))
    assert len(files) > 10
    missing = [f"{p.name}: {c}" for p in files for c in undocumented(ast.parse(p.read_text(encoding="utf-8")))]
    assert missing == []
