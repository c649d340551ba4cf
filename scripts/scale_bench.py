"""One erasekit bench or eval run plainly and under `accelerate launch` with 2 processes: wall time and
whether the results agree.

    python scripts/scale_bench.py --out bench/scale-cpu.json -- bench --method uce --samples 4
    python scripts/scale_bench.py --out bench/scale-eval-cpu.json -- eval --protocol object --edit runs/uce-square

Runs, each into a fresh directory: one process with every core's threads (the plain command), one
process with 1 thread, and 2 processes with 1 thread each (`accelerate launch --multi_gpu
--num_processes 2 --num_cpu_threads_per_process 1`, accelerate's multi-CPU mode). Records wall
seconds and compares the results between the runs (a bench's metrics without its seconds and
memory; an eval's whole results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measured(directory: Path) -> dict:
    if (directory / "results.json").exists():  # an eval: nothing in it depends on the clock
        return json.loads((directory / "results.json").read_text())
    methods = json.loads((directory / "bench.json").read_text())["methods"]
    for m in methods.values():
        for key in ("seconds", "peak_rss_mb", "all_at_once"):
            m.pop(key)
    return methods


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then `bench` or `eval` and its options")
    args = parser.parse_args()
    command = [a for a in args.command if a != "--"]
    if not command or command[0].startswith("-"):  # the options alone: a bench, as before
        command = ["bench", *command]
    cores = os.cpu_count() or 1
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "erasekit.cli"]  # fmt: skip
    runs = {
        f"1 process, {cores} threads": ([sys.executable, "-m", "erasekit.cli"], {"OMP_NUM_THREADS": str(cores)}),
        "1 process, 1 thread": ([sys.executable, "-m", "erasekit.cli"], {"OMP_NUM_THREADS": "1"}),
        "2 processes, 1 thread each": (launch, {"OMP_NUM_THREADS": "1"}),
    }
    results, root = {}, Path(tempfile.mkdtemp(prefix="scale-"))
    for name, (launcher, env) in runs.items():
        directory = root / name.replace(" ", "_").replace(",", "")
        start = time.perf_counter()
        done = subprocess.run([*launcher, *command, "--out", str(directory)], env={**os.environ, **env},
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
        results[name] = {"wall_seconds": round(time.perf_counter() - start, 1), "metrics": measured(directory)}
        print(f"{name}: {results[name]['wall_seconds']} s", flush=True)
    names = list(results)
    report = {
        "command": command,
        "cores": cores,
        "wall_seconds": {n: r["wall_seconds"] for n, r in results.items()},
        "speed_up_2_processes": round(results[names[0]]["wall_seconds"] / results[names[2]]["wall_seconds"], 2),
        "same_metrics": {
            f"{names[2]} vs {names[1]}": results[names[2]]["metrics"] == results[names[1]]["metrics"],
            f"{names[2]} vs {names[0]}": results[names[2]]["metrics"] == results[names[0]]["metrics"],
        },
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
