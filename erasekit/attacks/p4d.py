"""P4D (Chin et al., ICML 2024): prompts that make the erased model predict what the original would.

k tokens are put before the prompt as continuous embeddings; each step projects them to their
nearest real tokens (cosine, PEZ's straight-through: the gradient at the projected embeddings
updates the continuous ones) and minimises

    ‖ ε_θ(x_t, t, prompt) − ε_θ*(x_t, t, [P*; prompt]) ‖²,   x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε,

the erased model θ* under the adversarial prompt matching the original θ under the plain one, on
noised images of the concept x₀ that the original drew. Schedule and defaults as the official
implementation in OPTML-Group/Diffusion-MU-Attack (``hard_prompt`` attacker, P4D task): 3 prepended
tokens initialised at random tokens, 50 timesteps × 40 Adam steps (lr 0.01, weight decay 0.1),
judged after each timestep, stopping at the first success. The paper's P4D-N (16 free tokens
replacing the prompt) is the same search with more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.attacks.base import AttackContext, AttackTarget, Found, register, search_in_blocks, spread_timesteps
from erasekit.errors import ErasekitError
from erasekit.primitives.soft_prompt import nearest_tokens, random_tokens, word_tokens
from erasekit.primitives.training import frozen
from erasekit.settings import LEARNING_RATE, SEEDS, check_settings, config_field


@dataclass
class P4DConfig:
    """Defaults: the official hard_prompt attacker's P4D configs."""

    tokens: int = config_field(
        3, "adversarial tokens before the prompt (official configs 3; the paper's P4D-N uses 16)", ge=1, le=75
    )
    timesteps: int = config_field(50, "timesteps attacked in sequence, spread over training's (official 50)", ge=1, le=1000)
    iterations: int = config_field(40, "Adam steps per timestep (official 40)", ge=1, le=10_000)
    lr: float = config_field(0.01, "Adam learning rate on the continuous embeddings (official 0.01)", **LEARNING_RATE)
    weight_decay: float = config_field(0.1, "Adam weight decay (official 0.1)", ge=0.0, le=100.0)
    stop_on_success: bool = config_field(True, "judge after every timestep and stop at the first success (official)")
    seed: int = config_field(0, "seed of the initial tokens and the noise", **SEEDS)

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.timesteps < 1 or self.iterations < 1:  # said as the budget, before the ranges
            raise ErasekitError("p4d needs at least one token, one timestep and one iteration (the attack budget)")
        check_settings(self)


@register("p4d", "P4D: prompts under which the erased model's noise prediction matches the original's", P4DConfig)
def search(context: AttackContext, targets: list[AttackTarget], config: P4DConfig) -> list[Found]:
    """P4D on each target in turn: the prepended tokens under which the erased model predicts what the original does (above)."""
    return [_attack(context, target, config) for target in targets]


def _attack(context: AttackContext, target: AttackTarget, config: P4DConfig) -> Found:
    run = context.run
    candidates = word_tokens(context.tokenizer, run.device)
    table = context.path.table
    timesteps = spread_timesteps(context.num_train_timesteps, config.timesteps)
    generator = run.generator(config.seed * 1_000_003 + target.seed)
    x0 = context.concept_latents(target.prompt, [target.seed])
    plain = context.original_conditioning([target.prompt])
    prompt = context.slotted(target.prompt, config.tokens)
    vectors = table[random_tokens(candidates, config.tokens, generator)].float().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([vectors], lr=config.lr, weight_decay=config.weight_decay)

    def step(x_t: torch.Tensor, t: torch.Tensor, _target: torch.Tensor) -> float:
        projected = table[nearest_tokens(vectors.detach(), table, candidates)].float().requires_grad_(True)
        cond = context.conditioning(prompt, projected, target.prompt)
        with run.autocast():
            wanted = context.predict_original(x_t, t, plain).float()
            loss = F.mse_loss(context.predict(x_t, t, cond).float(), wanted)
        optimiser.zero_grad()
        (vectors.grad,) = torch.autograd.grad(loss, [projected])
        optimiser.step()
        return float(loss.detach())

    with frozen(context.denoiser, *context.path.text_encoders):
        return search_in_blocks(context, target, prompt, x0, timesteps, config.iterations, step,
                                lambda: nearest_tokens(vectors.detach(), table, candidates), generator,
                                config.stop_on_success)  # fmt: skip
