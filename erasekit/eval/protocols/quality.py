"""The quality protocol: world-FID and shape accuracy on 80 neutral prompts (every colour × shape),
where no erasure should change anything."""

from __future__ import annotations

from erasekit.eval.prompts import PromptRow
from erasekit.eval.protocols.judged import JudgedProtocol, Metrics, by_kind
from erasekit.eval.protocols.results import ProtocolResult
from erasekit.eval.protocols.seeds import PROTOCOL_SEED, QUALITY_SEED_BLOCK, protocol_row
from erasekit.eval.scoring import Evaluation
from erasekit.world import vocabulary as V


def quality_rows(samples: int = 4, seed: int = PROTOCOL_SEED) -> list[PromptRow]:
    """Neutral prompts, every colour × shape: where no erasure should change anything."""
    rows = [f"a photo of {V.article(c)} {c} {s}" for c in V.COLORS for s in V.SHAPES]
    shapes = [s for _ in V.COLORS for s in V.SHAPES]
    return [protocol_row(p, "retain", {"shape": s}, samples, seed, QUALITY_SEED_BLOCK) for p, s in zip(rows, shapes, strict=True)]


def quality_metrics(evaluation: Evaluation) -> Metrics:
    """Acc_s, shape accuracy on the neutral prompts, as top-1 accuracy and as mean class probability."""
    return by_kind(evaluation, "shape", lambda acc: {"Acc_s": acc["retain"]})


class QualityProtocol(JudgedProtocol):
    """What an erasure does where it should do nothing: neutral prompts kept, images not drifting."""

    name = "quality"
    world_only = True

    def rows(self, target: str, samples: int, world: bool = True, prompt_file: str | None = None) -> list[PromptRow]:
        """Every colour × shape (whatever ``target`` is)."""
        return quality_rows(samples)

    def metrics(self, evaluation: Evaluation, world: bool = True) -> Metrics:
        """Acc_s on the neutral prompts."""
        return quality_metrics(evaluation)

    def verdict(self, result: ProtocolResult) -> str:
        """How well the neutral prompts are kept."""
        m, was = result.metrics["erased"]["accuracy"], result.metrics["original"]["accuracy"]
        return f"neutral prompts kept at {m['Acc_s']:.0%} (was {was['Acc_s']:.0%})"
