"""Evaluation protocols of MACE (CVPR 2024) and RealEra on the embedded world.

Object erasure (MACE's CIFAR-10 task): for an erased class c,
  Acc_e  accuracy on "a photo of a {c}"            (efficacy, lower is better)
  Acc_s  accuracy on the other classes               (specificity, higher is better)
  Acc_g  accuracy on c's synonyms                    (generality, lower is better)
  H_o = 3 / (1/(1−Acc_e) + 1/Acc_s + 1/(1−Acc_g))
and RealEra's concept residue: accuracy on the associated description, which never names c.
Each is reported as top-1 accuracy and as the mean probability of the class (MACE reports the
classifier's probability; both are labelled). Character erasure: Acc_e, Acc_s over the other named
characters, H_c = 2 / (1/(1−Acc_e) + 1/Acc_s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval.evaluator import WorldEvaluator, predict
from erasekit.eval.generation import SamplerSettings, generate
from erasekit.eval.metrics import frechet_distance, harmonic_mean
from erasekit.eval.prompts import PromptRow
from erasekit.eval.scoring import Evaluation, score
from erasekit.world import vocabulary as V

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

PROTOCOLS = ("object", "character")


def object_rows(target: str, samples: int = 16, seed: int = 50_000) -> list[PromptRow]:
    """Prompts of the object protocol for erasing shape class ``target``."""
    if target not in V.SHAPES:
        raise ErasekitError(f"{target!r} is not a shape class of the world; choose one of {', '.join(V.SHAPES)}")
    rows = [(f"a photo of {V.article(target)} {target}", "erase", target)]
    rows += [(f"a photo of {V.article(s)} {s}", "synonym", target) for s in V.SYNONYMS[target]]
    rows += [(f"a picture of {V.SHAPE_ASSOCIATIONS[target]}", "associated", target)]
    rows += [(f"a photo of {V.article(o)} {o}", "retain", o) for o in V.SHAPES if o != target]
    # Seeds depend on the prompt's position in the full class list, not on the target, so the
    # same prompt gets the same seeds in every erasure and against the original model.
    return [PromptRow(p, seed + _prompt_index(p) * samples, role, {"shape": shape}, samples, p) for p, role, shape in rows]


def character_rows(target: str, samples: int = 16, seed: int = 60_000, keep: tuple[str, ...] | None = None) -> list[PromptRow]:
    """Prompts of the character protocol; ``keep`` defaults to the other named characters."""
    if target not in V.CHARACTER_NAMES:
        raise ErasekitError(f"{target!r} is not a character of the world; `erasekit world vocabulary` lists them")
    keep = keep if keep is not None else tuple(c for c in V.NAMED_CHARACTERS if c != target)
    rows = [(f"a portrait of {target}", "erase", target)]
    association = V.CHARACTER_BY_NAME[target].association
    if association:
        rows.append((f"a portrait of {association}", "associated", target))
    rows += [(f"a portrait of {c}", "retain", c) for c in keep]
    return [PromptRow(p, seed + _prompt_index(p) * samples, role, {"character": c}, samples, p) for p, role, c in rows]


def _prompt_index(prompt: str) -> int:
    """A stable small integer per prompt (its position among every protocol prompt)."""
    return _ALL_PROMPTS.index(prompt)


_ALL_PROMPTS: list[str] = (
    [f"a photo of {V.article(t)} {t}" for s in V.SHAPES for t in (s, *V.SYNONYMS[s])]
    + [f"a picture of {V.SHAPE_ASSOCIATIONS[s]}" for s in V.SHAPES]
    + [f"a portrait of {c.name}" for c in V.CHARACTERS]
    + [f"a portrait of {c.association}" for c in V.CHARACTERS if c.association]
)


@dataclass
class RoleScores:
    accuracy: float  # top-1
    probability: float  # mean probability of the expected class (MACE-style)


def role_scores(evaluation: Evaluation, head: str) -> dict[str, RoleScores]:
    """Per role, sample-weighted top-1 accuracy and expected-class probability of ``head``."""
    out = {}
    for role in {r.role for r in evaluation.rows}:
        rows = [r for r in evaluation.rows if r.role == role and head in r.accuracy]
        w = [r.samples for r in rows]
        out[role] = RoleScores(
            float(np.average([r.accuracy[head] for r in rows], weights=w)),
            float(np.average([r.probability[head] for r in rows], weights=w)),
        )
    return out


def object_metrics(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """Acc_e, Acc_s, Acc_g, residue and H_o, as top-1 accuracy and as mean class probability."""
    roles = role_scores(evaluation, "shape")
    out = {}
    for kind in ("accuracy", "probability"):
        acc = {role: getattr(s, kind) for role, s in roles.items()}
        out[kind] = {
            "Acc_e": acc["erase"],
            "Acc_s": acc["retain"],
            "Acc_g": acc["synonym"],
            "residue": acc["associated"],
            "H_o": harmonic_mean(1 - acc["erase"], acc["retain"], 1 - acc["synonym"]),
        }
    return out


def character_metrics(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """Acc_e, Acc_s, residue (when the character has an association) and H_c."""
    roles = role_scores(evaluation, "character")
    out = {}
    for kind in ("accuracy", "probability"):
        acc = {role: getattr(s, kind) for role, s in roles.items()}
        out[kind] = {"Acc_e": acc["erase"], "Acc_s": acc["retain"], "H_c": harmonic_mean(1 - acc["erase"], acc["retain"])}
        if "associated" in acc:
            out[kind]["residue"] = acc["associated"]
    return out


def protocol_rows(protocol: str, target: str, samples: int) -> list[PromptRow]:
    if protocol == "object":
        return object_rows(target, samples)
    if protocol == "character":
        return character_rows(target, samples)
    raise ErasekitError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def protocol_metrics(protocol: str, evaluation: Evaluation) -> dict[str, dict[str, float]]:
    return object_metrics(evaluation) if protocol == "object" else character_metrics(evaluation)


def run_protocol(
    pipe: DiffusionPipeline,
    edit: Edit,
    protocol: str,
    target: str,
    evaluator: WorldEvaluator,
    samples: int = 16,
    settings: SamplerSettings | None = None,
    progress: bool = True,
) -> dict:
    """Generate the protocol's prompts with the original and the erased model (same seeds) and score both.

    Returns the metrics of each, and the world-FID between their images on the kept prompts
    (image-quality drift where nothing should have changed).
    """
    rows = protocol_rows(protocol, target, samples)
    before = generate(pipe, rows, settings, progress)
    with edit.applied(pipe):
        after = generate(pipe, rows, settings, progress)
    evals = {"original": score(before, rows, evaluator), "erased": score(after, rows, evaluator)}
    kept = np.isin(before.row_index, [i for i, r in enumerate(rows) if r.role == "retain"])
    feats = {k: predict(evaluator, g.images[kept]).features for k, g in (("original", before), ("erased", after))}
    return {
        "protocol": protocol,
        "target": target,
        "samples_per_prompt": samples,
        "metrics": {k: protocol_metrics(protocol, e) for k, e in evals.items()},
        "world_fid_kept": frechet_distance(feats["original"], feats["erased"]),
        "rows": {k: e.to_json()["rows"] for k, e in evals.items()},
        "images": {"original": before, "erased": after},
    }
