"""Loading pipelines: the embedded model, a diffusers directory, a single checkpoint file or a hub id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from erasekit.errors import ErasekitError
from erasekit.models import embedded

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

EMBEDDED_NAME = "erasekit-tiny"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def resolve_model(model: str | Path | None) -> str | Path:
    """The embedded directory for ``None`` / ``"erasekit-tiny"``, else ``model`` unchanged."""
    if model is None or str(model) == EMBEDDED_NAME:
        return embedded.ensure_text_encoder(embedded.EMBEDDED_DIR)
    return model


def load_pipeline(
    model: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    config: str | Path | None = None,
) -> DiffusionPipeline:
    """Load a Stable-Diffusion-family pipeline, with progress bars off and a one-line error on failure.

    ``config`` serves single files: a diffusers directory (or hub id) whose component configs the
    checkpoint's weights fill, so no config is fetched from the hub. A text encoder that the original
    layout cannot hold (anything but CLIP, as in the embedded model) is taken from that directory.
    """
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    source = resolve_model(model)
    path = Path(source)
    try:
        if path.is_dir():
            if not (path / "model_index.json").exists():
                raise ErasekitError(
                    f"{path} is not a diffusers pipeline directory (no model_index.json); "
                    "pass a directory written by save_pretrained, a .safetensors/.ckpt file or a hub id"
                )
            pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype)
        elif path.suffix in SINGLE_FILE_SUFFIXES:
            if not path.exists():
                raise ErasekitError(f"checkpoint file {path} does not exist")
            pipe = StableDiffusionPipeline.from_single_file(str(path), dtype=dtype, **_single_file_extras(config))
        elif path.exists():
            raise ErasekitError(f"{path} is neither a pipeline directory nor a {'/'.join(SINGLE_FILE_SUFFIXES)} file")
        elif str(source).startswith(("/", "./", "../", "~")):
            raise ErasekitError(f"model directory {path} does not exist")
        else:
            pipe = DiffusionPipeline.from_pretrained(str(source), dtype=dtype)
    except ErasekitError:
        raise
    except Exception as err:  # diffusers raises many types; the user needs the cause in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ErasekitError(f"could not load a pipeline from {source}: {first}") from err
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _single_file_extras(config: str | Path | None) -> dict:
    if config is None:
        return {}
    extras: dict = {"config": str(config)}
    index = Path(config) / "model_index.json"
    if index.exists() and json.loads(index.read_text()).get("text_encoder", [None, None])[1] != "CLIPTextModel":
        from transformers import AutoModel, AutoTokenizer

        extras["text_encoder"] = AutoModel.from_pretrained(Path(config) / "text_encoder")
        extras["tokenizer"] = AutoTokenizer.from_pretrained(Path(config) / "tokenizer")
    return extras
