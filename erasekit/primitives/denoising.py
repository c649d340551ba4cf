"""How a family's denoiser is conditioned, called and fed x_t: one interface for UNets and flow transformers.

A fine-tuning method needs these things of the model: the conditioning of a prompt, the
denoiser's prediction at (x_t, t, conditioning), several conditionings as one batch, a plan of x_t
drawn from the original model's own guided sampling (ESD and the methods trained on its target),
and for the methods that train on the original model's finished images (AC, MACE) those images,
their noising at a random t and what the denoiser should predict there.
:class:`UNetDenoising` answers them for SD's UNets (token states, ε or v prediction, the pipeline's
scheduler), :class:`SDXLDenoising` for SDXL's (a pooled vector and the added time ids beside the
token states), :class:`FlowDenoising` for FLUX's and SD3's transformers (token states and a pooled
vector, the flow velocity, the Euler σ grid). :func:`denoising` picks the one of the run's family.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from erasekit.primitives.diffusion import FrozenCopy, latent_shape, partial_samples, pipeline_images, predict
from erasekit.primitives.flow import flow_partial_samples, flow_text, latent_grid, predict_velocity
from erasekit.primitives.prompt_cache import PooledText
from erasekit.primitives.xt_plan import XtPoint, concept_plan, plan_xt

if TYPE_CHECKING:
    from erasekit.concepts import EraseSpec
    from erasekit.primitives.run import RunContext


class UNetDenoising:
    """SD's UNets: a prompt's conditioning is its token states (1, L, d)."""

    def __init__(self, run: RunContext) -> None:
        self.run = run

    def conditioning(self, prompts: list[str]) -> Any:
        """The conditioning of ``prompts`` in the run's device and dtype."""
        return self.run.states(prompts)

    def sample(
        self,
        cond: Any,
        uncond: Any,
        guidance: float,
        steps: int,
        stops: list[int],
        seeds: list[int],
        on_captured: Any = None,
        on_step: Any = None,
        model: nn.Module | FrozenCopy | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt's guided trajectories from the model as it is (or ``model``: its frozen original), stopped
        where asked: (x_t, t)."""
        return partial_samples(self.run.pipe, self.run.denoiser if model is None else model, cond, uncond, guidance, steps, stops, seeds,
                               on_captured=on_captured, on_step=on_step)  # fmt: skip

    def timesteps(self, size: int, generator: torch.Generator) -> torch.Tensor:
        """``size`` training timesteps, uniform over the scheduler's (drawn on the CPU: one seed, every device)."""
        count = self.run.pipe.scheduler.config.num_train_timesteps
        return self.training_time(torch.randint(0, count, (size,), generator=generator, device="cpu").to(self.run.device))

    def training_time(self, k: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` takes for training timestep k = 0…N−1: the timestep itself."""
        return k

    def noised(self, x_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t of clean latents ``x_0`` at timesteps ``t``, in the form :meth:`predict` reads."""
        return self.run.pipe.scheduler.add_noise(x_0, noise, t)

    def noise_target(self, x_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser should predict at :meth:`noised`'s x_t: the noise, or v = √ᾱ·ε − √(1−ᾱ)·x₀ for a
        v-prediction model (SD 2.x at 768 px)."""
        if self.run.pipe.scheduler.config.get("prediction_type", "epsilon") != "v_prediction":
            return noise
        alpha_bar = self.run.pipe.scheduler.alphas_cumprod.to(x_0.device)[t].float().reshape(-1, *[1] * (x_0.dim() - 1))
        return (alpha_bar.sqrt() * noise.float() - (1 - alpha_bar).sqrt() * x_0.float()).to(noise.dtype)

    def image_size(self) -> dict[str, int]:
        """The ``height`` and ``width`` to ask the pipeline for, so that its latents are those this interface
        trains on (none: a UNet's pipeline draws at its native size, as its x_t plan does)."""
        return {}

    @torch.no_grad()
    def images(self, cond: Any, uncond: Any, seeds: list[int], steps: int, guidance: float) -> np.ndarray:
        """uint8 images of one prompt's conditioning ``cond`` (one row), one per seed, from the pipeline's own
        sampler guided against ``uncond``: token states, or a pooled vector beside them."""
        n = len(seeds)
        if not isinstance(cond, PooledText):
            return pipeline_images(self.run.pipe, seeds, steps, guidance, prompt_embeds=cond.expand(n, -1, -1),
                                   negative_prompt_embeds=uncond.expand(n, -1, -1))  # fmt: skip
        cond, uncond = cond.rows(n), uncond.rows(n)
        return pipeline_images(self.run.pipe, seeds, steps, guidance, prompt_embeds=cond.tokens, pooled_prompt_embeds=cond.pooled,
                               negative_prompt_embeds=uncond.tokens, negative_pooled_prompt_embeds=uncond.pooled,
                               **self.image_size())  # fmt: skip

    def start_noise(self, seed: int) -> torch.Tensor:
        """The noise the sampler's trajectory of ``seed`` started from, unscaled (1, …), as the plan drew it on the CPU."""
        start = torch.randn(latent_shape(self.run.pipe)[1:], generator=torch.Generator("cpu").manual_seed(seed), device="cpu")
        return start[None].to(self.run.device, self.run.dtype)

    def implied_noise(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """The noise a prediction at (x_t, t) stands for: an ε-prediction is that noise already."""
        return prediction

    def predicted_x0(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """x̂₀ of a prediction at :meth:`noised`'s x_t, in float32 (the DDPM step's ``pred_original_sample``):
        (x_t − √(1−ᾱ_t) ε) / √ᾱ_t, or √ᾱ_t x_t − √(1−ᾱ_t) v on a v-prediction model."""
        alpha = self.run.pipe.scheduler.alphas_cumprod.to(x_t.device)[t].float().view(-1, 1, 1, 1)
        if self.run.pipe.scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
            return alpha.sqrt() * x_t.float() - (1 - alpha).sqrt() * prediction.float()
        return (x_t.float() - (1 - alpha).sqrt() * prediction.float()) / alpha.sqrt()

    def latent_layout(self) -> tuple[int, int]:
        """(channels, side) of one image's latents as :meth:`image_latents` lays them out."""
        return self.run.pipe.unet.config.in_channels, self.run.pipe.unet.config.sample_size

    def image_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents as images (B, C, H, W): a UNet's already are."""
        return latents

    @torch.no_grad()
    def decode(self, x_0: torch.Tensor) -> torch.Tensor:
        """Clean latents as images in [-1, 1] (B, 3, H, W)."""
        vae = self.run.pipe.vae
        latents = x_0.to(vae.dtype) / vae.config.scaling_factor + (vae.config.get("shift_factor") or 0.0)
        return vae.decode(latents, return_dict=False)[0]

    def plan(
        self, spec: EraseSpec, guidance: float, steps: int, count: int, rng: random.Random
    ) -> tuple[dict[str, Any], list[XtPoint]]:
        """The conditioning of "", every target, anchor and preserve concept, and ``count`` x_t points of the
        targets in turn (:func:`~erasekit.primitives.xt_plan.concept_plan`)."""
        return concept_plan(self.run, spec, guidance, steps, count, rng)

    def plan_prompts(
        self, conds: list[Any], uncond: Any, guidance: float, steps: int, count: int, choose: Any, rng: random.Random
    ) -> list[XtPoint]:
        """``count`` x_t points of the conditionings ``conds``, step k about ``conds[choose(k)]``, from the
        original model's guided sampling (:func:`~erasekit.primitives.xt_plan.plan_xt`)."""
        return plan_xt(self.run, self.run.denoiser, conds, uncond, guidance, steps, count, choose, rng)

    def predict(self, model: nn.Module | FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's (or its frozen original's) prediction."""
        return predict(model, x_t, t, cond)

    def cat(self, conds: list[Any]) -> Any:
        """Several conditionings as one batch."""
        return torch.cat(conds)


class PooledDenoising(UNetDenoising):
    """The families whose conditioning carries a pooled vector beside the token states
    (:class:`~erasekit.primitives.prompt_cache.PooledText`): one plan, their own encoding and sampler."""

    def plan(
        self, spec: EraseSpec, guidance: float, steps: int, count: int, rng: random.Random
    ) -> tuple[dict[str, Any], list[XtPoint]]:
        """As :meth:`UNetDenoising.plan`, with this family's conditioning and sampler (the same draws from ``rng``)."""
        prompts = list(dict.fromkeys(["", *spec.targets, *spec.anchors, *spec.preserve]))
        encoded = self.conditioning(prompts)
        texts = {p: encoded[i : i + 1] for i, p in enumerate(prompts)}
        points = self.plan_prompts([texts[t] for t in spec.targets], texts[""], guidance, steps, count,
                                   lambda k: k % len(spec.targets), rng)  # fmt: skip
        return texts, points

    def plan_prompts(
        self, conds: list[Any], uncond: Any, guidance: float, steps: int, count: int, choose: Any, rng: random.Random
    ) -> list[XtPoint]:
        """As :meth:`UNetDenoising.plan_prompts`, the trajectories from this family's own sampler."""

        def sampler(cond: PooledText, stops: list[int], seeds: list[int], on_captured: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return self.sample(cond, uncond, guidance, steps, stops, seeds, on_captured)

        return plan_xt(self.run, self.run.denoiser, conds, uncond, guidance, steps, count, choose, rng, sampler=sampler)

    def cat(self, conds: list[Any]) -> Any:
        """Several conditionings as one batch."""
        return PooledText.cat(conds)


class FlowDenoising(PooledDenoising):
    """FLUX's transformer: token states (T5) and the pooled vector (CLIP), the velocity on packed latents
    at σ, x_t from the Euler sampler (guided for real, or by the guidance embedding of a distilled
    transformer). SD3's MMDiT the same way on its unpacked latents (its joint CLIP + T5 sequence and
    both CLIPs' pooled vectors; :mod:`erasekit.primitives.flow`)."""

    def __init__(self, run: RunContext) -> None:
        super().__init__(run)
        self.grid = latent_grid(run.pipe)

    def conditioning(self, prompts: list[str]) -> PooledText:
        """FLUX's encoding of ``prompts`` (:func:`~erasekit.primitives.flow.flow_text`)."""
        return flow_text(self.run, prompts)

    def sample(
        self,
        cond: PooledText,
        uncond: PooledText,
        guidance: float,
        steps: int,
        stops: list[int],
        seeds: list[int],
        on_captured: Any = None,
        on_step: Any = None,
        model: nn.Module | FrozenCopy | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Euler flow sampler (:func:`~erasekit.primitives.flow.flow_partial_samples`): packed (x_σ, σ)."""
        return flow_partial_samples(self.run, self.run.denoiser if model is None else model, cond, uncond, guidance, steps, stops, seeds, self.grid,
                                    on_captured=on_captured, on_step=on_step)  # fmt: skip

    def predict(self, model: nn.Module | FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The transformer's (or its frozen original's) velocity; ``t`` is σ, one for all rows or one per row."""
        return predict_velocity(model, x_t, t.reshape(-1), cond, self.grid)

    def image_size(self) -> dict[str, int]:
        """The size of the latent grid in pixels (FLUX.1: 512, not the pipeline's default 1024)."""
        side = self.grid.latent_shape[-1] * self.run.pipe.vae_scale_factor
        return {"height": side, "width": side}

    def start_noise(self, seed: int) -> torch.Tensor:
        """The packed noise the Euler trajectory of ``seed`` started from at σ = 1."""
        start = torch.randn(self.grid.latent_shape, generator=torch.Generator("cpu").manual_seed(seed), device="cpu")
        return self.grid.pack(start[None].to(self.run.device, self.run.dtype))

    def implied_noise(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """ε̂ = x_σ + (1 − σ)·v: where the velocity ``prediction`` at (x_σ, σ) says the path started."""
        return x_t + (1 - t.reshape(-1, *[1] * (x_t.dim() - 1)).to(x_t.dtype)) * prediction

    def predicted_x0(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """x̂₀ = x_σ − σ·v: where the velocity ``prediction`` at (x_σ, σ) says the path ends, in float32."""
        return x_t.float() - t.float().reshape(-1, *[1] * (x_t.dim() - 1)) * prediction.float()

    def latent_layout(self) -> tuple[int, int]:
        """(channels, side) of one image's unpacked latents."""
        return self.grid.latent_shape[0], self.grid.latent_shape[-1]

    def image_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents (B, tokens, C·4) as images (B, C, H, W); SD3's are images already."""
        return self.grid.unpack(latents)

    def training_time(self, k: torch.Tensor) -> torch.Tensor:
        """σ = (k + 1) / N for training timestep k = 0…N−1: the flow's noise level, never 0."""
        return (k + 1).float() / self.run.pipe.scheduler.config.num_train_timesteps

    def noised(self, x_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_σ = (1 − σ)·x₀ + σ·ε on packed latents."""
        sigma = t.float().reshape(-1, *[1] * (x_0.dim() - 1))
        return ((1 - sigma) * x_0.float() + sigma * noise.float()).to(x_0.dtype)

    def noise_target(self, x_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity v = ε − x₀ of the straight path."""
        return (noise.float() - x_0.float()).to(noise.dtype)

    @torch.no_grad()
    def decode(self, x_0: torch.Tensor) -> torch.Tensor:
        """Packed clean latents as images in [-1, 1]."""
        return super().decode(self.grid.unpack(x_0))


class SDXLDenoising(PooledDenoising):
    """SDXL's UNet: both encoders' token states and the second's pooled vector, with the added time ids of
    its native size (no crop), as ``esd_sdxl.py`` conditions it; x_t from the pipeline's own scheduler.
    Training predictions get the scheduler's input scaling (x·√ᾱ_t for SDXL's Euler sampler), which the
    official script leaves out."""

    def __init__(self, run: RunContext) -> None:
        super().__init__(run)
        pipe = run.pipe
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.time_ids = pipe._get_add_time_ids(
            (size, size),
            (0, 0),
            (size, size),
            dtype=run.dtype,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
        ).to(run.device)
        scaled = float(pipe.scheduler.init_noise_sigma) != 1.0  # Euler-type samplers work on σ-scaled latents
        self.input_scale = pipe.scheduler.alphas_cumprod.to(run.device).sqrt() if scaled else None

    @torch.no_grad()
    def conditioning(self, prompts: list[str]) -> PooledText:
        """SDXL's ``encode_prompt`` (the empty prompt encoded, as ``esd_sdxl.py`` passes ``negative_prompt=""``)."""
        tokens, _, pooled, _ = self.run.pipe.encode_prompt(
            list(prompts), device=self.run.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return PooledText(tokens.to(self.run.dtype), pooled.to(self.run.dtype))

    def unet_call(self, model: nn.Module | FrozenCopy, model_in: torch.Tensor, t: torch.Tensor, cond: PooledText) -> torch.Tensor:
        """The UNet (or its frozen original) at an already scaled input."""
        n = model_in.shape[0]
        cond = cond.rows(n) if cond.tokens.shape[0] == 1 and n > 1 else cond
        added = {"text_embeds": cond.pooled, "time_ids": self.time_ids.expand(n, -1)}
        forward = model.call if isinstance(model, FrozenCopy) else model
        return forward(model_in, t, encoder_hidden_states=cond.tokens, added_cond_kwargs=added, return_dict=False)[0]

    def sample(
        self,
        cond: PooledText,
        uncond: PooledText,
        guidance: float,
        steps: int,
        stops: list[int],
        seeds: list[int],
        on_captured: Any = None,
        on_step: Any = None,
        model: nn.Module | FrozenCopy | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's scheduler (:func:`~erasekit.primitives.diffusion.partial_samples`): (x_t, t)."""
        model = self.run.denoiser if model is None else model
        return partial_samples(self.run.pipe, model, cond, uncond, guidance, steps, stops, seeds, on_captured=on_captured,
                               on_step=on_step, predict_fn=lambda x, t, c: self.unet_call(model, x, t, c))  # fmt: skip

    def noised(self, x_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t as the sampler holds it: x₀ + σ_t·ε for an Euler-type sampler (:meth:`predict` scales it by √ᾱ_t),
        the DDPM form otherwise."""
        if self.input_scale is None:
            return super().noised(x_0, noise, t)
        alpha_bar = self.input_scale[t.long()].float().square().reshape(-1, *[1] * (x_0.dim() - 1))
        return (x_0.float() + ((1 - alpha_bar) / alpha_bar).sqrt() * noise.float()).to(x_0.dtype)

    def predicted_x0(self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """x̂₀ of an ε-prediction at :meth:`noised`'s x_t: x_t − σ_t·ε for an Euler-type sampler's x₀ + σ_t·ε,
        the DDPM form otherwise."""
        if self.input_scale is None:
            return super().predicted_x0(x_t, t, prediction)
        alpha_bar = self.input_scale[t.long()].float().square().reshape(-1, *[1] * (x_t.dim() - 1))
        return x_t.float() - ((1 - alpha_bar) / alpha_bar).sqrt() * prediction.float()

    def predict(self, model: nn.Module | FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's (or its frozen original's) prediction at x_t, scaled as the sampler scales it."""
        if self.input_scale is not None:
            x_t = x_t * self.input_scale[t.round().long()].reshape(-1, 1, 1, 1).to(x_t.dtype)  # one t, or one per row
        return self.unet_call(model, x_t, t, cond)


def denoising(run: RunContext) -> UNetDenoising:
    """The denoising interface of the run's model family."""
    return {"flux": FlowDenoising, "sd3": FlowDenoising, "sdxl": SDXLDenoising}.get(run.family.name, UNetDenoising)(run)
