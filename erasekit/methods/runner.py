"""Running a registered method: config from overrides, timing and memory, and the edit's card."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit, base_hash, measure, refuse_non_finite
from erasekit.errors import ErasekitError
from erasekit.methods.base import Method, get_method, make_config
from erasekit.models.families import class_family
from erasekit.primitives.run import ProgressCallback, RunContext
from erasekit.primitives.workers import Workers

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.primitives.prompt_cache import PromptCache


def erase(
    pipe: DiffusionPipeline,
    spec: EraseSpec,
    method: str = "uce",
    model: str | None = None,
    progress: bool = True,
    callback: ProgressCallback | None = None,
    expand: int = 0,
    expand_min_similarity: float = 0.5,
    expand_vocabulary: str | None = None,
    workers: Workers | None = None,
    **overrides: object,
) -> Edit:
    """Erase ``spec`` from ``pipe`` with ``method``; the pipeline itself is left unchanged.

    The method runs on the pipeline's device and in its dtype (move the pipeline with ``pipe.to``
    first); ``callback(description, step, total)`` is called after each step of its loops.

    ``expand=k`` first adds, for every target, up to k phrases that lie near it in the text
    encoder's space (similarity ≥ ``expand_min_similarity``) from the tokenizer's vocabulary or the
    ``expand_vocabulary`` file; each takes its target's anchor, and the card lists them.

    ``workers`` (from ``accelerate launch``) share out the independent stages a method has (MACE's
    per-concept LoRAs); every process returns the same edit.

    The settings in ``overrides`` are parsed here, once (:func:`~erasekit.methods.base.make_config`);
    :func:`run_method` runs a method on settings already made.
    """
    entry = get_method(method)
    config = make_config(entry, overrides)
    return run_method(
        pipe, spec, entry, config, model, progress, callback, expand, expand_min_similarity, expand_vocabulary, workers
    )


def run_method(
    pipe: DiffusionPipeline,
    spec: EraseSpec,
    entry: Method,
    config: object,
    model: str | None = None,
    progress: bool = True,
    callback: ProgressCallback | None = None,
    expand: int = 0,
    expand_min_similarity: float = 0.5,
    expand_vocabulary: str | None = None,
    workers: Workers | None = None,
) -> Edit:
    """:func:`erase` with the method's ``config`` already made by :func:`~erasekit.methods.base.make_config`
    (a job makes it while checking its options, before the model loads): nothing is parsed again."""
    from erasekit.version import __version__

    if expand:  # checked with the settings, before the vocabulary is encoded
        from erasekit.primitives.expansion import check_expansion

        check_expansion(expand, expand_min_similarity)
    family = class_family(type(pipe))
    if family is not None:  # a pipeline class of no known family meets the run context's own checks
        entry.check_on(family, config)
    run = RunContext(pipe, progress, callback, workers or Workers())
    expanded: dict[str, list] = {}
    if expand:
        spec, expanded = expanded_spec(run.cache, spec, expand, expand_min_similarity, expand_vocabulary, progress)
    for concept in (*spec.targets, *(a for a in spec.anchors if a), *spec.preserve):
        if not pipe.tokenizer(concept, add_special_tokens=False).input_ids:
            raise ErasekitError(f"the tokenizer turns {concept!r} into no tokens; give a concept with letters or digits")
    with measure(run.device) as usage:
        edit = entry.erase(run, spec, config)
    refuse_non_finite(edit.weights, f"the {entry.name} edit")
    edit.card.update(
        method=entry.name,
        config=edit.card.get("config") or asdict(config),  # as the method resolved it ('auto' settings)
        targets=list(spec.targets),
        anchors=list(spec.anchors),
        preserve=list(spec.preserve),
        model=str(model) if model is not None else model_name(run),
        base_hash=base_hash(pipe, edit.checked_names()),
        erasekit_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(usage.seconds, 3),
        seconds_per_concept=round(usage.seconds / len(spec.targets), 3),
        peak_rss_mb=round(usage.peak_rss_mb, 1),
        peak_cuda_mb=usage.peak_cuda_mb,
        changed_parameters=len(edit.weights),
        device=str(run.device),
        dtype=str(run.dtype).removeprefix("torch."),
    )
    if expand:
        edit.card["expanded"] = expanded
    return edit


def model_name(run: RunContext) -> str | None:
    """What the card calls the base model when the caller did not say: the embedded model's name, or
    the directory or hub id the pipeline was loaded from."""
    from erasekit.models.loading import EMBEDDED_FLUX_NAME, EMBEDDED_NAME

    if run.is_world_model:
        return EMBEDDED_FLUX_NAME if run.family.name == "flux" else EMBEDDED_NAME
    name = getattr(run.pipe, "name_or_path", None)
    return str(name) if name else None


def expanded_spec(
    cache: PromptCache, spec: EraseSpec, top_k: int, min_similarity: float, vocabulary: str | None, progress: bool = True
) -> tuple[EraseSpec, dict[str, list]]:
    """``spec`` with each target's nearest phrases added as targets (same anchor), and what was added."""
    from erasekit.primitives.expansion import expand_concepts, read_vocabulary

    words = read_vocabulary(vocabulary) if vocabulary else None
    found = expand_concepts(cache, spec.targets, words, top_k, min_similarity, exclude=spec.preserve, progress=progress)
    targets, anchors = list(spec.targets), list(spec.anchors)
    for target, anchor in zip(spec.targets, spec.anchors, strict=True):
        for candidate in found[target]:
            if candidate.phrase.lower() not in {t.lower() for t in targets}:
                targets.append(candidate.phrase)
                anchors.append(anchor)
    added = {t: [[c.phrase, c.similarity] for c in found[t]] for t in spec.targets}
    return EraseSpec(tuple(targets), tuple(anchors), spec.preserve), added
