"""Inference-time erasure: pipelines that steer sampling away from a concept without changing weights.

Safe Latent Diffusion (Schramowski et al., CVPR 2023) is hosted on SD 1.x/2.x by diffusers' own
``StableDiffusionPipelineSafe``, built on the components of the user's pipeline (the same modules,
nothing copied): at every step after a warm-up it adds safety guidance away from the safety
concept's noise prediction wherever the prompt's prediction comes close to it. An edit whose card
carries ``"inference": {"sld": {...}}`` is of the kind :data:`SAFE_LATENT_DIFFUSION`: it has no
weights, and applying it returns such a pipeline; no export format carries it.

diffusers has no such pipeline for SDXL or FLUX. There the safety term goes into the pipeline's own
guidance through a forward hook on its denoiser (:class:`SafetyGuidance`): the conditional prediction
ε_c comes back as ε_c − γ, so that the pipeline's ε_u + g (ε_c − γ − ε_u) is SLD's equation 3,

    γ = μ ⊙ (ε_S − ε_u) + s_m ν,   μ = clamp(s_S |ε_c − ε_S|, ≤ 1) where ε_c − ε_S < λ, else 0,
    ν ← β_m ν + (1 − β_m) γ,       applied from step δ on,

as diffusers computes it (on SD the hook draws what ``StableDiffusionPipelineSafe`` draws, tested).
SDXL's UNet is called once a step on [uncond; cond], and the safety prediction is one more call.
FLUX's transformer is called for the conditional, then the unconditional prediction (told apart by
their text states), and the conditional call makes the unconditional and safety predictions too: four
calls a step, where SLD needs three and the plain pipeline makes two. A FLUX.1-dev, whose guidance is
distilled into an embedding, has no unconditional prediction to steer from and is refused.

SPM's facilitated transport (``"inference": {"spm": {...}}``) is the other kind that changes how to
sample: the base weights stay, and the edit's adapters act per prompt (:mod:`erasekit.edits.transport`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from erasekit.edits.kind import NO_WEIGHTS, EditKind, is_number, register_kind, shown
from erasekit.errors import ErasekitError
from erasekit.primitives.prompt_cache import PooledText, token_states

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

SLD_SETTINGS = ("sld_guidance_scale", "sld_warmup_steps", "sld_threshold", "sld_momentum_scale", "sld_mom_beta")


def safe_latent_diffusion(pipe: DiffusionPipeline, settings: dict[str, Any]) -> DiffusionPipeline:
    """A StableDiffusionPipelineSafe on ``pipe``'s modules whose calls default to ``settings`` (the SLD
    hyper-parameters and ``safety_concept``); on SDXL and FLUX, :func:`safety_guided_pipeline`."""
    from diffusers import StableDiffusionPipelineSafe
    from diffusers.utils import logging

    from erasekit.models.families import pipeline_family

    if pipeline_family(pipe).name != "sd" or getattr(pipe, "text_encoder_2", None) is not None:
        return safety_guided_pipeline(pipe, settings)
    defaults = {k: settings[k] for k in SLD_SETTINGS}

    class SafeLatentDiffusion(StableDiffusionPipelineSafe):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return super().__call__(*args, **{**defaults, **kwargs})

    components = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # its deprecation notice and the missing safety checker are by design here
    try:
        safe = SafeLatentDiffusion(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    finally:
        logging.set_verbosity(verbosity)
    safe.safety_concept = settings["safety_concept"]
    safe.set_progress_bar_config(disable=True)
    return safe


class SafetyGuidance:
    """SLD's safety term on a UNet's or FLUX transformer's conditional predictions, through a forward hook
    on the pipeline's own denoiser (the module stays what it is; :meth:`remove` takes the hook off)."""

    def __init__(self, denoiser: nn.Module, family: str, settings: dict[str, Any], safety: Any, uncond: Any) -> None:
        self.family, self.settings = family, settings
        self.safety, self.uncond = safety, uncond  # conditionings (token states; with a pooled vector beside them)
        self.handle = denoiser.register_forward_hook(self.hook, with_kwargs=True)
        self.busy = False  # inside the hook's own calls of the denoiser
        self.reset(active=False)

    def reset(self, active: bool) -> None:
        """A new sampling run (step 0, no momentum), steered when ``active`` (a guided call of its pipeline)."""
        self.step, self.momentum, self.active = 0, None, active

    def remove(self) -> None:
        """Take the hook off the denoiser."""
        self.handle.remove()

    def term(self, eps_u: torch.Tensor, eps_c: torch.Tensor, eps_s: torch.Tensor) -> torch.Tensor:
        """γ for this step (zero before the warm-up ends), the momentum carried on (diffusers' equations 3–8)."""
        s = self.settings
        if self.momentum is None:
            self.momentum = torch.zeros_like(eps_c)
        scale = torch.clamp(torch.abs(eps_c - eps_s) * s["sld_guidance_scale"], max=1.0)
        scale = torch.where(eps_c - eps_s >= s["sld_threshold"], torch.zeros_like(scale), scale)
        gamma = (eps_s - eps_u) * scale + s["sld_momentum_scale"] * self.momentum
        self.momentum = s["sld_mom_beta"] * self.momentum + (1 - s["sld_mom_beta"]) * gamma
        step, self.step = self.step, self.step + 1
        return gamma if step >= s["sld_warmup_steps"] else torch.zeros_like(gamma)

    def hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """The denoiser's output with −γ on the conditional prediction (None: as it is)."""
        if not self.active or self.busy:
            return None
        self.busy = True
        try:
            prediction = output[0] if isinstance(output, tuple) else output.sample
            guided = (
                self._flux(module, kwargs, prediction) if self.family == "flux" else self._unet(module, args, kwargs, prediction)
            )
        finally:
            self.busy = False
        if guided is None:
            return None
        return (guided, *output[1:]) if isinstance(output, tuple) else type(output)(sample=guided)

    def _unet(self, unet: nn.Module, args: tuple, kwargs: dict, prediction: torch.Tensor) -> torch.Tensor | None:
        """SD's and SDXL's UNet on [uncond; cond]: the safety prediction on the cond half's latents, −γ on that half."""
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        if sample.shape[0] % 2:  # not a guided batch
            return None
        n = sample.shape[0] // 2
        call = {k: v for k, v in kwargs.items() if k not in ("sample", "timestep")}
        safety = token_states(self.safety)
        call["encoder_hidden_states"] = safety.expand(n, -1, -1).to(kwargs["encoder_hidden_states"].dtype)
        if isinstance(self.safety, PooledText):  # SDXL: the safety concept's pooled vector, the prompt's time ids
            added = kwargs["added_cond_kwargs"]
            call["added_cond_kwargs"] = {**{k: v[n:] for k, v in added.items()},
                                         "text_embeds": self.safety.pooled.expand(n, -1).to(added["text_embeds"].dtype)}  # fmt: skip
        if torch.is_tensor(timestep) and timestep.numel() > 1:
            timestep = timestep[n:]
        eps_s = unet(sample[n:], timestep, *args[2:], **{**call, "return_dict": False})[0]
        eps_u, eps_c = prediction.chunk(2)
        return torch.cat([eps_u, eps_c - self.term(eps_u, eps_c, eps_s)])

    def _flux(self, transformer: nn.Module, kwargs: dict, eps_c: torch.Tensor) -> torch.Tensor | None:
        """FLUX's transformer, called for cond and then uncond: the cond call gets −γ (and makes ε_u and ε_S)."""
        tokens = kwargs["encoder_hidden_states"]
        if torch.allclose(tokens[:1].float(), self.uncond.tokens[:1].float(), atol=1e-3):  # the unconditional call
            return None
        n = tokens.shape[0]

        def predict(cond: PooledText) -> torch.Tensor:
            call = {**kwargs, "encoder_hidden_states": cond.tokens.expand(n, -1, -1).to(tokens.dtype),
                    "pooled_projections": cond.pooled.expand(n, -1).to(tokens.dtype), "return_dict": False}  # fmt: skip
            return transformer(**call)[0]

        return eps_c - self.term(predict(self.uncond), eps_c, predict(self.safety))


def check_sld_family(pipe: object) -> None:
    """Refuse, in one line, a pipeline whose guidance SLD cannot steer: SD3, and a FLUX transformer whose
    guidance is distilled into an embedding (FLUX.1-dev)."""
    from erasekit.models.families import denoiser, pipeline_family

    family = pipeline_family(pipe).name
    if family == "flux" and getattr(denoiser(pipe).config, "guidance_embeds", False):
        raise ErasekitError(
            "SLD steers classifier-free guidance, and this FLUX transformer's guidance is distilled into an embedding "
            "(FLUX.1-dev): it has no unconditional prediction to steer away from"
        )
    if family not in ("sd", "sdxl", "flux"):
        raise ErasekitError(f"Safe Latent Diffusion runs on SD 1.x/2.x, SDXL and FLUX pipelines, not {type(pipe).__name__}")


def safety_guided_pipeline(pipe: DiffusionPipeline, settings: dict[str, Any]) -> DiffusionPipeline:
    """A pipeline of ``pipe``'s class on its modules, its denoiser wrapped in :class:`SafetyGuidedDenoiser`;
    its calls start the safety term afresh and default to ``settings``' safety concept."""
    import inspect

    from erasekit.models.families import pipeline_family
    from erasekit.primitives.denoising import denoising
    from erasekit.primitives.run import RunContext

    check_sld_family(pipe)
    family = pipeline_family(pipe)
    conditioning = denoising(RunContext(pipe, progress=False)).conditioning
    with torch.no_grad():
        safety, uncond = conditioning([settings["safety_concept"]]), conditioning([""])
    guidance = SafetyGuidance(getattr(pipe, family.denoiser), family.name, settings, safety, uncond)
    defaults = {k: v.default for k, v in inspect.signature(type(pipe).__call__).parameters.items()}

    class SafetyGuided(type(pipe)):  # type: ignore[misc, valid-type]
        safety_guidance = guidance

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            given = {**defaults, **kwargs}
            if family.name == "flux":  # FluxPipeline guides for real only with a scale and a negative prompt
                negative = given.get("negative_prompt") is not None or given.get("negative_prompt_embeds") is not None
                guided = given["true_cfg_scale"] > 1 and negative
            else:
                guided = given["guidance_scale"] > 1
            guidance.reset(active=guided)
            try:
                return super().__call__(*args, **kwargs)
            finally:
                guidance.active = False  # the base pipeline shares the denoiser: its own calls stay unsteered

    configs = {k: pipe.config[k] for k in ("force_zeros_for_empty_prompt",) if k in pipe.config}
    guided = SafetyGuided(**pipe.components, **configs)
    guided.set_progress_bar_config(disable=True)
    return guided


class SamplingGuidance(EditKind):
    """SLD: no weights, a card entry of the pipeline's settings (``SLD_SETTINGS`` and ``safety_concept``),
    applied as :func:`safe_latent_diffusion` on the pipeline's modules."""

    name = "sld"
    at_sampling = True
    reads_prompt_text = True

    def check_card(self, card: dict, where: object) -> None:
        """Refuse an ``inference.sld`` that is not an object of numbers and a safety concept."""
        if not self.named_in(card):
            return
        settings = self.entry(card)
        if not isinstance(settings, dict):
            raise ErasekitError(f"{where}: inference.sld should be an object of SLD settings, not {shown(settings)}")
        for key in SLD_SETTINGS:
            if not is_number(settings.get(key)):
                raise ErasekitError(f"{where}: inference.sld.{key} should be a number, not {shown(settings.get(key))}")
        if not isinstance(settings.get("safety_concept"), str):
            raise ErasekitError(
                f"{where}: inference.sld.safety_concept should be text, not {shown(settings.get('safety_concept'))}"
            )

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """A StableDiffusionPipelineSafe on ``pipe``'s modules, sampling with the card's settings."""
        return safe_latent_diffusion(pipe, self.entry(edit.card))

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """The safety hook off the shared denoiser (SDXL, FLUX; SD's safe pipeline adds none)."""
        guidance = getattr(erased, "safety_guidance", None)
        if guidance is not None:
            guidance.remove()

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: the edit is how to sample, with no weights for any format to carry."""
        return NO_WEIGHTS


SAFE_LATENT_DIFFUSION = register_kind(SamplingGuidance())
