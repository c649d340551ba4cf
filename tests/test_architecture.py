"""The layers of docs/architecture.md hold in the code: no import runs back up, none closes a circle,
and the page's table names every package and module of the tree, and nothing else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "erasekit"
PAGE = ROOT / "docs" / "architecture.md"


def page_layers() -> dict[str, int]:
    """Each row of the page's layer table: every `path` it names → the row's layer number."""
    layers = {}
    for line in PAGE.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s[^|]*\|([^|]*)\|", line)
        if row:
            for name in re.findall(r"`([^`]+)`", row[2]):
                layers[name.removeprefix("erasekit/")] = int(row[1])
    return layers


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def place(path: Path) -> str:
    """The table's name of the package or module a file belongs to: `jobs/`, `cli.py`, `erasekit/__init__.py`."""
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) > 1:
        return rel.parts[0] + "/"
    return "__init__.py" if rel.name == "__init__.py" else rel.name


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The erasekit modules ``path`` imports when it runs, function-local imports included;
    those under ``if TYPE_CHECKING:`` (never run) left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            candidates = [[f"{base}.{alias.name}", base] for alias in node.names]
        else:
            candidates = []
        for options in candidates:
            for option in options:  # `from pkg import module` imports the module; else the package
                while option and option not in known:
                    option = option.rpartition(".")[0]
                if option.startswith("erasekit") and option != name:
                    found.add(option)
                    break
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def layer_of(name: str, known: dict[str, Path], layers: dict[str, int]) -> int:
    return layers[place(known[name])]


def test_the_page_names_every_package_and_module_of_the_tree_and_nothing_else():
    layers = page_layers()
    in_tree = {place(p) for p in modules().values()}
    assert in_tree - set(layers) == set(), "in erasekit/ but not in docs/architecture.md's table"
    assert set(layers) - in_tree == set(), "in docs/architecture.md's table but not in erasekit/"


def test_no_import_runs_back_up():
    known, layers = modules(), page_layers()
    upward = [
        f"{a} (layer {layer_of(a, known, layers)}) imports {b} (layer {layer_of(b, known, layers)})"
        for a, targets in import_graph().items()
        for b in sorted(targets)
        if layer_of(b, known, layers) > layer_of(a, known, layers)
    ]
    assert upward == []


def test_no_import_closes_a_circle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def strong(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            strong(node)
    assert circles == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from erasekit.edits import Edit", {"erasekit.edits"}),
        ("from erasekit.edits import lora", {"erasekit.edits.lora"}),
        ("def f():\n    from erasekit.cli import app", {"erasekit.cli"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from erasekit.cli import app", set()),
    ],
)
def test_the_reader_sees_module_function_local_and_skips_type_only_imports(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert imports(path, "erasekit.probe", modules()) == expected


def readme_layout() -> dict[str, set[str]]:
    """The README's layout block: each top-level entry (`jobs/`, `cli.py`) → the module files it names."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        top = re.match(r"^  ([\w.]+/?)\s", line + " ")
        if top:
            current = top[1]
            entries[current] = set()
            line = line[len(top[0]) :]
        if current is not None:
            entries[current] |= {m for m in re.findall(r"(?<![\w/.-])(\w+\.py)\b", line) if m != current}
    return entries


def test_the_readme_layout_names_every_package_and_module_of_the_tree():
    layout = readme_layout()
    data = {f"{d.name}/" for d in PACKAGE.iterdir() if d.is_dir() and d.name != "__pycache__"}
    tree = ({place(p) for p in modules().values()} | data) - {"__init__.py", "__main__.py"}
    assert set(layout) == tree
    for entry, named in layout.items():
        if entry.endswith("/"):
            files = {p.name for p in (PACKAGE / entry).rglob("*.py")} - {"__init__.py"}
            assert named == files, f"README's layout of {entry}"
