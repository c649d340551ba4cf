"""The object protocol (MACE's CIFAR-10 task, with RealEra's concept residue).

For an erased class c:
  Acc_e  accuracy on "a photo of a {c}"            (efficacy, lower is better)
  Acc_s  accuracy on the other classes               (specificity, higher is better)
  Acc_g  accuracy on c's synonyms                    (generality, lower is better)
  H_o = 3 / (1/(1−Acc_e) + 1/Acc_s + 1/(1−Acc_g))
and RealEra's concept residue: accuracy on the associated description, which never names c. On the
embedded model the classes are the world's shapes; on a real model it is MACE's own task: its ten
CIFAR-10 classes and their synonyms, "a photo of the {class}", judged by CLIP (or the diffusion
classifier) over the ten classes, with no associated descriptions (no residue).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import PromptRow
from erasekit.eval.protocols.base import LabelSets
from erasekit.eval.protocols.judged import JudgedProtocol, Metrics, by_kind
from erasekit.eval.protocols.results import ProtocolResult
from erasekit.eval.protocols.seeds import PROTOCOL_SEED, protocol_row
from erasekit.eval.scoring import Evaluation
from erasekit.judges import harmonic_mean
from erasekit.judges.clip import MACE_CIFAR10_SYNONYMS, MACE_CLIP_TEMPLATE
from erasekit.world import vocabulary as V


@dataclass(frozen=True)
class ObjectTask:
    """The object protocol's vocabulary: classes with synonyms (and associations, for residue), the
    judge's head that reads them, and the prompt of a class."""

    head: str
    synonyms: dict[str, tuple[str, ...]]
    associations: dict[str, str]
    prompt: Callable[[str], str]

    @property
    def classes(self) -> tuple[str, ...]:
        """The task's classes, in order."""
        return tuple(self.synonyms)


WORLD_OBJECTS = ObjectTask("shape", dict(V.SYNONYMS), dict(V.SHAPE_ASSOCIATIONS), lambda c: f"a photo of {V.article(c)} {c}")
# MACE's CIFAR-10 task: "a photo of the {class}", its synonyms; no associated descriptions (no residue)
CIFAR10_OBJECTS = ObjectTask("object", dict(MACE_CIFAR10_SYNONYMS), {}, MACE_CLIP_TEMPLATE.format)


def object_task(world: bool) -> ObjectTask:
    """The object protocol's task: the world's shapes, or MACE's CIFAR-10 classes on a real model."""
    return WORLD_OBJECTS if world else CIFAR10_OBJECTS


def object_rows(target: str, samples: int = 16, seed: int = PROTOCOL_SEED, task: ObjectTask = WORLD_OBJECTS) -> list[PromptRow]:
    """Prompts of the object protocol for erasing class ``target`` of ``task`` (the world's shapes by default)."""
    if target not in task.classes:
        where = "a shape class of the world" if task is WORLD_OBJECTS else "one of MACE's CIFAR-10 classes"
        raise ErasekitError(f"{target!r} is not {where}; choose one of {', '.join(task.classes)}")
    rows = [(task.prompt(target), "erase", target)]
    rows += [(task.prompt(s), "synonym", target) for s in task.synonyms[target]]
    if target in task.associations:
        rows += [(f"a picture of {task.associations[target]}", "associated", target)]
    rows += [(task.prompt(o), "retain", o) for o in task.classes if o != target]
    # Seeds depend on the prompt's position in the full class list, not on the target, so the
    # same prompt gets the same seeds in every erasure and against the original model.
    return [protocol_row(p, role, {task.head: c}, samples, seed) for p, role, c in rows]


def object_metrics(evaluation: Evaluation, head: str = "shape") -> Metrics:
    """Acc_e, Acc_s, Acc_g, residue (where the task has associations) and H_o, as top-1 accuracy and as
    mean class probability."""

    def metrics(acc: dict[str, float]) -> dict[str, float]:
        out = {"Acc_e": acc["erase"], "Acc_s": acc["retain"], "Acc_g": acc["synonym"]}
        out |= {"residue": acc["associated"]} if "associated" in acc else {}
        return out | {"H_o": harmonic_mean(1 - acc["erase"], acc["retain"], 1 - acc["synonym"])}

    return by_kind(evaluation, head, metrics)


class ObjectProtocol(JudgedProtocol):
    """Erasing a class: its prompts, its synonyms and its association against the other classes."""

    name = "object"

    def rows(self, target: str, samples: int, world: bool = True, prompt_file: str | None = None) -> list[PromptRow]:
        """The object rows of ``target`` in the world's task or MACE's CIFAR-10 one."""
        return object_rows(target, samples, task=object_task(world))

    def labels(self, world: bool) -> LabelSets:
        """The task's classes, on the task's head."""
        task = object_task(world)
        return {task.head: task.classes}, task.prompt

    def metrics(self, evaluation: Evaluation, world: bool = True) -> Metrics:
        """Acc_e, Acc_s, Acc_g, residue and H_o on the task's head."""
        return object_metrics(evaluation, object_task(world).head)

    def verdict(self, result: ProtocolResult) -> str:
        """How often the class, its synonyms and its association are gone, and the other classes kept."""
        m, was = result.metrics["erased"]["accuracy"], result.metrics["original"]["accuracy"]
        line = (f"{result.target}: erased in {self.erased_share(result, 'Acc_e')} of images (was {1 - was['Acc_e']:.0%}), "
                f"other classes kept at {m['Acc_s']:.0%}, synonyms erased in {self.erased_share(result, 'Acc_g')}")  # fmt: skip
        return line + (f", associated prompt in {self.erased_share(result, 'residue')}" if "residue" in m else "")
