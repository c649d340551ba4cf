"""How fast the command line answers: the median wall time of commands that should not load torch
(``--help``, ``--version``, a bad flag) beside ones that must (``methods``), written to
``bench/startup.json`` (the README's table is generated from it by ``scripts/doc_tables.py``).

    python scripts/startup_bench.py            # 7 runs of each command
    python scripts/startup_bench.py --runs 15

Target (issue "Trust and polish"): ``--help`` and a bad flag answer in at most 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [  # the first seven answer without importing torch; the last two must read the methods' settings
    ["--help"],
    ["--version"],
    ["erase", "--help"],
    ["erase", "square", "--out", "x", "--guidance", "nan"],  # a bad flag
    ["erase", "square", "--out", "x", "--dtype", "fp8"],  # a dtype erasekit does not take (refused by its form)
    ["erase", "square", "--out", "x", "--set", "lam"],  # a setting without its value
    ["erase", "square", "--preserve", "square", "--out", "x"],  # a concept both erased and kept
    ["erase", "square", "--out", "x", "--set", "lam=abc"],  # a value read against the method's settings
    ["methods", "uce"],
]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "erasekit", *args], capture_output=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "startup.json")
    args = parser.parse_args()
    rows = []
    for command in COMMANDS:
        times = [timed(command) for _ in range(args.runs)]
        rows.append({"command": "erasekit " + " ".join(command), "median_seconds": round(statistics.median(times), 3),
                     "max_seconds": round(max(times), 3), "runs": args.runs})  # fmt: skip
        print(f"{rows[-1]['command']}: median {rows[-1]['median_seconds']} s", flush=True)
    result = {
        "task": "startup",
        "command": "python scripts/startup_bench.py --runs " + str(args.runs),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "target_seconds": 1.0,
        "commands": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
