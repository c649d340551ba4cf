"""The one optimisation loop of the fine-tuning methods (ESD, MACE's LoRAs, RealEra's alignment).

Users load SD in fp16 or bf16. Adam on half-precision parameters turns small updates into zeros
or overflows into inf/NaN, so trained parameters are optimised in float32 while the frozen rest of
the model computes in half precision under autocast (the mixed precision of torch.amp):

* :func:`float32_parameters` upcasts the trained parameters for the run and restores their dtype
  after (also on Ctrl-C); LoRA adapters injected by peft are float32 already.
* :func:`fit` runs ``steps`` optimiser steps on a loss closure under the run's autocast, with a
  gradient scaler for fp16 (its narrow exponent underflows small gradients), optional gradient-norm
  clipping, a progress bar and the loss curve; a non-finite loss stops it with one clear line.
* :func:`fine_tuning` is the run around it for methods that train the UNet's own parameters (ESD,
  AC): the rest frozen, train mode, float32, and on leaving, also on Ctrl-C, the original values.
  Adapter methods (MACE, RealEra) get the same from :func:`erasekit.primitives.lora_trainer.lora_adapter`.
* :func:`group_tuning` trains a parameter group either way: its own parameters, or a rank-r LoRA on its
  layers folded back into their weights (ESD's, RACE's and AdvUnlearn's ``lora_rank``).
* :func:`loss_record` is what the edit's card keeps of the loss curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.primitives.diffusion import FrozenCopy
from erasekit.primitives.lora_trainer import AdapterOff, LoraAdapter, lora_adapter
from erasekit.primitives.run import RunContext

CURVE_POINTS = 50  # the loss curve on an edit's card: at most this many means of consecutive steps


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
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` for ``steps`` steps (the learning rate stepped by
    ``schedule`` after each, when given; ``after_step(step)`` called after each update, for an EMA);
    returns the loss of every step."""
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
        if schedule is not None:
            schedule.step()
        if after_step is not None:
            after_step(step)
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
    return losses


class FineTuning:
    """The trained parameters of a :func:`fine_tuning` block and the original model beside them."""

    def __init__(self, run: RunContext, params: dict[str, nn.Parameter], original: FrozenCopy) -> None:
        self.run, self.params, self.original = run, params, original

    def values(self) -> dict[str, torch.Tensor]:
        """Copies of the trained values in the model's dtype (read before the block restores them)."""
        return {name: p.detach().to(self.run.dtype).clone() for name, p in self.params.items()}


@contextmanager
def fine_tuning(run: RunContext, names: Iterable[str], module: nn.Module | None = None) -> Iterator[FineTuning]:
    """Train the parameters ``names`` of ``module`` (the UNet unless given; AdvUnlearn gives the text
    encoder) in the block: they become float32 and trainable, every other parameter of the UNet and
    of ``module`` is frozen and the UNet is in train mode (a text encoder stays in eval mode: the
    world's BERT has dropout, CLIP has none); on leaving (also on Ctrl-C) both get their original
    values, dtypes, flags and modes back, so nothing but the edit carries the training."""
    unet = run.denoiser  # the UNet, or FLUX's transformer
    module = unet if module is None else module
    named = dict(module.named_parameters())
    params = {name: named[name] for name in names}
    original = FrozenCopy(module, params)  # callable as the UNet when module is the UNet
    was_training = unet.training
    flags = {p: p.requires_grad for p in (*unet.parameters(), *module.parameters())}
    unet.requires_grad_(False)
    module.requires_grad_(False)
    unet.train()
    try:
        with float32_parameters(params.values()):
            yield FineTuning(run, params, original)
    finally:
        original.restore()
        unet.train(was_training)
        for p, flag in flags.items():
            p.requires_grad_(flag)


class AdapterTuning(FineTuning):
    """A :func:`group_tuning` block's LoRA: its factors train, the model with the adapter switched off is
    the original, and the trained values are the layers' weights with the adapter folded in."""

    def __init__(self, run: RunContext, adapter: LoraAdapter) -> None:
        super().__init__(run, adapter.named_parameters(), AdapterOff(run.denoiser, adapter))
        self.adapter = adapter

    def values(self) -> dict[str, torch.Tensor]:
        """``{"<layer>.weight": W + ΔW}`` in the model's dtype (read before the block takes the adapter out)."""
        return self.adapter.merged(self.run.dtype)


@contextmanager
def group_tuning(run: RunContext, layers: list[str], names: list[str], lora_rank: int = 0, seed: int = 0) -> Iterator[FineTuning]:
    """Train the denoiser's parameters ``names`` (of ``layers``) in the block: themselves (:func:`fine_tuning`),
    or with ``lora_rank`` a rank-r LoRA on ``layers`` (A drawn from ``seed``). The LoRA keeps no copy of the
    trained weights, the adapter switched off being the original model: FLUX.1's attention group is 2.5 B
    parameters."""
    if not lora_rank:
        with fine_tuning(run, names) as tuning:  # trained in float32; the frozen copy answers in the model's dtype
            yield tuning
        return
    with fine_tuning(run, []), lora_adapter(run.denoiser, layers, lora_rank, seed=seed) as adapter:
        yield AdapterTuning(run, adapter)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """The modules' parameters out of autograd for the block (a gradient wanted for a prompt's vectors only:
    the attacks, STEREO's inversion)."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def masked_gradients(params: dict[str, nn.Parameter], mask: dict[str, torch.Tensor]) -> Iterator[None]:
    """While open, each parameter named in ``mask`` gets its gradient multiplied by its mask (a saliency mask:
    SalUn, ANT); Adam with no weight decay then leaves every masked-out weight exactly where it was."""
    hooks = [params[name].register_hook(lambda grad, m=m: grad * m) for name, m in mask.items()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def loss_record(losses: list[float]) -> dict[str, object]:
    """What an edit's card keeps of a loss curve: the mean of the first and the last tenth of the
    steps, and the curve itself as at most :data:`CURVE_POINTS` means of consecutive steps."""
    if not losses:
        return {}
    k = max(1, len(losses) // 10)
    width = math.ceil(len(losses) / CURVE_POINTS)
    curve = [sum(losses[i : i + width]) / len(losses[i : i + width]) for i in range(0, len(losses), width)]
    return {
        "loss_first_10pct": sum(losses[:k]) / k,
        "loss_last_10pct": sum(losses[-k:]) / k,
        "loss_curve": {"steps_per_point": width, "mean_loss": [round(v, 6) for v in curve]},
    }
