"""The README's layout section is the architecture: every module is listed there, and every
`from .` import points down its order (upper layers call lower ones, never the reverse)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "casbackup"
MAX_FUNCTION_LINES = 60


def layout_order() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("```\ncasbackup/"):]
    block = block[: block.index("```", 4)]
    order = ["errors"]  # the exception hierarchy sits under everything
    for line in block.splitlines():
        m = re.match(r"^ {2}([\w./]+)(?: {2,}|$)", line)
        if m:
            order.append(m.group(1).rstrip("/").removesuffix(".py"))
    return order


def top_level_modules() -> set[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return names | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def imports_of(path: Path) -> list[str]:
    """The top-level casbackup modules a module imports from outside its own subpackage."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    depth = len(rel.parts) - 1
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"from (\.+)([\w.]*) import (.*)", line)
        if not m or len(m.group(1)) - 1 < depth:
            continue  # not a relative import, or one inside the same subpackage
        mod, names = m.group(2), m.group(3)
        out += [mod.split(".")[0]] if mod else [n.strip().split(" ")[0] for n in names.strip("()").split(",")]
    return [t for t in out if t in top_level_modules()]


def test_readme_layout_lists_every_module() -> None:
    assert top_level_modules() - {"errors"} == set(layout_order()) - {"errors"}


def test_every_import_points_down_the_layout() -> None:
    rank = {m: i for i, m in enumerate(layout_order())}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        top = rel.parts[0].removesuffix(".py")
        if top in ("__init__", "__main__"):
            continue  # the public facade re-exports from every layer
        upward += [f"{rel} -> {t}" for t in imports_of(path) if t != top and rank[t] > rank[top]]
    assert upward == []


def test_long_functions_say_why() -> None:
    """A function over MAX_FUNCTION_LINES lines carries a comment on its def line saying why."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and "#" not in lines[node.lineno - 1]:
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert unexplained == []
