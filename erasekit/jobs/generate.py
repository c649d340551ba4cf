"""The ``generate`` job: the images of a prompt file with fixed seeds, written as a run directory.

A run directory holds ``images.npz``, ``grid.png``, ``prompts.csv`` and ``run.json``, written whole
or not at all; :func:`generate_run` writes one for every job that generates (``generate``, ``gates``,
``eval`` of a prompt file). Modules that load torch are imported inside the functions that need them,
so the command line answers ``--help`` and a bad flag without loading it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.io import atomic_dir, claim_outputs, write_json

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.eval.generation import Generated, SamplerSettings
    from erasekit.eval.prompts import PromptRow


@dataclass(frozen=True)
class GenerateOptions:
    """What ``erasekit generate`` is asked: the prompt file (a path, or a file name in
    ``erasekit/prompts``), the run directory to write, the model, the sampler and where it runs."""

    prompts: Path
    out: Path
    model: str | None = None  # None: the embedded erasekit-tiny
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 64
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate`` wrote: the run directory, and the prompt rows with their images."""

    out: Path
    rows: list[PromptRow]
    generated: Generated


def check_generate(options: GenerateOptions) -> list[PromptRow]:
    """The prompt rows of ``options``, read and checked before any model loads."""
    from erasekit.eval.prompts import read_prompt_file
    from erasekit.models.loading import check_load

    rows = read_prompt_file(options.prompts)
    check_load(options.model, options.device, options.dtype)
    return rows


def generate(options: GenerateOptions) -> GenerateResult:
    """Generate the images of the prompt file into the run directory, with an image grid."""
    from erasekit.eval.generation import SamplerSettings
    from erasekit.models.loading import load_pipeline

    rows = check_generate(options)
    sampler = SamplerSettings(steps=options.steps, guidance=options.guidance, batch_size=options.batch_size)
    with claim_outputs([(options.out, "run")], options.overwrite):
        pipe = load_pipeline(options.model, options.dtype, options.device, progress=False)
        generated = generate_run(rows, options.out, pipe, options.model, sampler, source=str(options.prompts))
    return GenerateResult(options.out, rows, generated)


def generate_run(
    rows: list[PromptRow], out: Path, pipe: DiffusionPipeline, model: str | None, sampler: SamplerSettings, source: str
) -> Generated:
    """Generate ``rows`` with ``pipe`` into the run directory ``out`` (written whole or not at all);
    ``model`` and ``source`` (the prompt file, or what made the rows) are recorded in ``run.json``."""
    from erasekit.eval.generation import generate as run_generation
    from erasekit.eval.generation import save_grid
    from erasekit.eval.prompts import write_prompt_file
    from erasekit.models.families import denoiser

    start = time.time()
    generated = run_generation(pipe, rows, sampler)
    seconds = time.time() - start
    with atomic_dir(out) as tmp:
        generated.save(tmp / "images.npz")
        save_grid(tmp / "grid.png", generated, rows)
        write_prompt_file(tmp / "prompts.csv", rows)
        write_json(
            tmp / "run.json",
            {
                "model": str(model or "erasekit-tiny"),
                "device": str(pipe.device),
                "dtype": str(denoiser(pipe).dtype).removeprefix("torch."),
                "prompts": source,
                "sampler": sampler.__dict__,
                "images": len(generated.images),
                "seconds": round(seconds, 1),
            },
        )
    return generated
