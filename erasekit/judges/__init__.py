"""Judges: what is in a generated image, behind one interface.

Every protocol, RECE's validator and MACE's default choices take a :class:`Judge`:

* ``world`` — the embedded world's evaluator (shape, artist, character, flames); for ``erasekit-tiny``.
* ``clip`` — CLIP zero-shot classification over a protocol's label sets (MACE's object, celebrity
  and style evaluation), for any real model.
* ``nudenet`` — NudeNet 3.4.2, pinned, for explicit content (MACE's I2P evaluation).
* ``diffusion`` — a diffusion classifier (Li et al., "Your Diffusion Model is Secretly a Zero-Shot
  Classifier", ICCV 2023): the *original* model's denoising error under each candidate prompt;
  it needs no weights beyond the model's own.

A judge names its heads (label sets) and reads images into per-head probabilities, and decides
whether a concept is present. Defaults follow the model (:func:`default_judge`): the world
evaluator for the embedded model, CLIP for any other, never the 64-px world CNN on a real image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from erasekit.errors import ErasekitError
from erasekit.judges.base import Judge, Reading, harmonic_mean
from erasekit.models.embedded import is_world_model

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

JUDGES = ("auto", "world", "clip", "nudenet", "diffusion")


def default_judge_name(pipe: DiffusionPipeline | None) -> str:
    """``world`` for the embedded model, ``clip`` for any other."""
    return "world" if pipe is not None and is_world_model(pipe) else "clip"


def make_judge(
    name: str,
    pipe: DiffusionPipeline | None = None,
    heads: dict[str, tuple[str, ...]] | None = None,
    clip_model: str | None = None,
) -> Judge:
    """A judge by name (``auto`` follows the model). ``heads`` are the label sets CLIP and the diffusion
    classifier choose among (the protocol's task); ``pipe`` is the original model for ``diffusion``."""
    if name == "auto":
        name = default_judge_name(pipe)
    if name == "world":
        from erasekit.judges.world import WorldJudge

        if pipe is not None and not is_world_model(pipe):
            raise ErasekitError("the world judge reads the embedded world's 64-px images only; use --judge clip for this model")
        return WorldJudge()
    if name == "clip":
        from erasekit.judges.clip import MACE_CLIP_MODEL, ClipJudge

        device = str(pipe.device) if pipe is not None else None  # beside the model it judges
        return ClipJudge.from_pretrained(clip_model or MACE_CLIP_MODEL, heads=heads, device=device)
    if name == "nudenet":
        from erasekit.judges.nudity import NudityJudge

        return NudityJudge()
    if name == "diffusion":
        from erasekit.judges.diffusion_classifier import DiffusionClassifier

        if pipe is None:
            raise ErasekitError("the diffusion judge needs the original model (it classifies with its denoising error)")
        if not heads:
            raise ErasekitError("the diffusion judge needs label sets to choose among")
        return DiffusionClassifier(pipe, heads)
    raise ErasekitError(f"unknown judge {name!r}; choose one of {', '.join(JUDGES)}")


__all__ = ["JUDGES", "Judge", "Reading", "default_judge_name", "harmonic_mean", "make_judge"]
