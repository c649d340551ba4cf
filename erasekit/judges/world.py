"""The world evaluator as a judge: the embedded model's stand-in for CLIP, NudeNet and the papers' classifiers."""

from __future__ import annotations

import numpy as np

from erasekit.judges.base import Reading
from erasekit.world.evaluator import HEADS, WorldEvaluator, predict, present_label


class WorldJudge:
    """Shape, artist, character and flames heads of the world evaluator; its pooled features give world-FID."""

    name = "world"
    heads = HEADS

    def __init__(self, model: WorldEvaluator | None = None) -> None:
        from erasekit.world.evaluator import load_world_evaluator

        self.model = model if model is not None else load_world_evaluator()

    def read(self, images: np.ndarray) -> Reading:
        """The evaluator's per-head probabilities, with its pooled features."""
        prediction = predict(self.model, images)
        return Reading(self.heads, prediction.probs, prediction.features)

    def present(self, images: np.ndarray, concept: str, alternatives: tuple[str, ...] = ()) -> np.ndarray:
        """The evaluator's label for ``concept`` (its head decides among all the world's labels)."""
        from erasekit.errors import ErasekitError

        found = present_label(concept)
        if found is None:
            raise ErasekitError(f"the world evaluator has no label {concept!r}; it judges the world's shapes, artists, "
                                "characters and flames")  # fmt: skip
        head, label = found
        return np.array([lab == label for lab in self.read(images).label(head)])

    def settings(self) -> dict:
        """Judge name and model, for the record."""
        return {"judge": self.name, "model": "erasekit-tiny evaluator"}
