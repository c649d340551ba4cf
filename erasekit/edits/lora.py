"""An edit as a diffusers LoRA: ``pipe.load_lora_weights(edit_dir)`` with no erasekit installed.

Each changed linear or convolution weight W = W₀ + Δ is factored as Δ ≈ B A by SVD. Closed-form
edits are exactly low-rank (UCE's Δ = W₀(M − I) has the rank of E* − E, the number of edited token
states), so their LoRA reproduces the edit to float precision at a small rank; fine-tuned deltas
(ESD) are full-rank and are truncated, with the relative error recorded. Bias changes travel as
``lora_B.bias`` (peft's ``lora_bias``). Keys follow diffusers' peft layout:
``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (FLUX: ``transformer.<module>…``); α equals the rank,
so the scale is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.io import write_with

if TYPE_CHECKING:
    from erasekit.edits import Edit

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' load_lora_weights looks for


class NotLoraable(ErasekitError):
    """The edit changes something a LoRA file cannot carry (a norm layer; for kohya, a bias)."""


@dataclass
class LoraExport:
    """An edit as LoRA factors: the ``tensors`` in diffusers' peft layout, the ``ranks`` kept per module, and
    the ``relative_error`` ‖Δ − BA‖ / ‖Δ‖ of the factorisation."""

    tensors: dict[str, torch.Tensor]
    ranks: dict[str, int]  # module → rank kept
    relative_error: float  # ‖Δ − BA‖ / ‖Δ‖ over every factored weight (Frobenius)
    component: str = "unet"  # the pipeline's denoiser the modules belong to: "unet", or FLUX's "transformer"


def lora_factors(
    edit: Edit, unet: nn.Module, max_rank: int | None = None, tolerance: float = 1e-5, component: str = "unet"
) -> LoraExport:
    """B, A (and bias deltas) of every module ``edit`` changes, against ``unet``'s current weights (or, with
    ``component="transformer"``, a FLUX transformer's: keys ``transformer.<module>...``).

    The rank of each module is the number of singular values above ``tolerance`` × the largest,
    at most ``max_rank``.
    """
    modules = dict(unet.named_modules())
    params = dict(unet.named_parameters())
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    if edit.text_encoder_names:
        raise NotLoraable(
            f"this edit changes the text encoder, which a {'UNet' if component == 'unet' else component} LoRA does not carry; "
            "export it as a single file "
            "(erasekit export --format single-file) or use its edit directory"
        )
    for name, value in edit.weights.items():
        module_name, _, kind = name.rpartition(".")
        module = modules.get(module_name)
        if not isinstance(module, nn.Linear | nn.Conv2d) or kind not in ("weight", "bias"):
            raise NotLoraable(
                f"{name} is not a linear or convolution weight: a LoRA cannot carry this edit; "
                "use its edit.safetensors or save the whole pipeline (--save-pipeline)"
            )
        by_module.setdefault(module_name, {})[kind] = value.detach().float() - params[name].detach().float()
    tensors, ranks, err2, total2 = {}, {}, 0.0, 0.0
    for module_name, deltas in by_module.items():
        module = modules[module_name]
        weight = deltas.get("weight", torch.zeros_like(module.weight, dtype=torch.float32))
        flat = weight.reshape(weight.shape[0], -1).double()
        u, s, vh = torch.linalg.svd(flat, full_matrices=False)
        keep = max(1, int((s > tolerance * s[0]).sum())) if s[0] > 0 else 1
        keep = min(keep, max_rank) if max_rank else keep
        b, a = (u[:, :keep] * s[:keep]).float(), vh[:keep].float()
        err2 += float((flat.float() - b @ a).pow(2).sum())
        total2 += float(flat.pow(2).sum())
        if isinstance(module, nn.Conv2d):
            a = a.reshape(keep, *weight.shape[1:])
            b = b.reshape(*b.shape, 1, 1)
        prefix = f"{component}.{module_name}"
        tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a.contiguous(), b.contiguous()
        if "bias" in deltas:
            tensors[f"{prefix}.lora_B.bias"] = deltas["bias"].contiguous()
        ranks[module_name] = keep
    if any(k.endswith("lora_B.bias") for k in tensors):  # peft's lora_bias is all or nothing: zeros elsewhere
        for module_name in by_module:
            lora_b = tensors[f"{component}.{module_name}.lora_B.weight"]
            tensors.setdefault(f"{component}.{module_name}.lora_B.bias", torch.zeros(lora_b.shape[0], device=lora_b.device))
    return LoraExport(tensors, ranks, (err2 / total2) ** 0.5 if total2 > 0 else 0.0, component)


def save_lora(export: LoraExport, directory: Path) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` into ``directory`` atomically."""
    path = Path(directory) / LORA_FILE
    write_with(path, lambda tmp: save_file(export.tensors, str(tmp), metadata={"format": "pt"}))
    return path
