"""AC: Ablating Concepts in Text-to-Image Diffusion Models (Kumari et al., ICCV 2023).

The model learns to draw the anchor concept c* when asked for the target c, from images of the
anchor that the original model drew (x_t their noised latents at a uniform timestep t):

* model-based (default): min_θ ‖ε_θ(x_t, c, t) − sg(ε_θ(x_t, c*, t))‖², the anchor prompt's own
  prediction as the target (sg: no gradient; the current model, as the official script computes it);
* noise-based: min_θ ‖ε_θ(x_t, c, t) − ε‖², the noise itself, i.e. ordinary fine-tuning on the anchor
  images captioned with the target.

c and c* are the same caption around the target and the anchor word. The paper wrote ~200 anchor
captions with ChatGPT; erasekit fills ``templates`` instead (an empty anchor gives the prompt " ").
A preserve set adds DreamBooth's prior-preservation loss ‖ε_θ(x_t', p, t) − ε'‖² on the original
model's images of each preserve concept (weight ``prior_loss_weight``), the official
``--with_prior_preservation`` applied to the concepts the user names.

Defaults are the official diffusers script's (nupurkmr9/concept-ablation, train.py and its README):
``cross-attn`` (attn2.to_k / to_v), AdamW lr 2e-6 scaled by the batch (``--scale_lr``: 2e-6 × 4),
weight decay 1e-2, gradient norm clipped at 1, batch 4, 200 steps (the README's advice for one
GPU), anchor images sampled with 25 steps at guidance 6. Differences: the anchor images are kept as
latents (no decode/encode round trip, no flips), and are sampled with deterministic DDIM (η = 0)
where the script used η = 1.

On SDXL and FLUX the idea carries over unchanged: the anchor images are drawn by the family's own
sampler, the target prompt's prediction is pulled to the anchor prompt's (model-based) or to the
noising's target (noise-based: the flow velocity ε − x₀ on FLUX), with the pooled vector and SDXL's
added time ids in the conditioning (:mod:`erasekit.primitives.denoising`). The parameter groups are
the family's: ``cross-attn`` the projections of the text into keys and values (SDXL's
``attn2.to_k/to_v``; FLUX's double blocks' ``add_k_proj/add_v_proj``), ``attn`` all attention,
``full-weight`` the whole denoiser.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.models.layers import ablation_parameters
from erasekit.primitives.denoising import denoising
from erasekit.primitives.image_batches import caption_pairs, draw_images, noised_batch
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, fit, loss_record
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field


@dataclass
class ACConfig:
    """Defaults of the official diffusers script for one GPU; the world's working setting is in the README."""

    loss: Literal["model", "noise"] = config_field(
        "model", "'model' (target: sg ε(x_t, c*)) or 'noise' (target: ε), --loss_type_reverse"
    )
    parameter_group: Literal["cross-attn", "attn", "full-weight"] = config_field(
        "cross-attn", "what trains: cross-attn (attn2.to_k/to_v), attn, full-weight"
    )
    steps: int = config_field(200, "optimiser steps (official 100 on 2 GPUs, 200 on one)", **ITERATIONS)
    lr: float = config_field(8e-6, "AdamW learning rate: official 2e-6 × batch 4 (--scale_lr)", **LEARNING_RATE)
    batch_size: int = config_field(4, "images per step (official --train_batch_size 4)", ge=1, le=256)
    weight_decay: float = config_field(1e-2, "AdamW weight decay (official 1e-2)", ge=0.0, le=100.0)
    max_grad_norm: float = config_field(1.0, "gradient-norm clip (official 1.0)", gt=0.0, le=1e6)
    anchor_images: int = config_field(
        1000, "images of the anchor the original model draws (official --num_class_images)", ge=1, le=10_000
    )
    sample_steps: int = config_field(25, "sampler steps of those images (official 25)", **SAMPLER_STEPS)
    guidance: float = config_field(6.0, "their guidance scale (official 6)", **GUIDANCE)
    templates: tuple[str, ...] = config_field(
        ("{}", "a photo of a {}", "a picture of a {}"), "captions around the target / anchor word (the paper: ChatGPT's)"
    )
    prior_loss_weight: float = config_field(1.0, "weight of the preserve set's prior-preservation loss (official 1.0)", **WEIGHT)
    preserve_images: int = config_field(200, "images per preserve concept for that loss (erasekit's choice)", ge=1, le=10_000)
    seed: int = config_field(0, "seed of the images, the batches, the timesteps and the noise", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ErasekitError("each template needs exactly one {} for the concept")


@register(
    "ac",
    "AC, Ablating Concepts (Kumari et al. 2023): fine-tune so the target's prompt draws the anchor's images",
    ACConfig,
    families=("sd", "sdxl", "sd3", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: ACConfig) -> Edit:
    """AC on ``spec``: the parameter group fine-tuned on the anchor's images under the target's captions,
    with the model- or noise-based loss above (and the prior loss for a preserve set)."""
    model, den = run.denoiser, denoising(run)
    pairs = caption_pairs(spec.targets, spec.anchors, config.templates)
    target_states, anchor_states = den.conditioning([c for c, _ in pairs]), den.conditioning([a for _, a in pairs])
    anchor_images = draw_images(run, [a for _, a in pairs], config.anchor_images, config.guidance, config.sample_steps,
                                config.seed, den)  # fmt: skip
    kept_prompts = [t.format(p) for p in spec.preserve for t in config.templates]
    use_prior = bool(kept_prompts) and config.prior_loss_weight > 0
    if use_prior:
        kept_images = draw_images(run, kept_prompts, config.preserve_images * len(spec.preserve), config.guidance,
                                  config.sample_steps, config.seed + 10**6, den)  # fmt: skip
        kept_states = den.conditioning(kept_prompts)
    rng, generator = random.Random(config.seed), run.generator(config.seed)

    with fine_tuning(run, ablation_parameters(model, config.parameter_group, run.family.name)) as tuning:

        def loss_at(_: int) -> torch.Tensor:
            batch = noised_batch(run, anchor_images, config.batch_size, rng, generator, den)
            x_t, t = batch.x_t, batch.t
            if config.loss == "model":
                with torch.no_grad():
                    target = den.predict(model, x_t, t, anchor_states[batch.caption]).float()
            else:
                target = batch.target.float()
            loss = F.mse_loss(den.predict(model, x_t, t, target_states[batch.caption]).float(), target)
            if use_prior:
                kept = noised_batch(run, kept_images, config.batch_size, rng, generator, den)
                kept_prediction = den.predict(model, kept.x_t, kept.t, kept_states[kept.caption])
                loss = loss + config.prior_loss_weight * F.mse_loss(kept_prediction.float(), kept.target.float())
            return loss

        params = list(tuning.params.values())
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        losses = fit(run, params, loss_at, config.steps, optimizer, f"AC ({config.loss}-based)", config.max_grad_norm)
        new_values = tuning.values()
    return Edit(new_values, {"config": asdict(config), **loss_record(losses)})
