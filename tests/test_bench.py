"""The bench on the embedded model, at a size that runs in seconds: cells, resume, summary."""

import json

import pytest

from erasekit.errors import ErasekitError
from erasekit.eval import bench as bench_module
from erasekit.eval.bench import BenchEntry, run_bench
from erasekit.eval.generation import SamplerSettings

FAST = SamplerSettings(steps=2, guidance=7.5, batch_size=64)


def test_bench_writes_cells_and_resumes(pipe, evaluator, tmp_path, monkeypatch):
    entry = BenchEntry("uce", {"lam": 0.5})
    result = run_bench(pipe, evaluator, [entry], "object", tmp_path, ("square",), samples=1, settings=FAST, progress=False)
    summary = result["methods"]["uce lam=0.5"]
    assert set(summary["accuracy"]["erased"]) == {"Acc_e", "Acc_s", "Acc_g", "residue", "H_o"}
    assert summary["seconds"] > 0 and summary["all_at_once"]["concepts"] == 1
    assert json.loads((tmp_path / "bench.json").read_text())["concepts"] == ["square"]
    assert (tmp_path / "cells" / entry.slug).is_dir() and "| `uce lam=0.5` |" in (tmp_path / "bench.md").read_text()

    def no_more_erasing(*args, **kwargs):
        raise AssertionError("a finished cell was measured again")

    monkeypatch.setattr(bench_module, "erase", no_more_erasing)
    again = run_bench(pipe, evaluator, [entry], "object", tmp_path, ("square",), samples=1, settings=FAST, progress=False)
    assert again["methods"] == result["methods"]


def test_bench_refuses_unknown_protocols(pipe, evaluator, tmp_path):
    with pytest.raises(ErasekitError, match="bench runs"):
        run_bench(pipe, evaluator, [BenchEntry("uce")], "quality", tmp_path)
