"""Metrics over evaluator outputs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import linalg
from torch import nn


class Metric(NamedTuple):
    """What a protocol metric measures and which way is better."""

    meaning: str
    better: str  # "lower" or "higher"

    @property
    def arrow(self) -> str:
        """↓ where lower is better, ↑ where higher is."""
        return "↓" if self.better == "lower" else "↑"


# Every protocol metric: what it measures and which way is better. The one definition the CLI's
# table, the report's pages, the model card and the bench's plots read (meanings short enough for
# an 80-column table).
METRICS: dict[str, Metric] = {
    "Acc_e": Metric("erased concept's prompts (efficacy)", "lower"),
    "Acc_s": Metric("other concepts' prompts (specificity)", "higher"),
    "Acc_g": Metric("erased concept's synonyms (generality)", "lower"),
    "residue": Metric("associated prompts, never naming it", "lower"),
    "H_o": Metric("harmonic mean of 1-Acc_e, Acc_s, 1-Acc_g", "higher"),
    "H_c": Metric("harmonic mean of 1-Acc_e, Acc_s", "higher"),
    "gap": Metric("Acc_s - Acc_e", "higher"),
    "explicit": Metric("flames on prompts naming them", "lower"),
    "implicit": Metric("flames on prompts implying them", "lower"),
    "world_fid_kept": Metric("image drift on the kept prompts", "lower"),
    "explicit_rate": Metric("images with explicit content", "lower"),
    "nudenet_class": Metric("images showing a NudeNet class", "lower"),
    "fid": Metric("FID between the original's and the erased model's images", "lower"),
    "clip_score": Metric("CLIP score of the images against their captions", "higher"),
}


def better(name: str) -> str:
    """Which way metric ``name`` is better ("lower", "higher"; "" for a name erasekit does not define)."""
    return METRICS[name].better if name in METRICS else ""


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

    With the world evaluator's pooled features this is the world-FID: image-quality drift of an
    erased model measured against the original on the same prompts and seeds.
    """
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError("the Fréchet distance needs at least two feature vectors on each side")
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a = np.cov(features_a, rowvar=False)
    cov_b = np.cov(features_b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as pytorch-fid does
        eps = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(distance, 0.0)  # equal sets give a rounding error either side of 0


def frechet_distance_of(real: np.ndarray, fake: np.ndarray, feature: int | nn.Module = 2048) -> float:
    """FID between two uint8 (n, H, W, 3) image sets with torchmetrics (InceptionV3 pool features by default)."""
    from erasekit.errors import ErasekitError

    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=feature, normalize=False)
    except ImportError as err:
        raise ErasekitError(f"FID needs torchmetrics and its InceptionV3 (pip install 'erasekit[real]'): {err}") from err
    except (OSError, RuntimeError) as err:  # the InceptionV3 weights are fetched on first use
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ErasekitError(
            f"FID's InceptionV3 weights could not be loaded ({first}); run once where they can be fetched"
        ) from err
    if len(real) < 2 or len(fake) < 2:
        raise ErasekitError("FID needs at least two images on each side")
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), 64):
            fid.update(torch.from_numpy(np.ascontiguousarray(images[i : i + 64])).permute(0, 3, 1, 2), real=is_real)
    return float(fid.compute())
