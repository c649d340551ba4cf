"""The closed-form cross-attention editor shared by UCE, RECE, MACE and RealEra.

Each of those methods solves, for every cross-attention projection W₀ (``to_k`` or ``to_v``),

    min_W  Σ_e s_e ‖W c_e − W₀ c*_e‖² + Σ_p s_p ‖W c_p − W₀ c_p‖² + λ ‖W − W₀‖²

where c_e are token states to erase, c*_e the states they should behave like (anchor or guide),
and c_p states to preserve. Because every target is W₀ applied to some text state, the solution is

    W = W₀ (λI + s_e E* + s_p P)(λI + s_e E + s_p P)⁻¹,   E = Σ c cᵀ,  E* = Σ c* cᵀ,  P = Σ c_p c_pᵀ

(RealEra's E, E*, Pre): one d×d "text-space" matrix M serves every layer, and the preserve moment P
is a d×d sum that is computed once and cached, as MACE caches its COCO prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def float64_on(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` in float64 on ``device``, where the closed forms are solved (float32 is ill-conditioned there)."""
    return x.to(device, torch.float64)


@dataclass
class TextMoments:
    """Second moments of token states: E = Σ c cᵀ and E* = Σ c* cᵀ (d×d), and the pair count."""

    source: torch.Tensor
    cross: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, dim: int, device: torch.device | str) -> TextMoments:
        """Empty moments on ``device`` (float64: the solve is ill-conditioned in float32 for large λ ratios)."""
        return cls(*(torch.zeros(dim, dim, dtype=torch.float64, device=device) for _ in range(2)))

    def add(self, sources: torch.Tensor, targets: torch.Tensor | None = None, weight: float = 1.0) -> TextMoments:
        """Add pairs (rows of ``sources`` → rows of ``targets``); ``targets=None`` means preserve (c* = c).
        States on another device are moved to the moments' device."""
        c = float64_on(sources.reshape(-1, sources.shape[-1]), self.source.device)
        t = c if targets is None else float64_on(targets.reshape(-1, targets.shape[-1]), self.source.device)
        if t.shape != c.shape:
            raise ValueError(f"{len(c)} source states but {len(t)} target states")
        self.source += weight * c.T @ c
        self.cross += weight * t.T @ c
        self.count += len(c)
        return self

    def __add__(self, other: TextMoments) -> TextMoments:
        return TextMoments(self.source + other.source, self.cross + other.cross, self.count + other.count)


def text_space_map(
    erase: TextMoments, preserve: TextMoments | None, lam: float, erase_scale: float = 1.0, preserve_scale: float = 1.0
) -> torch.Tensor:
    """M = (λI + s_e E* + s_p P)(λI + s_e E + s_p P)⁻¹, so that every projection becomes W₀ M."""
    if lam <= 0:
        raise ValueError(f"λ must be positive (it keeps the solve well-posed), got {lam}")
    dim = erase.source.shape[0]
    eye = torch.eye(dim, dtype=torch.float64, device=erase.source.device)
    num = lam * eye + erase_scale * erase.cross
    den = lam * eye + erase_scale * erase.source
    if preserve is not None:
        num = num + preserve_scale * preserve.source
        den = den + preserve_scale * preserve.source
    # M = num @ den⁻¹  ⇔  Mᵀ = den⁻ᵀ numᵀ: a solve, not an explicit inverse
    return torch.linalg.solve(den.T, num.T).T


@torch.no_grad()
def edited_weights(projections: dict[str, nn.Linear], text_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """New weights W₀ M of each projection (in its own dtype and on its device); the modules are not changed.
    The product is taken in float64 on the map's device (the CPU for MPS, which has no float64)."""
    return {
        name: (float64_on(lin.weight, text_map.device) @ text_map).to(lin.weight.device, lin.weight.dtype)
        for name, lin in projections.items()
    }


@torch.no_grad()
def fused_weights(
    refined: dict[str, torch.Tensor],
    deltas: list[dict[str, torch.Tensor]],
    moments: list[torch.Tensor],
    lam: float,
    preserve: torch.Tensor | None = None,
    originals: dict[str, torch.Tensor] | None = None,
    preserve_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """MACE eq. (6): one weight per layer that answers every concept's prompts as that concept's LoRA did.

        W* = (λW' + Σ_i (W' + ΔW_i) E_i + s_p W₀ P) (λI + Σ_i E_i + s_p P)⁻¹

    ``refined`` holds W' (the closed-form refined weights), ``deltas[i]`` concept i's ΔW per layer and
    ``moments[i]`` its E_i = Σ e eᵀ over the tokens of its prompts; P and W₀ (``originals``) keep the
    prior. Unlike :func:`text_space_map`, targets differ per layer, so each layer has its own numerator.
    """
    if lam <= 0:
        raise ValueError(f"λ must be positive (it keeps the solve well-posed), got {lam}")
    if len(deltas) != len(moments):
        raise ValueError(f"{len(deltas)} adapters but {len(moments)} moment matrices")
    dim, device = moments[0].shape[0], moments[0].device

    def f64(x: torch.Tensor) -> torch.Tensor:
        return float64_on(x, device)

    base = lam * torch.eye(dim, dtype=torch.float64, device=device) + sum(f64(m) for m in moments)  # λI + Σ_i E_i
    den = base if preserve is None else base + preserve_scale * f64(preserve)
    out = {}
    for name, w in refined.items():
        num = f64(w) @ base + sum(f64(d[name]) @ f64(m) for d, m in zip(deltas, moments, strict=True) if name in d)
        if preserve is not None:
            num = num + preserve_scale * f64(originals[name]) @ f64(preserve)
        out[name] = torch.linalg.solve(den.T, num.T).T.to(w.device, w.dtype)
    return out
