"""Reading text-attention maps while the denoiser runs, with gradients (MACE's attention loss).

:class:`AttentionProbe` is a diffusers attention processor for a UNet's ``attn2`` layers: it computes
attention exactly as the default processor does, and also keeps, for every layer it serves, the
attention probabilities that image positions inside a mask give to chosen text tokens.
:class:`FluxAttentionProbe` does the same for FLUX's joint attention (the double blocks' and the
single blocks'), where text and image tokens attend to each other in one softmax: the map is what
the image tokens' queries give to the chosen text tokens' keys. :class:`SD3AttentionProbe` reads SD3's
joint attention, whose sequence puts the image tokens first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.models.layers import cross_attentions, flux_attentions


class AttentionProbe:
    """Default attention that also records masked attention maps A ⊙ M of selected tokens."""

    def __init__(self) -> None:
        self.token_mask: torch.Tensor | None = None  # (B, L) bool: the concept's tokens
        self.pixel_mask: torch.Tensor | None = None  # (B, 1, H, W) float in [0, 1], any resolution
        self.maps: list[torch.Tensor] = []

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **_: object) -> torch.Tensor:  # fmt: skip
        if hidden_states.ndim != 3 or encoder_hidden_states is None:
            raise ValueError("AttentionProbe serves cross-attention on (batch, tokens, channels) hidden states")
        if attn.norm_cross is not None:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], hidden_states.shape[0])
        probs = attn.get_attention_scores(query, key, mask)  # (B·heads, N, L)
        if self.token_mask is not None:
            self.maps.append(self._masked(probs, hidden_states.shape[0]))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor

    def _masked(self, probs: torch.Tensor, batch: int) -> torch.Tensor:
        """A ⊙ M restricted to the concept's tokens: (B, heads, N, L) zeroed outside mask and tokens."""
        heads, pixels = probs.shape[0] // batch, probs.shape[1]
        return self._kept(probs.reshape(batch, heads, pixels, -1))

    def _kept(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, L) image-to-text probabilities of a square image, zeroed outside mask and tokens."""
        batch, pixels = probs.shape[0], probs.shape[2]
        side = round(pixels**0.5)
        keep = self.token_mask[:, None, None, :].to(probs.dtype)
        if self.pixel_mask is not None:
            inside = (F.interpolate(self.pixel_mask, size=(side, side), mode="nearest") > 0.5).reshape(batch, 1, pixels, 1)
            keep = keep * inside.to(probs.dtype)
        return probs * keep

    def loss(self) -> torch.Tensor:
        """Σ_layers ‖A ⊙ M‖_F over the concept's tokens (the official code's norm, not squared)."""
        return sum(torch.linalg.vector_norm(m) for m in self.maps)

    def reset(self) -> None:
        """Drop the recorded maps."""
        self.maps = []


class FluxAttentionProbe(AttentionProbe):
    """FLUX's joint attention (``FluxAttnProcessor``'s arithmetic, the softmax written out) that also records
    A ⊙ M: the probabilities the image tokens give to the selected text tokens. A double block gets its
    text stream as ``encoder_hidden_states``; a single block gets text and image concatenated, the text
    first, as long as ``token_mask``. With ``all_queries`` it records what every token, text and image,
    gives to the selected text tokens (B, heads, L + N, L), no pixel mask (EraseAnything's map)."""

    def __init__(self, all_queries: bool = False) -> None:
        super().__init__()
        self.all_queries = all_queries

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: object = None, **_: object) -> torch.Tensor:  # fmt: skip
        from diffusers.models.embeddings import apply_rotary_emb

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (-1, attn.head_dim))

        query, key, value = (heads(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
            text_q, text_k, text_v = (
                heads(f(encoder_hidden_states)) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            )
            query = torch.cat([attn.norm_added_q(text_q), query], dim=1)
            key = torch.cat([attn.norm_added_k(text_k), key], dim=1)
            value = torch.cat([text_v, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        scores = torch.einsum("bnhd,bmhd->bhnm", query, key) * attn.head_dim**-0.5
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = scores.softmax(dim=-1)
        if self.token_mask is not None:
            text = self.token_mask.shape[1]
            if self.all_queries:
                self.maps.append(probs[:, :, :, :text] * self.token_mask[:, None, None, :].to(probs.dtype))
            else:
                self.maps.append(self._kept(probs[:, :, text:, :text]))
        out = torch.einsum("bhnm,bmhd->bnhd", probs, value).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        text_out, image_out = out.split_with_sizes([encoder_hidden_states.shape[1], hidden_states.shape[1]], dim=1)
        return attn.to_out[1](attn.to_out[0](image_out.contiguous())), attn.to_add_out(text_out.contiguous())


class SD3AttentionProbe(AttentionProbe):
    """SD3's joint attention (``JointAttnProcessor2_0``'s arithmetic, the softmax written out) that also records
    A ⊙ M, the probabilities the image tokens give to the selected text tokens. Its one sequence is the image
    tokens, then the text's (FLUX's is the other way round); no rotary embedding; the last block's text stream
    is ``context_pre_only`` (no ``to_add_out``, its text output unused)."""

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **_: object) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # (B, heads, N, d), as the norms expect

        def normed(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
            return x if norm is None else norm(x)

        query, key, value = (heads(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        query, key = normed(attn.norm_q, query), normed(attn.norm_k, key)
        pixels = hidden_states.shape[1]
        if encoder_hidden_states is not None:
            text_q, text_k, text_v = (
                heads(f(encoder_hidden_states)) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            )
            query = torch.cat([query, normed(attn.norm_added_q, text_q)], dim=2)
            key = torch.cat([key, normed(attn.norm_added_k, text_k)], dim=2)
            value = torch.cat([value, text_v], dim=2)
        probs = (query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(dim=-1)  # (B, heads, N + L, N + L)
        if self.token_mask is not None and encoder_hidden_states is not None:
            self.maps.append(self._kept(probs[:, :, :pixels, pixels:]))
        out = (probs @ value).transpose(1, 2).flatten(2, 3).to(query.dtype)
        image_out = attn.to_out[1](attn.to_out[0](out[:, :pixels]))
        if encoder_hidden_states is None:
            return image_out
        text_out = out[:, pixels:]
        return image_out, text_out if attn.context_pre_only else attn.to_add_out(text_out)


@contextmanager
def probing(
    model: nn.Module, family: str = "sd", probe: AttentionProbe | None = None, only: list[nn.Module] | None = None
) -> Iterator[AttentionProbe]:
    """Serve every layer where the image attends to the text (a UNet's cross-attention, FLUX's or SD3's joint
    attention; ``only`` those attention modules where given) with one probe (``probe``, else a new one of
    the family's kind); the original processors come back on exit."""
    probe = probe or {"flux": FluxAttentionProbe, "sd3": SD3AttentionProbe}.get(family, AttentionProbe)()
    if only is not None:
        modules = only
    elif family in ("flux", "sd3"):
        modules = flux_attentions(model)
    else:
        modules = [layer.module for layer in cross_attentions(model)]
    saved = [module.processor for module in modules]
    for module in modules:
        module.set_processor(probe)
    try:
        yield probe
    finally:
        for module, processor in zip(modules, saved, strict=True):
            module.set_processor(processor)
