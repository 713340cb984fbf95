"""Modules stay readable: none over 400 lines, no function over 60 lines.

Run as a script it lists the longest modules and functions of the package and the bench scripts.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("pkg", "collectors", "daemon", "tuner", "trainer_plugin", "dashboards", "bench")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    """Every Python file of the package and the bench scripts."""
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def module_lines(path: Path) -> int:
    return path.read_text().count("\n")


def functions(path: Path) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function and method in ``path``."""
    out: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                out.append((name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text()), "")
    return out


def test_no_module_over_400_lines() -> None:
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sources() if (n := module_lines(p)) > MAX_MODULE_LINES]
    assert not long, "modules over 400 lines:\n" + "\n".join(long)


def test_no_function_over_60_lines() -> None:
    long = [f"{p.relative_to(ROOT)}:{line} {name}: {n} lines"
            for p in sources() for name, line, n in functions(p) if n > MAX_FUNCTION_LINES]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def main() -> int:
    mods = sorted(((module_lines(p), p) for p in sources()), reverse=True)[:10]
    funcs = sorted(((n, f"{p.relative_to(ROOT)}:{line} {name}") for p in sources() for name, line, n in functions(p)),
                   reverse=True)[:10]
    print("longest modules:")
    for n, p in mods:
        print(f"  {n:4d}  {p.relative_to(ROOT)}")
    print("longest functions:")
    for n, where in funcs:
        print(f"  {n:4d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
