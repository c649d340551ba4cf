"""A guard that finds tensors created in erasekit's code without saying on which device.

CI has no GPU, so a CPU default hidden in a method (``torch.eye(d)`` where the model is on CUDA)
would pass every CPU test and crash on the first GPU. This mode watches torch's factory functions
while a method runs and records each call made from erasekit's own files without ``device=``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

import erasekit

PACKAGE = str(Path(erasekit.__file__).resolve().parent)
FACTORIES = {
    torch.zeros, torch.ones, torch.eye, torch.empty, torch.full, torch.arange, torch.linspace,
    torch.rand, torch.randn, torch.randint, torch.randperm, torch.tensor,
}  # fmt: skip


class DeviceGuard(TorchFunctionMode):
    """Collects ``file:line`` of every factory call from erasekit that does not pass ``device=``."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs:
            frame = sys._getframe(1)
            while frame is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
                self.hidden.add(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        return func(*args, **kwargs)
