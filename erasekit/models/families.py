"""Model families: which kind of text-to-image model a pipeline is, read from the pipeline itself.

A family says how a prompt becomes conditioning (how many text encoders), what the denoiser is (a
UNet or a transformer), what it is trained to predict, and which of its layers read the text: what
a method needs to know before it can edit a model. The families are those people run: SD 1.x/2.x,
SDXL, SD3 and FLUX. A method registers the families it runs on; a pair it does not support is
refused in one line, before the model loads where the model's directory says its family
(:func:`family_of_model`), else as soon as it has loaded (:func:`family_of`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Family:
    """One model family: its ``name`` (``sd``, ``sdxl``, ``sd3``, ``flux``), how it is called in a message,
    the diffusers pipeline classes that belong to it, its denoiser, its text encoders, what it
    predicts, and the layers that read the text (the layers the closed forms and ESD-x edit)."""

    name: str
    title: str
    pipelines: tuple[str, ...]
    denoiser: str  # the pipeline's component: "unet" or "transformer"
    text_encoders: int
    prediction: str
    text_layers: str


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("sd", "SD 1.x/2.x", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionPipelineSafe"),
               "unet", 1, "ε or v", "attn2.to_k / attn2.to_v of the UNet's cross-attention"),
        Family("sdxl", "SDXL", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"), "unet", 2, "ε or v",
               "attn2.to_k / attn2.to_v, reading both encoders' states concatenated (768 + 1280)"),
        Family("sd3", "SD3", ("StableDiffusion3Pipeline",), "transformer", 3, "flow-matching velocity",
               "the text stream of the joint blocks: attn.add_k_proj / add_v_proj / add_q_proj, context_embedder"),
        Family("flux", "FLUX", ("FluxPipeline",), "transformer", 2, "flow-matching velocity",
               "the text stream of the double blocks (attn.add_k_proj / add_v_proj / add_q_proj), context_embedder, "
               "time_text_embed.text_embedder"),
    )
}  # fmt: skip
ALL_FAMILIES = tuple(FAMILIES)


def family_named(class_name: str) -> Family | None:
    """The family a diffusers pipeline class belongs to, or None for a class erasekit does not know."""
    return next((f for f in FAMILIES.values() if class_name in f.pipelines), None)


def class_family(cls: type) -> Family | None:
    """The family of a pipeline class or of the nearest class it derives from (a subclass of
    ``FluxPipeline`` is a FLUX pipeline); None when none is known."""
    return next((family for c in cls.__mro__ if (family := family_named(c.__name__)) is not None), None)


def family_of(pipe: object) -> Family:
    """The family of a loaded pipeline, from its class; a pipeline of no known family is one line."""
    family = class_family(type(pipe))
    if family is None:
        known = ", ".join(f"{f.title} ({', '.join(f.pipelines[:1])})" for f in FAMILIES.values())
        raise ErasekitError(f"{type(pipe).__name__} is not a pipeline erasekit knows; it runs on {known}")
    return family


def family_of_model(model: str | Path | None) -> Family | None:
    """The family a model directory declares in its ``model_index.json`` (None: the embedded model, an
    SD family pipeline), read without loading anything; None where that cannot be told before loading
    (a hub id, a single file, a directory without the file: the loader says what is wrong)."""
    if model is None or str(model) == "erasekit-tiny":
        return FAMILIES["sd"]
    if str(model) == "erasekit-tiny-flux":
        return FAMILIES["flux"]
    index = Path(model) / "model_index.json"
    try:
        class_name = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError):  # not a directory, no such file, not JSON, not an object
        return None
    return family_named(str(class_name))


def check_family(family: Family, what: str, supported: tuple[str, ...]) -> None:
    """Refuse ``what`` (a method or attack, by name) on a family outside ``supported``, in one line."""
    if family.name not in supported:
        runs_on = ", ".join(FAMILIES[name].title for name in supported)
        raise ErasekitError(
            f"{what} does not run on {family.title} models yet (it runs on {runs_on}); "
            "`erasekit methods` shows which method runs on which family"
        )


def pipeline_family(pipe: object) -> Family:
    """The family of ``pipe``; a pipeline-like object of no known class (a bare UNet holder in tests and
    scripts) is taken as SD's, whose components it has."""
    return class_family(type(pipe)) or FAMILIES["sd"]


def denoiser(pipe: object) -> torch.nn.Module:
    """The pipeline's denoiser: its UNet (SD, SDXL) or its transformer (SD3, FLUX)."""
    return getattr(pipe, pipeline_family(pipe).denoiser)


def sequence_length(pipe: object) -> int:
    """How many tokens the T5 token path of a FLUX or SD3 pipeline is padded to: its tokenizer's own length
    where that is within the pipeline's default (FLUX 512, SD3 256; erasekit-tiny-flux: 32)."""
    if pipeline_family(pipe).name == "sd3":
        return min(int(pipe.tokenizer_3.model_max_length), 256)
    return min(int(pipe.tokenizer_2.model_max_length), 512)


def check_components(model: str | Path | None, family: Family) -> None:
    """Refuse, before loading, a model directory whose ``model_index.json`` lacks a component its family
    needs (a FLUX or SDXL pipeline saved without its second text encoder); other sources pass."""
    if model is None or str(model) in ("erasekit-tiny", "erasekit-tiny-flux"):
        return
    try:
        index = json.loads((Path(model) / "model_index.json").read_text())
    except (OSError, ValueError):
        return
    encoders = ("text_encoder", "text_encoder_2", "text_encoder_3")[: family.text_encoders]
    for name in (family.denoiser, *encoders):
        entry = index.get(name)
        if not isinstance(entry, list) or None in entry:
            raise ErasekitError(f"{model} is a {family.title} pipeline without its {name}; erasekit needs the whole pipeline")
