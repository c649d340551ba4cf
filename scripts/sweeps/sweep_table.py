"""A markdown table of a committed sweep (the JSON lines `sweep.py` appends with SWEEP_JSON): one row
per method and settings, its metrics averaged over the concepts it ran on.

    python scripts/sweeps/sweep_table.py bench/spm-sweep.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

from erasekit.bench.tables import sweep_table

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(sweep_table(Path(sys.argv[1]).read_text()), end="")
