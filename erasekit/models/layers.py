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
        """The projection of text states to keys."""
        return self.module.to_k

    @property
    def to_v(self) -> nn.Linear:
        """The projection of text states to values."""
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


# ESD's parameter groups, as the official esd_sd.py (rohitgandikota/erasing, get_esd_trainable_parameters)
# selects them: the parameters of every Linear / Conv2d module, chosen by the module's name; norm
# layers are never trained. "with-norms" is the selection erasekit used before: every parameter by
# name, norms included, and ESD-u without conv_out / conv_norm_out / the time embedding.
ESD_GROUPS = ("esd-x", "esd-u", "esd-all", "esd-x-strict")
ESD_SELECTIONS = ("official", "with-norms")


def _module_in_group(name: str, group: str) -> bool:
    if group == "esd-x":  # cross-attention only: erases what the prompt names, little else changes
        return "attn2" in name
    if group == "esd-x-strict":  # only the text-reading projections
        return "attn2.to_k" in name or "attn2.to_v" in name
    if group == "esd-u":  # everything but cross-attention: erases the concept globally
        return "attn2" not in name
    return True  # esd-all


def _parameter_in_group_with_norms(name: str, group: str) -> bool:
    if group == "esd-u":
        return not (".attn2." in name or name.startswith(("conv_out.", "conv_norm_out.", "time_embedding.")))
    if group == "esd-x-strict":
        return ".attn2.to_k." in name or ".attn2.to_v." in name
    return group == "esd-all" or ".attn2." in name


def parameter_group(unet: nn.Module, group: str, selection: str = "official") -> Iterator[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs that ESD variant ``group`` fine-tunes, in module order."""
    if group not in ESD_GROUPS:
        raise ErasekitError(f"unknown ESD parameter group {group!r}; choose one of {', '.join(ESD_GROUPS)}")
    if selection not in ESD_SELECTIONS:
        raise ErasekitError(f"unknown ESD parameter selection {selection!r}; choose one of {', '.join(ESD_SELECTIONS)}")
    cross_attentions(unet)  # a UNet without cross-attention is refused before training starts
    if selection == "with-norms":
        return ((n, p) for n, p in unet.named_parameters() if _parameter_in_group_with_norms(n, group))
    return (
        (f"{name}.{n}", p)
        for name, module in unet.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d)) and _module_in_group(name, group)
        for n, p in module.named_parameters()
    )


# Ablating Concepts' --parameter_group (nupurkmr9/concept-ablation, diffusers/train.py,
# create_custom_diffusion), by substring of the parameter name as there: "cross-attn" the text
# projections attn2.to_k / to_v, "attn" every attention projection (to_q, to_k, to_v, to_out of self-
# and cross-attention), "full-weight" the whole UNet. (Its fourth group, "embedding", trains a text
# token embedding, which an edit of UNet weights cannot carry.)
AC_GROUPS = ("cross-attn", "attn", "full-weight")


def ablation_parameters(model: nn.Module, group: str, family: str = "sd") -> list[str]:
    """Names of the denoiser parameters Ablating Concepts fine-tunes in ``group``. On FLUX, ``cross-attn`` is
    what SD's ``attn2.to_k/to_v`` are, the projections of the text into keys and values: the double blocks'
    text-stream ``add_k_proj`` / ``add_v_proj`` (the single blocks' projections read image and text alike,
    ``context_embedder`` every prompt whole); ``attn`` every attention Linear."""
    if group not in AC_GROUPS:
        raise ErasekitError(f"unknown AC parameter group {group!r}; choose one of {', '.join(AC_GROUPS)}")
    if family in ("flux", "sd3"):  # SD3's joint blocks have the same text stream
        flux_text_inputs(model)  # a transformer that is not FLUX's or SD3's is refused before training starts
        keys = {"cross-attn": ("attn.add_k_proj", "attn.add_v_proj"), "attn": ("attn.",)}.get(group)
    else:
        cross_attentions(model)  # a UNet without cross-attention is refused before training starts
        keys = {"cross-attn": ("attn2.to_k", "attn2.to_v"), "attn": ("to_q", "to_k", "to_v", "to_out")}.get(group)
    return [name for name, _ in model.named_parameters() if keys is None or any(k in name for k in keys)]


# SDD's --finetuning_method (nannullna/safe-diffusion, train_sdd.py gather_parameters), by substring of the
# parameter name as there: "xattn" every cross-attention parameter (attn2), "selfattn" every self-attention
# parameter (attn1), "noxattn" all but attn2, conv_out and the time embedding, "notime" all but conv_out and
# the time embedding, "full" the whole UNet.
SDD_GROUPS = ("xattn", "selfattn", "noxattn", "notime", "full")


def sdd_parameters(unet: nn.Module, group: str) -> list[str]:
    """Names of the UNet parameters SDD fine-tunes in ``group``."""
    if group not in SDD_GROUPS:
        raise ErasekitError(f"unknown SDD parameter group {group!r}; choose one of {', '.join(SDD_GROUPS)}")
    cross_attentions(unet)  # a UNet without cross-attention is refused before training starts

    def kept(name: str) -> bool:
        untimed = not name.startswith("conv_out.") and "time_embed" not in name
        return {"xattn": "attn2" in name, "selfattn": "attn1" in name, "noxattn": untimed and "attn2" not in name,
                "notime": untimed, "full": True}[group]  # fmt: skip

    return [name for name, _ in unet.named_parameters() if kept(name)]


def kv_weights(unet: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every cross-attention ``to_k``/``to_v`` weight, by parameter name (``<attn2>.to_k.weight``)."""
    return {f"{name}.weight": lin.weight.detach().clone() for name, lin in kv_projections(unet).items()}


def transformer_layers(model: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    """Every Linear / Conv2d inside a UNet's ``Transformer2DModel`` blocks, by dotted name: proj_in,
    attn1 and attn2 (q, k, v, out), the feed-forward and proj_out, the layers SPM adapts (the
    official SPMNetwork's ``UNET_TARGET_REPLACE_MODULE_TRANSFORMER``). On a FLUX transformer the same
    kinds of layer in its double and single blocks: the attention projections of both streams, the
    feed-forwards and the single blocks' ``proj_mlp`` / ``proj_out``, without the timestep modulation
    (``norm*.linear``), which SPM's selection never held."""
    if hasattr(model, "transformer_blocks"):  # a flow transformer (a UNet's blocks are down/mid/up)
        found = {
            name: layer
            for name, layer in model.named_modules()
            if isinstance(layer, nn.Linear) and name.startswith(FLUX_BLOCKS) and ".norm" not in name
        }
        if not found:
            raise ErasekitError(f"{type(model).__name__} has no FLUX transformer blocks for SPM's adapters")
        return found
    found = {
        f"{block}.{name}": layer
        for block, module in model.named_modules()
        if type(module).__name__ == "Transformer2DModel"
        for name, layer in module.named_modules()
        if isinstance(layer, (nn.Linear, nn.Conv2d))
    }
    if not found:
        raise ErasekitError(
            f"{type(model).__name__} has no Transformer2DModel blocks: SPM adapts the linear layers of a diffusers "
            "UNet2DConditionModel's transformer blocks"
        )
    return found


# FLUX's text inputs (FluxTransformer2DModel): the token states (T5) enter the joint blocks' text stream
# through ``context_embedder``, the pooled vector (CLIP) the timestep embedding through the text
# embedder's first Linear. The official uce_flux_edit.py edits exactly these two (by name; its
# width test would confuse them on erasekit-tiny-flux, where both read 384-d states).
FLUX_TOKEN_INPUT = "context_embedder"
FLUX_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")  # the double and the single blocks
FLUX_POOLED_INPUT = "time_text_embed.text_embedder.linear_1"


def flux_text_inputs(transformer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The Linear that reads FLUX's token states and the one that reads its pooled text vector."""
    try:
        return transformer.get_submodule(FLUX_TOKEN_INPUT), transformer.get_submodule(FLUX_POOLED_INPUT)
    except AttributeError:
        raise ErasekitError(
            f"{type(transformer).__name__} has no {FLUX_TOKEN_INPUT} / {FLUX_POOLED_INPUT}: not a FLUX transformer"
        ) from None


def flux_attentions(transformer: nn.Module) -> list[nn.Module]:
    """Every joint attention of a FLUX transformer (the double blocks', then the single blocks'), or of SD3's
    (each block's ``attn``; SD3.5's image-only ``attn2`` is left out), in module order."""
    found = [module for name, module in transformer.named_modules() if name.endswith(".attn") and hasattr(module, "to_q")]
    if not found:
        raise ErasekitError(f"{type(transformer).__name__} has no joint attention layers: not a FLUX transformer")
    return found


# ESD's groups on FLUX, as the official esd_flux.py selects them (Linear modules by name, weights and
# biases): esd-x every attention Linear (the double blocks' image and text streams, to_out and
# to_add_out, the single blocks' to_q/k/v); esd-x-strict those with to_k or to_v in the name, which
# leaves the text stream's add_k_proj/add_v_proj out, as the official substring test does.
FLUX_ESD_GROUPS = ("esd-x", "esd-x-strict")


def flux_esd_layers(transformer: nn.Module, group: str) -> list[str]:
    """The Linear layers of a FLUX transformer that ESD variant ``group`` trains, in module order."""
    if group not in FLUX_ESD_GROUPS:
        raise ErasekitError(f"ESD group {group!r} has no FLUX form; on FLUX choose {' or '.join(FLUX_ESD_GROUPS)}")
    strict = group == "esd-x-strict"
    found = [
        name
        for name, module in transformer.named_modules()
        if isinstance(module, nn.Linear) and "attn" in name and (not strict or "to_k" in name or "to_v" in name)
    ]
    if not found:
        raise ErasekitError(f"{type(transformer).__name__} has no attention Linear layers for ESD's {group}")
    return found
