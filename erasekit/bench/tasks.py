"""The bench's tasks: every method erases each concept of a task in turn, judged by that task's protocol.

One cell per (method setting, concept) is written as soon as it is measured and read back on a
rerun, so an interrupted bench resumes where it stopped. Under ``accelerate launch`` the cells are
shared out among the processes (:class:`Workers`): each measures every n-th cell, all wait, and the
first process reads every cell back and writes the summary, the same as one process would. The original model's images are
generated once per prompt and shared by every cell. Per method the table averages the protocol's
metrics over concepts and reports seconds and peak memory per concept; a last timing erases all
the task's concepts in one call.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from erasekit.bench.cells import BENCH_CELL, TIMING_CELL, cell_label
from erasekit.bench.entries import BenchEntry
from erasekit.bench.tables import markdown_table
from erasekit.errors import ErasekitError
from erasekit.eval.cells import counted, read_cell
from erasekit.eval.generation import SamplerSettings
from erasekit.eval.protocols import run_protocol
from erasekit.io import write_json, write_with
from erasekit.methods.runner import erase
from erasekit.primitives.workers import Workers
from erasekit.world import vocabulary as V

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.world.evaluator import WorldEvaluator

DEFAULT_CONCEPTS: dict[str, tuple[str, ...]] = {
    "object": V.SHAPES,
    "character": V.NAMED_CHARACTERS,
    "artist": V.ARTIST_NAMES,
    "flames": ("in flames",),
}


def run_bench(
    pipe: DiffusionPipeline,
    evaluator: WorldEvaluator,
    entries: list[BenchEntry],
    protocol: str,
    out_dir: Path,
    concepts: tuple[str, ...] | None = None,
    samples: int = 8,
    settings: SamplerSettings | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    model: str | None = None,
    all_at_once: bool = True,
) -> dict | None:
    """Measure every entry on every concept (resuming from ``out_dir``) and summarise; writes ``bench.json``
    (naming ``model`` when it is not the embedded erasekit-tiny, so that tables of two models tell their rows
    apart). Under several ``workers`` each measures its share; the first summarises, the others return None.
    Without ``all_at_once`` no entry erases the whole task in one call: its timing is what an earlier run
    measured, else None."""
    if protocol not in DEFAULT_CONCEPTS:
        raise ErasekitError(f"the bench runs the {', '.join(DEFAULT_CONCEPTS)} protocols, not {protocol!r}")
    concepts = concepts or DEFAULT_CONCEPTS[protocol]
    workers = workers or Workers()
    originals: dict = {}

    def measure(entry: BenchEntry, concept: str | None) -> dict | None:
        if concept is None:
            return _all_at_once(pipe, entry, concepts, out_dir, progress, timed=all_at_once)
        return _cell(pipe, evaluator, entry, protocol, concept, concepts, out_dir, samples, settings, originals, progress)

    last = (None,) if all_at_once else ()  # per entry: each concept, then all at once
    jobs = [(entry, c) for entry in entries for c in (*concepts, *last)]
    for entry, concept in counted(workers.share(jobs), "bench cell", cell_label, progress):
        measure(entry, concept)
    workers.barrier()
    if not workers.is_main:
        return None
    summary = {}
    for entry in entries:  # every cell is on disk now: read back
        cells = [measure(entry, c) for c in concepts]
        summary[entry.label] = _summarise(cells) | {"all_at_once": measure(entry, None)}
    result = {
        "protocol": protocol,
        "concepts": list(concepts),
        "samples_per_prompt": samples,
        "sampler": vars(settings or SamplerSettings()),
        "torch_threads": torch.get_num_threads(),
        "methods": summary,
        **({"model": model} if model not in (None, "erasekit-tiny") else {}),
    }
    write_json(out_dir / "bench.json", result)
    write_with(out_dir / "bench.md", lambda tmp: tmp.write_text(markdown_table(result)))
    return result


def _cell(
    pipe: DiffusionPipeline,
    evaluator: WorldEvaluator,
    entry: BenchEntry,
    protocol: str,
    concept: str,
    task: tuple[str, ...],
    out_dir: Path,
    samples: int,
    settings: SamplerSettings | None,
    originals: dict,
    progress: bool,
) -> dict:
    path = out_dir / "cells" / entry.slug / f"{re.sub(r'[^A-Za-z0-9]+', '_', concept)}-{protocol}-{samples}.json"
    if (cell := read_cell(path, BENCH_CELL)) is not None:
        return cell
    edit = erase(pipe, entry.spec((concept,), task), entry.method, progress=progress, expand=entry.expand, **entry.settings)
    result = run_protocol(pipe, edit, protocol, concept, evaluator, samples, settings, progress, original_cache=originals)
    cell = {
        "concept": concept,
        "metrics": result.metrics,
        "world_fid_kept": result.world_fid_kept,
        "seconds": edit.card["seconds"],
        "peak_rss_mb": edit.card["peak_rss_mb"],
        "peak_cuda_mb": edit.card["peak_cuda_mb"],
        "expanded": edit.card.get("expanded", {}),
    }
    write_json(path, cell)
    return cell


def _all_at_once(
    pipe: DiffusionPipeline, entry: BenchEntry, concepts: tuple[str, ...], out_dir: Path, progress: bool, timed: bool = True
) -> dict | None:
    path = out_dir / "cells" / entry.slug / f"all-at-once-{len(concepts)}.json"
    if (cell := read_cell(path, TIMING_CELL)) is not None or not timed:
        return cell
    edit = erase(pipe, entry.spec(concepts, concepts), entry.method, progress=progress, expand=entry.expand, **entry.settings)
    timing = {"concepts": len(concepts), "seconds": edit.card["seconds"], "peak_rss_mb": edit.card["peak_rss_mb"]}
    write_json(path, timing)
    return timing


def _summarise(cells: list[dict]) -> dict:
    """Means over concepts of every metric (top-1 and probability), world-FID, seconds and peak memory."""
    out: dict = {"concepts": len(cells)}
    for kind in ("accuracy", "probability"):
        names = cells[0]["metrics"]["erased"][kind]
        out[kind] = {
            which: {n: float(np.mean([c["metrics"][which][kind][n] for c in cells])) for n in names}
            for which in ("original", "erased")
        }
    for key in ("world_fid_kept", "seconds", "peak_rss_mb"):
        out[key] = float(np.mean([c[key] for c in cells]))
    out["per_concept"] = {c["concept"]: c["metrics"]["erased"]["accuracy"] for c in cells}
    return out
