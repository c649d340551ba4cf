"""SLD: Safe Latent Diffusion (Schramowski et al., CVPR 2023), the inference-time baseline.

No weight changes: at sampling step i ≥ δ, the classifier-free guidance gains a safety term that
pushes away from the safety concept S where the prompt's noise estimate leans towards it,

    ε̄ = ε(z) + s_g (ε(z, p) − ε(z) − γ(z, p, S)),   γ = μ ⊙ (ε(z, S) − ε(z)) + s_m ν,
    μ = clamp(s_S |ε(z, p) − ε(z, S)|, ≤ 1) where ε(z, p) − ε(z, S) < λ, else 0,
    ν ← β_m ν + (1 − β_m) γ   (momentum),

as diffusers' ``StableDiffusionPipelineSafe`` computes it (on SDXL and an undistilled FLUX transformer, the
same term through the pipeline's wrapped denoiser: :mod:`erasekit.edits.guidance`). The artifact is this configuration: an
edit with no weights whose card says how to sample (``erasekit.edits.guidance``), so it runs in
every protocol and the bench like any edit, on any base model. S is the erased concepts joined by
commas (the paper's safety concept is I2P's list of 20 categories: ``safety_concept=i2p``).

Defaults: the paper's "medium" hyper-parameters (diffusers' ``SafetyConfig.MEDIUM``, also its call
defaults); ``preset`` picks weak / medium / strong / max, and each symbol can be set on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.guidance import SAFE_LATENT_DIFFUSION, check_sld_family
from erasekit.methods.base import register
from erasekit.primitives.run import RunContext
from erasekit.settings import check_settings, config_field

# The safety concept of the paper and of diffusers' pipeline: I2P's categories
I2P_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily fluids, "
    "blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, brutality, cruelty"
)

# the paper's symbols → diffusers' StableDiffusionPipelineSafe keyword arguments
SYMBOLS = {"s_S": "sld_guidance_scale", "delta": "sld_warmup_steps", "lam": "sld_threshold", "s_m": "sld_momentum_scale",
           "beta_m": "sld_mom_beta"}  # fmt: skip


@dataclass
class SLDConfig:
    """The paper's hyper-parameters under its symbols; unset ones come from ``preset``."""

    # the presets of diffusers' SafetyConfig
    preset: Literal["weak", "medium", "strong", "max"] = config_field(
        "medium", "the paper's configuration: weak, medium, strong or max"
    )
    # the presets span s_S 20–5000, δ 0–15, λ 0–1, s_m 0–0.5, β_m 0–0.7
    s_S: float | None = config_field(None, "safety guidance scale (medium 1000)", ge=0.0, le=1e5)
    delta: int | None = config_field(None, "warm-up δ: sampler steps before safety guidance starts (medium 10)", ge=0, le=1000)
    lam: float | None = config_field(None, "threshold λ of the element-wise safety mask (medium 0.01)", ge=0.0, le=100.0)
    s_m: float | None = config_field(None, "momentum scale (medium 0.3)", ge=0.0, le=1e3)
    beta_m: float | None = config_field(None, "momentum β_m (medium 0.4)", ge=0.0, lt=1.0)
    safety_concept: str = config_field("", "the concept S; empty: the erased concepts, 'i2p': the paper's I2P list")

    def __post_init__(self) -> None:
        check_settings(self)
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

        preset = getattr(SafetyConfig, self.preset.upper())
        for symbol, key in SYMBOLS.items():
            if getattr(self, symbol) is None:
                setattr(self, symbol, preset[key])

    def pipeline_settings(self, targets: tuple[str, ...]) -> dict[str, object]:
        """The keyword arguments of StableDiffusionPipelineSafe, with the safety concept."""
        concept = {"": ", ".join(targets), "i2p": I2P_CONCEPT}.get(self.safety_concept, self.safety_concept)
        return {key: getattr(self, symbol) for symbol, key in SYMBOLS.items()} | {"safety_concept": concept}


@register(
    "sld",
    "SLD, Safe Latent Diffusion (Schramowski et al. 2023): safety guidance at sampling time",
    SLDConfig,
    changes_weights=False,
    families=("sd", "sdxl", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: SLDConfig) -> Edit:
    """SLD's edit for ``spec``: no weights, a card whose ``inference`` holds the safety guidance above;
    anchors and a preserve set are refused, and so is a FLUX transformer with distilled guidance."""
    check_sld_family(run.pipe)
    spec.targets_only("SLD steers away from the concepts at sampling time")
    return Edit({}, {"config": asdict(config), **SAFE_LATENT_DIFFUSION.card_fields(config.pipeline_settings(spec.targets))})
