"""The world evaluator: one small CNN that reads shape, artist, character and flames from an image.

It is the embedded world's stand-in for the CLIP / ResNet / NudeNet classifiers of the papers,
trained on the generator (``erasekit world train``). Its pooled features feed the world-FID and its
mask head segments the foreground (MACE's attention loss needs a mask of generated images).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.models.embedded import EMBEDDED_DIR, EVALUATOR_SUBDIR
from erasekit.world import vocabulary as V

HEADS: dict[str, tuple[str, ...]] = {
    "shape": V.SHAPE_LABELS,
    "artist": V.ARTIST_LABELS,
    "character": V.CHARACTER_LABELS,
    "flames": ("no", "yes"),
}
FLAME_CONCEPTS = (*V.FLAME_EXPLICIT, "flames", "fire")  # concepts the flames head reads as "yes"
WEIGHTS_NAME = "evaluator.safetensors"
CONFIG_NAME = "evaluator.json"


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _block(c_in: int, c_out: int, convs: int = 2) -> nn.Sequential:
    return nn.Sequential(*_conv(c_in, c_out), *[m for _ in range(convs - 1) for m in _conv(c_out, c_out)])


class WorldEvaluator(nn.Module):
    """Four conv stages (64, 32, 16, 8 px), a classification head per label and a mask head.

    Widths grow 16→32→64→128 with one conv at full resolution: about 45M multiply-adds per image,
    so it trains in minutes on two CPU cores.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = width
        w = width
        self.stage1 = _block(3, w, convs=1)
        self.stage2 = _block(w, 2 * w)
        self.stage3 = _block(2 * w, 4 * w)
        self.stage4 = _block(4 * w, 8 * w)
        self.heads = nn.ModuleDict({name: nn.Linear(8 * w, len(labels)) for name, labels in HEADS.items()})
        self.mask_head = nn.Conv2d(2 * w, 1, 3, padding=1)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) or float in [0, 1] (B, 3, H, W) → the network's input range."""
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2).float() / 255.0
        if images.shape[-1] != 64:
            images = F.interpolate(images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        return images * 2.0 - 1.0

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head, pooled ``features`` (B, 8·width) and ``mask`` logits (B, 64, 64) of a batch
        of images (either form :meth:`normalize` takes)."""
        x = self.normalize(images)
        x = self.stage1(x)
        mid = self.stage2(F.max_pool2d(x, 2))  # 32×32
        x = self.stage4(F.max_pool2d(self.stage3(F.max_pool2d(mid, 2)), 2))
        features = x.mean(dim=(2, 3))
        out = {name: head(features) for name, head in self.heads.items()}
        out["features"] = features
        out["mask"] = F.interpolate(self.mask_head(mid), scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
        return out

    # --- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write weights and config into ``directory`` (each file replaced atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        os.replace(tmp, directory / WEIGHTS_NAME)
        config = {"width": self.width, "heads": {k: list(v) for k, v in HEADS.items()}}
        tmp = directory / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, directory / CONFIG_NAME)

    @classmethod
    def load(cls, directory: Path) -> WorldEvaluator:
        """The evaluator saved in ``directory``, in eval mode; an error if there is none or it was trained on
        another world vocabulary."""
        directory = Path(directory)
        weights = directory / WEIGHTS_NAME
        if not weights.exists():
            raise FileNotFoundError(
                f"no evaluator at {weights}; train one with `erasekit world train` or point to the model directory"
            )
        config = json.loads((directory / CONFIG_NAME).read_text())
        stored = {k: tuple(v) for k, v in config["heads"].items()}
        if stored != HEADS:
            raise ValueError(f"the evaluator at {directory} was trained on another world vocabulary; retrain it")
        model = cls(width=config["width"])
        model.load_state_dict(load_file(str(weights)))
        return model.eval()


@dataclass
class Prediction:
    """Per-image labels and probabilities from the evaluator."""

    probs: dict[str, np.ndarray]  # head → (n, classes)
    features: np.ndarray  # (n, d)

    def label(self, head: str) -> list[str]:
        """The top-1 label of every image for ``head``."""
        return [HEADS[head][i] for i in self.probs[head].argmax(1)]


def present_label(concept: str) -> tuple[str, str] | None:
    """The head and label by which the evaluator says ``concept`` is in an image (None: it cannot tell)."""
    head = next((h for h, labels in HEADS.items() if concept in labels), None)
    if head is not None:
        return head, concept
    return ("flames", "yes") if concept.lower() in FLAME_CONCEPTS else None


@torch.no_grad()
def predict(model: WorldEvaluator, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> Prediction:
    """Run ``model`` over uint8 (n, H, W, 3) images."""
    model.eval()
    images = torch.as_tensor(np.ascontiguousarray(images))  # the same numbers whatever the array's memory layout
    probs: dict[str, list[np.ndarray]] = {k: [] for k in HEADS}
    feats = []
    for start in range(0, len(images), batch_size):
        out = model(images[start : start + batch_size])
        for k in HEADS:
            probs[k].append(out[k].softmax(-1).numpy())
        feats.append(out["features"].numpy())
    return Prediction({k: np.concatenate(v) for k, v in probs.items()}, np.concatenate(feats))


def load_world_evaluator(model_dir: Path = EMBEDDED_DIR) -> WorldEvaluator:
    """The world evaluator shipped beside the embedded model."""
    try:
        return WorldEvaluator.load(Path(model_dir) / EVALUATOR_SUBDIR)
    except (FileNotFoundError, ValueError) as err:
        raise ErasekitError(str(err)) from err
