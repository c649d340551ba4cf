"""The names ``--device`` and ``--dtype`` take, checked by their form without importing torch, so the
command line refuses a typo at once; :mod:`erasekit.models.loading` turns them into torch's objects and
checks that the device exists on this machine."""

from __future__ import annotations

from erasekit.errors import ErasekitError

DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # erasekit's name: torch's
DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
DEVICE_TYPES = ("cpu", "cuda", "mps")


def dtype_name(dtype: str) -> str:
    """fp32, fp16 or bf16 for ``dtype`` (or for torch's name of one); anything else in one line."""
    name = DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    if name not in DTYPE_NAMES:
        raise ErasekitError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
    return name


def check_device_name(device: str) -> None:
    """``device`` has a device's form (cpu, cuda, cuda:N, mps, or auto); whether this machine has it is
    for :func:`erasekit.models.loading.resolve_device` to say."""
    kind, colon, index = device.partition(":")
    if device != "auto" and (kind not in DEVICE_TYPES or (colon and not index.isdigit())):
        raise ErasekitError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
