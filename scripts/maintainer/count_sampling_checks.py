"""How often one `difface restore` call validates and defaults the sampling settings (eta, start step, nfe).

    python scripts/maintainer/count_sampling_checks.py [--src src] [-- RESTORE ARGS...]

Static part, from the AST of every module under --src/difface:
  - a validation site of an option is the test of an `if` whose body raises an error naming it (the words
    eta, start_step / start step, nfe in the raise), or an `assert` naming it;
  - a default site is a conditional expression or an `if` that fills the option when it is None
    (`x = d if x is None else x`, `if x is None: x = d`, `x or d` is not counted);
  - a call of config's range checks (`_int` / `_number`) whose first argument is the option's name;
  - the places that read DEFAULT_NFE, and integer literals passed as `nfe=`.
Dynamic part: runs `difface restore` in this process (default: two calls on the example photo, one with the
defaults and one with `--preset fast --start-step 100 --eta 0.5`, each into a temporary folder) under sys.settrace
and counts how many times each site's line ran. Prints one table per call (--sites: and each site); exit status 0.
"""

from __future__ import annotations

import argparse
import ast
import collections
import re
import sys
import tempfile
from pathlib import Path

OPTIONS = {"eta": r"\beta\b", "start_step": r"\bstart[_ ]steps?\b", "nfe": r"\bnfe\b"}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def sites(root: Path) -> tuple[dict, dict, list[str]]:
    """({option: {(file, line)}} of validation sites, the same of default sites, DEFAULT_NFE reads)."""
    checks: dict[str, set] = collections.defaultdict(set)
    defaults: dict[str, set] = collections.defaultdict(set)
    nfe_reads: list[str] = []
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text())
        key = str(f.resolve())
        for node in ast.walk(tree):
            if isinstance(node, ast.If):
                raises = [r for r in node.body if isinstance(r, ast.Raise)]
                text = " ".join(ast.unparse(r) for r in raises)
                for opt, pat in OPTIONS.items():
                    if raises and re.search(pat, text):
                        checks[opt].add((key, node.test.lineno))
                test = node.test
                if isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Is) and \
                        isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None:
                    target = ast.unparse(test.left).split(".")[-1]
                    if target in OPTIONS and any(isinstance(s, ast.Assign) for s in node.body):
                        defaults[target].add((key, node.lineno))
            elif isinstance(node, ast.Assert):
                for opt, pat in OPTIONS.items():
                    if re.search(pat, ast.unparse(node)):
                        checks[opt].add((key, node.lineno))
            elif isinstance(node, ast.IfExp):
                test = node.test
                if isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Is) and \
                        isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None:
                    target = ast.unparse(test.left).split(".")[-1]
                    if target in OPTIONS:
                        defaults[target].add((key, node.lineno))
            elif isinstance(node, ast.Call):
                fn = ast.unparse(node.func).split(".")[-1]
                first = node.args[0] if node.args else None
                if fn in ("_int", "_number") and isinstance(first, ast.Constant) and first.value in OPTIONS:
                    checks[first.value].add((key, node.lineno))  # config's range checks name the option first
                for kw in node.keywords:
                    if kw.arg == "nfe" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, int):
                        nfe_reads.append(f"{f.relative_to(root.parent)}:{node.lineno} (literal nfe={kw.value.value})")
            if isinstance(node, ast.Name) and node.id == "DEFAULT_NFE" and isinstance(node.ctx, ast.Load):
                nfe_reads.append(f"{f.relative_to(root.parent)}:{node.lineno}")
    return checks, defaults, nfe_reads


def run_counted(argv: list[str], watched: set) -> collections.Counter:
    """Line executions of `watched` (file, line) pairs while `difface ARGV` runs in this process."""
    hits: collections.Counter = collections.Counter()
    files = {f for f, _ in watched}

    def tracer(frame, event, arg):
        if frame.f_code.co_filename not in files:
            return None

        def local(frame, event, arg):
            if event == "line" and (frame.f_code.co_filename, frame.f_lineno) in watched:
                hits[(frame.f_code.co_filename, frame.f_lineno)] += 1
            return local
        return local

    from difface.cli import main

    sys.settrace(tracer)
    try:
        main(argv)
    except SystemExit:
        pass
    finally:
        sys.settrace(None)
    return hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=Path("src"))
    ap.add_argument("--sites", action="store_true", help="also list every site that ran, with its count")
    ap.add_argument("restore", nargs="*", help="arguments after `difface restore` (default: the example face)")
    args = ap.parse_args()
    root = (args.src / "difface").resolve()
    sys.path.insert(0, str(args.src.resolve()))
    checks, defaults, nfe_reads = sites(root)
    photo = str(args.src.resolve().parent / "examples" / "astronaut_lq.png")
    calls = [args.restore] if args.restore else [[photo], [photo, "--preset", "fast", "--start-step", "100",
                                                          "--eta", "0.5"]]
    watched = set().union(*checks.values(), *defaults.values())
    for call in calls:
        argv = ["restore", *call, "-o", tempfile.mkdtemp(prefix="difface-count-")]
        hits = run_counted(argv, watched)
        print(f"\none call: difface {' '.join(argv)}")
        print(f"{'option':<12}{'validation sites':>18}{'run':>6}{'default sites':>15}{'run':>6}")
        for opt in OPTIONS:
            ran_c = sum(hits[s] for s in checks[opt])
            ran_d = sum(hits[s] for s in defaults[opt])
            print(f"{opt:<12}{len(checks[opt]):>18}{ran_c:>6}{len(defaults[opt]):>15}{ran_d:>6}")
            for kind, where in (("check", checks[opt]), ("default", defaults[opt])):
                for f, line in sorted(w for w in where if hits[w]) if args.sites else ():
                    print(f"    {kind} {Path(f).relative_to(root.parent)}:{line} ran {hits[(f, line)]}x")
    print(f"DEFAULT_NFE read in {len(nfe_reads)} places" + "".join(f"\n  {r}" for r in nfe_reads))


if __name__ == "__main__":
    main()
