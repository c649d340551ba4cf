"""A markdown table of a committed sweep (the JSON lines `sweep.py` appends with SWEEP_JSON): one row
per method and settings, its metrics averaged over the concepts it ran on.

    python scripts/sweeps/sweep_table.py bench/spm-sweep.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("Acc_e", "Acc_s", "Acc_g", "residue")


def rows(path: Path) -> dict[tuple[str, str, int], list[dict]]:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            groups.setdefault((row["method"], row["settings"], row["samples"]), []).append(row)
    return groups


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print("| method | settings | concepts | samples | " + " | ".join(METRICS) + " | world-FID | s / concept |")
    print("| --- " * (len(METRICS) + 6) + "|")
    for (method, settings, samples), group in rows(Path(sys.argv[1])).items():
        mean = {k: 100 * sum(r["accuracy"][k] for r in group) / len(group) for k in METRICS}
        fid = sum(r["world_fid_kept"] for r in group) / len(group)
        seconds = sum(r["seconds"] for r in group) / len(group)
        concepts = ", ".join(r["concept"] for r in group)
        shown = settings.replace("|", "\\\\|")
        cells = " | ".join(f"{mean[k]:.1f}" for k in METRICS)
        print(f"| {method} | `{shown}` | {concepts} | {samples} | {cells} | {fid:.2f} | {seconds:.0f} |")
