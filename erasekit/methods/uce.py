"""UCE: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024).

A closed-form edit of every cross-attention ``to_k`` / ``to_v``: the token states of each erased
concept are sent to where its guide (anchor, or the unconditional prompt) goes, while the states of
preserved concepts keep their keys and values (paper eq. 7, the official ``edit_model``):

    W = (λW₀ + s_e Σ W₀c* cᵀ + s_p Σ W₀c_p c_pᵀ) (λI + s_e Σ c cᵀ + s_p Σ c_p c_pᵀ)⁻¹

Which token states enter E, E* and P (``token_span``), after the two official releases:

* ``"official"`` (default) — the current official script, ``trainscripts/uce_sd_erase.py`` of
  rohitgandikota/unified-concept-editing (commit 28c81ed): one state per prompt, at
  ``attention_mask.sum() - 2`` (the prompt's last word token; [BOS] for the empty guide), for erase,
  guide and preserve prompts alike.
* ``"last"`` — the older ``train_erase.py``: the concept's last token through [EOS] and the padding,
  aligned with the guide's; every position of each preserve prompt.
* ``"full"`` — as ``"last"`` but from the concept's *first* token, so multi-token concepts are covered
  whole (the setting that works on the embedded model, README).

λ = 0.5, s_e = 1 and s_p = 1 are ``uce_sd_erase.py``'s command-line defaults (``train_erase.py`` had
s_p = 0.1).

SDXL: the same edit of ``attn2.to_k/to_v`` on both encoders' states side by side. FLUX
(``uce_flux_edit.py``): the same closed form on the two Linears that read the text, ``context_embedder``
(token states) and the pooled text embedder (pooled vectors), :func:`flux_erase`. SD3 (no official
script) the same way on its MMDiT's two Linears of those names, with the last word's state in both
segments of its joint CLIP + T5 sequence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from erasekit.concepts import EraseSpec, anchor_prompt
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.models.layers import FLUX_POOLED_INPUT, FLUX_TOKEN_INPUT, flux_text_inputs, kv_projections
from erasekit.primitives.closed_form import TextMoments, edited_weights, text_space_map
from erasekit.primitives.prompt_cache import PromptCache
from erasekit.primitives.run import RunContext
from erasekit.settings import RIDGE, WEIGHT, check_settings, config_field


@dataclass
class UCEConfig:
    """Defaults: the current official script, uce_sd_erase.py (see the module docstring)."""

    lam: float = config_field(0.5, "λ: pull towards the original weights (official script 0.5)", **RIDGE)
    erase_scale: float = config_field(1.0, "s_e: weight of the erase terms (official default 1)", gt=0.0, le=1e6)
    preserve_scale: float = config_field(
        1.0, "s_p: weight of the preserve terms (uce_sd_erase.py 1; train_erase.py 0.1)", **WEIGHT
    )
    token_span: Literal["official", "last", "full"] = config_field(
        "official", "'official' (one token per prompt, uce_sd_erase.py), 'last' (train_erase.py) or 'full'"
    )
    edit_keys: bool = config_field(True, "edit to_k as well as to_v (official: with_to_k=True)")
    templates: tuple[str, ...] = config_field(
        ("{}",), "prompts each concept is placed into; the official default is the bare concept"
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ErasekitError("each template must contain {} where the concept goes")


def last_word_state(cache: PromptCache, prompt: str) -> torch.Tensor:
    """The state at ``attention_mask.sum() - 2``: the prompt's last word token ([BOS] for an empty prompt);
    on SD3 one in the CLIP segment and one in the T5 segment."""
    return cache.states([prompt])[0, cache.last_word_positions(prompt)]


def aligned_states(
    cache: PromptCache, prompt: str, concept: str, guide_prompt: str, guide: str, span: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of ``prompt`` that carry the concept, and the states of ``guide_prompt`` they map onto."""
    words = cache.word_span(prompt, concept)  # also refuses a concept that tokenizes to nothing
    if span == "official":
        return last_word_state(cache, prompt), last_word_state(cache, guide_prompt)
    source, target = cache.states([prompt, guide_prompt])
    start = words.start if span == "full" else words.stop - 1
    if guide:
        g = cache.word_span(guide_prompt, guide)
        guide_start = g.start if span == "full" else g.stop - 1
    else:  # the unconditional guide: its last real token before [EOS], [BOS] for the empty prompt
        guide_start = cache.length(guide_prompt) - 2
    n = source.shape[0] - max(start, guide_start)
    return source[start : start + n], target[guide_start : guide_start + n]


def uce_prompts(spec: EraseSpec, config: UCEConfig) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """(prompt, concept, guide prompt, guide) of every erase pair, and the preserve prompts, per template."""
    pairs = [
        (t.format(target), target, anchor_prompt(t, anchor), anchor)
        for target, anchor in zip(spec.targets, spec.anchors, strict=True)
        for t in config.templates
    ]
    return pairs, [t.format(p) for p in spec.preserve for t in config.templates]


def uce_moments(run: RunContext, spec: EraseSpec, config: UCEConfig) -> tuple[TextMoments, TextMoments | None]:
    """E, E* over the erase pairs and P over the preserve prompts' states, chosen by the same span."""
    cache = run.cache
    pairs, prompts = uce_prompts(spec, config)
    cache.states([p for prompt, _, guide, _ in pairs for p in (prompt, guide)] + prompts)  # one batched encoding
    erase = run.moments()
    for prompt, target, guide_prompt, anchor in pairs:
        erase.add(*aligned_states(cache, prompt, target, guide_prompt, anchor, config.token_span))
    preserve = None
    if spec.preserve:
        preserve = run.moments()
        if config.token_span == "official":
            preserve.add(torch.cat([last_word_state(cache, p) for p in prompts]))
        else:
            preserve.add(cache.states(prompts))
    return erase, preserve


def pooled_moments(run: RunContext, spec: EraseSpec, config: UCEConfig) -> tuple[TextMoments, TextMoments | None]:
    """FLUX's pooled path: E, E* over the erase pairs' pooled vectors and P over the preserve prompts'."""
    pairs, prompts = uce_prompts(spec, config)
    vectors = run.pooled([p for prompt, _, guide, _ in pairs for p in (prompt, guide)] + prompts)
    dim = vectors.shape[-1]
    erase = run.moments(dim).add(vectors[0 : 2 * len(pairs) : 2], vectors[1 : 2 * len(pairs) : 2])
    return erase, run.moments(dim).add(vectors[2 * len(pairs) :]) if prompts else None


@register("uce", "UCE (Gandikota et al. 2024): closed-form edit of cross-attention to_k/to_v; many concepts at once", UCEConfig,
          families=("sd", "sdxl", "sd3", "flux"))  # fmt: skip
def erase(run: RunContext, spec: EraseSpec, config: UCEConfig) -> Edit:
    """UCE's closed-form edit of every to_k/to_v (to_v alone if ``edit_keys`` is off) for ``spec`` (equation above);
    on FLUX, of the two Linears that read the text (:func:`flux_erase`)."""
    if run.family.name == "sd3" and config.token_span != "official":
        raise ErasekitError("on SD3, UCE reads one token per prompt in each encoder's segment: use token_span=official")
    erase_m, preserve_m = uce_moments(run, spec, config)
    text_map = text_space_map(erase_m, preserve_m, config.lam, config.erase_scale, config.preserve_scale)
    if run.family.denoiser == "transformer":  # FLUX, SD3
        return flux_erase(run, spec, config, text_map)
    projections = {name: lin for name, lin in kv_projections(run.unet).items() if config.edit_keys or name.endswith("to_v")}
    weights = edited_weights(projections, text_map)
    return Edit({f"{name}.weight": w for name, w in weights.items()}, {"config": asdict(config)})


def flux_erase(run: RunContext, spec: EraseSpec, config: UCEConfig, token_map: torch.Tensor) -> Edit:
    """UCE on FLUX, as the official ``uce_flux_edit.py``: the same closed form on ``context_embedder`` (token
    states, here mapped by ``token_map``) and on the pooled text embedder's first Linear (pooled vectors).
    Both Linears have a bias; the solve is on W alone, so an erased input meets W₀c* + b, where the
    official script's targets, taken with the bias, give W₀c* + 2b."""
    tokens_in, pooled_in = flux_text_inputs(run.denoiser)
    pooled_map = text_space_map(*pooled_moments(run, spec, config), config.lam, config.erase_scale, config.preserve_scale)
    weights = {
        **edited_weights({FLUX_TOKEN_INPUT: tokens_in}, token_map),
        **edited_weights({FLUX_POOLED_INPUT: pooled_in}, pooled_map),
    }
    return Edit({f"{name}.weight": w for name, w in weights.items()}, {"config": asdict(config)})
