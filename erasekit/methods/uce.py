"""UCE: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024).

A closed-form edit of every cross-attention ``to_k`` / ``to_v``: the token states of each erased
concept are sent to where its guide (anchor, or the unconditional prompt) goes, while the states of
preserved concepts keep their keys and values (paper eq. 7, the official ``edit_model``):

    W = (λW₀ + s_e Σ W₀c* cᵀ + s_p Σ W₀c_p c_pᵀ) (λI + s_e Σ c cᵀ + s_p Σ c_p c_pᵀ)⁻¹

Which tokens carry the concept: the official script aligns the prompt from the concept's *last*
token through [EOS] and padding with the guide's from its last token (``token_span="last"``);
``token_span="full"`` starts at the concept's first token, so multi-token concepts are covered whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from erasekit.edits import Edit
from erasekit.methods.base import EraseSpec, anchor_prompt, config_field, register
from erasekit.models.layers import kv_projections
from erasekit.primitives.closed_form import TextMoments, edited_weights, text_space_map
from erasekit.primitives.prompt_cache import PromptCache
from erasekit.primitives.run import RunContext


@dataclass
class UCEConfig:
    """Defaults are those of the official script (train_erase.py)."""

    lam: float = config_field(0.5, "λ: pull towards the original weights (official script 0.5)")
    erase_scale: float = config_field(1.0, "s_e: weight of the erase terms (official default 1)")
    preserve_scale: float = config_field(0.1, "s_p: weight of the preserve terms (official default 0.1)")
    token_span: str = config_field("last", "'last' (official) or 'full': which of the concept's tokens are edited")
    edit_keys: bool = config_field(True, "edit to_k as well as to_v (official: with_to_k=True)")
    templates: tuple[str, ...] = config_field(
        ("{}",), "prompts each concept is placed into; the official default is the bare concept"
    )

    def __post_init__(self) -> None:
        from erasekit.errors import ErasekitError

        if self.lam <= 0:
            raise ErasekitError(f"λ (lam) must be positive, got {self.lam}")
        if self.erase_scale <= 0 or self.preserve_scale < 0:
            raise ErasekitError("erase_scale must be positive and preserve_scale non-negative")
        if self.token_span not in ("last", "full"):
            raise ErasekitError(f"token_span must be 'last' or 'full', not {self.token_span!r}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ErasekitError("each template must contain {} where the concept goes")


def aligned_states(
    cache: PromptCache, prompt: str, concept: str, guide_prompt: str, guide: str, span: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of ``prompt`` from the concept onwards, and of ``guide_prompt`` aligned to them."""
    source, target = cache.states([prompt, guide_prompt])
    words = cache.word_span(prompt, concept)
    start = words.start if span == "full" else words.stop - 1
    if guide:
        g = cache.word_span(guide_prompt, guide)
        guide_start = g.start if span == "full" else g.stop - 1
    else:  # the unconditional guide: its last real token before [EOS], [CLS]/<bos> for the empty prompt
        guide_start = cache.length(guide_prompt) - 2
    n = source.shape[0] - max(start, guide_start)
    return source[start : start + n], target[guide_start : guide_start + n]


def uce_moments(run: RunContext, spec: EraseSpec, config: UCEConfig) -> tuple[TextMoments, TextMoments | None]:
    """E, E* over the erase pairs and P over every token of the preserve prompts."""
    cache = run.cache
    erase = run.moments()
    for target, anchor in zip(spec.targets, spec.anchors, strict=True):
        for template in config.templates:
            prompt = template.format(target)
            guide_prompt = anchor_prompt(template, anchor)
            src, tgt = aligned_states(cache, prompt, target, guide_prompt, anchor, config.token_span)
            erase.add(src, tgt)
    preserve = None
    if spec.preserve:
        preserve = run.moments()
        prompts = [t.format(p) for p in spec.preserve for t in config.templates]
        preserve.add(cache.states(prompts))
    return erase, preserve


@register("uce", "UCE (Gandikota et al. 2024): closed-form edit of cross-attention to_k/to_v; many concepts at once", UCEConfig)
def erase(run: RunContext, spec: EraseSpec, config: UCEConfig) -> Edit:
    erase_m, preserve_m = uce_moments(run, spec, config)
    text_map = text_space_map(erase_m, preserve_m, config.lam, config.erase_scale, config.preserve_scale)
    projections = {name: lin for name, lin in kv_projections(run.unet).items() if config.edit_keys or name.endswith("to_v")}
    weights = edited_weights(projections, text_map)
    return Edit({f"{name}.weight": w for name, w in weights.items()}, {"config": asdict(config)})
