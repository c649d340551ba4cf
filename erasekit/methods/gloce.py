"""GLoCE: Localized Concept Erasure using Training-Free Gated Low-Rank Adaptation (Lee et al., CVPR 2025).

Training-free: the original model draws a few partial samples of the concept, its surrogate (the
anchor) and the concepts to keep, and the image features after every cross-attention output
projection ``attn2.to_out.0`` give, per layer, the target's mean μ_t and top-r_u principal directions V_t,
the surrogate's μ_s and top-r_d directions V_s, and a gate: the top-r_g direction V_g of the target's
spread around the gate centre μ_g (Cov_t + (μ_t − μ_g)(μ_t − μ_g)ᵀ), opened by a sigmoid whose centre b is
the mean plus ``thresh`` standard deviations of the kept concepts' per-image maximum gate score and whose
slope is ln 99 / (0.001 · thresh). The module (:mod:`erasekit.edits.gates`) maps a token x the gate opens
for to η (μ_s + V_sᵀ V_s (I − V_tᵀ V_t)(x − μ_t)): its target components out, the surrogate's in.

Defaults are the official celebrity scripts (Hyun1A/GLoCE @ 95e48ef, ``shell_scripts/celebs/
update_gloce.sh``, ``update/update_gloce.py``): r_g = 1, r_u = 16, r_d = 2, thresh 2.5, statistics over
sampling steps 11–20 of 50 at guidance 7.5 from 3 seeds per concept, η = 1, the gate acting from step 11
of 50 on (its artist scripts: r_u = r_d = 1, every step; explicit: thresh 1.5, η = 5, 8 seeds). Features
are gathered at full resolution and three 2 × 2 average-pooled scales, from the conditional half.
The mapping onto erasekit's concepts: the surrogate and the gate centre are the concept's anchor (the
official artist and explicit runs use one neutral concept, "real photograph" or "a person in modest
clothing", for both; the empty anchor is the empty prompt), and the kept concepts whose scores set the
gate's threshold are the preserve set (the official: the names nearest the target in a pool of 497
celebrities or 1734 artists); without a preserve set, the empty prompt's images. Differences: the gate's window is read off the UNet's timestep, below the
timestep of step ``st_timestep`` of 50 (the official per-call counter drifts from the second image on);
the statistics' sampler is the pipeline's own (the official: LMS).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.gates import GATED_MODULES
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.models.layers import cross_attentions
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.run import RunContext
from erasekit.settings import GUIDANCE, SEEDS, check_settings, config_field

OFFICIAL_STEPS = 50  # the official sampler's steps, the unit of the timestep window
POOLED_SCALES = 4  # full resolution and three 2 × 2 average-pooled maps (official avg_depth 4)


@dataclass
class GLoCEConfig:
    """Defaults: the official celebrity scripts (their flags in brackets); the world's setting is in the README."""

    gate_rank: int = config_field(1, "r_g: directions of the gate (--gate_rank 1)", ge=1, le=10_000)
    update_rank: int = config_field(
        16, "r_u: the target's principal directions taken out (--update_rank 16; artists 1)", ge=1, le=10_000
    )
    degen_rank: int = config_field(
        2, "r_d: the surrogate's principal directions put in (--degen_rank 2; artists 1)", ge=1, le=10_000
    )
    thresh: float = config_field(2.5, "the gate's centre: the kept concepts' mean score + thresh std (--thresh 2.5; explicit 1.5)",
                                 gt=0.0, le=100.0)  # fmt: skip
    eta: float = config_field(1.0, "η: scale of the surrogate's map (official 1; explicit 5)", gt=0.0, le=100.0)
    st_timestep: int = config_field(10, "sampling steps of 50 before the statistics and the gate start (official 10; artists 0)",
                                    ge=0, le=OFFICIAL_STEPS - 1)  # fmt: skip
    end_timestep: int = config_field(
        20, "the step of 50 where the statistics end (official 20; artists 50)", ge=1, le=OFFICIAL_STEPS
    )
    n_generation: int = config_field(
        3, "seeds of partial samples per concept (--n_generation_per_concept 3; explicit 8)", ge=1, le=1000
    )
    template: str = config_field(
        "{}", "the prompt around each concept (official 'A face of {}', 'An image in the style of {}', '{}')"
    )
    guidance: float = config_field(7.5, "guidance scale of those samples (official 7.5)", **GUIDANCE)
    seed: int = config_field(0, "first seed of the samples", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.template.count("{}") != 1:
            raise ErasekitError("the GLoCE template needs exactly one {} for the concept")
        if self.end_timestep <= self.st_timestep:
            raise ErasekitError("GLoCE's end_timestep must come after st_timestep: the statistics need at least one step")


class FeatureTap:
    """Forward hooks on every ``attn2.to_out.0`` that hand the conditional half's features to a handler
    while the sampling step lies in the statistics window."""

    def __init__(self, run: RunContext, config: GLoCEConfig) -> None:
        self.run, self.config = run, config
        self.layers = {f"{c.name}.to_out.0": c.module.to_out[0] for c in cross_attentions(run.denoiser)}
        self.step = 0
        self.size = run.pipe.unet.config.sample_size

    def sample(self, den: UNetDenoising, prompt: str, handle) -> None:  # noqa: ANN001 - (layer, features (n, H, W, D)) -> None
        """Partial samples of ``prompt``, each layer's features of steps st..end (of 50) handed to ``handle``."""
        config = self.config

        def hook(name: str):  # noqa: ANN202 - a forward hook
            def tap(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
                if config.st_timestep <= self.step < config.end_timestep:
                    x = output[len(output) // 2 :].float()  # the conditional half of [uncond; cond]
                    side = round(math.sqrt(self.size**2 / x.shape[1]))
                    handle(name, x.view(len(x), self.size // side, -1, x.shape[-1]))

            return tap

        def on_step() -> None:
            self.step += 1

        handles = [layer.register_forward_hook(hook(name)) for name, layer in self.layers.items()]
        try:
            self.step = 0
            seeds = [config.seed + i for i in range(config.n_generation)]
            den.sample(den.conditioning([prompt]), den.conditioning([""]), config.guidance, OFFICIAL_STEPS,
                       [config.end_timestep] * len(seeds), seeds, on_step=on_step)  # fmt: skip
        finally:
            for handle_ in handles:
                handle_.remove()


def scales(x: torch.Tensor) -> list[torch.Tensor]:
    """(tokens, D) rows of a (n, H, W, D) feature map at full resolution and its 2 × 2 average-pooled scales."""
    rows, grid = [], x.permute(0, 3, 1, 2)
    for _ in range(POOLED_SCALES):
        rows.append(grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]))
        if min(grid.shape[-2:]) < 2:
            break
        grid = F.avg_pool2d(grid, 2)
    return rows


@dataclass
class Moments:
    """Per layer: Σ x xᵀ, Σ x and the count of feature rows (float64)."""

    sums: dict[str, tuple[torch.Tensor, torch.Tensor, int]]

    def mean_cov(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and Cov = E[x xᵀ] − μ μᵀ at ``layer``."""
        xx, x, n = self.sums[layer]
        mean = x / n
        return mean, xx / n - torch.outer(mean, mean)


def moments(tap: FeatureTap, den: UNetDenoising, prompt: str) -> Moments:
    """The feature moments of ``prompt``'s partial samples at every layer."""
    sums: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def add(name: str, x: torch.Tensor) -> None:
        for rows in scales(x):
            rows = rows.double()
            xx, s, n = sums.get(name, (0, 0, 0))
            sums[name] = (xx + rows.T @ rows, s + rows.sum(0), n + len(rows))

    tap.sample(den, prompt, add)
    return Moments(sums)


def top_directions(cov: torch.Tensor, rank: int) -> torch.Tensor:
    """(rank, D) the eigenvectors of the largest eigenvalues of a symmetric ``cov``."""
    _, vectors = torch.linalg.eigh(cov)
    return vectors[:, -rank:].flip(-1).T


@register(
    "gloce",
    "GLoCE (Lee et al. 2025): training-free gated low-rank modules after cross-attention, opened only on the concept's features",
    GLoCEConfig,
    changes_weights=False,
    families=("sd", "sdxl"),
)
def erase(run: RunContext, spec: EraseSpec, config: GLoCEConfig) -> Edit:
    """GLoCE's modules for ``spec``: one per target concept at every cross-attention, their gates' thresholds
    set on the preserve set (without one, on the empty prompt's images)."""
    width = cross_attentions(run.denoiser)[0].module.to_out[0].out_features
    if max(config.update_rank, config.degen_rank, config.gate_rank) > width:
        raise ErasekitError(f"GLoCE's ranks must not exceed the layer's width {width}: the first cross-attention is {width} wide")
    den, tap = denoising(run), FeatureTap(run, config)
    prompt = lambda concept: config.template.format(concept) if concept else ""  # noqa: E731
    cache: dict[str, Moments] = {}

    def stats(concept: str) -> Moments:
        if concept not in cache:
            cache[concept] = moments(tap, den, prompt(concept))
        return cache[concept]

    parts: dict[str, dict[str, list[torch.Tensor]]] = {layer: {} for layer in tap.layers}
    for target, anchor in run.bar(list(zip(spec.targets, spec.anchors, strict=True)), "GLoCE statistics"):
        target_stats, surrogate_stats = stats(target), stats(anchor)
        for layer in tap.layers:
            mu_t, cov_t = target_stats.mean_cov(layer)
            mu_s, cov_s = surrogate_stats.mean_cov(layer)
            v_t, v_s = top_directions(cov_t, config.update_rank), top_directions(cov_s, config.degen_rank)
            v_g = top_directions(cov_t + torch.outer(mu_t - mu_s, mu_t - mu_s), config.gate_rank)
            update = (v_s @ (torch.eye(len(mu_t), dtype=v_t.dtype, device=v_t.device) - v_t.T @ v_t)).T
            for key, value in (("mu_s", mu_s), ("mu_t", mu_t), ("mu_g", mu_s), ("update", update), ("degen", v_s.T),
                               ("gate", v_g.T)):  # fmt: skip
                parts[layer].setdefault(key, []).append(value)
    stacked = {layer: {k: torch.stack(v) for k, v in p.items()} for layer, p in parts.items()}

    # the gates' threshold: each kept concept's per-image maximum score, over the window's steps
    maxima: dict[str, list[torch.Tensor]] = {layer: [] for layer in tap.layers}

    def score(name: str, x: torch.Tensor) -> None:
        rows = x.reshape(len(x), -1, x.shape[-1]).double()  # full resolution only, as the official
        shifted = rows[:, :, None, :] - stacked[name]["mu_g"]  # (n, tokens, N, D)
        unit = shifted / shifted.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        values = torch.einsum("btnd,ndr->btnr", unit, stacked[name]["gate"]).square().sum(-1)
        maxima[name].append(values.amax(1))  # (n, N)

    for kept in run.bar(list(spec.preserve) or [""], "GLoCE gate thresholds"):
        tap.sample(den, prompt(kept), score)
    slope = math.log(99) / (0.001 * config.thresh)
    tensors = {}
    for layer, p in stacked.items():
        scores = torch.cat(maxima[layer])
        std = scores.std(0) if len(scores) > 1 else torch.zeros_like(scores[0])
        p["center"] = scores.mean(0) + config.thresh * std
        p["slope"] = torch.full_like(p["center"], slope)
        tensors.update({f"{layer}.{k}": v.to(run.dtype).contiguous() for k, v in p.items()})
    active_below = float(den.run.pipe.scheduler.config.num_train_timesteps) * (1 - config.st_timestep / OFFICIAL_STEPS)
    entry = {"concepts": list(spec.targets), "eta": config.eta, "active_below": active_below}
    return Edit({}, {"config": asdict(config), **GATED_MODULES.card_fields(entry)}, tensors)
