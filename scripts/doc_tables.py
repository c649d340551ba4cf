"""Regenerate (or check) every table of the README and docs/ that comes from committed bench JSON.

A generated table sits between two markers that name its sources, and nothing between them is
written by hand:

    <!-- table: bench/ac-sld-object.json -->
    | method | … |
    <!-- /table -->

The source ``erasekit methods`` is the method registry's family × method matrix.

    python scripts/doc_tables.py           # rewrite every marked table from its JSON
    python scripts/doc_tables.py --check   # exit 1 naming each table that differs from its JSON (CI)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from erasekit.bench.tables import any_table
from erasekit.jobs.methods import support_table

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (?P<sources>[^>]+?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def regenerated(text: str) -> tuple[str, list[str]]:
    """``text`` with every marked table rebuilt, and the sources of those that changed."""
    changed: list[str] = []

    def rebuild(match: re.Match) -> str:
        sources = match["sources"].split()
        table = support_table() + "\n" if sources == ["erasekit", "methods"] else any_table([ROOT / s for s in sources])
        if table != match["body"]:
            changed.append(" ".join(sources))
        return match[1] + table + match[4]

    return BLOCK.sub(rebuild, text), changed


def main(check: bool) -> int:
    stale = []
    for path in documents():
        text = path.read_text()
        new, changed = regenerated(text)
        stale += [f"{path.relative_to(ROOT)}: {sources}" for sources in changed]
        if changed and not check:
            path.write_text(new)
    if stale and check:
        print("tables that differ from their JSON (run python scripts/doc_tables.py):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
