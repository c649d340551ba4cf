"""SDD: Towards Safe Self-Distillation of Internet-Scale Text-to-Image Diffusion Models (Kim et al., 2023).

Self-distillation: conditioned on the concept c, the model is trained to predict what it predicts
unconditionally on the same x_t, the target taken from the model itself with no gradient,

    min_θ ‖ε_θ(x_t, t, c) − sg(ε_θ(x_t, t, ""))‖²,

and the model handed back is the exponential moving average θ̄ ← β θ̄ + (1 − β) θ of the trained one
(the official code samples, validates and saves that "teacher"). x_t comes from guided sampling of the
concept stopped at a random step; several concepts take turns, one per step (official ``iterative``).

Defaults are the official ``train_sdd.py`` (nannullna/safe-diffusion @ a2e820c, the nudity run): the
cross-attention (``xattn``: every ``attn2`` parameter), AdamW lr 1e-5, weight decay 1e-4, constant
rate, gradient norm clipped at 1, EMA β = 0.999, 1500 steps of batch 1, x_t from 50 DDIM steps at
guidance 3.
Differences from that code:
- **x_t.** The official code samples x_t from the EMA teacher as it trains, with all concepts joined
  into one prompt. Here x_t comes from the original model's sampling of each concept, drawn before
  training (the x_t plan ESD shares): the teacher is the original plus a slow average of the updates.
  The loss is taken at the sampler's own timestep, where the official code draws t inside its
  20-step bin. Its k = 0 draw, which runs all 50 steps and pairs the clean latent with t ≈ 990, is
  not copied.
- **Additions, off unless asked for:** an anchor replaces "" as the prompt of the target; preserve
  concepts add ‖ε_θ(x_t, p) − ε_θ*(x_t, p)‖² against the frozen original (weight ``preserve_weight``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.methods.base import register
from erasekit.models.layers import sdd_parameters
from erasekit.primitives.denoising import denoising
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, fit, loss_record
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field


@dataclass
class SDDConfig:
    """Defaults: the official train_sdd.py (its argparse names in brackets); the world's setting is in the README."""

    # the choices of models.layers.SDD_GROUPS (tests/test_settings.py holds them equal)
    finetuning_method: Literal["xattn", "selfattn", "noxattn", "notime", "full"] = config_field(
        "xattn", "what trains: xattn (official), selfattn, noxattn, notime or full (--finetuning_method)"
    )
    iterations: int = config_field(1500, "training steps of one x_t each (--num_train_steps 1500)", **ITERATIONS)
    lr: float = config_field(1e-5, "AdamW learning rate, constant (--learning_rate 1e-5)", **LEARNING_RATE)
    weight_decay: float = config_field(1e-4, "AdamW weight decay (--adam_weight_decay 1e-4)", ge=0.0, le=100.0)
    ema_decay: float = config_field(
        0.999, "β of the moving average handed back (--ema_decay 0.999); 0: the trained model", ge=0.0, lt=1.0
    )
    max_grad_norm: float = config_field(1.0, "gradient-norm clip (--max_grad_norm 1), 0 for none", ge=0.0, le=1e6)
    guidance: float = config_field(3.0, "guidance scale of the sampling of x_t (--guidance_scale 3)", **GUIDANCE)
    sample_steps: int = config_field(
        50, "DDIM steps of that sampling; x_t stops at one at random (--ddim_steps 50)", **SAMPLER_STEPS
    )
    preserve_weight: float = config_field(
        1.0, "weight of the preserve loss, used only when preserve concepts are given", **WEIGHT
    )
    seed: int = config_field(0, "seed of the step choices and of the sampling noise (official run 42)", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)


@register(
    "sdd",
    "SDD (Kim et al. 2023): self-distil the concept's prediction onto the unconditional one, keep the moving average",
    SDDConfig,
    families=("sd", "sdxl"),
)
def erase(run: RunContext, spec: EraseSpec, config: SDDConfig) -> Edit:
    """SDD's fine-tuning of ``config.finetuning_method``'s parameters for ``spec``; the edit is their EMA."""
    model = run.denoiser
    names = sdd_parameters(model, config.finetuning_method)
    rng = random.Random(config.seed)
    den = denoising(run)
    states, points = den.plan(spec, config.guidance, config.sample_steps, config.iterations, rng)

    with fine_tuning(run, names) as tuning:  # trained in float32; the frozen original answers the preserve loss
        params = list(tuning.params.values())
        average = {name: p.detach().clone() for name, p in tuning.params.items()}

        def loss_at(step: int) -> torch.Tensor:
            point = points[step]
            concept, anchor = states[spec.targets[point.prompt]], states[spec.anchors[point.prompt]]
            with torch.no_grad():  # the model's own unconditional prediction, no gradient through the target
                target = den.predict(model, point.x_t, point.t, anchor).float()
            loss = F.mse_loss(den.predict(model, point.x_t, point.t, concept).float(), target)
            if spec.preserve and config.preserve_weight > 0:
                kept = states[rng.choice(spec.preserve)]
                kept_loss = F.mse_loss(
                    den.predict(model, point.x_t, point.t, kept).float(),
                    den.predict(tuning.original, point.x_t, point.t, kept).float(),
                )
                loss = loss + config.preserve_weight * kept_loss
            return loss

        @torch.no_grad()
        def update_average(step: int) -> None:
            for name, p in tuning.params.items():
                average[name].mul_(config.ema_decay).add_(p.detach(), alpha=1 - config.ema_decay)

        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        losses = fit(run, params, loss_at, config.iterations, optimizer, f"SDD ({config.finetuning_method})",
                     max_grad_norm=config.max_grad_norm or None, after_step=update_average)  # fmt: skip
    return Edit({name: value.to(run.dtype) for name, value in average.items()}, {"config": asdict(config), **loss_record(losses)})
