"""The ``export`` job: an edit written for the tools people load models with (see :mod:`erasekit.exports`).

:mod:`erasekit.exports` loads torch, so it is imported inside the functions that use it: the
command line answers ``--help`` and a bad flag without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.errors import ErasekitError
from erasekit.io import claim_outputs

if TYPE_CHECKING:
    from erasekit.exports import Exported

# What an earlier export of each format left at its path, for the output check; None: a single file.
OUTPUT_KIND = {"diffusers-lora": "lora", "pipeline": "pipeline"}


@dataclass(frozen=True)
class ExportOptions:
    """What ``erasekit export`` is asked: the edit directory, where to write it and in which format
    (one of :data:`erasekit.exports.FORMATS`), a cap on the LoRA rank, the base model (default: the
    card's), the precision of the written tensors and whether the base model's hash is checked."""

    edit_dir: Path
    out: Path
    format: str = "kohya"
    rank: int | None = None  # None: the rank that reproduces the edit
    model: str | None = None
    dtype: str = "fp32"
    check_base: bool = True
    overwrite: bool = False


def check_export(options: ExportOptions) -> None:
    """Refuse, before anything loads, a rank, format, precision or file name that cannot be written."""
    from erasekit.exports import check_export_request

    if options.rank is not None and options.rank < 1:
        raise ErasekitError(f"--rank must be at least 1, not {options.rank}")
    check_export_request(options.format, options.out, options.rank, options.dtype)


def export(options: ExportOptions) -> Exported:
    """Write the edit as ``options.format`` to ``options.out``; what was written (path, rank, error, note)."""
    from erasekit.exports import export_edit

    check_export(options)
    with claim_outputs([(options.out, OUTPUT_KIND.get(options.format))], options.overwrite):
        return export_edit(options.edit_dir, options.format, options.out, options.model, options.rank, options.dtype,
                           check_base=options.check_base)  # fmt: skip
