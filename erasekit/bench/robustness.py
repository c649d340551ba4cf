"""The robustness bench: every method beside every attack.

For each method (and the unedited model, the baseline) and each concept of a task: erase, run the
task's protocol, then run every attack on the edit (:func:`erasekit.eval.attack_run.run_attack`),
so each attack's ASR stands beside the protocol's numbers. The edit, the protocol's numbers and each
attack's results are kept per cell, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from erasekit.attacks.base import Attack
from erasekit.bench.cells import PROTOCOL_CELL, cell_label
from erasekit.bench.entries import BenchEntry
from erasekit.bench.tables import robustness_table
from erasekit.bench.tasks import DEFAULT_CONCEPTS
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval.attack_run import attack_targets, run_attack, unedited
from erasekit.eval.cells import counted, read_cell, warn_damaged
from erasekit.eval.generation import SamplerSettings
from erasekit.eval.protocols import run_protocol
from erasekit.io import write_json, write_with
from erasekit.methods.runner import erase
from erasekit.primitives.workers import Workers

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.judges import Judge

# Budgets that keep one attack on one prompt under two minutes on 2 CPU cores with the world model
# (bench/robustness-*.json records the budget each number was measured with).
WORLD_ATTACKS = (
    "unlearndiff timesteps=10 iterations=20",
    "p4d timesteps=10 iterations=20",
    "ring-a-bell population=64 generations=200",
    "mma-diffusion steps=100 candidates=128",
    "inversion steps=300",
)
ROBUSTNESS_CONCEPTS = {"object": ("square",), "character": ("Captain Nova",), "flames": ("in flames",)}
ATTACKED_CONCEPT = {"in flames": "flames"}  # the flames task erases the phrase; the attack wants the flames back


@dataclass(frozen=True)
class AttackEntry:
    """One bench column: a registered attack with its budget."""

    attack: Attack
    config: object
    label: str

    @property
    def slug(self) -> str:
        """The label as a directory name (the attack's cells live under it)."""
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", self.label)


def parse_attack(text: str) -> AttackEntry:
    """``"name key=value …"`` as an attack with its checked settings (one clear line for a bad one)."""
    from erasekit.attacks import get_attack
    from erasekit.methods.base import make_config

    name, _, rest = text.strip().partition(" ")
    pairs = [p.partition("=") for p in rest.split()]
    if any(not sep for _, sep, _ in pairs):
        raise ErasekitError(f"attack {text!r}: settings are key=value")
    attack = get_attack(name)
    return AttackEntry(attack, make_config(attack, {k: v for k, _, v in pairs}), text.strip())  # type: ignore[arg-type]


ATTACK_RESULT = ("asr_found", "baseline_asr", "asr_images", "seconds_per_prompt")  # read beside asr when it ran


def _attack_result(path: Path) -> dict | None:
    """An attack's results.json in the robustness bench, or None to run the attack (again)."""
    result = read_cell(path, ("attack", "asr"))
    if result is None:
        return None
    missing = [k for k in (ATTACK_RESULT if result["asr"] is not None else ("not_applicable",)) if k not in result]
    if missing:
        warn_damaged(path, f"without {', '.join(missing)}")
        return None
    return result


def run_robustness(
    pipe: DiffusionPipeline,
    judge: Judge,
    entries: list[BenchEntry],
    attacks: list[AttackEntry],
    protocol: str,
    concepts: tuple[str, ...],
    out_dir: Path,
    prompts: int = 4,
    samples: int = 4,
    settings: SamplerSettings | None = None,
    workers: Workers | None = None,
    progress: bool = True,
) -> dict | None:
    """For each method (and the unedited model, the baseline) and concept: erase, run the task's protocol,
    then every attack; ASR beside the protocol's numbers. Cells resume; several ``workers`` share the
    (method, concept) pairs and the first summarises (the others get None)."""
    task = DEFAULT_CONCEPTS[protocol]  # preserve=others keeps the whole task's other concepts, as the bench does

    workers = workers or Workers()
    rows = [BenchEntry("none"), *entries]  # "none": the unedited model, what each attack finds without any erasure
    jobs = [(entry, concept) for entry in rows for concept in concepts]
    for entry, concept in counted(workers.share(jobs), "robustness cell", cell_label, progress):
        where = Path(out_dir) / "cells" / entry.slug / re.sub(r"[^A-Za-z0-9]+", "_", concept)
        edit_dir = where / "edit"
        edit = unedited(concept) if entry.method == "none" else _stored_edit(edit_dir)
        if edit is None:
            edit = erase(pipe, entry.spec((concept,), task), entry.method, progress=progress, expand=entry.expand,
                         **entry.settings)  # fmt: skip
            edit.save(edit_dir, overwrite=edit_dir.exists())  # one there now is damaged: the cell's own, replaced
        check = entry.method != "none"
        protocol_file = where / f"{protocol}-{samples}.json"
        if read_cell(protocol_file, PROTOCOL_CELL) is None:
            result = run_protocol(pipe, edit, protocol, concept, judge, samples, settings, progress, check_base=check)
            # the erasure's seconds and memory are on its card (edit_dir/card.json)
            write_json(protocol_file, {"metrics": result.metrics, "world_fid_kept": result.world_fid_kept})
        targets = attack_targets(ATTACKED_CONCEPT.get(concept, concept), prompts, True)
        for entry_attack in attacks:
            if _attack_result(where / entry_attack.slug / "results.json") is not None:
                continue
            try:
                result = run_attack(pipe, edit, entry_attack.attack, entry_attack.config, targets, judge,
                                    where / entry_attack.slug, samples, settings, progress, check_base=check)  # fmt: skip
            except ErasekitError as err:  # an attack this erasure cannot take (a learned token on a text-only pipeline)
                result = {"attack": entry_attack.attack.name, "asr": None, "not_applicable": str(err)}
            write_json(where / entry_attack.slug / "results.json", result)
    workers.barrier()
    if not workers.is_main:
        return None
    return _robustness_summary(rows, attacks, protocol, concepts, out_dir, prompts, samples)


def _stored_edit(edit_dir: Path) -> Edit | None:
    """The edit an earlier run erased into a cell, or None when there is none or it is damaged."""
    if not (edit_dir / "card.json").exists():
        return None
    try:
        return Edit.load(edit_dir)
    except ErasekitError as err:
        warn_damaged(edit_dir, str(err))
        return None


def _robustness_summary(
    rows: list[BenchEntry], attacks: list[AttackEntry], protocol: str, concepts: tuple[str, ...], out_dir: Path,
    prompts: int, samples: int,
) -> dict:  # fmt: skip
    methods = {}
    for entry in rows:
        cells = [Path(out_dir) / "cells" / entry.slug / re.sub(r"[^A-Za-z0-9]+", "_", c) for c in concepts]
        protocol_cells = [json.loads((c / f"{protocol}-{samples}.json").read_text()) for c in cells]
        erased = [p["metrics"]["erased"]["accuracy"] for p in protocol_cells]
        by_attack = {}
        for a in attacks:
            results = [json.loads((c / a.slug / "results.json").read_text()) for c in cells]
            ran = [r for r in results if r["asr"] is not None]
            by_attack[a.label] = {
                key: float(np.mean([r[key] for r in ran])) if ran else None
                for key in ("asr", "asr_found", "baseline_asr", "asr_images", "seconds_per_prompt")
            }
            if not ran:
                by_attack[a.label]["not_applicable"] = results[0]["not_applicable"]
        cards = [json.loads((c / "edit" / "card.json").read_text()) for c in cells if (c / "edit" / "card.json").exists()]
        methods[entry.label] = {
            "accuracy": {k: float(np.mean([e[k] for e in erased])) for k in erased[0]},
            "world_fid_kept": float(np.mean([p["world_fid_kept"] for p in protocol_cells])),
            # per concept, from the edits' cards (the unedited model has none)
            "seconds": float(np.mean([c["seconds"] for c in cards])) if cards else 0.0,
            "peak_rss_mb": float(np.mean([c["peak_rss_mb"] for c in cards])) if cards else 0.0,
            "attacks": by_attack,
        }
    summary = {
        "task": "robustness", "protocol": protocol, "concepts": list(concepts), "prompts_per_concept": prompts,
        "samples_per_prompt": samples, "attacks": {a.label: asdict(a.config) for a in attacks},  # type: ignore[call-overload]
        "methods": methods,
    }  # fmt: skip
    write_json(Path(out_dir) / "robustness.json", summary)
    write_with(Path(out_dir) / "robustness.md", lambda tmp: Path(tmp).write_text(robustness_table(summary)))
    return summary
