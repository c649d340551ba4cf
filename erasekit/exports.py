"""An edit exported for the tools people load models with (``erasekit export DIR --format …``).

* ``kohya``: one ``.safetensors`` LoRA in kohya-ss naming, the file AUTOMATIC1111, ComfyUI and
  diffusers' ``load_lora_weights`` read: ``lora_unet_<module path, dots as underscores>`` with
  ``.lora_down.weight`` (A), ``.lora_up.weight`` (B) and ``.alpha``. Like a kohya-trained file it has
  one dim and one α for every module (α = dim, so the scale α/r is 1 and the strength slider's 1.0
  is the edit itself): a module of lower rank is padded with zeros. Loaders that meet several α
  in one file apply them unevenly (diffusers 0.42 drops a kohya attention layer's own α), so the
  file never has more than one. kohya's format has no bias
  deltas, so an edit that changes a bias (ESD-x's ``to_out.0.bias``) is refused with the two
  formats that carry it.
* ``diffusers-lora``: a directory with ``pytorch_lora_weights.safetensors`` (see :mod:`erasekit.lora`).
* ``single-file``: the whole erased model as one original-layout checkpoint.

Both LoRAs are the SVD factors of the edit against the base model's weights, so the base model is
loaded (the card's, or ``model``) and its hash checked first. Norm or embedding parameters cannot
be a LoRA: such an edit (ESD-u ``parameters=with-norms``) is refused for the two LoRA formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.io import atomic_dir, write_with
from erasekit.lora import LoraExport, NotLoraable, lora_factors, save_lora

FORMATS = ("kohya", "diffusers-lora", "single-file")
KOHYA_PREFIX = "lora_unet_"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Exported:
    path: Path
    max_rank: int | None = None  # the LoRA formats: the largest rank kept …
    relative_error: float | None = None  # … and ‖Δ − BA‖ / ‖Δ‖ over the edit
    note: str | None = None


def kohya_tensors(export: LoraExport, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``export``'s factors under kohya-ss names, each module with its α (= its rank: scale 1)."""
    biased = [k for k in export.tensors if k.endswith("lora_B.bias")]
    if biased:
        module = biased[0].removeprefix("unet.").removesuffix(".lora_B.bias")
        raise NotLoraable(
            f"this edit changes biases ({module}.bias), which a kohya LoRA cannot carry; "
            "export it as --format diffusers-lora or single-file"
        )
    dim, out = max(export.ranks.values()), {}
    for module, rank in export.ranks.items():
        key = KOHYA_PREFIX + module.replace(".", "_")
        down, up = export.tensors[f"unet.{module}.lora_A.weight"], export.tensors[f"unet.{module}.lora_B.weight"]
        # one dim for every module, the rows and columns beyond a module's rank zero (exact)
        down = torch.cat([down, down.new_zeros(dim - rank, *down.shape[1:])])
        up = torch.cat([up, up.new_zeros(up.shape[0], dim - rank, *up.shape[2:])], dim=1)
        out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down.to(dtype).contiguous(), up.to(dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(dim), dtype=dtype)
    return out


def kohya_metadata(card: dict, export: LoraExport) -> dict[str, str]:
    """The ``ss_*`` keys kohya-ss writes (what WebUIs show about a LoRA), plus what was erased."""
    rank = str(max(export.ranks.values()))
    about = {k: card.get(k) for k in ("method", "targets", "anchors", "preserve", "model", "config", "erasekit_version")}
    return {
        "format": "pt",
        "ss_network_module": "networks.lora",
        "ss_network_dim": rank,
        "ss_network_alpha": rank,
        "ss_output_name": "erased-" + "-".join(card.get("targets", []))[:80],
        "erasekit_card": json.dumps(about, default=str),
    }


def export_edit(
    edit_dir: Path,
    fmt: str,
    out: Path,
    model: str | None = None,
    max_rank: int | None = None,
    dtype: str = "fp32",
    check_base: bool = True,
) -> Exported:
    """Write the edit in ``edit_dir`` as ``fmt`` to ``out`` (a file, or a directory for diffusers-lora)."""
    from erasekit.models.loading import load_pipeline

    if fmt not in FORMATS:
        raise ErasekitError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ErasekitError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if fmt != "diffusers-lora" and Path(out).suffix != ".safetensors":
        raise ErasekitError(f"a {fmt} export is one .safetensors file; give --out a name ending in .safetensors")
    edit = Edit.load(edit_dir)
    if edit.has_erasers:
        raise ErasekitError(
            f"the {edit.card.get('method')} edit in {edit_dir} adds eraser modules to the UNet, which no {fmt} file "
            "carries; its edit directory is the artifact (erasekit.edits.load_erased puts them on the pipeline)"
        )
    if not edit.weights:
        raise ErasekitError(
            f"the {edit.card.get('method')} edit in {edit_dir} changes no weights (it guides sampling): "
            "there is nothing to export; its edit directory is the artifact"
        )
    note = None
    if edit.inference:
        note = (
            f"{edit.card.get('method')}'s per-prompt inference ({', '.join(edit.inference)}) does not travel in a {fmt} "
            "export: it holds the merged weights, every prompt at full strength"
        )
    # single files are written in the asked precision; LoRA factors are taken in float32 and cast after
    pipe = load_pipeline(model or edit.card.get("model"), dtype if fmt == "single-file" else "fp32", "cpu", progress=False)
    if check_base:
        edit.check_base(pipe)
    if fmt == "single-file":
        from erasekit.models.ldm_checkpoint import save_single_file

        # an inference-time edit with weights (SPM) goes as its merged weights: transport off
        Edit(edit.weights, {**edit.card, "inference": None}).apply(pipe, check_base=False)
        return Exported(save_single_file(pipe, out, bool(edit.text_encoder_names)), note=note)
    export = lora_factors(edit, pipe.unet, max_rank=max_rank)
    if fmt == "kohya":
        tensors = kohya_tensors(export, DTYPES[dtype])
        metadata = kohya_metadata(edit.card, export)
        write_with(Path(out), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        export = LoraExport({k: v.to(DTYPES[dtype]) for k, v in export.tensors.items()}, export.ranks, export.relative_error)
        with atomic_dir(Path(out)) as tmp:
            save_lora(export, tmp)
    return Exported(Path(out), max(export.ranks.values()), export.relative_error, note)
