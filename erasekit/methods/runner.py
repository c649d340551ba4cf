"""Running a registered method: config from overrides, timing and memory, and the edit's card."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from erasekit.edits import Edit, base_hash, measure
from erasekit.errors import ErasekitError
from erasekit.methods.base import EraseSpec, get_method, make_config

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def erase(
    pipe: DiffusionPipeline,
    spec: EraseSpec,
    method: str = "uce",
    model: str | None = None,
    progress: bool = True,
    **overrides: object,
) -> Edit:
    """Erase ``spec`` from ``pipe`` with ``method``; the pipeline itself is left unchanged."""
    from erasekit import __version__

    entry = get_method(method)
    config = make_config(entry, overrides)
    for concept in (*spec.targets, *(a for a in spec.anchors if a), *spec.preserve):
        if not pipe.tokenizer(concept, add_special_tokens=False).input_ids:
            raise ErasekitError(f"the tokenizer turns {concept!r} into no tokens; give a concept with letters or digits")
    with measure() as usage:
        edit = entry.erase(pipe, spec, config, progress)
    edit.card.update(
        method=entry.name,
        config=asdict(config),
        targets=list(spec.targets),
        anchors=list(spec.anchors),
        preserve=list(spec.preserve),
        model=str(model) if model is not None else None,
        base_hash=base_hash(pipe.unet, list(edit.weights)),
        erasekit_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(usage.seconds, 3),
        seconds_per_concept=round(usage.seconds / len(spec.targets), 3),
        peak_rss_mb=round(usage.peak_rss_mb, 1),
        peak_cuda_mb=usage.peak_cuda_mb,
        changed_parameters=len(edit.weights),
    )
    return edit
