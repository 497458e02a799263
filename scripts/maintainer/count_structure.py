"""Structure counts of a source tree (file, function and import measures), from the AST.

    python scripts/maintainer/count_structure.py src/difface [--max-file 450 --max-function 80]

Prints: files over --max-file lines, functions over --max-function lines (decorators and docstring
included), function-level imports of the package's own modules (optional dependencies are not
counted: only `difface...` imports), and module-level statements that call something for its side
effect (a bare call expression at module top level, e.g. `os.umask(0)` or `torch.set_num_threads(1)`) or
store into another object (an item or attribute assignment, e.g. `os.environ["X"] = "1"`).
Exit status 0 always: it measures, it does not judge.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def _own_import(node: ast.AST, package: str) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == package
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == package for a in node.names)
    return False


def _top_level(body: list[ast.stmt]):
    """Module-level statements, including those inside top-level if / try / with blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If | ast.Try | ast.With):
            for part in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(stmt, part, []))
            for h in getattr(stmt, "handlers", []):
                yield from _top_level(h.body)


def count(root: Path, max_file: int, max_function: int) -> dict:
    package = root.name
    long_files, long_functions, inner_imports, side_effects = [], [], [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root.parent)
        n = len(text.splitlines())
        if n > max_file:
            long_files.append((str(rel), n))
        tree = ast.parse(text)
        for stmt in _top_level(tree.body):
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                side_effects.append((str(rel), stmt.lineno, ast.unparse(stmt.value)[:60]))
            elif isinstance(stmt, ast.Assign | ast.AugAssign) and any(
                    isinstance(t, ast.Subscript | ast.Attribute)
                    for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])):
                side_effects.append((str(rel), stmt.lineno, ast.unparse(stmt)[:60]))  # os.environ[...] = ...
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > max_function:
                    long_functions.append((f"{rel}:{node.lineno} {node.name}", length))
                for inner in ast.walk(node):
                    if _own_import(inner, package):
                        inner_imports.append(f"{rel}:{inner.lineno}")
    return {"long_files": long_files, "long_functions": long_functions,
            "function_level_own_imports": sorted(set(inner_imports)), "module_level_calls": side_effects}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, nargs="?", default=Path("src/difface"))
    ap.add_argument("--max-file", type=int, default=450)
    ap.add_argument("--max-function", type=int, default=80)
    ap.add_argument("-v", "--verbose", action="store_true", help="list every function-level import")
    a = ap.parse_args()
    c = count(a.root, a.max_file, a.max_function)
    print(f"files over {a.max_file} lines: {len(c['long_files'])}")
    for f, n in c["long_files"]:
        print(f"  {n:5d}  {f}")
    print(f"functions over {a.max_function} lines: {len(c['long_functions'])}")
    for f, n in sorted(c["long_functions"], key=lambda r: -r[1]):
        print(f"  {n:5d}  {f}")
    print(f"function-level imports of {a.root.name}'s own modules: {len(c['function_level_own_imports'])}")
    if a.verbose:
        for f in c["function_level_own_imports"]:
            print(f"  {f}")
    print(f"module-level calls and stores (import-time side effects): {len(c['module_level_calls'])}")
    for f, line, call in c["module_level_calls"]:
        print(f"  {f}:{line}  {call}")


if __name__ == "__main__":
    main()
