"""Writing a pipeline as one original-layout (LDM / CompVis) checkpoint file.

WebUIs (AUTOMATIC1111, ComfyUI) and diffusers' ``from_single_file`` read Stable Diffusion as one
file in the original CompVis layout: ``model.diffusion_model.*`` for the UNet, ``first_stage_model.*``
for the VAE and ``cond_stage_model.transformer.*`` for a CLIP text encoder. diffusers ships the
reverse conversion only as a repository script fixed to SD-1.x's four blocks of two layers; the
names here are derived from the model's own config, so any block count and depth converts.

Only UNet2DConditionModel and AutoencoderKL layouts are covered (SD 1.x / 2.x style UNets). A
text encoder other than CLIP has no place in that layout: it is left out, and loading then takes
the text encoder and tokenizer from a diffusers directory (``load_pipeline(file, config=dir)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from erasekit.errors import ErasekitError
from erasekit.io import write_with

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {  # diffusers name → LDM name
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_prefixes(unet: UNet2DConditionModel) -> dict[str, str]:
    """Block prefixes, diffusers → LDM: input blocks count resnets and downsamplers, output blocks go L+1 deep."""
    config = unet.config
    depth = config.layers_per_block
    if not isinstance(depth, int):
        raise ErasekitError("per-block layer counts are not supported by the single-file export")
    prefixes = {}
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{i * (depth + 1) + j + 1}.0."
            if getattr(block, "attentions", None):
                prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{i * (depth + 1) + j + 1}.1."
        if block.downsamplers:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (depth + 1)}.0.op."
    for i, block in enumerate(unet.up_blocks):
        has_attention = bool(getattr(block, "attentions", None))
        for j in range(len(block.resnets)):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * (depth + 1) + j}.0."
            if has_attention:
                prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * (depth + 1) + j}.1."
        if block.upsamplers:
            slot = 2 if has_attention else 1
            prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{i * (depth + 1) + depth}.{slot}."
    prefixes["mid_block.resnets.0."] = "middle_block.0."
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    prefixes["mid_block.resnets.1."] = "middle_block.2."
    return prefixes


def _rename(name: str, prefixes: dict[str, str], inner: dict[str, str], inner_under: str) -> str:
    for hf, ldm in prefixes.items():
        if name.startswith(hf):
            rest = name[len(hf) :]
            if inner_under in hf:
                module, _, param = rest.rpartition(".")
                rest = f"{inner.get(module, module)}.{param}"
            return ldm + rest
    return name


def unet_to_ldm(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """The UNet's state dict under LDM names (without the ``model.diffusion_model.`` prefix)."""
    if unet.config.addition_embed_type is not None or unet.config.class_embed_type is not None:
        raise ErasekitError("the single-file export covers SD 1.x/2.x UNets; SDXL-style added embeddings are not mapped")
    prefixes = _unet_prefixes(unet)
    out = {}
    for name, tensor in unet.state_dict().items():
        module, _, param = name.rpartition(".")
        if module in _UNET_FIXED:
            out[f"{_UNET_FIXED[module]}.{param}"] = tensor
        else:
            out[_rename(name, prefixes, _UNET_RESNET, "resnets")] = tensor
    return out


def vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """The VAE's state dict under LDM names; attention projections become 1×1 convolutions as LDM stores them."""
    blocks = len(vae.config.block_out_channels)
    prefixes = {}
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        if block.downsamplers:
            prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
    for i, block in enumerate(vae.decoder.up_blocks):
        for j in range(len(block.resnets)):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{blocks - 1 - i}.block.{j}."
        if block.upsamplers:
            prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{blocks - 1 - i}.upsample."
    for part in ("encoder", "decoder"):
        for j in range(2):
            prefixes[f"{part}.mid_block.resnets.{j}."] = f"{part}.mid.block_{j + 1}."
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        prefixes[f"{part}.conv_norm_out."] = f"{part}.norm_out."
    out = {}
    for name, tensor in vae.state_dict().items():
        ldm = _rename(name, prefixes, _VAE_ATTENTION, "attentions").replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[ldm] = tensor
    return out


def ldm_state_dict(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """UNet, VAE and (if CLIP) text encoder under the original checkpoint's names, contiguous for safetensors."""
    state = {UNET_PREFIX + k: v for k, v in unet_to_ldm(pipe.unet).items()}
    state |= {VAE_PREFIX + k: v for k, v in vae_to_ldm(pipe.vae).items()}
    if type(pipe.text_encoder).__name__ == "CLIPTextModel":  # SD 1.x stores the HF CLIP names unchanged
        state |= {CLIP_PREFIX + k: v for k, v in pipe.text_encoder.state_dict().items()}
    return {k: v.detach().contiguous() for k, v in state.items()}


def refuse_lost_text_encoder(pipe: DiffusionPipeline, text_encoder_changed: bool) -> None:
    """An error when an edit changed a text encoder that a single file does not hold (any but CLIP)."""
    if text_encoder_changed and type(pipe.text_encoder).__name__ != "CLIPTextModel":
        raise ErasekitError(
            f"this edit changes the text encoder, and a single file holds only a CLIP one, not {type(pipe.text_encoder).__name__}; "
            "save the whole pipeline instead (erase --save-pipeline)"
        )


def save_single_file(pipe: DiffusionPipeline, path: Path, text_encoder_changed: bool = False) -> Path:
    """Write ``pipe`` as one ``.safetensors`` checkpoint in the original layout, atomically; refused when
    an edit changed a text encoder the layout does not hold (any but CLIP)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ErasekitError(f"single-file checkpoints are written as .safetensors, not {path.suffix or 'no suffix'}")
    refuse_lost_text_encoder(pipe, text_encoder_changed)
    state = ldm_state_dict(pipe)
    write_with(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return path
