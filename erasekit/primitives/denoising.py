"""How a family's denoiser is conditioned, called and fed x_t: one interface for UNets and flow transformers.

A fine-tuning method (ESD and the methods trained on its target) needs four things of the model:
the conditioning of a prompt, the denoiser's prediction at (x_t, t, conditioning), several
conditionings as one batch, and a plan of x_t drawn from the original model's own guided sampling.
:class:`UNetDenoising` answers them for SD's UNets (token states, ε or v prediction, the pipeline's
scheduler), :class:`SDXLDenoising` for SDXL's (a pooled vector and the added time ids beside the
token states), :class:`FlowDenoising` for FLUX's transformer (token states and a pooled vector, the
flow velocity on packed latents, the Euler σ grid). :func:`denoising` picks the one of the run's family.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from erasekit.primitives.diffusion import FrozenCopy, partial_samples, predict
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

    def plan(
        self, spec: EraseSpec, guidance: float, steps: int, count: int, rng: random.Random
    ) -> tuple[dict[str, Any], list[XtPoint]]:
        """The conditioning of "", every target, anchor and preserve concept, and ``count`` x_t points of the
        targets in turn (:func:`~erasekit.primitives.xt_plan.concept_plan`)."""
        return concept_plan(self.run, spec, guidance, steps, count, rng)

    def predict(self, model: nn.Module | FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's (or its frozen original's) prediction."""
        return predict(model, x_t, t, cond)

    def cat(self, conds: list[Any]) -> Any:
        """Several conditionings as one batch."""
        return torch.cat(conds)


class PooledDenoising(UNetDenoising):
    """The families whose conditioning carries a pooled vector beside the token states
    (:class:`~erasekit.primitives.prompt_cache.PooledText`): one plan, their own encoding and sampler."""

    def conditioning(self, prompts: list[str]) -> PooledText:
        """The conditioning of ``prompts`` in the run's device and dtype."""
        raise NotImplementedError

    def sample(
        self,
        cond: PooledText,
        uncond: PooledText,
        guidance: float,
        steps: int,
        stops: list[int],
        seeds: list[int],
        on_captured: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt's guided trajectories from the original model, stopped where asked: (x_t, t)."""
        raise NotImplementedError

    def plan(
        self, spec: EraseSpec, guidance: float, steps: int, count: int, rng: random.Random
    ) -> tuple[dict[str, Any], list[XtPoint]]:
        """As :meth:`UNetDenoising.plan`, with this family's conditioning and sampler (the same draws from ``rng``)."""
        prompts = list(dict.fromkeys(["", *spec.targets, *spec.anchors, *spec.preserve]))
        encoded = self.conditioning(prompts)
        texts = {p: encoded[i : i + 1] for i, p in enumerate(prompts)}

        def sampler(cond: PooledText, stops: list[int], seeds: list[int], on_captured: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return self.sample(cond, texts[""], guidance, steps, stops, seeds, on_captured)

        points = plan_xt(self.run, self.run.denoiser, [texts[t] for t in spec.targets], texts[""], guidance, steps, count,
                         lambda k: k % len(spec.targets), rng, sampler=sampler)  # fmt: skip
        return texts, points

    def cat(self, conds: list[Any]) -> Any:
        """Several conditionings as one batch."""
        return PooledText.cat(conds)


class FlowDenoising(PooledDenoising):
    """FLUX's transformer: token states (T5) and the pooled vector (CLIP), the velocity on packed latents
    at σ, x_t from the Euler sampler (guided for real, or by the guidance embedding of a distilled
    transformer)."""

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
        on_captured: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Euler flow sampler (:func:`~erasekit.primitives.flow.flow_partial_samples`): (x_σ, σ)."""
        return flow_partial_samples(self.run, self.run.denoiser, cond, uncond, guidance, steps, stops, seeds, self.grid,
                                    on_captured=on_captured)  # fmt: skip

    def predict(self, model: nn.Module | FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The transformer's (or its frozen original's) velocity."""
        return predict_velocity(model, x_t, t.reshape(1), cond, self.grid)


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
        on_captured: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's scheduler (:func:`~erasekit.primitives.diffusion.partial_samples`): (x_t, t)."""
        model = self.run.denoiser
        return partial_samples(self.run.pipe, model, cond, uncond, guidance, steps, stops, seeds, on_captured=on_captured,
                               predict_fn=lambda x, t, c: self.unet_call(model, x, t, c))  # fmt: skip

    def predict(self, model: nn.Module | FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The UNet's (or its frozen original's) prediction at x_t, scaled as the sampler scales it."""
        if self.input_scale is not None:
            x_t = x_t * self.input_scale[t.round().long()].to(x_t.dtype)
        return self.unet_call(model, x_t, t, cond)


def denoising(run: RunContext) -> UNetDenoising:
    """The denoising interface of the run's model family."""
    return {"flux": FlowDenoising, "sdxl": SDXLDenoising}.get(run.family.name, UNetDenoising)(run)
