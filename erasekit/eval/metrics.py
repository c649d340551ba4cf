"""Metrics over evaluator outputs."""

from __future__ import annotations

import numpy as np
from scipy import linalg


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
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def harmonic_mean(*values: float) -> float:
    """H of the MACE tables, e.g. H_o = 3 / (1/(1-Acc_e) + 1/Acc_s + 1/(1-Acc_g)); 0 if any term is 0."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
