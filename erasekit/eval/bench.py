"""The bench: every method erases each concept of a task in turn, judged by that task's protocol.

One cell per (method setting, concept) is written as soon as it is measured and read back on a
rerun, so an interrupted bench resumes where it stopped. Under ``accelerate launch`` the cells are
shared out among the processes (:class:`Workers`): each measures every n-th cell, all wait, and the
first process reads every cell back and writes the summary, the same as one process would. The original model's images are
generated once per prompt and shared by every cell. Per method the table averages the protocol's
metrics over concepts and reports seconds and peak memory per concept; a last timing erases all
the task's concepts in one call.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
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
MASS_COUNTS = (1, 5, 10, 20)


@dataclass(frozen=True)
class BenchEntry:
    """One bench column: a registered method with settings (``label`` names it in the table).

    ``preserve_others`` passes the task's other concepts as the preserve set, as a user erasing one
    class while keeping the rest of a known list would; ``anchor`` is every target's anchor ("" is
    the empty prompt).
    """

    method: str
    settings: dict = field(default_factory=dict)
    preserve_others: bool = False
    expand: int = 0  # concept expansion: nearest phrases per target (0: off)
    anchor: str = ""

    def __post_init__(self) -> None:
        if self.expand:  # refused with the settings, not after the model loads (the similarity floor is erase()'s)
            from erasekit.primitives.expansion import check_expansion

            check_expansion(self.expand, 0.0)

    @property
    def label(self) -> str:
        """The row's name in tables: the method, its settings, and preserve/expand/anchor when set."""
        suffix = (" preserve=others" if self.preserve_others else "") + (f" expand={self.expand}" if self.expand else "")
        suffix += f" anchor={self.anchor!r}" if self.anchor else ""
        return self.method + "".join(f" {k}={v}" for k, v in sorted(self.settings.items())) + suffix

    def spec(self, targets: tuple[str, ...], task: tuple[str, ...]) -> EraseSpec:
        """Erase ``targets`` of ``task``; the task's other concepts are the ones preserve=others keeps."""
        return self.spec_with_others(targets, tuple(c for c in task if c not in targets))

    def spec_with_others(self, targets: tuple[str, ...], others: tuple[str, ...]) -> EraseSpec:
        """Erase ``targets`` towards the anchor, preserving ``others`` where the entry says so."""
        return EraseSpec(targets, anchors=(self.anchor,), preserve=others if self.preserve_others else ())

    @property
    def slug(self) -> str:
        """The label as a directory name (the entry's cells live under it)."""
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", self.label)


T = TypeVar("T")


def counted(jobs: list[T], what: str, describe: Callable[[T], str], show: bool = True) -> Iterator[T]:
    """``jobs`` one by one, each announced on stderr as "``what`` k/n: …" (a bench's cells take
    minutes each; a rerun counts only what is left to do where the caller skips done cells)."""
    for k, job in enumerate(jobs, 1):
        if show:
            print(f"{what} {k}/{len(jobs)}: {describe(job)}", file=sys.stderr, flush=True)
        yield job


def cell_label(job: tuple[BenchEntry, object]) -> str:
    """How :func:`counted` names a bench cell: the entry, and the concept or "all concepts at once"."""
    entry, about = job
    return f"{entry.label} on {about if about is not None else 'all concepts at once'}"


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
) -> dict | None:
    """Measure every entry on every concept (resuming from ``out_dir``) and summarise; writes ``bench.json``.
    Under several ``workers`` each measures its share; the first summarises, the others return None."""
    if protocol not in DEFAULT_CONCEPTS:
        raise ErasekitError(f"the bench runs the {', '.join(DEFAULT_CONCEPTS)} protocols, not {protocol!r}")
    concepts = concepts or DEFAULT_CONCEPTS[protocol]
    workers = workers or Workers()
    originals: dict = {}

    def measure(entry: BenchEntry, concept: str | None) -> dict:
        if concept is None:
            return _all_at_once(pipe, entry, concepts, out_dir, progress)
        return _cell(pipe, evaluator, entry, protocol, concept, concepts, out_dir, samples, settings, originals, progress)

    jobs = [(entry, c) for entry in entries for c in (*concepts, None)]  # per entry: each concept, then all at once
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
    }
    write_json(out_dir / "bench.json", result)
    write_with(out_dir / "bench.md", lambda tmp: tmp.write_text(markdown_table(result)))
    return result


def markdown_table(result: dict) -> str:
    """The bench summary as a markdown table: top-1 % / mean class probability %, then cost per concept."""
    first = next(iter(result["methods"].values()))
    names = list(first["accuracy"]["erased"])
    header = ["method", *names, "world-FID", "s / concept", "peak MB / concept", f"all {len(result['concepts'])} at once"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]

    def cells(m: dict, which: str) -> list[str]:
        return [f"{100 * m['accuracy'][which][n]:.1f} / {100 * m['probability'][which][n]:.1f}" for n in names]

    lines.append("| original | " + " | ".join(cells(first, "original")) + " | | | | |")
    for label, m in result["methods"].items():
        once = m["all_at_once"]
        lines.append(
            f"| `{label}` | "
            + " | ".join(cells(m, "erased"))
            + f" | {m['world_fid_kept']:.2f} | {m['seconds']:.2f} | {m['peak_rss_mb']:.0f} | {once['seconds']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


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


def read_cell(path: Path, keys: tuple[str, ...] = ()) -> dict | None:
    """A cell written by an earlier run, or None when there is none, or when it is damaged (cut short,
    not JSON, not an object, or without ``keys``): a damaged cell is measured again, with a warning line."""
    if not path.exists():
        return None
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        problem = f"unreadable ({type(err).__name__})"
    else:
        missing = [k for k in keys if k not in cell] if isinstance(cell, dict) else None
        if missing == []:
            return cell
        problem = "not a JSON object" if missing is None else f"without {', '.join(missing)}"
    warn_damaged(path, problem)
    return None


def warn_damaged(path: Path, problem: str) -> None:
    """The one warning line of a damaged cell that is measured again."""
    print(f"warning: {path} is damaged ({problem}); measuring that cell again", file=sys.stderr, flush=True)


# what the summaries and tables read of each kind of cell
PROTOCOL_CELL = ("metrics", "world_fid_kept")
BENCH_CELL = ("concept", *PROTOCOL_CELL, "seconds", "peak_rss_mb")
TIMING_CELL = ("seconds", "peak_rss_mb")
ROSTER_CELL = ("count", "seconds_per_concept", "peak_rss_mb")  # mass and cost cells alike


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


def cost_table(result: dict) -> str:
    """One row per method and count: seconds and peak MB, in all and per concept."""
    lines = ["| method | concepts | s | s / concept | peak MB | peak MB / concept |", "|" + " --- |" * 6]
    for label, by_count in result["methods"].items():
        for count, cell in by_count.items():
            lines.append(
                f"| `{label}` | {count} | {cell['seconds']:.2f} | {cell['seconds_per_concept']:.2f} | "
                f"{cell['peak_rss_mb']:.0f} | {cell['peak_rss_mb_per_concept']:.1f} |"
            )
    return "\n".join(lines) + "\n"


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
        "metrics": result["metrics"],
        "world_fid_kept": result["world_fid_kept"],
        "seconds": edit.card["seconds"],
        "peak_rss_mb": edit.card["peak_rss_mb"],
        "peak_cuda_mb": edit.card["peak_cuda_mb"],
        "expanded": edit.card.get("expanded", {}),
    }
    write_json(path, cell)
    return cell


def _all_at_once(pipe: DiffusionPipeline, entry: BenchEntry, concepts: tuple[str, ...], out_dir: Path, progress: bool) -> dict:
    path = out_dir / "cells" / entry.slug / f"all-at-once-{len(concepts)}.json"
    if (cell := read_cell(path, TIMING_CELL)) is not None:
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
    from erasekit.eval.protocols import character_metrics, evaluate_rows, mass_character_rows

    erase_group, keep_group = roster_groups(counts)
    originals: dict = {}

    def measure(entry: BenchEntry, spec: EraseSpec) -> dict:
        edit = erase(pipe, spec, entry.method, progress=progress, expand=entry.expand, **entry.settings)
        # synthetic names have no look the evaluator knows: Acc_e is read on the roster's characters only
        real = tuple(t for t in spec.targets if t in V.CHARACTER_NAMES)
        rows = mass_character_rows(real, keep_group, samples)
        result = evaluate_rows(pipe, edit, rows, character_metrics, evaluator, settings, progress, originals)
        return {
            "synthetic": len(spec.targets) - len(real), "metrics": result["metrics"], "world_fid_kept": result["world_fid_kept"],
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


def mass_table(result: dict) -> str:
    """Acc_e / Acc_s / H_c (top-1 %) and cost per concept at each count, one row per method and count."""
    lines = ["| method | concepts | Acc_e | Acc_s | H_c | world-FID | s / concept | peak MB |", "|" + " --- |" * 8]
    for label, by_count in result["methods"].items():
        for count, cell in by_count.items():
            erased, original = cell["metrics"]["erased"]["accuracy"], cell["metrics"]["original"]["accuracy"]
            shown = f"{count} ({cell['synthetic']} synthetic)" if cell.get("synthetic") else f"{count}"
            lines.append(
                f"| `{label}` | {shown} | {100 * erased['Acc_e']:.1f} (was {100 * original['Acc_e']:.1f}) | "
                f"{100 * erased['Acc_s']:.1f} | {100 * erased['H_c']:.1f} | {cell['world_fid_kept']:.2f} | "
                f"{cell['seconds_per_concept']:.2f} | {cell['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


SWEEP_METRICS = ("Acc_e", "Acc_s", "Acc_g", "residue")


def _short_settings(settings: str) -> str:
    """A sweep row's settings as written, its preserve list (``_preserve``) shown as a count."""
    return re.sub(r'"_preserve": \[([^\]]*)\]', lambda m: f'"_preserve": "{m[1].count(",") + 1} classes"', settings)


def sweep_table(jsonl: str) -> str:
    """A committed sweep (the JSON lines ``scripts/sweeps/sweep.py`` appends) as one markdown row per
    method and settings, its metrics averaged over the concepts it ran on."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for line in jsonl.splitlines():
        if line.strip():
            row = json.loads(line)
            groups.setdefault((row["method"], row["settings"], row["samples"]), []).append(row)
    lines = ["| method | settings | concepts | samples | " + " | ".join(SWEEP_METRICS) + " | world-FID | s / concept |",
             "| --- " * (len(SWEEP_METRICS) + 6) + "|"]  # fmt: skip
    for (method, settings, samples), group in groups.items():
        mean = {k: 100 * sum(r["accuracy"][k] for r in group) / len(group) for k in SWEEP_METRICS}
        fid = sum(r["world_fid_kept"] for r in group) / len(group)
        seconds = sum(r["seconds"] for r in group) / len(group)
        concepts = ", ".join(r["concept"] for r in group)
        cells = " | ".join(f"{mean[k]:.1f}" for k in SWEEP_METRICS)
        shown = _short_settings(settings).replace("|", "\\|")
        lines.append(f"| {method} | `{shown}` | {concepts} | {samples} | {cells} | {fid:.2f} | {seconds:.0f} |")
    return "\n".join(lines) + "\n"


def merged(results: list[dict], names: list[str]) -> dict:
    """Bench results of one task (bench.json, mass.json or cost.json files) as one, methods in order."""
    first = results[0]
    keys = ("protocol", "concepts", "samples_per_prompt") if "protocol" in first else ("task", "samples_per_prompt")
    for name, other in zip(names[1:], results[1:], strict=True):
        for key in keys:
            if other.get(key) != first.get(key):
                raise ErasekitError(f"{name}: {key} {other.get(key)!r} differs from {names[0]}'s {first.get(key)!r}")
    return {**first, "methods": {label: m for r in results for label, m in r["methods"].items()}}


def scale_table(result: dict) -> str:
    """``scripts/scale_bench.py``'s runs: wall seconds, speed-up over the first run, same metrics or not."""
    runs = list(result["wall_seconds"].items())
    lines = ["| run | wall s | speed-up | metrics |", "| --- | --- | --- | --- |"]
    for name, seconds in runs:
        compared = [f"{'same as' if equal else 'differ from'} {pair.split(' vs ')[1]}"
                    for pair, equal in result["same_metrics"].items() if pair.split(" vs ")[0] == name]  # fmt: skip
        lines.append(f"| {name} | {seconds:.1f} | {runs[0][1] / seconds:.2f}× | {'; '.join(compared)} |")
    return "\n".join(lines) + "\n"


def startup_table(result: dict) -> str:
    """The command line's answer times (``scripts/startup_bench.py``) as a markdown table."""
    lines = ["| command | median s | slowest s | runs |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{r['command']}` | {r['median_seconds']:.2f} | {r['max_seconds']:.2f} | {r['runs']} |" for r in result["commands"]
    ]
    return "\n".join(lines) + f"\n\n{result['machine']}; `{result['command']}`\n"


def any_table(paths: list[Path]) -> str:
    """The markdown table of committed bench JSON (object-style, mass, cost or scale runs) or of one sweep (.jsonl)."""
    if len(paths) == 1 and paths[0].suffix == ".jsonl":
        return sweep_table(paths[0].read_text())
    if len(paths) == 1 and "wall_seconds" in (single := json.loads(paths[0].read_text())):
        return scale_table(single)
    if len(paths) == 1 and single.get("task") == "startup":
        return startup_table(single)
    if len(paths) == 1 and single.get("task") == "robustness":
        from erasekit.eval.robustness import robustness_table

        return robustness_table(single)
    result = merged([json.loads(p.read_text()) for p in paths], [str(p) for p in paths])
    if "protocol" in result:
        return markdown_table(result)
    return mass_table(result) if result["task"] == "mass character erasure" else cost_table(result)
