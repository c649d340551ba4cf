"""Flow-matching transformers (FLUX, SD3): text conditioning, the velocity call and the x_t of partial sampling.

What :mod:`erasekit.primitives.diffusion` is for SD's UNets, for ``FluxTransformer2DModel``:

* the text is two things, the token states of the token path (T5) and the pooled vector of the
  CLIP path (a :class:`~erasekit.primitives.prompt_cache.PooledText`), encoded as ``FluxPipeline.encode_prompt`` encodes them;
* the denoiser predicts the velocity v = ε − x₀ of the straight path x_σ = (1 − σ)·x₀ + σ·ε, on
  latents packed 2×2 into tokens (B, N, 4C), with position ids per token; it is called with σ
  (``timestep / 1000``) and, where the transformer embeds it (FLUX.1-dev), a distilled guidance;
* x_t comes from the pipeline's own Euler sampler stopped at a step (:func:`flow_partial_samples`):
  FLUX's σ grid (``linspace(1, 1/N, N)``, shifted by the image's token count where the scheduler
  asks for it), guided for real (two calls) on an undistilled transformer, by its guidance
  embedding on a distilled one.

SD3's MMDiT is the same kind of model called another way: its latents are not packed (the
transformer patches them itself), its timestep is σ·1000, it has no position ids or guidance
embedding, and its σ grid is the scheduler's own (shifted by 3). A :class:`LatentGrid` with
``packed=False`` stands for those latents.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from erasekit.models.embedded import FLUX_IMAGE_SIZE, is_world_model
from erasekit.primitives.diffusion import FrozenCopy, stopped_trajectories
from erasekit.primitives.prompt_cache import PooledText

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.primitives.run import RunContext

DEFAULT_RESOLUTION = 512  # pixels: the official esd_flux.py trains FLUX.1 at 512² to keep memory manageable


def flow_text(run: RunContext, prompts: list[str]) -> PooledText:
    """The conditioning of ``prompts`` in the run's device and dtype (token states from the run's cache)."""
    return PooledText(run.states(prompts), run.pooled(prompts).to(run.dtype))


@dataclass(frozen=True)
class LatentGrid:
    """The packed latents of one image size: ``tokens`` = h·w patches of ``channels`` values each."""

    height: int  # patches (SD3, not packed: latent pixels)
    width: int
    channels: int
    packed: bool = True  # False: SD3's latents, as they are

    @property
    def tokens(self) -> int:
        """How many image tokens (patches) one image has."""
        return self.height * self.width if self.packed else self.height * self.width // 4

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """The unpacked latent of one image: (channels / 4, 2h, 2w)."""
        if not self.packed:
            return (self.channels, self.height, self.width)
        return (self.channels // 4, 2 * self.height, 2 * self.width)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, 2h, 2w) latents as (B, h·w, 4C) tokens, FluxPipeline's ``_pack_latents``."""
        if not self.packed:
            return latents
        b, c = latents.shape[:2]
        patches = latents.reshape(b, c, self.height, 2, self.width, 2).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(b, self.tokens, 4 * c)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h·w, 4C) tokens as (B, C, 2h, 2w) latents, FluxPipeline's ``_unpack_latents``."""
        if not self.packed:
            return tokens
        b, c = tokens.shape[0], self.channels // 4
        patches = tokens.reshape(b, self.height, self.width, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return patches.reshape(b, c, 2 * self.height, 2 * self.width)

    def image_ids(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """FLUX's position ids of the image tokens (tokens, 3): 0, row, column."""
        ids = torch.zeros(self.height, self.width, 3, device=device, dtype=dtype)
        ids[..., 1] = torch.arange(self.height, device=device, dtype=dtype)[:, None]
        ids[..., 2] = torch.arange(self.width, device=device, dtype=dtype)[None, :]
        return ids.reshape(self.tokens, 3)


def latent_grid(pipe: DiffusionPipeline, resolution: int | None = None) -> LatentGrid:
    """The packed latent grid at ``resolution`` pixels (erasekit-tiny-flux: its 64; other FLUX models: 512);
    SD3's latents at the transformer's native size (1024 px on SD3-medium)."""
    config = pipe.transformer.config
    if type(pipe).__name__ == "StableDiffusion3Pipeline":
        side = (resolution // pipe.vae_scale_factor) if resolution else config.sample_size
        return LatentGrid(side, side, config.in_channels, packed=False)
    size = resolution or (FLUX_IMAGE_SIZE if is_world_model(pipe) else DEFAULT_RESOLUTION)
    side = size // (pipe.vae_scale_factor * 2)
    return LatentGrid(side, side, pipe.transformer.config.in_channels)


def predict_velocity(
    model: nn.Module | FrozenCopy,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    text: PooledText,
    grid: LatentGrid,
    guidance: float | None = None,
) -> torch.Tensor:
    """v(x_σ, σ, text) of a FLUX transformer (or a frozen copy of one: any callable taking its keywords).
    ``guidance`` feeds the guidance embedding of a distilled transformer and is ignored by others."""
    n = latents.shape[0]
    text = text.rows(n) if text.tokens.shape[0] == 1 and n > 1 else text
    forward = model.call if isinstance(model, FrozenCopy) else model
    if not grid.packed:  # SD3: its latents as they are, the timestep in [0, 1000]
        return forward(hidden_states=latents, encoder_hidden_states=text.tokens, pooled_projections=text.pooled,
                       timestep=(sigma * 1000).expand(n).to(latents.dtype), return_dict=False)[0]  # fmt: skip
    embeds_guidance = getattr(getattr(model, "config", None), "guidance_embeds", False)
    return forward(
        hidden_states=latents,
        encoder_hidden_states=text.tokens,
        pooled_projections=text.pooled,
        timestep=sigma.expand(n).to(latents.dtype),
        img_ids=grid.image_ids(latents.device, latents.dtype),
        txt_ids=torch.zeros(text.tokens.shape[1], 3, device=latents.device, dtype=latents.dtype),
        guidance=torch.full((n,), float(guidance or 1.0), device=latents.device, dtype=latents.dtype)
        if embeds_guidance
        else None,
        return_dict=False,
    )[0]


def flow_sigmas(pipe: DiffusionPipeline, steps: int, grid: LatentGrid, device: torch.device) -> torch.Tensor:
    """The σ of FluxPipeline's ``steps``-step sampling (steps + 1 values, the last 0): ``linspace(1, 1/N, N)``,
    shifted by the scheduler for the image's token count where it uses dynamic shifting (FLUX.1); SD3's
    pipeline takes the scheduler's own grid."""
    scheduler = copy.deepcopy(pipe.scheduler)
    if not grid.packed:
        scheduler.set_timesteps(steps, device=device)
        return scheduler.sigmas.to(device, torch.float32)
    config = scheduler.config
    extra = {}
    if config.get("use_dynamic_shifting", False):
        slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
        extra["mu"] = grid.tokens * slope + config.base_shift - slope * config.base_image_seq_len
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device=device, **extra)
    return scheduler.sigmas.to(device, torch.float32)


@torch.no_grad()
def flow_partial_samples(
    run: RunContext,
    model: nn.Module | FrozenCopy,
    cond: PooledText,
    uncond: PooledText,
    guidance: float,
    steps: int,
    stop_indices: list[int],
    seeds: list[int],
    grid: LatentGrid,
    batch_size: int = 64,
    on_captured: Callable[[int], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed x_σ (n, tokens, channels) of ``guidance``-guided Euler sampling stopped after ``stop_indices[i]``
    of ``steps`` steps, and σ. Trajectory i starts from noise seeded by ``seeds[i]`` (drawn on the CPU,
    the same x_σ on every device, and the noise FluxPipeline draws from that seed); index 0 is the noise
    at σ = 1, index ``steps`` the finished sample, the pipeline's own latents."""
    if min(stop_indices) < 0 or max(stop_indices) > steps:
        raise ValueError(f"stop indices must lie in [0, {steps}]")
    sigmas = flow_sigmas(run.pipe, steps, grid, run.device)
    distilled = bool(getattr(getattr(model, "config", None), "guidance_embeds", False))

    def step(latents: torch.Tensor, k: int) -> torch.Tensor:
        n, sigma = len(latents), sigmas[k : k + 1]
        if distilled:  # FLUX.1-dev: the guidance is an input, one call
            velocity = predict_velocity(model, latents, sigma, cond.rows(n), grid, guidance).float()
        else:  # true classifier-free guidance
            both = predict_velocity(model, torch.cat([latents, latents]), sigma, PooledText.cat([uncond.rows(n), cond.rows(n)]),
                                    grid).float()  # fmt: skip
            v_uncond, v_cond = both.chunk(2)
            velocity = v_uncond + guidance * (v_cond - v_uncond)
        return (latents.float() + (sigmas[k + 1] - sigmas[k]) * velocity).to(run.dtype)

    # each trajectory's noise as FluxPipeline draws it (latent channels × 2h × 2w), packed into tokens
    stops = torch.tensor(stop_indices, device=run.device)
    out = stopped_trajectories(seeds, stops, batch_size, grid.latent_shape,
                               lambda noise: grid.pack(noise.to(run.device, run.dtype)), step, on_captured, on_step)  # fmt: skip
    return out, sigmas[stops]
