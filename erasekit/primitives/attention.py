"""Reading cross-attention maps while the UNet runs, with gradients (MACE's attention loss).

:class:`AttentionProbe` is a diffusers attention processor for the ``attn2`` layers: it computes
attention exactly as the default processor does, and also keeps, for every layer it serves, the
attention probabilities that image positions inside a mask give to chosen text tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.models.layers import cross_attentions


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
        side = round(pixels**0.5)
        probs = probs.reshape(batch, heads, pixels, -1)
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


@contextmanager
def probing(unet: nn.Module) -> Iterator[AttentionProbe]:
    """Serve every cross-attention layer with one probe; the original processors come back on exit."""
    probe = AttentionProbe()
    layers = cross_attentions(unet)
    saved = [layer.module.processor for layer in layers]
    for layer in layers:
        layer.module.set_processor(probe)
    try:
        yield probe
    finally:
        for layer, processor in zip(layers, saved, strict=True):
            layer.module.set_processor(processor)
