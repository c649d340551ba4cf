"""Loading pipelines: the embedded model, a diffusers directory, a single checkpoint file or a hub id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from erasekit.errors import ErasekitError
from erasekit.models import embedded
from erasekit.models.devices import DTYPE_NAMES, check_device_name, dtype_name

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

EMBEDDED_NAME = "erasekit-tiny"
EMBEDDED_FLUX_NAME = "erasekit-tiny-flux"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DTYPES = {name: getattr(torch, torch_name) for name, torch_name in DTYPE_NAMES.items()}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, checked to exist here; ``None`` means CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device_name(device)
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ErasekitError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ErasekitError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ErasekitError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ErasekitError(f"--device {device}: MPS is not available on this machine; use cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ErasekitError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp32, fp16 or bf16 (or torch's names for them); ``None`` means fp32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ErasekitError(f"unsupported dtype {dtype}; use fp32, fp16 or bf16")
        return dtype
    return DTYPES[dtype_name(str(dtype))]


def resolve_model(model: str | Path | None) -> str | Path:
    """The embedded directory for ``None`` / ``"erasekit-tiny"`` (and ``"erasekit-tiny-flux"``), else
    ``model`` unchanged."""
    if model is None or str(model) == EMBEDDED_NAME:
        return embedded.ensure_text_encoder(embedded.EMBEDDED_DIR)
    if str(model) == EMBEDDED_FLUX_NAME:
        if not (embedded.EMBEDDED_FLUX_DIR / "model_index.json").exists():
            raise ErasekitError(
                f"{EMBEDDED_FLUX_NAME} is not in this installation; train it with `erasekit world train --family flux`"
            )
        return embedded.ensure_text_encoder(embedded.EMBEDDED_FLUX_DIR)
    return model


def check_model_source(model: str | Path | None) -> str | Path:
    """The source :func:`load_pipeline` reads (:func:`resolve_model`), refused in one line where it cannot
    be a pipeline: a missing path, a directory without ``model_index.json``, a file of another kind.
    Reads no weights and imports no diffusers."""
    source = resolve_model(model)
    path = Path(source)
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ErasekitError(
                f"{path} is not a diffusers pipeline directory (no model_index.json); "
                "pass a directory written by save_pretrained, a .safetensors/.ckpt file or a hub id"
            )
    elif path.suffix in SINGLE_FILE_SUFFIXES:
        if not path.exists():
            raise ErasekitError(f"checkpoint file {path} does not exist")
    elif path.exists():
        raise ErasekitError(f"{path} is neither a pipeline directory nor a {'/'.join(SINGLE_FILE_SUFFIXES)} file")
    elif str(source).startswith(("/", "./", "../", "~")):
        raise ErasekitError(f"model directory {path} does not exist")
    return source


def check_device_and_dtype(device: str | torch.device | None, dtype: str | torch.dtype | None) -> None:
    """Refuse a bad ``--device`` or ``--dtype`` in one line; the jobs call it first, before they import
    the methods, exports and diffusers (a refusal in about a second, not seven)."""
    resolve_device(device)
    resolve_dtype(dtype)


def check_load(model: str | Path | None, device: str | torch.device | None, dtype: str | torch.dtype | None) -> None:
    """What :func:`load_pipeline` would refuse before it loads anything (the model's source, the device,
    the dtype), refused in one line without importing diffusers: the jobs that load ``model`` call it first."""
    check_device_and_dtype(device, dtype)
    check_model_source(model)


def load_pipeline(
    model: str | Path | None = None,
    dtype: str | torch.dtype | None = torch.float32,
    device: str | torch.device | None = "cpu",
    config: str | Path | None = None,
    progress: bool = True,
) -> DiffusionPipeline:
    """Load a Stable-Diffusion-family pipeline, with progress bars off and a one-line error on failure.

    ``device`` (None: CUDA when present, else CPU) and ``dtype`` (fp32, fp16, bf16) are checked
    before anything loads. Methods, judges and protocols then run where the pipeline is.

    ``config`` serves single files: a diffusers directory (or hub id) whose component configs the
    checkpoint's weights fill, so no config is fetched from the hub. A text encoder that the original
    layout cannot hold (anything but CLIP, as in the embedded model) is taken from that directory.
    """
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    device, dtype = resolve_device(device), resolve_dtype(dtype)
    source = check_model_source(model)
    shown = [lib.is_progress_bar_enabled() for lib in (diffusers_logging, transformers_logging)]
    if not progress:  # the CLI keeps stderr for its one-line errors
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    verbosity = diffusers_logging.get_verbosity()
    embedded_dirs = (Path(embedded.EMBEDDED_DIR).resolve(), Path(embedded.EMBEDDED_FLUX_DIR).resolve())
    if Path(source).resolve() in embedded_dirs:  # their BERT text encoder, where CLIP (and T5) is "expected", is by design
        diffusers_logging.set_verbosity_error()
    path = Path(source)
    try:
        if path.is_dir():
            pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype)
        elif path.suffix in SINGLE_FILE_SUFFIXES:
            pipe = StableDiffusionPipeline.from_single_file(str(path), dtype=dtype, **_single_file_extras(config, dtype))
        else:
            pipe = DiffusionPipeline.from_pretrained(str(source), dtype=dtype)
    except ErasekitError:
        raise
    except Exception as err:  # diffusers raises many types; the user needs the cause in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ErasekitError(f"could not load a pipeline from {source}: {first}") from err
    finally:
        diffusers_logging.set_verbosity(verbosity)
        for lib, was_shown in zip((diffusers_logging, transformers_logging), shown, strict=True):
            if was_shown:
                lib.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _single_file_extras(config: str | Path | None, dtype: torch.dtype) -> dict:
    if config is None:
        return {}
    extras: dict = {"config": str(config)}
    index = Path(config) / "model_index.json"
    if index.exists() and json.loads(index.read_text()).get("text_encoder", [None, None])[1] != "CLIPTextModel":
        from transformers import AutoModel, AutoTokenizer

        extras["text_encoder"] = AutoModel.from_pretrained(Path(config) / "text_encoder", dtype=dtype)
        extras["tokenizer"] = AutoTokenizer.from_pretrained(Path(config) / "tokenizer")
    return extras
