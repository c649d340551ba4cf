"""SPM: One-dimensional Adapter to Rule Them All (Lyu et al., CVPR 2024).

Each target concept c_tar gets its own rank-1 adapter M = {(v_sig, v_reg)} in every linear layer of
the UNet's transformer blocks (y = W x + v_up v_downᵀ x), trained on the frozen model θ with

    L_era = ‖ε(x_t, c_tar | θ, M) − [ε(x_t, c_sur | θ) − η (ε(x_t, c_tar | θ) − ε(x_t, c_sur | θ))]‖²
    L_anc = E_{c ~ D(·|c_tar)} ‖ε(x_t, c | θ, M) − ε(x_t, c | θ)‖²,     L = L_era + λ L_anc,

c_sur the surrogate (the anchor; "" by default). Latent anchoring keeps the output of other
concepts c: D(·|c_tar) accepts a candidate with probability 1 − cos(c, c_tar), so concepts far from
the target are anchored and near ones (its synonyms) are left free to be erased with it. The
official code (Con6924/SPM, ``src/engine/sampling.py``) draws the candidates as Gaussian vectors in
the text encoder's state space, rescaled to the target's norm × U(0.8, 1.2) (``anchor_source=
"embedding"``, the default); ``"vocabulary"`` draws words of the tokenizer's vocabulary instead, as
the paper's text describes; ``"none"`` trains L_era alone (the official ``action: erase``). A preserve
set (an erasekit addition) is anchored at every step besides the drawn candidates.

At inference each adapter acts with the strength γ(p) its concept has in the prompt (facilitated
transport, :mod:`erasekit.edits.transport`); the edit also carries the adapters merged at strength 1
(W + Σ_k v_up v_downᵀ), which is what ``--lora`` exports and what ``transport=false`` applies.

Defaults are the official ``configs/*/config.yaml`` and ``prompt.yaml``: rank 1, α 1, 3000
iterations of batch 1, lr 1e-4 with 500 warm-up steps and a cosine schedule restarted 3 times, η 1,
λ 1000, 4 anchors per step, x_t from 30-step DDIM at guidance 3. Differences: AdamW in 32 bits (the
official AdamW8bit needs bitsandbytes), x_t drawn up front from the original model (the official
code samples it with the adapter on) and one resolution (no bucketing).

On SDXL (no official code; SPM #3 asks) the adapters go on the same layers, the UNet's transformer
blocks; a prompt's conditioning is both encoders' states with the pooled vector (an embedding anchor
draws both as one vector), x_t comes from SDXL's own sampler, and transport scores prompts in the
space the cross-attention reads, both encoders' states side by side. On FLUX (no official code either)
they go on the joint blocks' Linears (attention of both streams, feed-forwards, the single blocks'
``proj_mlp``/``proj_out``; not the timestep modulation), ε is the flow velocity on x_σ of the Euler
sampler, and transport scores prompts in the T5 token path's space.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.transport import FACILITATED_TRANSPORT, SPMAdapter
from erasekit.methods.base import register
from erasekit.models.layers import transformer_layers
from erasekit.primitives.denoising import denoising
from erasekit.primitives.expansion import phrase_vectors, tokenizer_vocabulary
from erasekit.primitives.lora_trainer import check_rank, factor_delta, lora_adapter
from erasekit.primitives.prompt_cache import PooledText
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fit, loss_record
from erasekit.settings import (
    GUIDANCE,
    ITERATIONS,
    LEARNING_RATE,
    LORA_RANK,
    SAMPLER_STEPS,
    SEEDS,
    WEIGHT,
    check_settings,
    config_field,
)


@dataclass
class SPMConfig:
    """Defaults of the official configs (Con6924/SPM); the world's working setting is in the README."""

    rank: int = config_field(1, "adapter rank (one-dimensional: 1)", **LORA_RANK)
    alpha: float = config_field(1.0, "adapter α; the update is scaled by α / rank", gt=0.0, le=1e4)
    eta: float = config_field(1.0, "η: erasure guidance of L_era (official guidance_scale 1.0)", ge=0.0, le=100.0)
    lam: float = config_field(1000.0, "λ: weight of the latent-anchoring loss (official la_strength 1000)", **WEIGHT)
    anchors_per_step: int = config_field(
        4, "concepts drawn from D(·|c_tar) per step (official sampling_batch_size 4)", ge=0, le=256
    )
    anchor_source: Literal["embedding", "vocabulary", "none"] = config_field(
        "embedding", "'embedding' (official code), 'vocabulary' (the paper's words) or 'none'"
    )
    iterations: int = config_field(3000, "training steps per concept, one x_t each (official 3000)", **ITERATIONS)
    lr: float = config_field(1e-4, "AdamW learning rate (official 1e-4)", **LEARNING_RATE)
    warmup_steps: int = config_field(500, "linear warm-up steps of the learning rate (official 500)", ge=0, le=100_000)
    lr_cycles: int = config_field(3, "cosine cycles with hard restarts after the warm-up (official 3)", ge=1, le=1000)
    max_grad_norm: float = config_field(0.0, "gradient-norm clip; 0 is off (official 0)", ge=0.0, le=1e6)
    sample_steps: int = config_field(
        30, "DDIM steps of the x_t sampling; x_t stops at one at random (official 30)", **SAMPLER_STEPS
    )
    start_guidance: float = config_field(3.0, "guidance of that sampling (official 3)", **GUIDANCE)
    transport: bool = config_field(True, "facilitated transport at inference; false applies the merged adapters")
    # the matching metrics of edits.transport's METRICS (tests/test_settings.py holds them equal)
    transport_metric: Literal["clipcos_tokenuni", "clipcos", "tokenuni"] = config_field(
        "clipcos_tokenuni", "strength per prompt: clipcos_tokenuni (official), clipcos, tokenuni"
    )
    seed: int = config_field(0, "seed of the x_t plan, the anchors and the adapters' initialisation", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)


def embedding_anchors(target: Any, count: int, rng: random.Random, generator: torch.Generator) -> Any:
    """``count`` Gaussian conditionings like ``target`` (token states (1, L, d); on SDXL and FLUX with the pooled
    vector, the two as one vector), each accepted with probability 1 − cos(·, target) and rescaled to
    ‖target‖ × U(0.8, 1.2) (the official ``sample``)."""
    parts = [target.tokens, target.pooled] if isinstance(target, PooledText) else [target]
    flat = torch.cat([part.float().flatten() for part in parts])
    out = []
    while len(out) < count:
        noise = torch.randn(flat.shape, generator=generator, device="cpu").to(flat.device)
        noise = noise / noise.norm()
        if rng.random() < 1 - float(F.cosine_similarity(flat, noise, dim=0)):
            out.append(noise * flat.norm() * (0.8 + 0.4 * rng.random()))
    pieces = torch.stack(out).split([part[0].numel() for part in parts], dim=1)
    shaped = [piece.reshape(count, *part.shape[1:]).to(part.dtype) for piece, part in zip(pieces, parts, strict=True)]
    return PooledText(*shaped) if isinstance(target, PooledText) else shaped[0]


def vocabulary_anchors(run: RunContext, target: str, draws: int, rng: random.Random) -> list[str]:
    """``draws`` words of the tokenizer's vocabulary, each accepted with probability 1 − cos(word, target)."""
    words = [w for w in tokenizer_vocabulary(run.cache) if w not in target.lower().split()]
    similarity = (phrase_vectors(run.cache, words) @ phrase_vectors(run.cache, [target])[0]).clamp(0, 1).tolist()
    out = []
    while len(out) < draws:
        k = rng.randrange(len(words))
        if rng.random() < 1 - similarity[k]:
            out.append(words[k])
    return out


def train_adapter(run: RunContext, spec: EraseSpec, index: int, config: SPMConfig) -> tuple[SPMAdapter, list[float]]:
    """One SPM for target ``index``: its factors in float32 and its loss curve."""
    model, den = run.denoiser, denoising(run)  # a UNet, or FLUX's transformer
    target, surrogate = spec.targets[index], spec.anchors[index]
    rng, generator = random.Random(config.seed + index), run.generator(config.seed + index)
    states = den.conditioning(["", target, surrogate])
    uncond, c_tar, c_sur = states[0:1], states[1:2], states[2:3]
    points = den.plan_prompts([c_tar], uncond, config.start_guidance, config.sample_steps, config.iterations,
                              lambda _: 0, rng)  # fmt: skip
    k = config.anchors_per_step if config.anchor_source != "none" else 0
    if config.anchor_source == "vocabulary" and k:
        words = vocabulary_anchors(run, target, k * config.iterations, rng)
        drawn = den.conditioning(list(dict.fromkeys(words)))
        position = {w: i for i, w in enumerate(dict.fromkeys(words))}
    kept = den.conditioning(list(spec.preserve)) if spec.preserve else c_tar[:0]

    def anchors_at(step: int) -> Any:
        if config.anchor_source == "embedding" and k:
            fresh = embedding_anchors(c_tar, k, rng, generator)
        elif config.anchor_source == "vocabulary" and k:
            fresh = drawn[[position[w] for w in words[step * k : (step + 1) * k]]]
        else:
            fresh = c_tar[:0]
        return den.cat([fresh, kept])

    names = list(transformer_layers(model))
    with lora_adapter(model, names, config.rank, config.alpha, seed=config.seed + index) as adapter:
        was_training = model.training
        model.train()

        def loss_at(step: int) -> torch.Tensor:
            x_t, t = points[step].x_t, points[step].t
            anchors = anchors_at(step)
            conds = den.cat([c_tar, anchors])
            with torch.no_grad(), adapter.disabled():
                frozen = den.predict(model, x_t.expand(len(conds) + 1, *x_t.shape[1:]), t, den.cat([c_sur, conds])).float()
            eps_sur, eps_tar, eps_anchors = frozen[:1], frozen[1:2], frozen[2:]
            adapted = den.predict(model, x_t.expand(len(conds), *x_t.shape[1:]), t, conds).float()
            loss = F.mse_loss(adapted[:1], eps_sur - config.eta * (eps_tar - eps_sur))
            if len(anchors) and config.lam > 0:
                loss = loss + config.lam * F.mse_loss(adapted[1:], eps_anchors)
            return loss

        from diffusers.optimization import get_cosine_with_hard_restarts_schedule_with_warmup

        params = adapter.parameters()
        optimizer = torch.optim.AdamW(params, lr=config.lr)
        schedule = get_cosine_with_hard_restarts_schedule_with_warmup(
            optimizer, config.warmup_steps, config.iterations, config.lr_cycles
        )
        try:
            losses = fit(run, params, loss_at, config.iterations, optimizer, f"SPM {target!r}",
                         config.max_grad_norm or None, schedule)  # fmt: skip
        finally:
            model.train(was_training)
        return SPMAdapter(target, adapter.factors()), losses


@register(
    "spm",
    "SPM (Lyu et al. 2024): a rank-1 adapter per concept with latent anchoring, applied per prompt by facilitated transport",
    SPMConfig,
    families=("sd", "sdxl", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: SPMConfig) -> Edit:
    """SPM on ``spec``: one adapter per target trained on L above, kept as factors for facilitated
    transport and merged into the weights at strength 1."""
    check_rank(run.denoiser, list(transformer_layers(run.denoiser)), config.rank)  # before the first x_t plan's sampling
    adapters, records = [], {}
    for index, target in enumerate(spec.targets):
        adapter, losses = train_adapter(run, spec, index, config)
        adapters.append(adapter)
        records[target] = loss_record(losses)
    params = dict(run.denoiser.named_parameters())
    merged = {}
    for layer in adapters[0].factors:
        weight = params[f"{layer}.weight"]
        delta = sum(factor_delta(*a.factors[layer], weight.shape) for a in adapters)
        merged[f"{layer}.weight"] = (weight.detach().float() + delta).to(run.dtype)
    flat = {k: v.to(run.dtype) for i, a in enumerate(adapters) for k, v in a.flat(i).items()}
    card = {"config": asdict(config), "spm_losses": records}
    if config.transport:
        card |= FACILITATED_TRANSPORT.card_fields({"concepts": list(spec.targets), "metric": config.transport_metric})
    return Edit(merged, card, flat)
