"""SPEED: Scalable, Precise, and Efficient Concept Erasure for Diffusion Models (Li et al., ICLR 2026).

A closed-form edit of the cross-attention values restricted to the null space of the preserved
concepts' token states, so that those states are left exactly as they were. With T = mean_i c_i c_iᵀ
and A = mean_i c*_i c_iᵀ over the erased concepts (c their last-word states, c* their anchors'),
P = Q Qᵀ the projector onto the eigenvectors of the retain states' second moment whose eigenvalue is
below τ, and K₂ the invariants (the [SOT] state of "" and k-means centroids of its other states):

    min_{ΔW = X P}  mean_i ‖ΔW c_i − W(c*_i − c_i)‖² + α‖ΔW‖²   s.t. ΔW K₂ = 0   (IEC; soft for λ > 0)

    ΔW = W(A − T) Q G⁻¹ [I − F (Fᵀ G⁻¹ F + λI)⁻¹ Fᵀ G⁻¹] Qᵀ,   G = QᵀTQ + αI,  F = QᵀK₂,  W' = W + ΔW.

The retain states are refined per layer before P is built: influence-based prior filtering (IPF)
keeps those whose ‖W(A − T)(I + T)⁻¹ c‖ is above the mean, and directed prior augmentation (DPA) adds
``aug_num`` copies c + (nᵀv)v (n ~ N(0, I), v the layer's last right-singular vector) of each, again
keeping those above the mean. Defaults are the official ``train_erase_null.py`` (Ouxiang-Li/SPEED @
6d3df0c): to_v only, τ = 0.1, α = 1, λ = 0, 10 augmentations, 3 centroids, bare concept strings.
Differences: solved in float64 with ``eigh`` and solves (the official float32 ``svd`` / ``inverse``);
a rank-deficient F at λ = 0 is solved by least squares (the official inverse would fail); the
augmentations are filtered against the mean over all of them (the official: per chunk of 128 states).
With no preserve set the retain states are those of "" after [SOT], as the official nudity run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.methods.uce import aligned_states
from erasekit.models.layers import kv_projections
from erasekit.primitives.closed_form import float64_on
from erasekit.primitives.run import RunContext
from erasekit.settings import SEEDS, WEIGHT, check_settings, config_field


@dataclass
class SPEEDConfig:
    """Defaults: the official train_erase_null.py (its argparse names in brackets)."""

    params: Literal["V", "K", "KV"] = config_field("V", "which projections: to_v (official), to_k or both (--params)")
    threshold: float = config_field(
        0.1, "τ: eigenvalues of the retain second moment below it span the null space (official 1e-1; 1e-4 for celebrities)",
        gt=0.0, le=1e6,
    )  # fmt: skip
    retain_scale: float = config_field(1.0, "α: ridge on ‖ΔW‖ (official 1.0; 0.05 for celebrities)", gt=0.0, le=1e6)
    lamb: float = config_field(0.0, "λ: 0 holds the invariants K₂ exactly, above 0 softly (official 0; 0.5 for nudity)", **WEIGHT)
    aug_num: int = config_field(
        10, "DPA: augmented copies of each retain state (official 10; 0 turns IPF off too)", ge=0, le=1000
    )
    prior_filter: bool = config_field(
        True, "IPF: keep the retain states of above-mean influence (official; off: --disable_filter)"
    )
    clusters: int = config_field(3, "k-means centroids of the empty prompt's states in K₂ (official 3)", ge=0, le=64)
    token_span: Literal["official", "full"] = config_field(
        "official",
        "'official': each prompt's last word (train_erase_null.py); 'full': the concept's tokens through [EOS] "
        "and padding, aligned with the anchor prompt's (UCE's full span)",
    )
    templates: tuple[str, ...] = config_field(
        ("{}",), "prompts each erased concept and its anchor are placed into (official: the bare concept)"
    )
    seed: int = config_field(0, "seed of the augmentations and the k-means start", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ErasekitError("each template needs exactly one {} where the concept goes")


def last_word_states(run: RunContext, prompts: list[str]) -> torch.Tensor:
    """(n, d) float64 states at ``attention_mask.sum() - 2`` of each prompt (the [SOT]/[CLS] state for "")."""
    cache = run.cache
    states = cache.states(list(prompts))
    rows = [states[i, cache.last_word_positions(p)] for i, p in enumerate(prompts)]
    return float64_on(torch.cat(rows), run.solve_device)


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 100) -> torch.Tensor:
    """k centroids of ``points`` (n, d) by Lloyd's iterations from k distinct points drawn by ``generator``."""
    start = torch.randperm(len(points), generator=generator, device="cpu")[:k].to(points.device)
    centroids = points[start].clone()
    for _ in range(iterations):
        nearest = torch.cdist(points, centroids).argmin(1)
        moved = torch.stack([points[nearest == j].mean(0) if (nearest == j).any() else centroids[j] for j in range(k)])
        if torch.allclose(moved, centroids, atol=1e-10):
            break
        centroids = moved
    return centroids


def invariants(run: RunContext, clusters: int, generator: torch.Generator) -> torch.Tensor:
    """K₂ (d, 1 + k): the empty prompt's first state ([SOT]/[CLS]) and k centroids of its other states."""
    null = float64_on(run.cache.states([""])[0], run.solve_device)
    columns = [null[:1]]
    if clusters:
        columns.append(kmeans(null[1:], min(clusters, len(null) - 1), generator))
    return torch.cat(columns).T


def retained(
    weight: torch.Tensor, erase_map: torch.Tensor, states: torch.Tensor, config: SPEEDConfig, generator: torch.Generator
) -> torch.Tensor:
    """The retain states one layer keeps: IPF's above-mean influence ‖W(A − T)(I + T)⁻¹ c‖, then DPA's copies
    along the layer's last right-singular vector, those of above-mean influence."""
    if not config.aug_num:
        return states
    influence = (weight @ erase_map).T  # a state's influence vector is W(A − T)(I + T)⁻¹ c = c @ influence
    if config.prior_filter:
        scores = (states @ influence).norm(dim=1)
        states = states[scores > scores.mean()] if len(states) > 1 else states
    direction = torch.linalg.svd(weight, full_matrices=False).Vh[-1]
    noise = torch.randn((config.aug_num * len(states), states.shape[1]), generator=generator, device="cpu", dtype=torch.float64)
    copies = states.repeat(config.aug_num, 1) + (noise.to(states.device) @ direction)[:, None] * direction
    scores = (copies @ influence).norm(dim=1)
    return torch.cat([states, copies[scores > scores.mean()]])


def null_space_edit(
    weight: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor], retain: torch.Tensor, k2: torch.Tensor, config: SPEEDConfig
) -> torch.Tensor:
    """ΔW of one layer (the equation above) from its float64 weight, (T, A), its retain states and K₂."""
    source, cross = moments
    values, vectors = torch.linalg.eigh(retain.T @ retain / len(retain))
    q = vectors[:, values < config.threshold]
    if q.shape[1] == 0:
        raise ErasekitError(
            f"the preserve set leaves no null space at threshold τ = {config.threshold}: every direction of the "
            "text space is a retained one; raise the threshold or preserve fewer concepts"
        )
    b = weight @ (cross - source) @ q  # W(A − T) Q
    g = q.T @ source @ q + config.retain_scale * torch.eye(q.shape[1], dtype=q.dtype, device=q.device)
    f = q.T @ k2
    g_inv_f = torch.linalg.solve(g, f)
    inner = f.T @ g_inv_f + config.lamb * torch.eye(f.shape[1], dtype=q.dtype, device=q.device)
    # [I − F (FᵀG⁻¹F + λI)⁻¹ Fᵀ G⁻¹] applied on the right of B G⁻¹, as one solve each (least squares if singular)
    b_g = torch.linalg.solve(g.T, b.T).T  # B G⁻¹
    correction = torch.linalg.lstsq(inner.T, (b_g @ f).T).solution.T @ g_inv_f.T  # B G⁻¹ F (·)⁻¹ Fᵀ G⁻¹
    return (b_g - correction) @ q.T


@register("speed", "SPEED (Li et al. 2026): closed-form value edit in the preserved concepts' null space, many at once",
          SPEEDConfig, families=("sd", "sdxl"))  # fmt: skip
def erase(run: RunContext, spec: EraseSpec, config: SPEEDConfig) -> Edit:
    """SPEED's null-space edit of every cross-attention to_v (and/or to_k) for ``spec`` (the equation above)."""
    generator = run.generator(config.seed)
    pairs = [(t.format(c), c, t.format(a).strip() if a else "", a) for c, a in zip(spec.targets, spec.anchors, strict=True)
             for t in config.templates]  # fmt: skip
    if config.token_span == "official":
        targets = last_word_states(run, [p for p, *_ in pairs])
        anchors = last_word_states(run, [g for _, _, g, _ in pairs])  # "" gives the [SOT] state, as the official script
    else:
        spans = [aligned_states(run.cache, *pair, "full") for pair in pairs]
        targets = float64_on(torch.cat([source for source, _ in spans]), run.solve_device)
        anchors = float64_on(torch.cat([target for _, target in spans]), run.solve_device)
    count = len(targets)
    moments = (targets.T @ targets / count, anchors.T @ targets / count)  # T, A: means over the concepts
    naming = [re.compile(rf"\b{re.escape(t.lower())}\b") for t in spec.targets]  # a preserve concept naming a target
    kept = [p for p in dict.fromkeys(spec.preserve) if not any(w.search(p.lower()) for w in naming)]
    prompts = [t.format(p) for p in kept for t in config.templates]  # the kept concepts in the same templates
    if kept and config.token_span == "full":  # every token of the kept prompts, which the full span reaches too
        retain = float64_on(run.cache.states(prompts).reshape(-1, run.cache.width), run.solve_device)
    elif kept:
        retain = last_word_states(run, prompts)
    else:  # no preserve set: the empty prompt's states after [SOT] (the official run without a retain list)
        retain = float64_on(run.cache.states([""])[0, 1:], run.solve_device)
    k2 = invariants(run, config.clusters, generator)
    ridge = torch.eye(len(moments[0]), dtype=torch.float64, device=moments[0].device) + moments[0]
    erase_map = torch.linalg.solve(ridge.T, (moments[1] - moments[0]).T).T  # (A − T)(I + T)⁻¹, IPF's influence
    suffixes = {"V": ("to_v",), "K": ("to_k",), "KV": ("to_k", "to_v")}[config.params]
    weights = {}
    for name, layer in run.bar(list(kv_projections(run.denoiser).items()), "SPEED"):
        if not name.endswith(suffixes):
            continue
        weight = float64_on(layer.weight.detach(), run.solve_device)
        layer_retain = retained(weight, erase_map, retain, config, generator)
        delta = null_space_edit(weight, moments, layer_retain, k2, config)
        weights[f"{name}.weight"] = (weight + delta).to(layer.weight.device, layer.weight.dtype)
    return Edit(weights, {"config": asdict(config), "retained": len(kept)})
