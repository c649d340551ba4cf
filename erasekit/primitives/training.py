"""The one optimisation loop of the fine-tuning methods (ESD, MACE's LoRAs, RealEra's alignment).

Users load SD in fp16 or bf16. Adam on half-precision parameters turns small updates into zeros
or overflows into inf/NaN, so trained parameters are optimised in float32 while the frozen rest of
the model computes in half precision under autocast (the mixed precision of torch.amp):

* :func:`float32_parameters` upcasts the trained parameters for the run and restores their dtype
  after (also on Ctrl-C); LoRA adapters injected by peft are float32 already.
* :func:`fit` runs ``steps`` optimiser steps on a loss closure under the run's autocast, with a
  gradient scaler for fp16 (its narrow exponent underflows small gradients), optional gradient-norm
  clipping, a progress bar and the loss curve; a non-finite loss stops it with one clear line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.primitives.run import RunContext


@contextmanager
def float32_parameters(params: Iterable[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    """Make ``params`` trainable float32 tensors for the block; their dtype and flags come back after."""
    params = list(params)
    saved = [(p.dtype, p.requires_grad) for p in params]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    try:
        yield params
    finally:
        for p, (dtype, flag) in zip(params, saved, strict=True):
            p.grad = None
            p.data = p.data.to(dtype)
            p.requires_grad_(flag)


def fit(
    run: RunContext,
    params: list[nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    optimizer: torch.optim.Optimizer,
    desc: str,
    max_grad_norm: float | None = None,
) -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` for ``steps`` steps; returns the loss of every step."""
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16)
    losses: list[float] = []
    bar = run.bar(range(steps), desc)
    for step in bar:
        with run.autocast():
            loss = loss_fn(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ErasekitError(
                f"{desc}: the loss became {value} at step {step + 1}; lower the learning rate or run the model in float32"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if max_grad_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
    return losses


def loss_summary(losses: list[float]) -> dict[str, float]:
    """Mean loss over the first and the last tenth of the run, for the edit's card."""
    if not losses:
        return {}
    k = max(1, len(losses) // 10)
    return {"loss_first_10pct": sum(losses[:k]) / k, "loss_last_10pct": sum(losses[-k:]) / k}
