"""Timestep samplers for the fine-tuning methods.

MACE's concept-focal importance sampling (CFIS, paper eq. 5) draws training timesteps from

    ξ(t) = (σ(γ(t − t₁)) − σ(γ(t − t₂))) / Z

so that most updates land between t₁ and t₂ (after the sampling trajectory has chosen its mode)
and the early, high-noise steps that decide the general layout are left nearly untouched.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit

from erasekit.errors import ErasekitError


def concept_focal_weights(num_train_timesteps: int, t1: float = 200, t2: float = 400, gamma: float = 0.05) -> np.ndarray:
    """ξ(t) for t = 0 … T−1, normalised to sum to one (MACE: t₁=200, t₂=400, γ=0.05)."""
    if not t1 < t2:
        raise ErasekitError(f"CFIS needs t1 < t2, got t1={t1}, t2={t2}")
    if gamma <= 0:
        raise ErasekitError(f"CFIS temperature γ must be positive, got {gamma}")
    t = np.arange(num_train_timesteps, dtype=np.float64)
    xi = expit(gamma * (t - t1)) - expit(gamma * (t - t2))  # σ without overflow far from the window
    if xi.sum() <= 0:
        raise ErasekitError(f"CFIS window [{t1}, {t2}] lies outside the model's {num_train_timesteps} timesteps")
    return xi / xi.sum()


class TimestepSampler:
    """Draws training timesteps: uniform over [0, T), or concept-focal (``focal=True``)."""

    def __init__(
        self, num_train_timesteps: int, focal: bool, t1: float = 200, t2: float = 400, gamma: float = 0.05, seed: int = 0
    ) -> None:
        self.num_train_timesteps = num_train_timesteps
        self.weights = concept_focal_weights(num_train_timesteps, t1, t2, gamma) if focal else None
        self.rng = np.random.default_rng(seed)

    def __call__(self, count: int) -> torch.Tensor:
        t = self.rng.choice(self.num_train_timesteps, size=count, p=self.weights)
        return torch.as_tensor(t, dtype=torch.long)
