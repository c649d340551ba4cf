"""Protocols judged prompt by prompt: both models generate the protocol's rows with the same seeds, a
judge reads every image, and the metrics are per-role accuracies of the judge's heads.

Each metric is reported as top-1 accuracy and as the mean probability of the expected class (MACE
reports the classifier's probability; both are labelled). The Fréchet distance between the two
models' images on the kept prompts, in the judge's feature space, is the drift where nothing should
have changed (the world-FID with the world judge).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from erasekit.errors import ErasekitError
from erasekit.eval.generation import Generated, SamplerSettings, generate
from erasekit.eval.metrics import METRICS, better, frechet_distance
from erasekit.eval.prompts import PromptRow
from erasekit.eval.protocols.base import Protocol
from erasekit.eval.protocols.results import NUMBER, CardRow, JsonFields, Measurement, MetricTable, ProtocolResult, percent
from erasekit.eval.scoring import Evaluation, as_judge, score
from erasekit.judges import Judge, make_judge
from erasekit.models.embedded import is_world_model

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits import Edit
    from erasekit.primitives.workers import Workers
    from erasekit.world.evaluator import WorldEvaluator

Metrics = dict[str, dict[str, float]]  # "accuracy" / "probability" → metric name → value


class JudgedProtocol(Protocol):
    """A protocol whose metrics are per-role scores of a judge's heads on its prompt rows."""

    @abstractmethod
    def metrics(self, evaluation: Evaluation, world: bool = True) -> Metrics:
        """The protocol's metrics on ``evaluation``, as top-1 accuracy and as mean class probability
        (``world``: the embedded world's vocabulary or the papers' real one)."""

    def judge(self, pipe: DiffusionPipeline, judge: Judge | WorldEvaluator | str, clip_model: str | None = None) -> Judge:
        """The judge: a given one, or one made by name for the protocol's labels and this model (``auto``:
        the world evaluator for the embedded model, CLIP on a real one; the diffusion classifier is the
        given *original* pipeline)."""
        if not isinstance(judge, str):
            return as_judge(judge)
        world = is_world_model(pipe)
        labels = self.labels(world)
        if judge in ("clip", "diffusion") or (judge == "auto" and not world):
            if labels is None:
                raise ErasekitError(f"the {self.name} protocol has no label sets for the {judge} judge; use --judge world")
            heads, prompt = labels
            if judge == "diffusion":
                from erasekit.judges.diffusion_classifier import DiffusionClassifier

                return DiffusionClassifier(pipe, heads, prompt)
            return make_judge("clip", pipe, heads, clip_model)
        return make_judge(judge, pipe)

    def measure(
        self,
        pipe: DiffusionPipeline,
        edit: Edit,
        rows: list[PromptRow],
        judge: Judge | WorldEvaluator | str,
        settings: SamplerSettings | None,
        progress: bool,
        original_cache: dict | None,
        clip_model: str | None,
        workers: Workers | None,
    ) -> Measurement:
        """Judge both models' images of ``rows`` and take the protocol's metrics of each."""
        world = is_world_model(pipe)
        return evaluate_rows(
            pipe,
            edit,
            rows,
            lambda e: self.metrics(e, world),
            self.judge(pipe, judge, clip_model),
            settings,
            progress,
            original_cache,
            check_base=False,
            workers=workers,
        )

    def table(self, result: ProtocolResult) -> MetricTable:
        """Each metric's top-1 accuracy and mean class probability, before and after, with its direction."""
        original, erased = result.metrics["original"], result.metrics["erased"]

        def direction(name: str) -> str:
            return f"{METRICS[name].better}: {METRICS[name].meaning}" if name in METRICS else ""

        rows = [(name, percent(original["accuracy"][name]), percent(original["probability"][name]),
                 percent(erased["accuracy"][name]), percent(erased["probability"][name]), direction(name))
                for name in original["accuracy"]]  # fmt: skip
        columns = [(col, "left" if col in ("metric", "") else "right") for col in ("metric", "original", "p", "erased", "p", "")]
        return MetricTable(columns, rows, "top-1 accuracy % and mean class probability p %")

    def check_json(self, results: JsonFields) -> None:
        """Top-1 accuracies of both models, and the world-FID where there is one."""
        results.numbers("metrics", "original", "accuracy")
        results.numbers("metrics", "erased", "accuracy")
        results.get("world_fid_kept", kind=NUMBER, default=None)

    def card_rows(self, result: ProtocolResult) -> list[CardRow]:
        """Each metric's top-1 accuracy (%) original → erased, then the world-FID on the kept prompts."""
        original, erased = result.metrics["original"]["accuracy"], result.metrics["erased"]["accuracy"]
        rows = [
            CardRow(name, percent(original[name]), percent(erased[name]), better(name), name)
            for name in erased
            if name in original
        ]
        if result.world_fid_kept is not None:
            rows.append(CardRow("world-FID (kept prompts)", None, f"{result.world_fid_kept:.2f}", better("world_fid_kept")))
        return rows

    def erased_share(self, result: ProtocolResult, key: str) -> str:
        """The share of the erased model's images where metric ``key`` (top-1) missed: the concept gone."""
        return f"{1 - result.metrics['erased']['accuracy'][key]:.0%}"


@dataclass
class RoleScores:
    """One role's sample-weighted scores of a head: top-1 ``accuracy`` and mean ``probability`` of the expected label."""

    accuracy: float  # top-1
    probability: float  # mean probability of the expected class (MACE-style)


def role_scores(evaluation: Evaluation, head: str) -> dict[str, RoleScores]:
    """Per role, sample-weighted top-1 accuracy and expected-class probability of ``head``."""
    out = {}
    for role in {r.role for r in evaluation.rows}:
        rows = [r for r in evaluation.rows if r.role == role and head in r.accuracy]
        if not rows:
            continue
        w = [r.samples for r in rows]
        out[role] = RoleScores(
            float(np.average([r.accuracy[head] for r in rows], weights=w)),
            float(np.average([r.probability[head] for r in rows], weights=w)),
        )
    return out


def by_kind(evaluation: Evaluation, head: str, metrics: Callable[[dict[str, float]], dict[str, float]]) -> Metrics:
    """``metrics`` of the per-role scores of ``head``, once on top-1 accuracy and once on mean class probability."""
    roles = role_scores(evaluation, head)
    return {kind: metrics({role: getattr(s, kind) for role, s in roles.items()}) for kind in ("accuracy", "probability")}


def evaluate_rows(
    pipe: DiffusionPipeline,
    edit: Edit,
    rows: list[PromptRow],
    metrics: Callable[[Evaluation], dict],
    judge: Judge | WorldEvaluator,
    settings: SamplerSettings | None = None,
    progress: bool = True,
    original_cache: dict | None = None,
    check_base: bool = True,
    workers: Workers | None = None,
) -> Measurement:
    """Generate ``rows`` with the original and the erased model (same seeds), score both with ``metrics``
    (``check_base=False``: the caller has checked the edit's base model; ``workers``: the processes
    that share out the images). ``original_cache`` (a dict, filled here) keeps the original model's
    images per prompt row across calls, as the bench does."""
    judge = as_judge(judge)
    before = (
        generate_cached(pipe, rows, settings, progress, original_cache, workers)
        if original_cache is not None
        else generate(pipe, rows, settings, progress, workers)
    )
    with edit.applied(pipe, check_base=check_base) as erased:
        after = generate(erased, rows, settings, progress, workers)
    evals = {"original": score(before, rows, judge), "erased": score(after, rows, judge)}
    kept = np.isin(before.row_index, [i for i, r in enumerate(rows) if r.role == "retain"])
    features = {k: e.reading.features for k, e in evals.items()}
    drift = None  # a judge without features (NudeNet, the diffusion classifier) gives no drift
    if all(f is not None for f in features.values()) and kept.sum() >= 2:
        drift = frechet_distance(features["original"][kept], features["erased"][kept])
    return Measurement(
        judge=judge.settings(),
        metrics={k: metrics(e) for k, e in evals.items()},
        rows={k: e.to_json()["rows"] for k, e in evals.items()},
        images={"original": before, "erased": after},
        world_fid_kept=drift,
    )


def generate_cached(
    pipe: DiffusionPipeline,
    rows: list[PromptRow],
    settings: SamplerSettings | None,
    progress: bool,
    cache: dict,
    workers: Workers | None = None,
) -> Generated:
    """``generate`` for rows not in ``cache`` (keyed by prompt, seed, samples and sampler settings), then all rows."""
    settings = settings or SamplerSettings()
    keys = [(r.prompt, r.seed, r.samples, settings) for r in rows]
    missing = [r for r, k in zip(rows, keys, strict=True) if k not in cache]
    if missing:
        new = generate(pipe, missing, settings, progress, workers)
        for i, row in enumerate(missing):
            cache[(row.prompt, row.seed, row.samples, settings)] = (new.images[new.row_index == i], new.seeds[new.row_index == i])
    parts = [cache[k] for k in keys]
    return Generated(
        np.concatenate([images for images, _ in parts]),
        np.concatenate([np.full(len(images), i) for i, (images, _) in enumerate(parts)]),
        np.concatenate([seeds for _, seeds in parts]),
    )
