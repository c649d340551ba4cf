"""Mass erasure and its cost: many characters of the world's roster erased at once.

MACE's task on the roster: erase its first 1 → 5 → 10 → 20 characters in one erasure (beyond 20,
made-up names of the world's titles), keep its last 20, and read Acc_e, Acc_s and H_c at each count
(:func:`run_mass`); or time the same erasures, each in a fresh process, without evaluating them
(:func:`run_cost`). One cell per (method setting, count), written at once, so a rerun resumes.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from erasekit.bench.cells import ROSTER_CELL
from erasekit.bench.entries import BenchEntry
from erasekit.bench.tables import cost_table, mass_table
from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.eval.cells import counted, read_cell
from erasekit.eval.generation import SamplerSettings
from erasekit.eval.protocols import character_metrics, evaluate_rows, mass_character_rows
from erasekit.io import write_json, write_with
from erasekit.methods.runner import erase
from erasekit.primitives.workers import Workers
from erasekit.world import vocabulary as V

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.world.evaluator import WorldEvaluator

MASS_COUNTS = (1, 5, 10, 20)


# Made-up surnames for erasing more characters than the world's roster has: with the roster's and
# the named characters' titles they give names such as "Lady Corvin" or "Doctor Maple" (titles the
# kept characters share, as real celebrity lists share first names).
SYNTHETIC_SURNAMES = (
    "Corvin", "Maple", "Tusk", "Everly", "Grove", "Pike", "Hollis", "Quince", "Sable", "Thorne",
)  # fmt: skip
MAX_ERASED = 100


def synthetic_names(count: int) -> tuple[str, ...]:
    """``count`` character names the world never drew, none equal to one of its characters."""
    titles = dict.fromkeys(name.split()[0] for name in V.CHARACTER_NAMES)
    names = [f"{t} {s}" for s in SYNTHETIC_SURNAMES for t in titles if f"{t} {s}" not in V.CHARACTER_NAMES]
    return tuple(names[:count])


def roster_groups(counts: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The mass task's groups: erased (the roster's first 20, then synthetic names up to the largest
    count) and kept (the roster's last 20); checks ``counts`` fit."""
    half = len(V.ROSTER_NAMES) // 2
    if not counts or min(counts) < 1 or max(counts) > MAX_ERASED:
        raise ErasekitError(
            f"the mass task erases 1 to {MAX_ERASED} characters at once (the roster's {half}, then synthetic names); "
            f"got counts {', '.join(map(str, counts)) or 'none'}"
        )
    return V.ROSTER_NAMES[:half] + synthetic_names(max(max(counts) - half, 0)), V.ROSTER_NAMES[half:]


def _roster_cells(
    entries: list[BenchEntry],
    counts: tuple[int, ...],
    out_dir: Path,
    cell_name: Callable[[int], str],
    measure: Callable[[BenchEntry, EraseSpec], dict],
    workers: Workers | None = None,
) -> dict | None:
    """Per entry and count, the cell of erasing the roster's first ``count`` characters: read back if
    written by an earlier run, else ``measure``d and written at once (so a rerun resumes). Under
    several ``workers`` each measures its share; the first reads them all back, the others get None."""
    erase_group, keep_group = roster_groups(counts)
    workers = workers or Workers()
    jobs = workers.share([(entry, count) for entry in entries for count in counts])
    for entry, count in counted(jobs, "bench cell", lambda job: f"{job[0].label}, {job[1]} concepts"):
        path = out_dir / "cells" / entry.slug / cell_name(count)
        if read_cell(path, ROSTER_CELL) is None:
            spec = entry.spec_with_others(erase_group[:count], keep_group)
            write_json(path, {"count": count, **measure(entry, spec)})
    workers.barrier()
    if not workers.is_main:
        return None
    return {entry.label: {count: json.loads((out_dir / "cells" / entry.slug / cell_name(count)).read_text())
                          for count in counts} for entry in entries}  # fmt: skip


def run_cost(
    model: str | None,
    entries: list[BenchEntry],
    out_dir: Path,
    counts: tuple[int, ...] = MASS_COUNTS,
    device: str | None = "cpu",
    dtype: str = "fp32",
) -> dict:
    """Seconds and peak memory per concept as the count grows, each erasure in a fresh process.

    Erases the roster's first 1 → 5 → 10 → 20 characters at once (the kept 20 are the preserve set
    where the entry says so). In one long-lived process the allocator reuses memory freed by earlier
    work, so a later measurement can read near zero; a fresh process per measurement, with the
    pipeline loaded before the clock starts, gives each method's own figure. Cells resume.
    """
    summary = _roster_cells(
        entries,
        counts,
        out_dir,
        lambda count: f"cost-{count}.json",
        lambda entry, spec: measure_in_fresh_process(model, entry, spec, device, dtype),
    )
    result = {"task": "cost per concept", "model": model, "device": device, "dtype": dtype,
              "torch_threads": torch.get_num_threads(), "methods": summary}  # fmt: skip
    write_json(out_dir / "cost.json", result)
    write_with(out_dir / "cost.md", lambda tmp: tmp.write_text(cost_table(result)))
    return result


def measure_in_fresh_process(
    model: str | None, entry: BenchEntry, spec: EraseSpec, device: str | None = "cpu", dtype: str = "fp32"
) -> dict:
    """Erase ``spec`` in a new interpreter and return its seconds and peak memory (the edit is dropped)."""
    context = multiprocessing.get_context("spawn")  # not fork: a forked child shares the parent's heap
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_erase_and_measure, model, entry, spec, torch.get_num_threads(), device, dtype).result()


def _erase_and_measure(model: str | None, entry: BenchEntry, spec: EraseSpec, threads: int, device: str | None,
                       dtype: str) -> dict:  # fmt: skip
    from erasekit.models.loading import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(model, dtype, device)
    card = erase(pipe, spec, entry.method, progress=False, expand=entry.expand, **entry.settings).card
    return {key: card[key] for key in ("seconds", "seconds_per_concept", "peak_rss_mb", "peak_cuda_mb")} | {
        "peak_rss_mb_per_concept": card["peak_rss_mb"] / len(spec.targets)
    }


def run_mass(
    pipe: DiffusionPipeline,
    evaluator: WorldEvaluator,
    entries: list[BenchEntry],
    out_dir: Path,
    counts: tuple[int, ...] = MASS_COUNTS,
    samples: int = 4,
    settings: SamplerSettings | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> dict | None:
    """MACE's mass erasure on the roster: erase its first 1 → 5 → 10 → 20 characters at once, keep its
    last 20, and report Acc_e, Acc_s, H_c and seconds and peak memory per concept at each count
    (None in all but the first of several ``workers``)."""
    erase_group, keep_group = roster_groups(counts)
    originals: dict = {}

    def measure(entry: BenchEntry, spec: EraseSpec) -> dict:
        edit = erase(pipe, spec, entry.method, progress=progress, expand=entry.expand, **entry.settings)
        # synthetic names have no look the evaluator knows: Acc_e is read on the roster's characters only
        real = tuple(t for t in spec.targets if t in V.CHARACTER_NAMES)
        rows = mass_character_rows(real, keep_group, samples)
        result = evaluate_rows(pipe, edit, rows, character_metrics, evaluator, settings, progress, originals)
        return {
            "synthetic": len(spec.targets) - len(real), "metrics": result.metrics, "world_fid_kept": result.world_fid_kept,
            "seconds_per_concept": edit.card["seconds_per_concept"], "peak_rss_mb": edit.card["peak_rss_mb"],
        }  # fmt: skip

    summary = _roster_cells(entries, counts, out_dir, lambda count: f"mass-{count}-{samples}.json", measure, workers)
    if summary is None:
        return None
    result = {
        "task": "mass character erasure",
        "erase_group": list(erase_group),
        "keep_group": list(keep_group),
        "samples_per_prompt": samples,
        "torch_threads": torch.get_num_threads(),
        "methods": summary,
    }
    write_json(out_dir / "mass.json", result)
    write_with(out_dir / "mass.md", lambda tmp: tmp.write_text(mass_table(result)))
    return result
