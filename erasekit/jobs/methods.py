"""The ``methods`` job: the erasure methods, each with its settings and the paper's defaults, and which
model family each runs on."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from erasekit.methods.base import get_method, load_methods
from erasekit.models.families import FAMILIES


@dataclass(frozen=True)
class Setting:
    """One setting of a method: its name, its default (the paper's) and what it means."""

    name: str
    default: object
    doc: str


@dataclass(frozen=True)
class MethodInfo:
    """A method as ``erasekit methods`` shows it: its name, one-line summary and settings in order."""

    name: str
    summary: str
    settings: list[Setting]


def list_methods(name: str | None = None) -> list[MethodInfo]:
    """The method called ``name`` (an error listing the known ones if there is none), or every method by name."""
    registry = load_methods()
    chosen = [get_method(name)] if name is not None else [registry[n] for n in sorted(registry)]
    return [
        MethodInfo(
            method.name,
            method.summary,
            [
                Setting(f.name, f.default if f.default is not MISSING else f.default_factory(), f.metadata.get("doc", ""))  # type: ignore[misc]
                for f in fields(method.config)
            ],
        )
        for method in chosen
    ]


def support_table() -> str:
    """Which method runs on which model family, as a markdown table (the CLI's and the README's)."""
    methods = load_methods()
    lines = ["| method | " + " | ".join(f.title for f in FAMILIES.values()) + " |", "| --- |" + " :---: |" * len(FAMILIES)]
    for name in sorted(methods):
        marks = ("yes" if family in methods[name].families else "–" for family in FAMILIES)
        lines.append(f"| {name} | " + " | ".join(marks) + " |")
    return "\n".join(lines)
