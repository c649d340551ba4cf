"""The public API: every public definition in erasekit/ has a docstring, and ``erasekit``'s top-level names resolve to
the objects of the modules that define them."""

import ast
import importlib
from pathlib import Path

import erasekit

PACKAGE = Path(erasekit.__file__).resolve().parent
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _undocumented(node: ast.AST, path: Path, prefix: str = "") -> list[str]:
    """``path:line Qual.name`` of every public function or class directly in ``node`` (a module or a public class),
    and of the public methods of its public classes, that has no docstring; definitions inside functions are skipped."""
    missing = []
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, DEFINITIONS) or child.name.startswith("_"):
            continue
        name = prefix + child.name
        if not ast.get_docstring(child):
            missing.append(f"{path.relative_to(PACKAGE.parent)}:{child.lineno} {name}")
        if isinstance(child, ast.ClassDef):
            missing += _undocumented(child, path, name + ".")
    return missing


def test_every_public_definition_has_a_docstring():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the whole package, not an empty glob
    missing = [line for path in files for line in _undocumented(ast.parse(path.read_text(), str(path)), path)]
    assert not missing, f"{len(missing)} public definitions have no docstring:\n" + "\n".join(missing)


def test_every_name_in_all_resolves():
    assert len(erasekit.__all__) == len(set(erasekit.__all__))
    for name in erasekit.__all__:
        assert getattr(erasekit, name) is not None, name
        assert name in dir(erasekit), name


def test_top_level_names_are_their_modules_objects():
    for name, module in [
        ("erase", "erasekit.methods.runner"),
        ("EraseSpec", "erasekit.methods.base"),
        ("load_erased", "erasekit.edits"),
        ("Edit", "erasekit.edits"),
        ("export_edit", "erasekit.exports"),
    ]:
        assert getattr(erasekit, name) is getattr(importlib.import_module(module), name), (
            f"erasekit.{name} is not {module}.{name}"
        )
