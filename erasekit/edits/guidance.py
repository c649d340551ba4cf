"""Inference-time erasure: pipelines that steer sampling away from a concept without changing weights.

Safe Latent Diffusion (Schramowski et al., CVPR 2023) is hosted by diffusers' own
``StableDiffusionPipelineSafe``, built on the components of the user's pipeline (the same modules,
nothing copied): at every step after a warm-up it adds safety guidance away from the safety
concept's noise prediction wherever the prompt's prediction comes close to it. An edit whose card
carries ``"inference": {"sld": {...}}`` is applied by returning such a pipeline.

SPM's facilitated transport (``"inference": {"spm": {...}}``) is the other kind: the base weights stay,
and the edit's adapters act per prompt (:mod:`erasekit.edits.transport`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits import Edit

SLD_SETTINGS = ("sld_guidance_scale", "sld_warmup_steps", "sld_threshold", "sld_momentum_scale", "sld_mom_beta")


def guided_pipeline(pipe: DiffusionPipeline, edit: Edit) -> DiffusionPipeline:
    """``pipe``'s components in the pipeline that ``edit``'s card entry "inference" asks for."""
    inference = edit.inference or {}
    if len(inference) != 1 or next(iter(inference)) not in ("sld", "spm"):
        raise ErasekitError(f"unknown inference-time guidance {', '.join(inference)}; this erasekit knows 'sld' and 'spm'")
    if "sld" in inference:
        return safe_latent_diffusion(pipe, inference["sld"])
    from erasekit.edits.transport import adapters_from_flat, transported_pipeline

    spm = inference["spm"]
    return transported_pipeline(pipe, adapters_from_flat(edit.adapters, spm["concepts"]), spm.get("metric", "clipcos_tokenuni"))


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
