"""The import layering that docs/architecture.md draws holds in the code: the test reads the table of layers
from the document and checks every import of difface's own modules (module top or function body) against it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "difface"


def _layers() -> list[tuple[str, list[str]]]:
    """[(layer, [top-level module or package names])] from the doc's table, bottom first."""
    rows, inside = [], False
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "layer":  # the layer table's header: its rows follow, up to the first line that is no row
            inside = True
            continue
        if not inside or not line.startswith("|"):
            inside = inside and line.startswith("|")
            continue
        if len(cells) < 3 or set(cells[0]) <= {"-"}:
            continue
        modules = re.sub(r"\([^)]*\)", "", cells[1])  # drop the "(submodules ...)" part
        names = [n.rstrip("/").removesuffix(".py") for n in re.findall(r"`([^`]+)`", modules)]
        rows.append((cells[0], names))
    return rows


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("difface."):
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("difface."))


def test_the_doc_lists_every_module_once():
    layers = _layers()
    names = [n for _, ns in layers for n in ns]
    assert len(layers) >= 10 and len(names) == len(set(names))
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    tops -= {"__init__", "__main__", "_version", "__pycache__", "assets"}
    assert tops - set(names) == set(), "modules missing from docs/architecture.md's table"
    assert set(names) - tops == set(), "the table names modules that do not exist"


def test_no_module_imports_a_layer_above_its_own():
    where = {n: i for i, (_, ns) in enumerate(_layers()) for n in ns}
    names = [layer for layer, _ in _layers()]
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top in ("__init__", "__main__", "_version"):  # the package facade re-exports from every layer
            continue
        for line, module in _imports(path):
            target = where[module.split(".")[1]]
            if target > where[top]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} ({names[where[top]]}) imports {module} "
                              f"({names[target]})")
    assert upward == []
