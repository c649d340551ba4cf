"""Training images drawn by the original model, and noised batches of them (AC, DoCo).

AC and DoCo fine-tune on images of the anchor concept that the original model draws, captioned with
the target. They are kept as latents x_0 (no decode/encode round trip) and noised at a uniform
timestep per batch, as diffusers' training scripts do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from erasekit.primitives.diffusion import sample_latents

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


BATCH = 64  # images sampled side by side (sample_latents' default; an image does not depend on its batch)


def draw_images(run: RunContext, prompts: list[str], count: int, guidance: float, steps: int, seed: int) -> Images:
    """``count`` images spread evenly over ``prompts``, each with its own seed (guided DDIM, η = 0)."""
    uncond = run.states([""])
    latents, caption = [], []
    per_prompt = [count // len(prompts) + (i < count % len(prompts)) for i in range(len(prompts))]
    batches = sum(-(-n // BATCH) for n in per_prompt)  # the sampler's batches of at most BATCH images
    bar = run.counter(batches * steps, f"drawing {count} images")  # minutes on a CPU, before any training
    for i, (prompt, n) in enumerate(zip(prompts, per_prompt, strict=True)):
        if n:
            seeds = [seed + i * count + j for j in range(n)]
            latents.append(sample_latents(run.pipe, run.states([prompt]), uncond, guidance, steps, seeds, BATCH, bar.update))
            caption += [i] * n
    bar.close()
    return Images(torch.cat(latents), caption)


@dataclass
class NoisedBatch:
    """Latents ``x_0`` noised with ``noise`` at timesteps ``t`` into ``x_t``, and the caption index of each."""

    x_0: torch.Tensor
    x_t: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    caption: list[int]


def noised_batch(run: RunContext, images: Images, size: int, rng: random.Random, generator: torch.Generator) -> NoisedBatch:
    """``size`` images picked by ``rng``, noised at uniform timesteps and noise from ``generator``."""
    scheduler = run.pipe.scheduler
    picked = [rng.randrange(len(images.caption)) for _ in range(size)]
    x_0 = images.latents[picked]
    # drawn on the CPU: one seed, every device
    t = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator, device="cpu").to(run.device)
    noise = run.randn(tuple(x_0.shape), generator, x_0.dtype)
    return NoisedBatch(x_0, scheduler.add_noise(x_0, noise, t), noise, t, [images.caption[i] for i in picked])
