"""Segmenters: foreground masks of generated images, for MACE's attention loss.

MACE restricts its loss to the region where the concept is, found with Grounded-SAM on real
models. The embedded world has its own segmenter: the world evaluator's mask head, trained on the
generator's exact masks. ``"none"`` uses the whole image (MACE's choice for styles, which have no
region).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from erasekit.errors import ErasekitError

SEGMENTERS = ("world", "none")


class Segmenter(Protocol):
    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        """(B, 1, H, W) masks in [0, 1] of uint8 (B, H, W, 3) images showing ``concept``."""
        ...


class WorldSegmenter:
    """The embedded evaluator's mask head (its sigmoid > 0.5 is foreground)."""

    def __init__(self) -> None:
        from erasekit.models.evaluators import load_world_evaluator

        self.model = load_world_evaluator()

    @torch.no_grad()
    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        logits = self.model(torch.as_tensor(images))["mask"]
        return (logits.sigmoid() > 0.5).float()[:, None]


class WholeImage:
    def __call__(self, images: np.ndarray, concept: str) -> torch.Tensor:
        return torch.ones(len(images), 1, images.shape[1], images.shape[2])


def make_segmenter(name: str) -> Segmenter:
    if name == "world":
        return WorldSegmenter()
    if name == "none":
        return WholeImage()
    raise ErasekitError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
