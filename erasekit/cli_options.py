"""The command line's shared options: their flags, help, bounds and the hint added to a bound's error.

Bounds catch typos (0, -3, 100000) in one line before anything loads; they are far above any real use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated

import typer

from erasekit.models.devices import check_device_name, dtype_name

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Pipeline directory, .safetensors/.ckpt file or hub id (default: the embedded erasekit-tiny)."
    ),
]


def device_flag(value: str | None) -> str | None:
    """A device's form, checked before torch loads (whether this machine has it is checked when the model loads)."""
    if value is not None:
        check_device_name(value)
    return value


def dtype_flag(value: str) -> str:
    """fp32, fp16, bf16 or torch's name of one, checked before torch loads."""
    dtype_name(value)
    return value


DeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:N or mps (default: CUDA when present, else CPU).", callback=device_flag),
]
DtypeOption = Annotated[str, typer.Option("--dtype", help="Precision of the model: fp32, fp16 or bf16.", callback=dtype_flag)]
StepsOption = Annotated[
    int,
    typer.Option(
        help="Sampler steps (the model's own sampler: DDIM on erasekit-tiny, Euler on FLUX), 1 to 1000.", min=1, max=1000
    ),
]


def finite_in(low: float, high: float) -> Callable[[float | None], float | None]:
    """A float option's check: NaN passes a plain range (every comparison with it is false), so it is refused by name."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise typer.BadParameter(f"{value} is not a number from {low:g} to {high:g}")
        return value

    return check


GuidanceOption = Annotated[float, typer.Option(help="Classifier-free guidance scale, 0 to 100.", callback=finite_in(0, 100))]
BatchOption = Annotated[int, typer.Option(help="Images per batch, 1 to 4096.", min=1, max=4096)]
SAMPLES_RANGE = {"min": 1, "max": 10_000}
# How to get past each bound, added to its range error (a bound guards against typos, not real use).
BOUND_HINTS = {
    "samples": "for more images of one prompt, run again or use a prompt file with several rows of it (other seeds)",
    "steps": "DDIM samples at most the 1000 steps the model was trained with",
    "guidance": "a larger scale only saturates the images",
    "batch_size": "images do not depend on the batch size, so a smaller one loses nothing",
    "count": "draw more scenes in several runs with other --seed values",
}
NoCheckBaseOption = Annotated[
    bool, typer.Option("--no-check-base", help="Use the edit on --model even if its card's base hash differs or is missing.")
]
OverwriteOption = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an output path that holds something other than an earlier output of this command."),
]
TrainMinutesOption = Annotated[
    float | None,
    typer.Option(
        help="Stop each training stage after this many minutes (up to 10000); a rerun resumes.", callback=finite_in(0.01, 10_000)
    ),
]
