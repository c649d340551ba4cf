"""One markdown table from one or more committed bench JSON files (the README's tables come from here).

    python scripts/bench_table.py bench/object-official-defaults.json

Files are merged in order; they must share the protocol, concepts and samples per prompt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from erasekit.eval.bench import markdown_table


def merged(paths: list[Path]) -> dict:
    results = [json.loads(p.read_text()) for p in paths]
    first = results[0]
    for path, other in zip(paths[1:], results[1:], strict=True):
        for key in ("protocol", "concepts", "samples_per_prompt"):
            if other[key] != first[key]:
                sys.exit(f"{path}: {key} {other[key]!r} differs from {paths[0]}'s {first[key]!r}")
    return {**first, "methods": {label: m for r in results for label, m in r["methods"].items()}}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(markdown_table(merged([Path(p) for p in sys.argv[1:]])), end="")
