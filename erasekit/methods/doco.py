"""DoCo: Concept Domain Correction and Concept Preserving Gradient (Wu et al., AAAI 2025).

On images of the anchor concept that the original model θ* draws (x_t their noised latents), the
model's prediction for the target caption c is pushed into the anchor's output domain by a
discriminator D that tells it apart from the original model's prediction for the anchor caption c*:

    x̂₀(ε) = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t          (both predictions compared as predicted x₀)
    L_D   = BCE(D(x̂₀(ε_θ*(x_t, c*))), 0) + BCE(D(sg x̂₀(ε_θ(x_t, c))), 1)
    L_adv = BCE(D(x̂₀(ε_θ(x_t, c))), 0)           (the model learns to pass as the anchor)

D trains alone for the first ``warm_up`` steps, then both alternate (the model's step, then D's).
The retain loss is DreamBooth's prior loss L_ret = ‖ε_θ(x_t', p) − ε'‖² on images of the preserve
concepts p (without a preserve set: the anchor's images under the anchor caption, the official
``--with_prior_preservation``). The concept-preserving gradient: with g_u = ∇L_adv and g_r = ∇L_ret
(each clipped to ``max_grad_norm``), wherever g_u · g_r < 0 (per parameter tensor),

    g_u ← g_u − λ (g_u · g_r / ‖g_r‖²) g_r

and the model steps along g_u alone, as the official code does. Without it (``gradient_surgery=
false``) the model steps on L_adv + 0.1 · prior_loss_weight · L_ret, the official ``loss_G``.

Defaults are the official README's object command (yongliang-wu/DoCo ``train.py``): cross-attention
k/v (AC's groups), lr 6e-6 × batch 8 (``--scale_lr``), 2000 steps with a 1000-step discriminator
warm-up, D's lr 1e-4 (Adam, β = (0.5, 0.999)), λ 1, weight decay 1e-2, clip 1, 1000 anchor images
from 25 steps at guidance 6 (AC's). Decisions: the official update subtracts λ (ĝ_u · ĝ_r) ĝ_r, a
projection only for a unit g_u; erasekit subtracts the projection itself (the paper's words and
the issue's). The PatchGAN discriminator has the official widths (64, 128, 256, 512) but as many
stride-2 blocks as the latent size allows (four at 64×64 as in SD, three at the world's 16×16). The
model-based ``loss_type_reverse`` is the one kept, as in the official commands. A discriminator
whose loss stays below ``collapse_loss`` for ``collapse_window`` steps after the warm-up has
collapsed (it separates the domains perfectly and the model gets no useful gradient): the run stops
with one line and writes nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.models.layers import ablation_parameters
from erasekit.primitives.denoising import denoising
from erasekit.primitives.image_batches import caption_pairs, draw_images, noised_batch
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, loss_record
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field


@dataclass
class DoCoConfig:
    """Defaults of the official object command (yongliang-wu/DoCo README); the world's setting is in the README."""

    parameter_group: Literal["cross-attn", "attn", "full-weight"] = config_field(
        "cross-attn", "what trains: cross-attn (attn2.to_k/to_v), attn, full-weight"
    )
    steps: int = config_field(2000, "training steps, the warm-up included (official --max_train_steps 2000)", **ITERATIONS)
    warm_up: int = config_field(1000, "steps that train the discriminator alone (official --warm_up 1000)", ge=0, le=100_000)
    lr: float = config_field(4.8e-5, "AdamW lr of the model: official 6e-6 × batch 8 (--scale_lr)", **LEARNING_RATE)
    dlr: float = config_field(1e-4, "Adam lr of the discriminator (official --dlr 1e-4 objects, 5e-4 styles)", **LEARNING_RATE)
    lam: float = config_field(1.0, "λ: share of the conflicting component removed (official --lambda_ 1)", ge=0.0, le=10.0)
    gradient_surgery: bool = config_field(True, "the concept-preserving gradient (official --gradient_clip)")
    prior_loss_weight: float = config_field(
        1.0, "retain-loss weight without the surgery (official 1.0, × 0.1 in loss_G)", **WEIGHT
    )
    batch_size: int = config_field(8, "images per step (official --train_batch_size 8)", ge=1, le=256)
    weight_decay: float = config_field(1e-2, "AdamW weight decay (official 1e-2)", ge=0.0, le=100.0)
    max_grad_norm: float = config_field(1.0, "each gradient's norm clip (official 1.0)", gt=0.0, le=1e6)
    anchor_images: int = config_field(
        1000, "images of the anchor the original model draws (official --train_size 1000)", ge=1, le=10_000
    )
    preserve_images: int = config_field(
        200, "images per preserve concept for the retain loss (erasekit's choice)", ge=1, le=10_000
    )
    sample_steps: int = config_field(25, "sampler steps of those images (AC's 25)", **SAMPLER_STEPS)
    guidance: float = config_field(6.0, "their guidance scale (AC's 6)", **GUIDANCE)
    templates: tuple[str, ...] = config_field(
        ("{}", "a photo of a {}", "a picture of a {}"), "captions around the target / anchor word (the paper: ChatGPT's)"
    )
    collapse_loss: float = config_field(
        1e-3, "a discriminator loss below this for collapse_window steps is a collapse", ge=0.0, le=1e6
    )
    collapse_window: int = config_field(50, "steps after the warm-up the collapse check looks at", **ITERATIONS)
    seed: int = config_field(0, "seed of the images, the batches, the timesteps, the noise and D's initialisation", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.warm_up >= self.steps:
            raise ErasekitError(f"warm_up ({self.warm_up}) must leave steps for the model: 0 ≤ warm_up < steps ({self.steps})")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ErasekitError("each template needs exactly one {} for the concept")


class PatchDiscriminator(nn.Module):
    """The official PatchGAN on 4-channel latents, with as many stride-2 blocks as ``size`` allows."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        blocks = max(1, min(4, int(math.log2(size)) - 1))
        layers: list[nn.Module] = []
        width_in = channels
        for i, width in enumerate((64, 128, 256, 512)[:blocks]):
            layers.append(nn.Conv2d(width_in, width, 4, stride=2, padding=1))
            if i:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            width_in = width
        layers.append(nn.Conv2d(width_in, 1, 4, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Patch logits of predicted x̂₀ latents: D of L_D above, trained to answer 1 for the model's
        domain and 0 for the anchor's."""
        return self.model(latents)


def preserving_gradient(unlearn: list[torch.Tensor], retain: list[torch.Tensor], lam: float) -> list[torch.Tensor]:
    """Each unlearning gradient with λ × its projection on the retaining one removed where the two conflict."""
    out = []
    for g_u, g_r in zip(unlearn, retain, strict=True):
        dot = float((g_u * g_r).sum())
        out.append(g_u - lam * dot / float(g_r.pow(2).sum()) * g_r if dot < 0 else g_u)
    return out


def clipped(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """``grads`` scaled together so that their joint L2 norm is at most ``max_norm``."""
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    return [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]


@register(
    "doco",
    "DoCo (Wu et al. 2025): adversarial domain correction onto the anchor, with the concept-preserving gradient",
    DoCoConfig,
    families=("sd", "sdxl", "sd3", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: DoCoConfig) -> Edit:
    """DoCo on ``spec``: the adversarial domain correction above on the anchor's images, stepping along the
    concept-preserving gradient (or on L_adv + 0.1 · prior_loss_weight · L_ret when ``gradient_surgery`` is off)."""
    model, den = run.denoiser, denoising(run)
    pairs = caption_pairs(spec.targets, spec.anchors, config.templates)
    target_states, anchor_states = den.conditioning([c for c, _ in pairs]), den.conditioning([a for _, a in pairs])
    anchor_images = draw_images(run, [a for _, a in pairs], config.anchor_images, config.guidance, config.sample_steps,
                                config.seed, den)  # fmt: skip
    if spec.preserve:
        kept_prompts = [t.format(p) for p in spec.preserve for t in config.templates]
        kept_images = draw_images(run, kept_prompts, config.preserve_images * len(spec.preserve), config.guidance,
                                  config.sample_steps, config.seed + 10**6, den)  # fmt: skip
        kept_states = den.conditioning(kept_prompts)
    else:  # the official prior: the anchor's own images under the anchor caption
        kept_images, kept_states = anchor_images, anchor_states
    rng, generator = random.Random(config.seed), run.generator(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        discriminator = PatchDiscriminator(*den.latent_layout()).to(run.device).train()
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.dlr, betas=(0.5, 0.999))
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16)
    g_losses, d_losses = [], []

    with fine_tuning(run, ablation_parameters(model, config.parameter_group, run.family.name)) as tuning:
        params = list(tuning.params.values())
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        for step in run.bar(range(config.steps), f"DoCo ({'with' if config.gradient_surgery else 'without'} surgery)"):
            batch = noised_batch(run, anchor_images, config.batch_size, rng, generator, den)
            with run.autocast(), torch.set_grad_enabled(step >= config.warm_up):  # D's warm-up needs no model gradient
                predicted = den.predict(model, batch.x_t, batch.t, target_states[batch.caption])
                model_x0 = den.image_latents(den.predicted_x0(batch.x_t, batch.t, predicted))
                anchor_prediction = den.predict(tuning.original, batch.x_t, batch.t, anchor_states[batch.caption])
                anchor_x0 = den.image_latents(den.predicted_x0(batch.x_t, batch.t, anchor_prediction))
            if step >= config.warm_up:
                kept = noised_batch(run, kept_images, config.batch_size, rng, generator, den)
                with run.autocast():
                    logits = discriminator(model_x0)
                    adversarial = F.binary_cross_entropy_with_logits(
                        logits.float(), torch.zeros_like(logits, dtype=torch.float32)
                    )
                    kept_prediction = den.predict(model, kept.x_t, kept.t, kept_states[kept.caption])
                    retain = F.mse_loss(kept_prediction.float(), kept.target.float())
                check_finite(float(adversarial.detach()) + float(retain.detach()), step)
                scale = scaler.get_scale() if scaler.is_enabled() else 1.0
                if config.gradient_surgery:
                    g_u = [g / scale for g in grad_of(scaler.scale(adversarial), params)]
                    g_r = [g / scale for g in grad_of(scaler.scale(retain), params)]
                    grads = preserving_gradient(
                        clipped(g_u, config.max_grad_norm), clipped(g_r, config.max_grad_norm), config.lam
                    )
                else:
                    total = adversarial + 0.1 * config.prior_loss_weight * retain
                    grads = clipped([g / scale for g in grad_of(scaler.scale(total), params)], config.max_grad_norm)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g * scale  # the scaler unscales and checks for inf in its step
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                g_losses.append(float(adversarial.detach()))
            with run.autocast():
                real, fake = discriminator(anchor_x0.detach()), discriminator(model_x0.detach())
                d_loss = F.binary_cross_entropy_with_logits(real.float(), torch.zeros_like(real, dtype=torch.float32)) + \
                    F.binary_cross_entropy_with_logits(fake.float(), torch.ones_like(fake, dtype=torch.float32))  # fmt: skip
            check_finite(float(d_loss.detach()), step)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            d_losses.append(float(d_loss.detach()))
            recent = d_losses[config.warm_up :][-config.collapse_window :]
            if len(recent) == config.collapse_window and max(recent) < config.collapse_loss:
                raise ErasekitError(
                    f"DoCo's discriminator collapsed at step {step + 1}: its loss stayed below {config.collapse_loss:g} for "
                    f"{config.collapse_window} steps, so it separates the two domains perfectly and the model learns nothing "
                    "from it; lower dlr, or raise lr or warm_up. Nothing was written"
                )
        new_values = tuning.values()
    card = {"config": asdict(config), **loss_record(g_losses), "discriminator": loss_record(d_losses)}
    return Edit(new_values, card)


def grad_of(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """∇loss for each parameter (zeros where the loss does not reach it)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def check_finite(value: float, step: int) -> None:
    """Stop the run with one line when a loss at ``step`` is NaN or infinite."""
    if not math.isfinite(value):
        raise ErasekitError(
            f"DoCo: a loss became {value} at step {step + 1}; lower lr or dlr, or run the model in float32. Nothing was written"
        )
