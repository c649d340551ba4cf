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
* ``diffusers-lora``: a directory with ``pytorch_lora_weights.safetensors`` (see :mod:`erasekit.edits.lora`).
* ``single-file``: the whole erased model as one original-layout checkpoint.
* ``pipeline``: the whole erased pipeline as a diffusers directory (``save_pretrained``).

``erasekit erase --lora / --save-pipeline / --save-single-file`` write through :func:`export_loaded`
too, so an edit leaves erasekit one way, whichever command writes it.

Both LoRAs are the SVD factors of the edit against the base model's weights, so the base model is
loaded (the card's, or ``model``) and its hash checked first. Norm or embedding parameters cannot
be a LoRA: such an edit (ESD-u ``parameters=with-norms``) is refused for the two LoRA formats.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from erasekit.edits import Edit
from erasekit.edits.lora import LoraExport, NotLoraable, lora_factors, save_lora
from erasekit.errors import ErasekitError
from erasekit.io import atomic_dir, write_with
from erasekit.models.families import Family, denoiser, family_of_model, pipeline_family

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

FORMATS = ("kohya", "diffusers-lora", "single-file", "pipeline")
WHOLE_MODEL = ("single-file", "pipeline")  # the formats that write the whole erased model, not a LoRA
MAX_RANK = 4096  # far above any layer of a real model: a typo guard
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The FLUX modules whose kohya names (lora_transformer_<module>) loaders map back: diffusers' converter reads a
# block's attention projections and the embedders, and folds any other block layer (ff, proj_mlp, a single
# block's proj_out) onto the block itself
FLUX_KOHYA_MODULES = re.compile(
    r"((single_)?transformer_blocks\.\d+\.attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)"
    r"|context_embedder|norm_out\.linear|proj_out|x_embedder|time_text_embed\.(guidance|text|timestep)_embedder\.linear_\d)"
)


@dataclass
class Exported:
    """What an export wrote: its path, for the LoRA formats the largest rank and the relative error of
    the factors, and a note on what did not travel (SPM's per-prompt transport)."""

    path: Path
    max_rank: int | None = None  # the LoRA formats: the largest rank kept …
    relative_error: float | None = None  # … and ‖Δ − BA‖ / ‖Δ‖ over the edit
    note: str | None = None


def kohya_tensors(export: LoraExport, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``export``'s factors under kohya-ss names, each module with its α (= its rank: scale 1)."""
    component = export.component
    biased = [k for k in export.tensors if k.endswith("lora_B.bias")]
    if biased:
        module = biased[0].removeprefix(f"{component}.").removesuffix(".lora_B.bias")
        raise NotLoraable(
            f"this edit changes biases ({module}.bias), which a kohya LoRA cannot carry; "
            "export it as --format diffusers-lora or single-file"
        )
    unmapped = sorted(m for m in export.ranks if component == "transformer" and not FLUX_KOHYA_MODULES.fullmatch(m))
    if unmapped:
        raise NotLoraable(
            f"this edit changes {unmapped[0]}, which a kohya FLUX LoRA cannot name (loaders read only the blocks' "
            "attention projections and the embedders); export it as --format diffusers-lora or pipeline"
        )
    dim, out = max(export.ranks.values()), {}
    for module, rank in export.ranks.items():
        key = f"lora_{component}_" + module.replace(".", "_")  # lora_unet_… (SD, SDXL), lora_transformer_… (FLUX)
        down, up = export.tensors[f"{component}.{module}.lora_A.weight"], export.tensors[f"{component}.{module}.lora_B.weight"]
        # one dim for every module, the rows and columns beyond a module's rank zero (exact)
        down = torch.cat([down, down.new_zeros(dim - rank, *down.shape[1:])])
        up = torch.cat([up, up.new_zeros(up.shape[0], dim - rank, *up.shape[2:])], dim=1)
        out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down.to(dtype).contiguous(), up.to(dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(dim), dtype=dtype)
    return out


def kohya_metadata(card: dict, export: LoraExport) -> dict[str, str]:
    """What WebUIs show about a LoRA: kohya-ss's ``ss_*`` keys and Stability's model spec (``modelspec.*``,
    https://github.com/Stability-AI/ModelSpec, as kohya-ss writes it for an SD LoRA), plus what was erased.

    Every value is a string and none is a clock's: a rerun writes the same metadata (``modelspec.date``
    is the card's ``created``). The base model's generation is read from the cross-attention width of the
    exported modules (768: SD 1.x, 1024: SD 2.x, 2048: SDXL), else from the model's name; the embedded
    model has SD 1.x's layout, and an unknown one is taken as SD 1.x, as kohya-ss and AUTOMATIC1111 do."""
    from erasekit.models.provenance import base_model, md

    def strings(key: str) -> list[str]:  # the card's list of concepts, whatever a hand-edited card holds
        value = card.get(key)
        return [str(v) for v in value if v] if isinstance(value, list) else []

    rank = str(max(export.ranks.values()))
    about = {k: card.get(k) for k in ("method", "targets", "anchors", "preserve", "model", "config", "erasekit_version")}
    model = card.get("model")
    base = base_model(model if isinstance(model, str) else None)
    widths = {
        int(t.shape[1]) for k, t in export.tensors.items() if k.endswith(("attn2.to_k.lora_A.weight", "attn2.to_v.lora_A.weight"))
    }
    name = base.name.lower()
    if export.component == "transformer":  # FLUX.1: kohya-ss's sd-scripts name it so
        version = "flux1"
    elif base.embedded or 768 in widths:
        version = "sd_v1"
    elif 2048 in widths or (not widths and "xl" in name):
        version = "sdxl_base_v1-0"
    elif 1024 in widths or (not widths and ("stable-diffusion-2" in name or "sd2" in name)):
        version = "sd_v2"
    else:
        version = "sd_v1"
    v_prediction = version == "sd_v2" and "base" not in name and ("stable-diffusion-2" in name or "768" in name)  # SD 2.x 768-v
    architecture = {
        "sd_v1": "stable-diffusion-v1",
        "sd_v2": "stable-diffusion-v2-768-v" if v_prediction else "stable-diffusion-v2-512",
    }
    architecture["flux1"] = "flux-1-dev"
    resolution = {"sd_v1": "512x512", "sd_v2": "768x768" if v_prediction else "512x512", "sdxl_base_v1-0": "1024x1024",
                  "flux1": "1024x1024"}[version]  # fmt: skip
    if base.embedded:  # its images' size, from its VAE's config (erasekit-tiny-flux draws at the same size)
        from erasekit.models.embedded import EMBEDDED_DIR

        try:
            size = int(json.loads((Path(EMBEDDED_DIR) / "vae" / "config.json").read_text())["sample_size"])
            resolution = f"{size}x{size}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    targets, anchors, preserve = strings("targets"), card.get("anchors"), strings("preserve")
    anchors = [str(a) if a else "" for a in anchors] if isinstance(anchors, list) else []
    method = str(card.get("method") or "unknown")
    onto = [
        f"{md(t)} → {md(a) if a else '(the empty prompt)'}" for t, a in zip(targets, anchors or [""] * len(targets), strict=False)
    ]
    # Markdown, which UIs render: every string of the card escaped as on the hub page
    description = (
        f"{md(base.name)} with {', '.join(onto)} erased by {md(method)} (erasekit {md(card.get('erasekit_version', ''))}); "
        + (f"preserved: {', '.join(map(md, preserve))}. " if preserve else "")
        + "A weight edit, not a style: it has no trigger word, and strength 1.0 is the edit as made."
    )
    metadata = {
        "format": "pt",
        "ss_network_module": "networks.lora",
        "ss_network_dim": rank,
        "ss_network_alpha": rank,
        "ss_output_name": "erased-" + "-".join(targets)[:80],
        "ss_base_model_version": version,
        "ss_v2": str(version == "sd_v2"),
        "ss_sd_model_name": base.name,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture.get(version, "stable-diffusion-xl-v1-base") + "/lora",
        "modelspec.implementation": "diffusers",  # the LoRA's module names are diffusers' (kohya-ss writes the same for SD LoRAs)
        "modelspec.title": " ".join(f"{base.name} with {', '.join(targets)} erased".split())[:200],
        "modelspec.description": description,
        "modelspec.resolution": resolution,
        **({} if version == "flux1" else {"modelspec.prediction_type": "v" if v_prediction else "epsilon"}),
        "modelspec.tags": "erasekit,concept-erasure," + "-".join(method.replace(",", " ").split()),
        "modelspec.usage_hint": " ".join(f"No trigger word; load at strength 1.0 to erase {', '.join(targets)}".split()),
        "erasekit_card": json.dumps(about, default=str),
    }
    if base.license:
        metadata["modelspec.license"] = base.license
    if isinstance(card.get("created"), str):  # when the edit was made (the card's, so a rerun writes the same)
        metadata["modelspec.date"] = card["created"]
    return metadata


def refuse_unexportable(edit: Edit, fmt: str, where: object) -> str | None:
    """One line, before any model loads, for an edit that ``fmt`` (one of :data:`FORMATS`) cannot carry;
    else the note on what does not travel (None when everything does). The edit's kind says both."""
    kind = edit.kind
    refusal = kind.export_refusal(edit, fmt)
    if refusal is not None:
        raise ErasekitError(f"the {edit.card.get('method')} edit in {where} {refusal}")
    return kind.export_note(edit, fmt)


def merge_weights(edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
    """``pipe`` with the edit's weights written into it, for a whole-model export, as the edit's kind
    merges them. An inference-time edit with weights (SPM) goes as its merged weights, transport off:
    applied as it is, it would hand back a pipeline whose own weights are still the base model's."""
    edit.check(pipe, check_base=False)
    return edit.kind.merge(edit, pipe)


def export_loaded(
    edit: Edit, pipe: DiffusionPipeline, fmt: str, out: Path, max_rank: int | None = None, dtype: str = "fp32"
) -> Exported:
    """Write ``edit`` made on the loaded base ``pipe`` as ``fmt`` to ``out``. The whole-model formats
    write ``pipe`` itself with the edit merged into it (in its precision); the LoRA formats take the
    factors in float32 and cast them to ``dtype``."""
    check_export_request(fmt, out, max_rank, dtype)
    note = refuse_unexportable(edit, fmt, "this edit")
    refuse_format(pipeline_family(pipe), fmt)
    if fmt in WHOLE_MODEL:
        merge_weights(edit, pipe)
        if fmt == "pipeline":
            with atomic_dir(Path(out)) as tmp:
                pipe.save_pretrained(tmp)
            return Exported(Path(out), note=note)
        from erasekit.models.ldm_checkpoint import save_single_file

        return Exported(save_single_file(pipe, out, bool(edit.text_encoder_names)), note=note)
    family = pipeline_family(pipe)
    export = lora_factors(edit, denoiser(pipe), max_rank=max_rank, component=family.denoiser)
    if fmt == "kohya":
        tensors = kohya_tensors(export, DTYPES[dtype])
        metadata = kohya_metadata(edit.card, export)
        write_with(Path(out), lambda tmp: _save_sorted(tensors, tmp, metadata))
    else:
        export = LoraExport({k: v.to(DTYPES[dtype]) for k, v in export.tensors.items()}, export.ranks, export.relative_error)
        with atomic_dir(Path(out)) as tmp:
            save_lora(export, tmp)
    return Exported(Path(out), max(export.ranks.values()), export.relative_error, note)


def _save_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``save_file``, then the header's keys sorted: safetensors writes its metadata in a random
    order, and a rerun of an export must write the same bytes. The sorted header is as long as the
    original (the same compact JSON), so the tensors' offsets still hold."""
    save_file(tensors, str(path), metadata=metadata)
    data = Path(path).read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(header) <= length:  # (it always is: the same JSON, reordered)
        Path(path).write_bytes(data[:8] + header.ljust(length) + data[8 + length :])


def refuse_format(family: Family, fmt: str) -> None:
    """One line for an export whose format cannot carry the family's edit: a single file of a model other
    than SD 1.x/2.x (its original layout is SD's), a kohya LoRA of SD3 (kohya's SD3 keys follow SD3's
    original checkpoint, not diffusers' layer names)."""
    if fmt == "single-file" and family.name != "sd":
        raise ErasekitError(
            f"a single-file export holds an SD 1.x/2.x checkpoint; export a {family.title} model as a diffusers pipeline "
            "(--format pipeline, or erase --save-pipeline)"
        )
    if fmt == "kohya" and family.name == "sd3":
        raise ErasekitError("a kohya LoRA of an SD3 model is not written yet; export it as --format diffusers-lora or pipeline")


def check_export_request(fmt: str, out: Path, max_rank: int | None = None, dtype: str = "fp32") -> None:
    """The checks of an export that need nothing loaded: format, precision, rank and file name."""
    if fmt not in FORMATS:
        raise ErasekitError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ErasekitError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if max_rank is not None and not 1 <= max_rank <= MAX_RANK:
        raise ErasekitError(f"the LoRA rank cap must be 1 to {MAX_RANK}, not {max_rank}")
    if fmt in ("kohya", "single-file") and Path(out).suffix != ".safetensors":
        raise ErasekitError(f"a {fmt} export is one .safetensors file; give --out a name ending in .safetensors")


def export_edit(
    edit_dir: Path,
    fmt: str,
    out: Path,
    model: str | None = None,
    max_rank: int | None = None,
    dtype: str = "fp32",
    check_base: bool = True,
) -> Exported:
    """Write the edit in ``edit_dir`` as ``fmt`` to ``out`` (a file, or a directory for diffusers-lora and pipeline)."""
    from erasekit.models.loading import load_pipeline

    check_export_request(fmt, out, max_rank, dtype)
    edit = Edit.load(edit_dir)
    refuse_unexportable(edit, fmt, edit_dir)
    family = family_of_model(model or edit.card.get("model"))
    if family is not None:  # known from the model's name or directory: refused before it loads
        refuse_format(family, fmt)
    # whole models are written in the asked precision; LoRA factors are taken in float32 and cast after
    pipe = load_pipeline(model or edit.card.get("model"), dtype if fmt in WHOLE_MODEL else "fp32", "cpu", progress=False)
    if check_base:
        edit.check_base(pipe)
    return export_loaded(edit, pipe, fmt, out, max_rank, dtype)
