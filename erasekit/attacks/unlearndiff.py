"""UnlearnDiffAtk (Zhang et al., ECCV 2024): the erased diffusion model as its own classifier.

k adversarial tokens are put before the prompt. Each is a distribution w over the vocabulary; a
step draws one token from each (straight-through: the gradient passes back to w clipped to
[−1, 1]), and minimises the erased model's denoising error on an image of the concept x₀ that
the original model drew for the prompt:

    min_w  E_ε ‖ ε − ε_θ*(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, [w; prompt]) ‖²,   w ∈ simplex after every step

If the erased model denoises the concept's image well under the adversarial prompt, that prompt
brings the concept back. Timesteps run in sequence (50 of 1000), 40 Adam steps each (lr 0.01,
weight decay 0.1); after each block the most likely tokens are judged on the prompt's seed and the
attack stops at the first success. Defaults: OPTML-Group/Diffusion-MU-Attack, ``text_grad`` attacker,
object and style configs (k = 3, ``prefix_k``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.attacks.base import AttackContext, AttackTarget, Found, register, search_in_blocks, spread_timesteps
from erasekit.errors import ErasekitError
from erasekit.primitives.soft_prompt import simplex_projection, word_tokens
from erasekit.primitives.training import frozen
from erasekit.settings import LEARNING_RATE, SEEDS, check_settings, config_field


@dataclass
class UnlearnDiffConfig:
    """Defaults: the official text_grad attacker's object/style configs."""

    tokens: int = config_field(3, "k: adversarial tokens before the prompt (official object/style configs 3)", ge=1, le=75)
    timesteps: int = config_field(
        50, "timesteps attacked in sequence, spread over training's (official n_samples 50)", ge=1, le=1000
    )
    iterations: int = config_field(40, "Adam steps per timestep (official 40)", ge=1, le=10_000)
    lr: float = config_field(0.01, "Adam learning rate on the token distributions (official 0.01)", **LEARNING_RATE)
    weight_decay: float = config_field(0.1, "Adam weight decay (official 0.1)", ge=0.0, le=100.0)
    stop_on_success: bool = config_field(True, "judge after every timestep and stop at the first success (official)")
    seed: int = config_field(0, "seed of the token draws and the noise", **SEEDS)

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.timesteps < 1 or self.iterations < 1:  # said as the budget, before the ranges
            raise ErasekitError("unlearndiff needs at least one token, one timestep and one iteration (the attack budget)")
        check_settings(self)


class _SampledOneHot(torch.autograd.Function):
    """Forward: one-hot rows of the drawn tokens. Backward: the gradient clipped to [−1, 1] (official STE)."""

    @staticmethod
    def forward(ctx: object, weights: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
        return F.one_hot(picks, weights.shape[-1]).to(weights.dtype)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.hardtanh(grad), None


@register(
    "unlearndiff", "UnlearnDiffAtk: prepended tokens that make the erased model denoise the concept's image", UnlearnDiffConfig
)
def search(context: AttackContext, targets: list[AttackTarget], config: UnlearnDiffConfig) -> list[Found]:
    """UnlearnDiffAtk on each target in turn: the prepended tokens that minimise the erased model's
    denoising error on the concept's image (above)."""
    return [_attack(context, target, config) for target in targets]


def _attack(context: AttackContext, target: AttackTarget, config: UnlearnDiffConfig) -> Found:
    run = context.run
    candidates = word_tokens(context.tokenizer, run.device)
    table = context.path.table[candidates].float()
    timesteps = spread_timesteps(context.num_train_timesteps, config.timesteps)
    generator = run.generator(config.seed * 1_000_003 + target.seed)
    x0 = context.concept_latents(target.prompt, [target.seed])
    prompt = context.slotted(target.prompt, config.tokens)
    weights = simplex_projection(torch.full((config.tokens, len(candidates)), 1.0 / len(candidates), device=run.device))
    weights.requires_grad_(True)
    optimiser = torch.optim.Adam([weights], lr=config.lr, weight_decay=config.weight_decay)

    def step(x_t: torch.Tensor, t: torch.Tensor, wanted: torch.Tensor) -> float:
        picks = torch.multinomial(weights.detach().float().cpu(), 1, generator=generator)[:, 0].to(run.device)
        vectors = _SampledOneHot.apply(weights, picks) @ table
        cond = context.conditioning(prompt, vectors, target.prompt)
        with run.autocast():
            loss = F.mse_loss(context.predict(x_t, t, cond).float(), wanted.float())
        optimiser.zero_grad()
        (weights.grad,) = torch.autograd.grad(loss, [weights])
        optimiser.step()
        with torch.no_grad():
            weights.copy_(simplex_projection(weights))
        return float(loss.detach())

    with frozen(context.denoiser, *context.path.text_encoders):
        return search_in_blocks(context, target, prompt, x0, timesteps, config.iterations, step,
                                lambda: candidates[weights.argmax(-1)], generator, config.stop_on_success)  # fmt: skip
