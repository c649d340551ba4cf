"""SAFREE: Training-Free and Adaptive Guard for Safe Text-to-Image and Video Generation (Yoon et al., ICLR 2025).

Training-free and inference-time: the prompt tokens that pull the prompt towards the subspace of the
concept keywords are projected out of it (onto the prompt's own input space, orthogonal to the
keywords'), for as many early steps as the projection changed the prompt (the self-validating filter),
and the keywords are the negative prompt (:mod:`erasekit.edits.projection` has the equations).

Defaults are the official driver and scripts (jaehong31/SAFREE @ b8b2c3f, ``generate_safree.py``,
``models/modified_stable_diffusion_pipeline.py``, ``scripts/run_nudity.sh``): α = 0.01, the filter on
with γ = 10 (``--up_t``), the nudity curve, the keywords as negative prompt. The keywords are the erased
concepts (the official artist runs: the one name) or, with ``keywords=nudity``, the official 17
sexual-content phrases. Its latent re-attention is a no-op in the released code (registered without its
mode) and is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.projection import PROMPT_PROJECTION
from erasekit.methods.base import register
from erasekit.primitives.run import RunContext
from erasekit.settings import check_settings, config_field

# the official nudity keywords (generate_safree.py)
NUDITY_KEYWORDS = (
    "Sexual Acts", "Content Meant to Arouse Sexual Excitement", "Nudity", "Pornography", "Erotic Art", "Lustful",
    "Seductive", "Orgasmic", "Libido", "Kinky", "Sexual Orientation", "Sexual Attraction", "Sexual Intercourse",
    "Sexual Pleasure", "Sexual Fantasy", "Carnal Desires", "Sexual Gratification",
)  # fmt: skip


@dataclass
class SAFREEConfig:
    """Defaults: the official nudity run (its argparse names in brackets)."""

    alpha: float = config_field(0.01, "α: a token is flagged when its removal moves the prompt (1 + α)× further from "
                                "the keywords than the others' mean (--sf_alpha 0.01)", ge=0.0, le=100.0)  # fmt: skip
    svf: bool = config_field(True, "the self-validating filter: the projection for the first K + 1 steps only (-svf)")
    upper_t: int = config_field(10, "γ: the most steps the filter keeps the projection for (--up_t 10)", ge=0, le=1000)
    category: Literal["nudity", "artist"] = config_field("nudity", "the filter's curve: the official nudity or artist constants")
    keywords: Literal["", "nudity"] = config_field(
        "", "the keywords of the subspace: '' the erased concepts, 'nudity' the official 17"
    )
    negative_prompt: bool = config_field(True, "the keywords as the negative prompt (the official driver)")

    def __post_init__(self) -> None:
        check_settings(self)


@register(
    "safree",
    "SAFREE (Yoon et al. 2025): training-free projection of the prompt's toxic tokens out of the concept's subspace",
    SAFREEConfig,
    changes_weights=False,
)
def erase(run: RunContext, spec: EraseSpec, config: SAFREEConfig) -> Edit:
    """SAFREE's edit for ``spec``: no weights, a card whose ``inference`` holds the keywords and the filter;
    anchors and a preserve set are refused (the projection has neither)."""
    spec.targets_only("SAFREE projects the prompt away from the concepts")
    keywords = list(NUDITY_KEYWORDS) if config.keywords == "nudity" else list(spec.targets)
    settings = {k: v for k, v in asdict(config).items() if k != "keywords"}
    return Edit({}, {"config": asdict(config), **PROMPT_PROJECTION.card_fields({"keywords": keywords, **settings})})
