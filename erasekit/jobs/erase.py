"""The ``erase`` job: concepts erased from a model's weights, and the edit written with its exports.

:func:`erase` takes :class:`EraseOptions`, runs :func:`check_erase` before anything loads (the method,
every setting, the export requests), takes its outputs, erases, writes the edit directory (with a
diffusers LoRA if asked) and the whole-model exports through :func:`erasekit.exports.export_loaded`,
and returns an :class:`EraseResult`. Modules that load torch are imported inside the functions that
need them, so the command line answers ``--help`` and a bad concept or setting without loading it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.io import check_outputs, claim_outputs
from erasekit.methods.base import Method, get_method, make_config
from erasekit.primitives.workers import Workers, launched_workers

if TYPE_CHECKING:
    from erasekit.edits import Edit
    from erasekit.edits.lora import LoraExport
    from erasekit.exports import Exported


@dataclass(frozen=True)
class EraseOptions:
    """What ``erasekit erase`` is asked: what to erase (``spec``), the edit directory ``out``, the method
    and its ``settings`` by name (Python values, or text as typed after ``--set key=``), the exports
    (a LoRA in the edit directory, capped at ``lora_rank``; the whole pipeline; one single file), the
    phrase expansion, the model, where it runs, and whether outputs that are not earlier erasekit
    outputs are replaced."""

    spec: EraseSpec
    out: Path
    method: str = "uce"
    settings: Mapping[str, object] = field(default_factory=dict)
    save_pipeline: Path | None = None
    save_single_file: Path | None = None
    lora: bool = False
    lora_rank: int | None = None  # None: the rank that reproduces the edit
    expand: int = 0  # nearest phrases added per concept
    expand_min_similarity: float = 0.5
    expand_vocabulary: Path | None = None  # None: the tokenizer's words
    model: str | None = None  # None: the embedded erasekit-tiny
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False

    @property
    def outputs(self) -> list[tuple[Path | None, str | None]]:
        """Every output path with its kind (see :func:`erasekit.io.check_output`); None where not asked for."""
        return [(self.out, "edit"), (self.save_pipeline, "pipeline"), (self.save_single_file, None)]


@dataclass(frozen=True)
class CheckedErase:
    """The method of an erase and its config, made from the settings once, before the model loads."""

    method: Method
    config: object


@dataclass(frozen=True)
class EraseResult:
    """What the erase wrote: the ``edit`` (its card holds the method, timing and any phrases the
    expansion added), the concepts asked for (``targets``), the edit directory ``out``, the LoRA
    saved in it (None if none was asked for), and each whole-model export by format."""

    edit: Edit
    targets: tuple[str, ...]
    out: Path
    lora: LoraExport | None
    exported: dict[str, Exported]


def check_erase(options: EraseOptions) -> CheckedErase:
    """Refuse, before any model loads, an unknown method, a model family it does not run on (where the
    model's directory says), a bad setting, an export that cannot be written, and an export of a method
    that changes no weights; the method with its config, made once."""
    from erasekit.exports import check_export_request, refuse_format
    from erasekit.models.families import check_components, family_of_model
    from erasekit.models.loading import check_load

    check_load(options.model, options.device, options.dtype)  # before the methods import diffusers
    method = get_method(options.method)
    config = make_config(method, dict(options.settings))
    family = family_of_model(options.model)  # from the model's directory, nothing loaded
    if family is not None:
        method.check_on(family, config)
        check_components(options.model, family)
        if options.save_single_file is not None:
            refuse_format(family, "single-file")
    if options.save_single_file is not None:
        check_export_request("single-file", options.save_single_file)
    if options.lora_rank is not None:
        check_export_request("diffusers-lora", options.out, options.lora_rank)
    exports = options.lora or options.lora_rank is not None or options.save_pipeline or options.save_single_file
    if not method.changes_weights and exports:
        raise ErasekitError(
            f"{options.method} changes no weights (SLD guides sampling, Receler adds eraser modules), so there is no LoRA, "
            "pipeline or checkpoint to write; its edit directory is the artifact: erasekit.edits.load_erased(DIR) gives the erased pipeline"
        )
    return CheckedErase(method, config)


def _python_warning(message: str) -> None:
    warnings.warn(message, stacklevel=4)  # the caller of erase()


def erase(options: EraseOptions, on_warning: Callable[[str], None] = _python_warning) -> EraseResult | None:
    """Erase ``options.spec`` and write the edit and its exports; ``on_warning`` hears of a concept the
    embedded world never drew, as soon as the model is loaded.

    Under ``accelerate launch`` MACE shares its per-concept LoRAs out among the processes: every one
    checks the outputs, the first claims and writes them and gets the result, the others get None."""
    check_outputs(options.outputs, options.overwrite)  # a taken path answered before the methods import torch
    checked = check_erase(options)
    workers = launched_workers(options.device)
    if workers.count > 1 and options.method != "mace":
        raise ErasekitError(
            f"{options.method} has no independent stages to share among {workers.count} processes (MACE's per-concept "
            "LoRAs are); run it in one process, or share a bench's cells with `accelerate launch … bench`"
        )
    with claim_outputs(options.outputs, options.overwrite, claim=workers.is_main):
        return _erase_and_write(options, checked, workers, on_warning)


def _erase_and_write(
    options: EraseOptions, checked: CheckedErase, workers: Workers, on_warning: Callable[[str], None]
) -> EraseResult | None:
    from erasekit.edits.lora import lora_factors
    from erasekit.exports import export_loaded, refuse_format
    from erasekit.methods.runner import run_method
    from erasekit.models.embedded import is_world_model
    from erasekit.models.families import denoiser, pipeline_family
    from erasekit.models.ldm_checkpoint import refuse_lost_text_encoder
    from erasekit.models.loading import load_pipeline
    from erasekit.world.vocabulary import unknown_concept_warning

    pipe = load_pipeline(options.model, options.dtype, workers.device, progress=False)
    if is_world_model(pipe) and workers.is_main:
        for warning in filter(None, map(unknown_concept_warning, options.spec.targets)):
            on_warning(warning)
    vocabulary = str(options.expand_vocabulary) if options.expand_vocabulary else None
    edit = run_method(pipe, options.spec, checked.method, checked.config, model=options.model or "erasekit-tiny",
                      expand=options.expand, expand_min_similarity=options.expand_min_similarity,
                      expand_vocabulary=vocabulary, workers=workers)  # fmt: skip
    if not workers.is_main:  # its share of the work is done; the first process writes
        return None
    family = pipeline_family(pipe)
    if options.save_single_file is not None:  # refused before anything is written
        refuse_format(family, "single-file")
        refuse_lost_text_encoder(pipe, bool(edit.text_encoder_names))
    lora = None
    if options.lora or options.lora_rank is not None:
        lora = lora_factors(edit, denoiser(pipe), max_rank=options.lora_rank, component=family.denoiser)
    edit.save(options.out, lora=lora)
    # the same code as the export job: the edit's weights merged into the loaded base model
    exported: dict[str, Exported] = {}
    for fmt, path in (("pipeline", options.save_pipeline), ("single-file", options.save_single_file)):
        if path is not None:
            exported[fmt] = export_loaded(edit, pipe, fmt, path)
    return EraseResult(edit, options.spec.targets, options.out, lora, exported)
