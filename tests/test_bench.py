"""The bench on the embedded model, at a size that runs in seconds: cells, resume, summary."""

import json

import pytest

from erasekit.bench import tasks as bench_tasks
from erasekit.bench.entries import BenchEntry
from erasekit.bench.tasks import run_bench
from erasekit.errors import ErasekitError
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

    monkeypatch.setattr(bench_tasks, "erase", no_more_erasing)
    again = run_bench(pipe, evaluator, [entry], "object", tmp_path, ("square",), samples=1, settings=FAST, progress=False)
    assert again["methods"] == result["methods"]


def test_without_all_at_once_no_entry_erases_the_whole_task(pipe, evaluator, tmp_path, monkeypatch):
    erased: list[tuple[str, ...]] = []
    real_erase = bench_tasks.erase

    def recording_erase(pipe, spec, *args, **kwargs):
        erased.append(tuple(spec.targets))
        return real_erase(pipe, spec, *args, **kwargs)

    monkeypatch.setattr(bench_tasks, "erase", recording_erase)
    entry = BenchEntry("uce", {"lam": 0.5})
    result = run_bench(pipe, evaluator, [entry], "object", tmp_path, ("square", "circle"), samples=1, settings=FAST,
                       progress=False, all_at_once=False)  # fmt: skip
    assert erased == [("square",), ("circle",)] and result["methods"]["uce lam=0.5"]["all_at_once"] is None
    assert not list((tmp_path / "cells").rglob("all-at-once-*")) and "| not timed |" in (tmp_path / "bench.md").read_text()
    timed = run_bench(pipe, evaluator, [entry], "object", tmp_path, ("square", "circle"), samples=1, settings=FAST,
                      progress=False)  # fmt: skip
    assert erased[2:] == [("square", "circle")] and timed["methods"]["uce lam=0.5"]["all_at_once"]["concepts"] == 2


def test_bench_refuses_unknown_protocols(pipe, evaluator, tmp_path):
    with pytest.raises(ErasekitError, match="bench runs"):
        run_bench(pipe, evaluator, [BenchEntry("uce")], "quality", tmp_path)


def test_bench_entry_preserves_the_others_and_expands():
    entry = BenchEntry("uce", {"lam": 0.1}, preserve_others=True, expand=3)
    assert entry.label == "uce lam=0.1 preserve=others expand=3"
    spec = entry.spec(("square",), ("square", "circle", "heart"))
    assert spec.preserve == ("circle", "heart") and BenchEntry("uce").spec(("square",), ("square", "circle")).preserve == ()
    anchored = BenchEntry("mace", anchor="a person")
    assert anchored.label == "mace anchor='a person'" and anchored.spec(("square",), ()).anchors == ("a person",)


def test_mass_erasure_counts_erased_and_kept_roster_characters(pipe, evaluator, tmp_path):
    from erasekit.bench.mass import run_mass
    from erasekit.bench.tables import mass_table
    from erasekit.eval.protocols import mass_character_rows
    from erasekit.world import vocabulary as V

    entry = BenchEntry("uce", preserve_others=True)
    result = run_mass(pipe, evaluator, [entry], tmp_path, counts=(1, 22), samples=1, settings=FAST, progress=False)
    cells = result["methods"]["uce preserve=others"]
    assert list(cells) == [1, 22] and result["keep_group"] == list(V.ROSTER_NAMES[20:])
    assert result["erase_group"][:20] == list(V.ROSTER_NAMES[:20]) and len(result["erase_group"]) == 22
    assert cells[1]["synthetic"] == 0 and cells[22]["synthetic"] == 2  # beyond the roster's 20: made-up names
    assert set(cells[22]["metrics"]["erased"]["accuracy"]) == {"Acc_e", "Acc_s", "H_c"}
    # read on the 20 the world draws: the protocol refuses a name that is not one of its characters
    with pytest.raises(ErasekitError, match="not characters of the world"):
        mass_character_rows(tuple(result["erase_group"]), tuple(result["keep_group"]))
    assert "| `uce preserve=others` | 22 (2 synthetic) |" in mass_table(result) and (tmp_path / "mass.md").exists()
    with pytest.raises(ErasekitError, match="erases 1 to 100 characters at once"):
        run_mass(pipe, evaluator, [entry], tmp_path, counts=(101,), samples=1, settings=FAST, progress=False)


def test_synthetic_names_are_new_distinct_and_share_the_worlds_titles():
    from erasekit.bench.mass import roster_groups, synthetic_names
    from erasekit.world import vocabulary as V

    names = synthetic_names(80)
    assert len(set(names)) == 80 and not set(names) & set(V.CHARACTER_NAMES)
    titles = {n.split()[0] for n in V.ROSTER_NAMES[20:]}
    assert sum(n.split()[0] in titles for n in names) >= 20  # many share a title with a kept character
    erased, kept = roster_groups((1, 100))
    assert len(erased) == 100 and erased[:20] == V.ROSTER_NAMES[:20] and not set(erased) & set(kept)


def test_cost_measures_each_count_in_a_fresh_process_and_resumes(tmp_path):
    from erasekit.bench.mass import run_cost
    from erasekit.bench.tables import cost_table

    entry = BenchEntry("uce", preserve_others=True)
    result = run_cost(None, [entry], tmp_path, counts=(1, 2))
    cells = result["methods"]["uce preserve=others"]
    assert list(cells) == [1, 2]
    for count, cell in cells.items():  # a fresh interpreter allocates for its prompt states every time
        assert cell["seconds"] > 0 and cell["peak_rss_mb"] > 0
        assert cell["peak_rss_mb_per_concept"] == pytest.approx(cell["peak_rss_mb"] / count)
    assert "| `uce preserve=others` | 2 |" in cost_table(result) and (tmp_path / "cost.md").exists()
    marker = tmp_path / "cells" / entry.slug / "cost-2.json"
    marker.write_text(marker.read_text().replace('"count": 2', '"count": 2, "resumed": true'))
    assert run_cost(None, [entry], tmp_path, counts=(2,))["methods"][entry.label][2]["resumed"] is True
    with pytest.raises(ErasekitError, match="erases 1 to 100 characters at once"):
        run_cost(None, [entry], tmp_path, counts=(0,))


def test_a_table_of_two_models_gives_each_its_original_and_its_rows(tmp_path):
    from erasekit.bench.tables import any_table

    def result(model: str | None, acc_e: float) -> dict:
        metrics = {"Acc_e": acc_e, "Acc_s": 1.0}
        method = {
            "accuracy": {"original": {"Acc_e": 1.0, "Acc_s": 1.0}, "erased": metrics},
            "world_fid_kept": 0.5,
            "seconds": 2.0,
        }
        return {"protocol": "object", "concepts": ["square"], "samples_per_prompt": 8, "methods": {"uce": method},
                **({"model": model} if model else {})}  # fmt: skip

    paths = []
    for name, model, acc_e in (("tiny", None, 0.1), ("flux", "erasekit-tiny-flux", 0.2)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result(model, acc_e)))
    rows = any_table(paths).splitlines()
    assert rows[0] == "| model | method | Acc_e | Acc_s | world-FID | s / concept |"
    assert rows[2:] == [
        "| erasekit-tiny | original | 100.0 | 100.0 | | |",
        "| erasekit-tiny | `uce` | 10.0 | 100.0 | 0.50 | 2.00 |",
        "| erasekit-tiny-flux | original | 100.0 | 100.0 | | |",
        "| erasekit-tiny-flux | `uce` | 20.0 | 100.0 | 0.50 | 2.00 |",
    ]
