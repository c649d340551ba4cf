"""SAFREE's prompt projection (Yoon et al., ICLR 2025): the tokens of a prompt that pull it towards the
toxic concepts' subspace are projected out of it, for as many early sampling steps as the projection
changed the prompt.

C is spanned by the text encoder's pooled outputs (CLIP's ``pooler_output``, its end token's state; the
world's BERT: its pooler on [CLS]) of the concept keywords; P_C = E (EᵀE)⁺ Eᵀ its projector. For a prompt of n tokens, copy i has token i replaced by id 0
("!" in CLIP's vocabulary) and m_i is its pooled state; P_I projects onto span(m_1 … m_n), the "input
space". Token i is flagged when removing it moves the prompt away from C,

    d_i = ‖(I − P_C) m_i‖ ≥ (1 + α) · mean_{j≠i} d_j,

and a flagged token's state e becomes (I − P_C) P_I e ([BOS], the end token and the padding stay). The
self-validating filter keeps the projected prompt for the first K + 1 steps only,

    β = 1 − mean_j cos((I − P_C) P_I e_j, e_j)   (over [BOS], the tokens and the end token),
    K = round(γ · σ(k (10 β − τ))),   (k, τ) = (5, 5.333) for nudity, (7, 5.5) for artists, γ = 10,

and the prompt as typed after that. The concept keywords are also the negative prompt of classifier-free
guidance, as the official driver passes them (``negative_prompt`` off: the pipeline's own).

An edit whose card carries ``"inference": {"safree": {...}}`` is of the kind :data:`PROMPT_PROJECTION`: no
weights; applying it returns the pipeline's own class on its modules, whose calls project each prompt
this way (it reads prompts as text). The official latent re-attention (a FreeU-like filter of the skip
features) is registered without its mode in the released code and changes no image; it is not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from erasekit.edits.kind import NO_WEIGHTS, EditKind, is_number, is_strings, on_modules, register_kind, shown
from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

# the official f_beta constants (k, τ) of each category's self-validating filter
FILTER_CURVES = {"nudity": (5.0, 5.333), "artist": (7.0, 5.5)}
SETTINGS = ("alpha", "upper_t")
EVERY_STEP = 10**9  # K without the filter: the projected prompt at every step


@dataclass
class ProjectedPrompt:
    """One prompt's token states as typed and projected (L, d), and the last step that uses the projection."""

    typed: torch.Tensor
    projected: torch.Tensor
    last_step: int  # K: steps 0..K use ``projected`` (EVERY_STEP without the filter)
    flagged: list[int]  # token positions replaced


def projector(vectors: torch.Tensor) -> torch.Tensor:
    """(d, d) the orthogonal projector onto the span of the rows of ``vectors`` (k, d): E (EᵀE)⁺ Eᵀ."""
    e = vectors.T.double()
    return (e @ torch.linalg.pinv(e.T @ e) @ e.T).float()


class PromptProjector:
    """SAFREE's projection of prompts against the keywords' subspace, with the pipeline's text encoder."""

    def __init__(self, pipe: DiffusionPipeline, keywords: list[str], settings: dict[str, Any]) -> None:
        self.pipe, self.settings = pipe, settings
        self.tokenizer, self.encoder = pipe.tokenizer, pipe.text_encoder
        with torch.no_grad():
            ids = self.tokenizer(keywords, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")  # fmt: skip
            toxic = self.pooled(ids.input_ids, ids.attention_mask)
        self.away = torch.eye(toxic.shape[1], device=toxic.device) - projector(toxic)  # I − P_C

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(n, d) the encoder's pooled output, float32: CLIP's ``pooler_output`` (the end token's last state, as
        the official code reads it), BERT's pooler on [CLS]; the end token's state for an encoder without one."""
        device = self.encoder.device
        out = self.encoder(ids.to(device))
        if len(out) > 1 and out[1] is not None and out[1].dim() == 2:
            return out[1].float()
        ends = mask.sum(1).to(device) - 1
        return out[0].float()[torch.arange(len(ids), device=device), ends]

    @torch.no_grad()
    def __call__(self, prompt: str) -> ProjectedPrompt:
        """The prompt's states as the pipeline encodes them, projected where SAFREE flags its tokens."""
        device = self.encoder.device
        typed = self.pipe.encode_prompt(prompt, device, 1, False)[0][0].float()  # (L, d), as the pipeline conditions
        ids = self.tokenizer(prompt, truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt")
        n = ids.input_ids.shape[1] - 2  # the words' tokens between [BOS] and the end token
        if n < 1:
            return ProjectedPrompt(typed, typed, EVERY_STEP, [])
        copies = ids.input_ids.to(device).repeat(n, 1)
        rows = torch.arange(n, device=device)
        copies[rows, rows + 1] = 0  # the official masking: token id 0 ("!" in CLIP)
        masked = self.pooled(copies, ids.attention_mask.repeat(n, 1))
        inside = projector(masked)  # P_I
        distance = (masked @ self.away.T).norm(dim=-1)
        others = (distance.sum() - distance) / max(n - 1, 1)
        flagged = [i + 1 for i in range(n) if n > 1 and distance[i] >= (1 + self.settings["alpha"]) * others[i]]
        moved = typed @ inside.T @ self.away.T  # (I − P_C) P_I e for every position
        projected = typed.clone()
        projected[flagged] = moved[flagged]
        last_step = EVERY_STEP
        if self.settings["svf"]:
            real = slice(0, n + 2)  # [BOS], the tokens and the end token
            beta = 1 - F.cosine_similarity(moved[real], typed[real], dim=-1).mean()
            k, tau = FILTER_CURVES[self.settings["category"]]
            last_step = round(self.settings["upper_t"] * float(torch.sigmoid(k * (10 * beta - tau))))
        return ProjectedPrompt(typed, projected, last_step, flagged)


def projected_pipeline(pipe: DiffusionPipeline, settings: dict[str, Any]) -> DiffusionPipeline:
    """The pipeline's own class on its modules, each prompt projected by :class:`PromptProjector` (SD 1.x/2.x)."""
    from erasekit.models.families import pipeline_family

    if pipeline_family(pipe).name != "sd" or getattr(pipe, "text_encoder_2", None) is not None:
        raise ErasekitError(f"SAFREE projects the prompt of SD 1.x/2.x pipelines (one text encoder), not {type(pipe).__name__}'s")
    keywords = settings["keywords"]
    projector_ = PromptProjector(pipe, keywords, settings)
    negative = ", ".join(keywords) if settings["negative_prompt"] else None

    class Projected(type(pipe)):  # type: ignore[misc, valid-type]
        safree = projector_

        def __call__(self, prompt: str | list[str] | None = None, **kwargs: Any) -> Any:
            if prompt is None:
                raise ErasekitError("SAFREE projects prompts by their text: give `prompt`, not prompt_embeds")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompts = [p for p in prompts for _ in range(kwargs.pop("num_images_per_prompt", None) or 1)]
            done = [projector_(p) for p in prompts]
            safe = torch.stack([d.projected for d in done]).to(self.unet.dtype)
            typed = torch.stack([d.typed for d in done]).to(self.unet.dtype)
            last = torch.tensor([d.last_step for d in done], device=safe.device)
            if kwargs.get("negative_prompt") is None and negative is not None:
                kwargs["negative_prompt"] = [negative] * len(prompts)

            def switch(pipeline: Any, step: int, t: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                embeds, rows = tensors["prompt_embeds"], len(prompts)
                cond = torch.where(((step + 1) <= last)[:, None, None], safe, typed)
                return {"prompt_embeds": torch.cat([embeds[:-rows], cond]) if len(embeds) > rows else cond}

            return super().__call__(prompt_embeds=safe, callback_on_step_end=switch,
                                    callback_on_step_end_tensor_inputs=["prompt_embeds"], **kwargs)  # fmt: skip

    projected = on_modules(Projected, pipe)
    return projected


class PromptProjection(EditKind):
    """SAFREE: no weights, a card entry of the keywords and the filter's settings, applied as
    :func:`projected_pipeline` on the pipeline's modules."""

    name = "safree"
    at_sampling = True
    reads_prompt_text = True

    def check_card(self, card: dict, where: object) -> None:
        """Refuse an ``inference.safree`` without keywords, numbers, a known category and the two switches."""
        if not self.named_in(card):
            return
        entry = self.entry(card)
        if not (isinstance(entry, dict) and is_strings(entry.get("keywords")) and entry["keywords"]):
            raise ErasekitError(
                f"{where}: inference.safree should be an object with a non-empty list of keywords, not {shown(entry)}"
            )
        for key in SETTINGS:
            if not is_number(entry.get(key)):
                raise ErasekitError(f"{where}: inference.safree.{key} should be a number, not {shown(entry.get(key))}")
        for key in ("svf", "negative_prompt"):
            if not isinstance(entry.get(key), bool):
                raise ErasekitError(f"{where}: inference.safree.{key} should be true or false, not {shown(entry.get(key))}")
        if entry.get("category") not in FILTER_CURVES:
            raise ErasekitError(f"{where}: inference.safree.category should be one of {', '.join(FILTER_CURVES)}")

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """The projecting pipeline on ``pipe``'s modules; the weights stay the base model's."""
        return projected_pipeline(pipe, self.entry(edit.card))

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: the edit is how to encode each prompt, with no weights to carry."""
        return NO_WEIGHTS


PROMPT_PROJECTION = register_kind(PromptProjection())
