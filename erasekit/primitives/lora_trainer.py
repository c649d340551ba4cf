"""Temporary LoRA adapters (peft) on named linear layers, read back as dense weight deltas.

MACE trains one adapter per concept and RealEra one for noise alignment; both then fold the
adapters into a closed-form edit, and SPM keeps its factors. An adapter lives only for its training
run: injected with peft's ``inject_adapter_in_model``, trained, read out (as ΔW = (α/r)·B·A per
layer, or as the factors), and removed, which leaves the UNet exactly as it was. Linear layers and
convolutions (SD 1.x's 1×1 proj_in / proj_out) both take one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.primitives.diffusion import FrozenCopy

ADAPTER = "erasekit"


class LoraAdapter:
    """Handle on an injected adapter: its trainable parameters and its dense deltas."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.model = model
        self.names = names

    def _layer(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def named_parameters(self) -> dict[str, nn.Parameter]:
        """``{"<layer>.lora_A": A, "<layer>.lora_B": B}``: the trainable weights of every adapted layer."""
        params = {}
        for name in self.names:
            layer = self._layer(name)
            params |= {f"{name}.lora_A": layer.lora_A[ADAPTER].weight, f"{name}.lora_B": layer.lora_B[ADAPTER].weight}
        return params

    def parameters(self) -> list[nn.Parameter]:
        """The trainable LoRA A and B weights of every adapted layer, A then B of each."""
        return list(self.named_parameters().values())

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The model without the adapter for the block (the frozen model of a noise-alignment target)."""
        layers = [self._layer(n) for n in self.names]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    @torch.no_grad()
    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer: (down, up)}`` in float32, the scaling folded into ``up``: down is A (r, in) or for a
        convolution (r, in, kh, kw); up is B (out, r) (a convolution's 1×1 kernel flattened)."""
        out = {}
        for name in self.names:
            layer = self._layer(name)
            down, up = layer.lora_A[ADAPTER].weight.float(), layer.lora_B[ADAPTER].weight.float()
            out[name] = (down.clone(), layer.scaling[ADAPTER] * up.reshape(up.shape[0], up.shape[1]))
        return out

    def deltas(self) -> dict[str, torch.Tensor]:
        """``{"<layer>.weight": ΔW}`` with ΔW = scaling · B A (in the layer's weight shape), in float32."""
        return {f"{name}.weight": factor_delta(down, up, self._layer(name).weight.shape)
                for name, (down, up) in self.factors().items()}  # fmt: skip

    def merged(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``{"<layer>.weight": W + ΔW}`` in ``dtype``: the adapted layers' weights with the adapter folded in."""
        return {name: (self._layer(name.removesuffix(".weight")).weight.float() + delta).to(dtype)
                for name, delta in self.deltas().items()}  # fmt: skip


class AdapterOff(FrozenCopy):
    """The model with the adapter switched off, callable as a :class:`FrozenCopy`: the original model
    without a copy of the adapted weights (what makes a LoRA fit where a second copy would not)."""

    def __init__(self, model: nn.Module, adapter: LoraAdapter) -> None:
        super().__init__(model, [])
        self.adapter = adapter

    def __call__(self, latents: torch.Tensor, t: torch.Tensor | int, states: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction without the adapter, as :meth:`FrozenCopy.__call__`."""
        with self.adapter.disabled():
            return super().__call__(latents, t, states)

    def call(self, *args: object, **kwargs: object) -> object:
        """The module's forward without the adapter, for any signature (FLUX's transformer is called by keywords)."""
        with self.adapter.disabled():
            return super().call(*args, **kwargs)


def factor_delta(down: torch.Tensor, up: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The dense ΔW = up · down of :meth:`LoraAdapter.factors`, in a (linear or convolution) weight's ``shape``."""
    return (up @ down.flatten(1)).reshape(shape)


def check_rank(model: nn.Module, names: list[str], rank: int) -> None:
    """Refuse a rank that some layer in ``names`` cannot take (or a layer no LoRA adapts). Methods call it
    before their long work (images, x_t plans), so that a wrong rank is refused at once."""
    for name in names:
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            raise ErasekitError(f"{name} is a {type(layer).__name__}, not a linear layer or convolution a LoRA can adapt")
        fan_out, fan_in = layer.weight.shape[:2]
        if not 1 <= rank <= min(fan_in, fan_out):
            raise ErasekitError(f"LoRA rank {rank} does not fit {name} ({fan_out}×{fan_in}); use 1 … {min(fan_in, fan_out)}")


@contextmanager
def lora_adapter(
    model: nn.Module, names: list[str], rank: int, alpha: float | None = None, seed: int = 0
) -> Iterator[LoraAdapter]:
    """Inject a rank-``rank`` LoRA into each layer in ``names`` (B = 0, so the model starts unchanged).

    A's random initialisation is drawn from ``seed`` without touching the global random state.
    """
    from peft import LoraConfig, inject_adapter_in_model  # here: peft pulls in transformers, seconds a CLI refusal need not wait

    check_rank(model, names, rank)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=names, lora_dropout=0.0)
    had_config = hasattr(model, "peft_config")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    adapter = LoraAdapter(model, names)
    for param in adapter.parameters():  # trained in float32 on a half-precision model (see primitives.training)
        param.data = param.data.float()
    try:
        yield adapter
    finally:  # also on Ctrl-C: put the plain layers back
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            wrapper = getattr(parent, child)
            if hasattr(wrapper, "get_base_layer"):
                setattr(parent, child, wrapper.get_base_layer())
        if not had_config and hasattr(model, "peft_config"):
            del model.peft_config
