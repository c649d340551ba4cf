"""Noise-prediction helpers shared by the fine-tuning methods (ESD, MACE's LoRAs, RealEra's alignment).

* :class:`FrozenCopy` answers with the *original* weights of the parameters being trained, without a
  second UNet in memory: ``torch.func.functional_call`` swaps the saved originals in for one call.
* :func:`partial_samples` runs the pipeline's own scheduler from noise down to a chosen step, the
  "x_t from the model's own partial denoising" of ESD.
* :func:`pipeline_images` is seeded generation through the pipeline's own ``__call__`` (MACE's
  training images, RECE's validation images, the protocols' images): one CPU generator per image.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from erasekit.models.embedded import FLUX_IMAGE_SIZE, is_world_model
from erasekit.models.families import pipeline_family, sequence_length
from erasekit.primitives.prompt_cache import PooledText

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def predict_noise(unet: nn.Module, latents: torch.Tensor, t: torch.Tensor | int, states: torch.Tensor) -> torch.Tensor:
    """ε_θ(x_t, t, c) of an SD-style UNet, with text states broadcast over the latent batch."""
    if states.shape[0] == 1 and latents.shape[0] > 1:
        states = states.expand(latents.shape[0], -1, -1)
    return unet(latents, t, encoder_hidden_states=states, return_dict=False)[0]


class FrozenCopy:
    """The UNet as it was before training, for the parameters in ``names`` (all others are shared)."""

    def __init__(self, unet: nn.Module, names: Iterable[str]) -> None:
        self.unet = unet
        params = dict(unet.named_parameters())
        self.originals = {n: params[n].detach().clone() for n in names}

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, t: torch.Tensor | int, states: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(
            self.unet, self.originals, (latents, t), {"encoder_hidden_states": _batched(states, latents), "return_dict": False}
        )[0]

    @property
    def config(self) -> object:
        """The module's config (FLUX's ``guidance_embeds`` is read from it)."""
        return self.unet.config

    @torch.no_grad()
    def call(self, *args: object, **kwargs: object) -> object:
        """The module's forward with the original values, for any signature (FLUX's transformer is called by keywords)."""
        return torch.func.functional_call(self.unet, self.originals, args, kwargs)

    def restore(self) -> None:
        """Put the original values back into the UNet (after reading out the trained ones)."""
        params = dict(self.unet.named_parameters())
        with torch.no_grad():
            for name, value in self.originals.items():
                params[name].copy_(value)


def _batched(states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    return states.expand(latents.shape[0], -1, -1) if states.shape[0] == 1 and latents.shape[0] > 1 else states


def latent_shape(pipe: DiffusionPipeline, batch: int = 1) -> tuple[int, int, int, int]:
    """(batch, channels, size, size) of the pipeline UNet's latents at its native size."""
    size = pipe.unet.config.sample_size
    return (batch, pipe.unet.config.in_channels, size, size)


@torch.no_grad()
def partial_samples(
    pipe: DiffusionPipeline,
    denoise: nn.Module | FrozenCopy,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance: float,
    steps: int,
    stop_indices: list[int],
    seeds: list[int],
    batch_size: int = 64,
    on_captured: Callable[[int], None] | None = None,
    on_step: Callable[[], None] | None = None,
    predict_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t of classifier-free-guided sampling stopped after ``stop_indices[i]`` of ``steps`` steps, and t;
    ``on_captured(n)`` is told each time n more of them are reached, ``on_step()`` after every denoising
    step of a batch (for progress bars). ``cond`` and ``uncond`` are token states, or for SDXL a
    :class:`~erasekit.primitives.prompt_cache.PooledText` that ``predict_fn(model_in, t, cond)`` reads.

    Trajectory i starts from noise seeded by ``seeds[i]``; index 0 is pure noise at the first
    timestep and index ``steps`` the finished sample x_0 (its t is reported as 0). Trajectories run
    side by side in batches (an image never depends on its batch mates: the sampler is
    deterministic after the initial noise). A copy of the pipeline's scheduler is used, so the
    pipeline's own sampling state is untouched.
    """
    device, dtype = pipe.unet.device, pipe.unet.dtype
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps, device=device)
    if min(stop_indices) < 0 or max(stop_indices) > steps:
        raise ValueError(f"stop indices must lie in [0, {steps}]")
    stops = torch.tensor(stop_indices, device=device)
    batched: dict[int, Any] = {}  # the unconditional and conditional text of a batch of n, made once per size

    def step(latents: torch.Tensor, k: int) -> torch.Tensor:
        n = len(latents)
        if n not in batched:
            if isinstance(cond, PooledText):
                batched[n] = PooledText.cat([uncond.rows(n), cond.rows(n)])
            else:
                batched[n] = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        states = batched[n]
        t = scheduler.timesteps[k]
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = predict(denoise, model_in, t, states) if predict_fn is None else predict_fn(model_in, t, states)
        eps_uncond, eps_cond = eps.chunk(2)
        return scheduler.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, latents).prev_sample

    def begin(noise: torch.Tensor) -> torch.Tensor:
        # each batch starts the schedule again: Euler-type schedulers count their steps (SDXL's would run
        # past its last σ on a second batch); DDIM keeps no count, so this changes nothing there
        scheduler.set_timesteps(steps, device=device)
        return (noise * scheduler.init_noise_sigma).to(device, dtype)

    out = stopped_trajectories(seeds, stops, batch_size, latent_shape(pipe)[1:], begin, step, on_captured, on_step)
    return out, torch.cat([scheduler.timesteps, scheduler.timesteps.new_zeros(1)])[stops]


def stopped_trajectories(
    seeds: list[int],
    stops: torch.Tensor,
    batch_size: int,
    noise_shape: tuple[int, ...],
    begin: Callable[[torch.Tensor], torch.Tensor],
    step: Callable[[torch.Tensor, int], torch.Tensor],
    on_captured: Callable[[int], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Trajectory i, from the noise of ``seeds[i]``, taken after ``stops[i]`` sampler steps: the loop every
    family's x_t plan runs. Each noise is drawn on the CPU from its own generator (the same x_t on every
    device) and made the sampler's start by ``begin``; ``step(latents, k)`` is sampler step k. Trajectories
    run side by side in batches sorted by their stop, so that no batch runs far past its items (an
    image never depends on its batch mates: the sampler is deterministic after the initial noise)."""
    out = None
    order = torch.argsort(stops, stable=True)
    for start in range(0, len(seeds), batch_size):
        items = order[start : start + batch_size]
        chunk_stops = stops[items]
        noise = [torch.randn(noise_shape, generator=torch.Generator("cpu").manual_seed(seeds[i]), device="cpu")
                 for i in items.tolist()]  # fmt: skip
        latents = begin(torch.stack(noise))
        if out is None:
            out = latents.new_empty((len(seeds), *latents.shape[1:]))
        captured = torch.empty_like(latents)
        last = int(chunk_stops.max())
        for k in range(last + 1):
            captured[chunk_stops == k] = latents[chunk_stops == k]
            if on_captured is not None:
                on_captured(int((chunk_stops == k).sum()))
            if k == last:
                break
            latents = step(latents, k)
            if on_step is not None:
                on_step()
        out[items] = captured
    return out


def predict(denoise: nn.Module | FrozenCopy, latents: torch.Tensor, t: torch.Tensor | int, states: torch.Tensor) -> torch.Tensor:
    """The ε prediction of a UNet or a frozen copy of one at ``latents``, timestep ``t`` and text ``states``."""
    if isinstance(denoise, FrozenCopy):
        return denoise(latents, t, states)
    return predict_noise(denoise, latents, t, states)


def seeded_generators(seeds: Iterable[int]) -> list[torch.Generator]:
    """One CPU generator per image: the noise is drawn on the CPU, so a seed gives the same image on every device."""
    return [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) float images in [0, 1], as pipelines return them, to uint8."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def pipeline_images(
    pipe: DiffusionPipeline, seeds: Iterable[int], steps: int, guidance: float, output_type: str = "np", **inputs: Any
) -> Any:
    """One image per seed from the pipeline's own ``__call__`` with ``inputs`` (``prompt``, or
    ``prompt_embeds`` and ``negative_prompt_embeds``, sizes…): uint8 (B, H, W, 3) for "np", latents for "latent"."""
    inputs = {**inputs, **guidance_inputs(pipe, guidance, inputs)}
    images = pipe(**inputs, num_inference_steps=steps, generator=seeded_generators(seeds), output_type=output_type).images
    return to_uint8(images) if output_type == "np" else images


def guidance_inputs(pipe: DiffusionPipeline, guidance: float, inputs: dict[str, Any]) -> dict[str, Any]:
    """How the pipeline is asked for classifier-free ``guidance`` (and, for FLUX, its text length and size).

    SD and SDXL take ``guidance_scale``. FLUX.1-dev's transformer embeds a distilled guidance
    (``guidance_scale``); an undistilled FLUX transformer (erasekit-tiny-flux, FLUX.1-schnell's
    layout without the embedding) is guided for real: ``true_cfg_scale`` with the empty negative prompt.
    FLUX's token path is padded to :func:`~erasekit.models.families.sequence_length`, and the world's
    flow model draws at its own 64 pixels where no size is asked for. SD3 takes ``guidance_scale`` and
    pads its T5 states to the same length as the prompt cache does."""
    family = pipeline_family(pipe).name
    if family == "sd3":
        return {"guidance_scale": guidance, "max_sequence_length": sequence_length(pipe)}
    if family != "flux":
        return {"guidance_scale": guidance}
    out: dict[str, Any] = {"max_sequence_length": sequence_length(pipe)}
    if pipe.transformer.config.guidance_embeds:
        out["guidance_scale"] = guidance
    elif "prompt" in inputs:
        prompts = [inputs["prompt"]] if isinstance(inputs["prompt"], str) else inputs["prompt"]
        out.update(true_cfg_scale=guidance, negative_prompt=[""] * len(prompts))
    else:  # embeds given: the caller passes negative_prompt_embeds with them
        out["true_cfg_scale"] = guidance
    if is_world_model(pipe):
        for side in ("height", "width"):
            if inputs.get(side) is None:
                out[side] = FLUX_IMAGE_SIZE
    return out
