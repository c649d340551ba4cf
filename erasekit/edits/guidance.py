"""Inference-time erasure: pipelines that steer sampling away from a concept without changing weights.

Safe Latent Diffusion (Schramowski et al., CVPR 2023) is hosted by diffusers' own
``StableDiffusionPipelineSafe``, built on the components of the user's pipeline (the same modules,
nothing copied): at every step after a warm-up it adds safety guidance away from the safety
concept's noise prediction wherever the prompt's prediction comes close to it. An edit whose card
carries ``"inference": {"sld": {...}}`` is of the kind :data:`SAFE_LATENT_DIFFUSION`: it has no
weights, and applying it returns such a pipeline; no export format carries it.

SPM's facilitated transport (``"inference": {"spm": {...}}``) is the other kind that changes how to
sample: the base weights stay, and the edit's adapters act per prompt (:mod:`erasekit.edits.transport`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from erasekit.edits.kind import NO_WEIGHTS, EditKind, is_number, register_kind, shown
from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

SLD_SETTINGS = ("sld_guidance_scale", "sld_warmup_steps", "sld_threshold", "sld_momentum_scale", "sld_mom_beta")


def safe_latent_diffusion(pipe: DiffusionPipeline, settings: dict[str, Any]) -> DiffusionPipeline:
    """A StableDiffusionPipelineSafe on ``pipe``'s modules whose calls default to ``settings`` (the SLD
    hyper-parameters and ``safety_concept``)."""
    from diffusers import StableDiffusionPipelineSafe
    from diffusers.utils import logging

    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ErasekitError("Safe Latent Diffusion runs on SD 1.x/2.x pipelines (one text encoder); this one has two (SDXL)")
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


class SamplingGuidance(EditKind):
    """SLD: no weights, a card entry of the pipeline's settings (``SLD_SETTINGS`` and ``safety_concept``),
    applied as :func:`safe_latent_diffusion` on the pipeline's modules."""

    name = "sld"
    at_sampling = True

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

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: the edit is how to sample, with no weights for any format to carry."""
        return NO_WEIGHTS


SAFE_LATENT_DIFFUSION = register_kind(SamplingGuidance())
