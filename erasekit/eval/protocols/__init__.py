"""Evaluation protocols of MACE (CVPR 2024) and RealEra, on the embedded world and on real SD models.

Each protocol is one module implementing :class:`~erasekit.eval.protocols.base.Protocol` (its prompt
rows, label sets, metrics, verdict and tables), registered here in :data:`PROTOCOLS`:

* object (:mod:`.object`): MACE's CIFAR-10 task with RealEra's residue, on the world's shapes or,
  on a real model, MACE's own ten classes judged by CLIP (or the diffusion classifier);
* character, artist, flames, quality (:mod:`.character`, :mod:`.artist`, :mod:`.flames`,
  :mod:`.quality`): they speak the world's vocabulary and run on the embedded model;
* explicit, captions (:mod:`.explicit`, :mod:`.captions`): they generate the user's prompt file, an
  I2P-style one counted by NudeNet or a COCO-style one measured by FID and CLIP score.

Every protocol is read by a judge (:mod:`erasekit.judges`); :func:`run_protocol` runs one on an edit
and returns a :class:`ProtocolResult`, which ``results.json`` holds as :meth:`ProtocolResult.to_json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval.generation import SamplerSettings
from erasekit.eval.prompts import PromptRow
from erasekit.eval.protocols.artist import ArtistProtocol, artist_metrics, artist_rows
from erasekit.eval.protocols.base import LabelSets, Protocol
from erasekit.eval.protocols.captions import CaptionsProtocol
from erasekit.eval.protocols.character import CharacterProtocol, character_metrics, character_rows, mass_character_rows
from erasekit.eval.protocols.explicit import ExplicitProtocol
from erasekit.eval.protocols.flames import FlamesProtocol, flames_metrics, flames_rows
from erasekit.eval.protocols.judged import JudgedProtocol, RoleScores, evaluate_rows, generate_cached, role_scores
from erasekit.eval.protocols.object import (
    CIFAR10_OBJECTS,
    WORLD_OBJECTS,
    ObjectProtocol,
    ObjectTask,
    object_metrics,
    object_rows,
    object_task,
)
from erasekit.eval.protocols.quality import QualityProtocol, quality_metrics, quality_rows
from erasekit.eval.protocols.results import CardRow, JsonFields, Measurement, MetricTable, ProtocolResult
from erasekit.eval.protocols.seeds import MASS_SEED_BLOCK, PROTOCOL_SEED, QUALITY_SEED_BLOCK, SEED_BLOCK
from erasekit.eval.scoring import Evaluation
from erasekit.judges import Judge
from erasekit.models.embedded import is_world_model
from erasekit.primitives.workers import Workers
from erasekit.world.evaluator import WorldEvaluator

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = [
    "CIFAR10_OBJECTS", "MASS_SEED_BLOCK", "PROMPT_FILE_PROTOCOLS", "PROTOCOLS", "PROTOCOL_SEED", "QUALITY_SEED_BLOCK",
    "SEED_BLOCK", "WORLD_OBJECTS", "WORLD_ONLY", "CardRow", "JsonFields", "JudgedProtocol", "LabelSets", "Measurement",
    "MetricTable", "ObjectTask", "Protocol", "ProtocolResult", "RoleScores", "artist_metrics", "artist_rows",
    "character_metrics", "character_rows", "evaluate_rows", "flames_metrics", "flames_rows", "generate_cached",
    "get_protocol", "mass_character_rows", "object_metrics", "object_rows", "object_task", "protocol_judge",
    "protocol_labels", "protocol_metrics", "protocol_rows", "quality_metrics", "quality_rows", "read_results",
    "result_protocol", "role_scores", "run_protocol", "verdict",
]  # fmt: skip

# The registry: every protocol by name, in the order the CLI lists them
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        ObjectProtocol(),
        CharacterProtocol(),
        ArtistProtocol(),
        FlamesProtocol(),
        QualityProtocol(),
        ExplicitProtocol(),
        CaptionsProtocol(),
    )
}
WORLD_ONLY = tuple(name for name, p in PROTOCOLS.items() if p.world_only)  # they speak the world's vocabulary
PROMPT_FILE_PROTOCOLS = tuple(name for name, p in PROTOCOLS.items() if p.prompt_file)  # they generate the user's file


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name is one line listing the protocols."""
    if name not in PROTOCOLS:
        raise ErasekitError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def result_protocol(name: str) -> Protocol:
    """The protocol that reads a results file of protocol ``name``. A name this erasekit does not know
    (a file of another version, or edited by hand) is read for what every judged protocol holds, as the
    quality protocol reads it: per-metric accuracies and the kept prompts' accuracy."""
    return PROTOCOLS.get(name, PROTOCOLS["quality"])


def read_results(data: object, path: Path) -> ProtocolResult:
    """``results.json`` at ``path`` (already parsed) as a typed result, after checking that it holds what its
    protocol's card rows read: a missing key or a wrong type is one error naming the file."""
    fields = JsonFields(data, Path(path), "run the evaluation again")
    fields.get(kind=dict)
    protocol = result_protocol(fields.get("protocol", kind=str, default=""))
    protocol.check_json(fields)
    return ProtocolResult.from_json(data)  # type: ignore[arg-type]


def protocol_rows(
    protocol: str, target: str, samples: int, world: bool = True, prompt_file: str | None = None
) -> list[PromptRow]:
    """The prompt rows of ``protocol`` for erased concept ``target`` (flames, quality and the prompt-file
    protocols ignore it); ``world`` picks the embedded world's vocabulary or the papers' real one."""
    found = get_protocol(protocol)
    if found.world_only and not world:
        raise ErasekitError(f"the {protocol} protocol speaks the embedded world's vocabulary; on a real model use "
                            "object (MACE's CIFAR-10), explicit (an I2P file) or captions (a COCO-style file)")  # fmt: skip
    return found.rows(target, samples, world, prompt_file)


def protocol_labels(protocol: str, world: bool) -> LabelSets | None:
    """The label sets a zero-shot judge (CLIP, the diffusion classifier) chooses among for ``protocol``, and
    the prompt of a label; None where the protocol has none (the world judge reads its own heads)."""
    return get_protocol(protocol).labels(world)


def _judged(protocol: str) -> JudgedProtocol:
    found = get_protocol(protocol)
    if not isinstance(found, JudgedProtocol):
        raise ErasekitError(f"the {protocol} protocol measures its prompt file as a whole, not prompt by prompt")
    return found


def protocol_metrics(protocol: str, evaluation: Evaluation, world: bool = True) -> dict[str, dict[str, float]]:
    """The metrics of ``protocol`` (object, character, artist, flames or quality) on its evaluation;
    ``world`` picks the object task's head."""
    return _judged(protocol).metrics(evaluation, world)


def protocol_judge(
    protocol: str, pipe: DiffusionPipeline, judge: Judge | WorldEvaluator | str, clip_model: str | None = None
) -> Judge:
    """The judge of ``protocol``: a given one, or one made by name for the protocol's labels and this model
    (``auto``: the world evaluator for the embedded model, CLIP on a real one; the diffusion classifier
    is the given *original* pipeline)."""
    return _judged(protocol).judge(pipe, judge, clip_model)


def run_protocol(
    pipe: DiffusionPipeline,
    edit: Edit,
    protocol: str,
    target: str,
    judge: Judge | WorldEvaluator | str = "auto",
    samples: int = 16,
    settings: SamplerSettings | None = None,
    progress: bool = True,
    original_cache: dict | None = None,
    prompt_file: str | None = None,
    clip_model: str | None = None,
    check_base: bool = True,
    workers: Workers | None = None,
) -> ProtocolResult:
    """Generate the protocol's prompts with the original and the erased model (same seeds) and score both.

    The edit's base model is checked before any image is generated (``check_base=False`` accepts it
    for this pipeline as it is).

    The result holds the metrics of each, and the Fréchet distance between their images on the kept
    prompts in the judge's feature space (the world-FID with the world judge: image-quality drift where
    nothing should have changed). ``original_cache`` (a dict, filled here) keeps the original
    model's images per prompt row across calls, as the bench does. ``judge`` is a judge or a name
    (``auto`` follows the model, see :func:`protocol_judge`; ``clip_model`` is the CLIP a named clip judge loads).
    Under several ``workers`` the processes share out the images and each gets the whole result.
    """
    rows = protocol_rows(protocol, target, samples, is_world_model(pipe), prompt_file)
    if check_base:  # once, before any image; the generation below applies the edit unchecked
        edit.check_base(pipe)
    else:
        edit.check_architecture(pipe)
    measured = PROTOCOLS[protocol].measure(pipe, edit, rows, judge, settings, progress, original_cache, clip_model, workers)
    return ProtocolResult.of(protocol, target, samples, [r.prompt for r in rows], measured)


def verdict(result: ProtocolResult) -> str:
    """One line saying what the erasure did, in the protocol's terms (top-1 accuracy)."""
    return result_protocol(result.protocol).verdict(result)
