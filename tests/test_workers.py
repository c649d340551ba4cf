"""Under `accelerate launch`: two processes share out the bench's cells and MACE's LoRAs and give what one gives."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from erasekit.primitives.workers import Workers


def test_the_processes_share_every_job_exactly_once():
    jobs = list(range(23))
    shares = [Workers(index=i, count=3).share(jobs) for i in range(3)]
    assert sorted(j for share in shares for j in share) == jobs
    assert shares[0][:3] == [0, 3, 6] and Workers().share(jobs) == jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command() -> list[str]:
    """`accelerate launch` of erasekit's CLI in 2 CPU processes of one thread each (accelerate's multi-CPU mode)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "erasekit.cli"]  # fmt: skip


@pytest.mark.slow  # 45 s; Workers' sharing is tested in-process in CI
def test_two_processes_under_accelerate_give_the_one_process_bench(tmp_path):
    bench = ["bench", "--method", "uce token_span=full", "--concepts", "square,circle,star", "--samples", "1", "--steps", "5"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # one thread a process in both runs
    one = subprocess.run([sys.executable, "-m", "erasekit.cli", *bench, "--out", tmp_path / "one"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    launch = launch_command()
    two = subprocess.run([*launch, *map(str, bench), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # one summary, by the first process

    def measured(name: str) -> dict:  # everything but the clock and the memory
        methods = json.loads((tmp_path / name / "bench.json").read_text())["methods"]
        for m in methods.values():
            for key in ("seconds", "peak_rss_mb", "all_at_once"):
                m.pop(key)
        return methods

    assert measured("two") == measured("one")
    cells = sorted(p.name for p in (tmp_path / "two" / "cells").rglob("*.json"))
    assert cells == sorted(p.name for p in (tmp_path / "one" / "cells").rglob("*.json")) and len(cells) == 4
    assert (tmp_path / "two" / "report.html").is_file()


@pytest.mark.slow  # 37 s; Workers' sharing of jobs is tested in-process in CI
def test_mace_shares_its_loras_out_among_two_processes_and_makes_the_same_edit(tmp_path):
    from safetensors.torch import load_file

    erase = ["erase", "square", "circle", "star", "--method", "mace", "--set", "steps=5", "--set", "images_per_concept=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "erasekit.cli", *erase, "--set", f"adapter_dir={tmp_path / 'a1'}",
                          "--out", tmp_path / "one"], capture_output=True, text=True, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    launch = launch_command()
    two = subprocess.run([*launch, *erase, "--set", f"adapter_dir={tmp_path / 'a2'}", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("mace: erased") == 1  # the first process writes, once
    a, b = load_file(tmp_path / "one" / "edit.safetensors"), load_file(tmp_path / "two" / "edit.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((tmp_path / "two" / "card.json").read_text())
    assert sorted(card["lora_losses"]) == ["circle", "square", "star"]  # the other process's curves too

    without = subprocess.run([*launch, *erase, "--out", str(tmp_path / "three")], capture_output=True, text=True,
                             env=env)  # fmt: skip
    assert without.returncode != 0 and "set adapter_dir=DIR" in without.stderr
    assert not (tmp_path / "three").exists()


@pytest.mark.slow  # 49 s; Workers' sharing of jobs is tested in-process in CI
def test_two_processes_share_out_an_evals_images_and_give_the_one_process_results(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    erase = subprocess.run([sys.executable, "-m", "erasekit.cli", "erase", "square", "--method", "uce", "--out",
                            tmp_path / "edit"], capture_output=True, text=True, env=env)  # fmt: skip
    assert erase.returncode == 0, erase.stderr
    evaluate = ["eval", "--protocol", "object", "--edit", str(tmp_path / "edit"), "--samples", "3", "--steps", "5"]
    one = subprocess.run([sys.executable, "-m", "erasekit.cli", *evaluate, "--out", tmp_path / "one"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    launch = launch_command()
    two = subprocess.run([*launch, *evaluate, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote ") == 1  # the first process writes, once
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert a == b and a["metrics"]["erased"]["accuracy"]["Acc_e"] < a["metrics"]["original"]["accuracy"]["Acc_e"]
    grid = (tmp_path / "one" / "before_after.png").read_bytes()
    assert (tmp_path / "two" / "before_after.png").read_bytes() == grid  # the same images, pixel for pixel
