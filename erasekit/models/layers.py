"""Layer access in diffusers UNets: cross-attention projections and the parameter groups of ESD.

Written against the real module names of ``UNet2DConditionModel`` (SD 1.x, 2.x, SDXL): every
transformer block has ``attn1`` (self-attention) and ``attn2`` (cross-attention onto the text
states), whose ``to_k`` / ``to_v`` map text-encoder states to keys and values. Closed-form editors
(UCE, RECE, MACE, RealEra) change exactly those two projections.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class CrossAttention:
    """One cross-attention module: its dotted name and the projections of text states."""

    name: str  # e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    module: nn.Module

    @property
    def to_k(self) -> nn.Linear:
        return self.module.to_k

    @property
    def to_v(self) -> nn.Linear:
        return self.module.to_v


def cross_attentions(unet: nn.Module) -> list[CrossAttention]:
    """Every cross-attention (``attn2``) of ``unet``, in module order; an error if there is none."""
    found = [
        CrossAttention(name, module)
        for name, module in unet.named_modules()
        if name.endswith("attn2") and getattr(module, "is_cross_attention", False) and hasattr(module, "to_k")
    ]
    if not found:
        raise ErasekitError(
            f"{type(unet).__name__} has no cross-attention layers (attn2.to_k/to_v): "
            "concept erasure needs a text-conditioned UNet such as UNet2DConditionModel"
        )
    return found


def kv_projections(unet: nn.Module) -> dict[str, nn.Linear]:
    """``{"<attn2 name>.to_k": Linear, "<attn2 name>.to_v": Linear, ...}`` of every cross-attention."""
    out: dict[str, nn.Linear] = {}
    for layer in cross_attentions(unet):
        out[f"{layer.name}.to_k"] = layer.to_k
        out[f"{layer.name}.to_v"] = layer.to_v
    return out


# ESD's parameter groups (Gandikota et al. 2023 and its official code), in diffusers names:
# the LDM names "out." and "time_embed" are diffusers' conv_norm_out/conv_out and time_embedding.
ESD_GROUPS = ("esd-x", "esd-u", "esd-all", "esd-x-strict")


def _in_group(name: str, group: str) -> bool:
    if group == "esd-x":  # cross-attention only: erases what the prompt names, little else changes
        return ".attn2." in name
    if group == "esd-x-strict":  # only the text-reading projections (official esd_sd.py: attn2.to_k / to_v)
        return ".attn2.to_k." in name or ".attn2.to_v." in name
    if group == "esd-u":  # everything but cross-attention, the output layers and time embedding
        return not (".attn2." in name or name.startswith(("conv_out.", "conv_norm_out.", "time_embedding.")))
    if group == "esd-all":
        return True
    raise ErasekitError(f"unknown ESD parameter group {group!r}; choose one of {', '.join(ESD_GROUPS)}")


def parameter_group(unet: nn.Module, group: str) -> Iterator[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs that ESD variant ``group`` fine-tunes."""
    cross_attentions(unet)  # a UNet without cross-attention is refused before training starts
    return ((n, p) for n, p in unet.named_parameters() if _in_group(n, group))


def kv_weights(unet: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every cross-attention ``to_k``/``to_v`` weight, by parameter name (``<attn2>.to_k.weight``)."""
    return {f"{name}.weight": lin.weight.detach().clone() for name, lin in kv_projections(unet).items()}
