"""The interface every evaluation protocol implements, and the label sets of zero-shot judges."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits import Edit
    from erasekit.eval.generation import SamplerSettings
    from erasekit.eval.prompts import PromptRow
    from erasekit.eval.protocols.results import CardRow, JsonFields, Measurement, MetricTable, ProtocolResult
    from erasekit.judges import Judge
    from erasekit.primitives.workers import Workers
    from erasekit.world.evaluator import WorldEvaluator

# What a zero-shot judge (CLIP, the diffusion classifier) chooses among: head → labels, and a label's prompt
LabelSets = tuple[dict[str, tuple[str, ...]], Callable[[str], str]]


class Protocol(ABC):
    """An evaluation protocol: the prompts it generates with the original and the erased model, how it
    measures both, the line that says what the erasure did, and how its numbers are shown."""

    name: ClassVar[str]
    world_only: ClassVar[bool] = False  # speaks the embedded world's vocabulary: no real model
    prompt_file: ClassVar[bool] = False  # generates the user's prompt file (--prompts)

    @abstractmethod
    def rows(self, target: str, samples: int, world: bool = True, prompt_file: str | None = None) -> list[PromptRow]:
        """The prompt rows for erased concept ``target`` (``world``: the embedded world's vocabulary or the
        papers' real one; ``prompt_file``: the user's file, for the prompt-file protocols)."""

    def labels(self, world: bool) -> LabelSets | None:
        """The label sets a zero-shot judge chooses among, and a label's prompt; None where there are none
        (the world judge reads its own heads)."""
        return None

    @abstractmethod
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
        """Generate ``rows`` with the original and the erased model (same seeds) and measure both; the edit's
        base model is checked already."""

    @abstractmethod
    def verdict(self, result: ProtocolResult) -> str:
        """One line saying what the erasure did, in the protocol's terms."""

    @abstractmethod
    def table(self, result: ProtocolResult) -> MetricTable:
        """The metrics as the terminal shows them: rows of metrics, original and erased as columns."""

    @abstractmethod
    def check_json(self, results: JsonFields) -> None:
        """Refuse, in one line naming the file, a ``results.json`` of this protocol that lacks what
        :meth:`card_rows` reads or holds it with another type."""

    @abstractmethod
    def card_rows(self, result: ProtocolResult) -> list[CardRow]:
        """The rows of the model card's table: original → erased, each with its direction."""
