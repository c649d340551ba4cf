"""RACE: Robust Adversarial Concept Erasure (Kim et al., ECCV 2024).

ESD, trained where an attacker would look: at every step a PGD attack perturbs the concept's text
states c within an ℓ∞ ball of radius ε (clamped to the range of c's own values),

    δ* = argmin_{‖δ‖∞ ≤ ε} ‖ ε_T − ε_θ(x_t, t, c + δ) ‖²      (10 steps of size α = ε/4, random start),

where ε_T is the noise the x_t trajectory started from (the official attack's target), and ESD's
loss is applied at c + δ* instead of c:

    ‖ ε_θ(x_t, t, c + δ*) − [ε_θ*(x_t) − η (ε_θ*(x_t, c) − ε_θ*(x_t))] ‖².

The official script (chkimmmmm/R.A.C.E., ``train-esd.py --adv_train``) starts from a trained ESD
model and continues with the attack inside the loop: ``esd_iterations`` plain ESD steps come first
here, then ``iterations`` adversarial ones, on the same parameters. Defaults are that script's
(ε = 0.1, 10 PGD steps, α = ε/4, lr 1e-5, 1000 iterations, η = 1 on the paper's target, guidance 3);
the pretrained ESD stage uses the same settings. The paper's top-k nearest concepts erased beside
the target are not in the official script and not here.

On SDXL the attack moves both encoders' token states and keeps the pooled vector. On FLUX (ESD's
velocity target on x_σ, :mod:`erasekit.methods.esd`) a velocity v stands for the noise
ε̂ = x_σ + (1 − σ)·v, and the attack brings that ε̂ nearest ε_T, the noise the Euler trajectory started
from: the same aim as on SD, in the flow's terms. It moves the T5 token states; the pooled vector is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.methods.esd import ESDConfig, train_esd
from erasekit.primitives.denoising import denoising
from erasekit.primitives.prompt_cache import PooledText, token_states, with_tokens
from erasekit.primitives.run import RunContext
from erasekit.primitives.xt_plan import XtPoint
from erasekit.settings import ITERATIONS, LEARNING_RATE, config_field


@dataclass
class RACEConfig(ESDConfig):
    """Defaults of the official train-esd.py with --adv_train."""

    target: Literal["official", "paper"] = config_field(
        "paper", "ESD's target; the official script trains ε*(∅) − η(ε*(c) − ε*(∅)) with η = 1"
    )
    iterations: int = config_field(1000, "adversarial fine-tuning iterations (official 1000)", **ITERATIONS)
    lr: float = config_field(1e-5, "Adam learning rate (official 1e-5)", **LEARNING_RATE)
    esd_iterations: int = config_field(
        1000, "plain ESD iterations first: the official script starts from a trained ESD model", ge=0, le=100_000
    )
    # ε = 0 passes the range and is refused below, in RACE's own words; the states' values are O(1)
    epsilon: float = config_field(
        0.1, "ε: radius of the ℓ∞ ball around the concept's text states (official 0.1)", ge=0.0, le=100.0
    )
    pgd_steps: int = config_field(10, "PGD steps per training step (official 10)", ge=1, le=1000)
    alpha: float | None = config_field(None, "PGD step size; unset, ε/4 as the official script", gt=0.0, le=100.0)

    def __post_init__(self) -> None:
        super().__post_init__()  # checks the ranges and choices of every field, RACE's too
        if self.epsilon <= 0:
            raise ErasekitError("RACE needs ε > 0: a ball of no size is plain ESD")
        if self.alpha is None:
            self.alpha = self.epsilon / 4


def pgd_states(
    predict: Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor], x_t: torch.Tensor, t: torch.Tensor,
    states: torch.Tensor | PooledText, noise: torch.Tensor, config: RACEConfig, generator: torch.Generator,
) -> torch.Tensor | PooledText:  # fmt: skip
    """c + δ*: the states within ε of ``states`` under which ``predict(x_t, t, ·)`` comes nearest ``noise``.
    SDXL's and FLUX's conditioning keep their pooled vector; the token states are what the attack moves."""
    tokens = token_states(states)
    low, high = tokens.min(), tokens.max()
    # drawn on the CPU from the run's generator (the same start on every device), then moved
    start = torch.empty(tokens.shape, dtype=torch.float32, device="cpu").uniform_(-config.epsilon, config.epsilon,
                                                                                  generator=generator)  # fmt: skip
    adversarial = (tokens + start.to(tokens.device, tokens.dtype)).clamp(low, high).detach()
    for _ in range(config.pgd_steps):
        adversarial.requires_grad_(True)
        loss = F.mse_loss(predict(x_t, t, with_tokens(states, adversarial)).float(), noise.float())
        (grad,) = torch.autograd.grad(loss, [adversarial])
        stepped = adversarial.detach() - config.alpha * grad.sign()  # descend the error: towards the concept
        adversarial = (tokens + (stepped - tokens).clamp(-config.epsilon, config.epsilon)).clamp(low, high).detach()
    return with_tokens(states, adversarial)


@register("race", "RACE (Kim et al. 2024): ESD trained at PGD-perturbed concept embeddings, robust to attacks", RACEConfig,
          families=("sd", "sdxl", "sd3", "flux"))  # fmt: skip
def erase(run: RunContext, spec: EraseSpec, config: RACEConfig) -> Edit:
    """RACE on ``spec``: ``esd_iterations`` plain ESD steps, then ESD's loss at the PGD-perturbed states c + δ* (above).
    On SDXL and FLUX the attack moves the token states; on FLUX it aims the velocity's implied noise."""
    generator = run.generator(config.seed + 1)
    den = denoising(run)

    def predicted_noise(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        return den.implied_noise(x, t, den.predict(run.denoiser, x, t, cond))

    def adversary(states: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, point: XtPoint) -> torch.Tensor:
        # the trajectory's own starting noise, drawn again from its seed as the plan drew it: unscaled, the ε an
        # ε-prediction aims at (DDIM starts at that scale; SDXL's Euler sampler at init_noise_sigma times it)
        noise = den.start_noise(point.seed).to(x_t.dtype)
        return pgd_states(predicted_noise, x_t, t, states, noise, config, generator)

    return train_esd(run, spec, config, adversary, plain_steps=config.esd_iterations)  # its card holds the RACE config
