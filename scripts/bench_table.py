"""One markdown table from committed bench JSON (object-style, mass or cost files, merged in order) or
from one sweep's JSON lines; the generated tables of the README and docs/ come from here.

    python scripts/bench_table.py bench/ac-sld-object.json
    python scripts/bench_table.py bench/spm-sweep.jsonl

Merged files must share the task and samples per prompt (and, for object-style benches, the concepts).
"""

from __future__ import annotations

import sys
from pathlib import Path

from erasekit.bench.tables import any_table
from erasekit.errors import ErasekitError

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        print(any_table([Path(p) for p in sys.argv[1:]]), end="")
    except ErasekitError as err:
        sys.exit(str(err))
