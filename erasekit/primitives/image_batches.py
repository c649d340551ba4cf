"""Training images drawn by the original model, and noised batches of them (AC, DoCo).

AC and DoCo fine-tune on images of the anchor concept that the original model draws, captioned with
the target. They are kept as latents x_0 (no decode/encode round trip) and noised at a uniform
timestep per batch, as diffusers' training scripts do. The model's family says how
(:mod:`erasekit.primitives.denoising`): its own sampler draws them (packed latents on FLUX), and
its noising gives x_t (x_σ on a flow model) with the target the denoiser should predict there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from erasekit.primitives.denoising import UNetDenoising, denoising

if TYPE_CHECKING:
    from erasekit.primitives.run import RunContext


def caption_pairs(targets: tuple[str, ...], anchors: tuple[str, ...], templates: tuple[str, ...]) -> list[tuple[str, str]]:
    """(target caption, anchor caption) for every target and template; the empty anchor gives " "."""
    from erasekit.concepts import anchor_prompt

    return [(t.format(target), anchor_prompt(t, anchor)) for target, anchor in zip(targets, anchors, strict=True)
            for t in templates]  # fmt: skip


@dataclass
class Images:
    """Latents x_0 the original model drew, each with the index of the caption it illustrates."""

    latents: torch.Tensor
    caption: list[int]


BATCH = 64  # images the family samplers draw side by side (their default; an image does not depend on its batch)


def draw_images(
    run: RunContext, prompts: list[str], count: int, guidance: float, steps: int, seed: int, den: UNetDenoising | None = None
) -> Images:
    """``count`` images spread evenly over ``prompts``, each with its own seed, by the family's guided sampler
    (SD: DDIM, η = 0; FLUX: Euler on the flow)."""
    den = den or denoising(run)
    uncond = den.conditioning([""])
    latents, caption = [], []
    per_prompt = [count // len(prompts) + (i < count % len(prompts)) for i in range(len(prompts))]
    batches = sum(-(-n // BATCH) for n in per_prompt)  # the sampler's batches of at most BATCH images
    bar = run.counter(batches * steps, f"drawing {count} images")  # minutes on a CPU, before any training
    for i, (prompt, n) in enumerate(zip(prompts, per_prompt, strict=True)):
        if n:
            seeds = [seed + i * count + j for j in range(n)]
            latents.append(den.sample(den.conditioning([prompt]), uncond, guidance, steps, [steps] * n, seeds,
                                      on_step=bar.update)[0])  # fmt: skip
            caption += [i] * n
    bar.close()
    return Images(torch.cat(latents), caption)


@dataclass
class NoisedBatch:
    """Latents ``x_0`` noised at timesteps ``t`` into ``x_t``, the denoiser's target there (``target``: ε for an
    ε-prediction UNet), and the caption index of each."""

    x_0: torch.Tensor
    x_t: torch.Tensor
    target: torch.Tensor
    t: torch.Tensor
    caption: list[int]


def noised_batch(
    run: RunContext,
    images: Images,
    size: int,
    rng: random.Random,
    generator: torch.Generator,
    den: UNetDenoising | None = None,
) -> NoisedBatch:
    """``size`` images picked by ``rng``, noised at uniform timesteps (σ on a flow model) with noise from
    ``generator``, and ``target``, what the denoiser should predict (the velocity ε − x₀ on a flow model,
    v on a v-prediction UNet, else ε)."""
    den = den or denoising(run)
    picked = [rng.randrange(len(images.caption)) for _ in range(size)]
    x_0 = images.latents[picked]
    t = den.timesteps(size, generator)
    noise = run.randn(tuple(x_0.shape), generator, x_0.dtype)
    return NoisedBatch(x_0, den.noised(x_0, noise, t), den.noise_target(x_0, noise, t), t, [images.caption[i] for i in picked])
