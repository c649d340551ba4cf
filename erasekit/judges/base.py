"""The judge interface: what a judge reads from images (:class:`Reading`) and the calls every judge
answers (:class:`Judge`); the judges' modules and the registry in ``erasekit.judges`` import it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Reading:
    """A judge's reading of n images: per head, (n, labels) probabilities; pooled features for FID, if any."""

    heads: dict[str, tuple[str, ...]]
    probs: dict[str, np.ndarray]
    features: np.ndarray | None = None

    def label(self, head: str) -> list[str]:
        """The top-1 label of every image for ``head``."""
        return [self.heads[head][i] for i in self.probs[head].argmax(1)]


class Judge(Protocol):
    """What reads generated images: a ``name``, its ``heads`` (head → labels), and :meth:`read`, :meth:`present`
    and :meth:`settings`."""

    name: str
    heads: dict[str, tuple[str, ...]]  # head → its labels

    def read(self, images: np.ndarray) -> Reading:
        """Per-head probabilities (and features) of uint8 (n, H, W, 3) images."""
        ...

    def present(self, images: np.ndarray, concept: str, alternatives: tuple[str, ...] = ()) -> np.ndarray:
        """(n,) booleans: is ``concept`` in each image? A zero-shot judge weighs it against ``alternatives``
        and a neutral option, so an image of neither counts as absent."""
        ...

    def settings(self) -> dict:
        """What a result needs to be reproduced: model, version, thresholds, templates."""
        ...


def harmonic_mean(*values: float) -> float:
    """H of the MACE tables, e.g. H_o = 3 / (1/(1-Acc_e) + 1/Acc_s + 1/(1-Acc_g)); 0 if any term is 0."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
