"""Receler's erasers: a small adapter on the output of every cross-attention layer of the UNet.

An eraser E is ``up(GELU(down(h)))`` with ``up`` initialised to zero (so a fresh eraser changes
nothing), and the block's cross-attention output o becomes o + E(o), as the official
``AttentionWithEraser`` (jasper0314-huang/Receler, ``receler/erasers/diffusers_erasers.py``) wraps
``attn2``. Here a forward hook on each ``attn2`` adds it, so the UNet's own modules and weights stay
untouched and removing the hooks gives the original model back. The erasers are named by their
``attn2`` module and saved in an edit's ``adapters.safetensors`` as ``<attn2>.down.weight`` …

An edit whose card carries ``"erasers": {"rank": ..., "layers": ...}`` is of the kind
:data:`HOOKED_ERASERS`: applying it hooks the erasers onto the pipeline's UNet, and no export format
carries them (they are modules, not weights of the model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from erasekit.edits.kind import EditKind, register_kind, shown
from erasekit.errors import ErasekitError
from erasekit.models.layers import cross_attentions

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

_HOOKS = "_erasekit_eraser_hooks"  # the attribute of a UNet that holds its erasers' hook handles


class Eraser(nn.Module):
    """down (dim → rank), GELU, up (rank → dim, zero at the start): the official ``AdapterEraser``."""

    def __init__(self, dim: int, rank: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """E(h) = up(GELU(down(h))) of a cross-attention output ``hidden``."""
        return self.up(self.act(self.down(hidden)))


def new_erasers(unet: nn.Module, rank: int, generator: torch.Generator) -> dict[str, Eraser]:
    """A fresh float32 eraser for every cross-attention of ``unet`` on its device, ``down`` drawn from
    ``generator`` (CPU: one seed, one eraser on every device)."""
    erasers = {}
    for layer in cross_attentions(unet):
        dim = layer.module.to_out[0].out_features
        eraser = Eraser(dim, rank, unet.device, torch.float32)
        bound = dim**-0.5  # nn.Linear's default range, drawn on the CPU from our generator
        with torch.no_grad():
            for param in (eraser.down.weight, eraser.down.bias):
                drawn = torch.empty(param.shape, device="cpu").uniform_(-bound, bound, generator=generator)
                param.copy_(drawn.to(param.device))
        erasers[layer.name] = eraser
    return erasers


def eraser_tensors(erasers: dict[str, Eraser], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The erasers' weights as named tensors for a safetensors file."""
    return {f"{site}.{k}": v.detach().to(dtype).clone() for site, e in erasers.items() for k, v in e.state_dict().items()}


def eraser_sites(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of :func:`eraser_tensors` grouped by site (``attn2`` name), each by its own key."""
    sites: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        site, layer, kind = key.rsplit(".", 2)
        sites.setdefault(site, {})[f"{layer}.{kind}"] = value
    return dict(sorted(sites.items()))


def erasers_from_tensors(tensors: dict[str, torch.Tensor], unet: nn.Module) -> dict[str, Eraser]:
    """The inverse of :func:`eraser_tensors`, on ``unet``'s device and in its dtype; an error if ``unet``
    lacks a site or its width differs."""
    sites = {layer.name: layer.module for layer in cross_attentions(unet)}
    erasers = {}
    for site, state in eraser_sites(tensors).items():
        if site not in sites:
            raise ErasekitError(f"this edit has an eraser on {site}, which the pipeline's UNet does not have: "
                                "it was made for another architecture")  # fmt: skip
        rank, dim = state["down.weight"].shape
        if dim != sites[site].to_out[0].out_features:
            raise ErasekitError(
                f"the eraser on {site} reads {dim} channels, the UNet's layer has {sites[site].to_out[0].out_features}"
            )
        eraser = Eraser(dim, rank, unet.device, unet.dtype)
        eraser.load_state_dict(state)
        erasers[site] = eraser.requires_grad_(False)
    return erasers


def install_erasers(unet: nn.Module, erasers: dict[str, Eraser], outputs: dict[str, torch.Tensor] | None = None) -> None:
    """Add each eraser's output to its ``attn2``'s output (and keep it in ``outputs`` when given, for
    Receler's regularisation) until :func:`remove_erasers`."""
    if getattr(unet, _HOOKS, None):
        raise ErasekitError("this UNet already carries erasers; leave the first erased pipeline before applying another")
    modules = dict(unet.named_modules())

    def hook(site: str):  # noqa: ANN202 - a forward hook
        def add(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            erased = erasers[site](output)
            if outputs is not None:
                outputs[site] = erased
            return output + erased.to(output.dtype)

        return add

    setattr(unet, _HOOKS, [modules[site].register_forward_hook(hook(site)) for site in erasers])


def remove_erasers(unet: nn.Module) -> None:
    """Take the erasers' hooks off ``unet`` (nothing if it has none)."""
    for handle in getattr(unet, _HOOKS, None) or []:
        handle.remove()
    setattr(unet, _HOOKS, [])


@contextmanager
def erasers_on(unet: nn.Module, erasers: dict[str, Eraser], outputs: dict[str, torch.Tensor] | None = None) -> Iterator[None]:
    """The erasers in place for the block, gone after (also on Ctrl-C)."""
    install_erasers(unet, erasers, outputs)
    try:
        yield
    finally:
        remove_erasers(unet)


class HookedErasers(EditKind):
    """Receler: erasers in ``adapters.safetensors`` hooked after the UNet's cross-attention layers (and
    any changed weights written in); taken off by removing the hooks."""

    name = "erasers"
    needs_adapters = True

    def check_card(self, card: dict, where: object) -> None:
        """Refuse an ``erasers`` entry that is neither an object nor null."""
        if self.named_in(card) and not (card["erasers"] is None or isinstance(card["erasers"], dict)):
            raise ErasekitError(
                f'{where}: erasers should be an object (Receler\'s {{"rank": ..., "layers": ...}}) or null, '
                f"not {shown(card['erasers'])}"
            )

    def checked_names(self, edit: Edit) -> list[str]:
        """The changed weights, and the output projections of the cross-attention layers the erasers read."""
        return [*edit.weights, *(f"{site}.to_out.0.weight" for site in eraser_sites(edit.adapters))]

    def check_fits(self, edit: Edit, pipe: DiffusionPipeline) -> None:
        """Refuse a UNet that lacks an eraser's site or has it in another width."""
        erasers_from_tensors(edit.adapters, pipe.unet)

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """``pipe`` with the weights written in and the erasers hooked onto its UNet."""
        edit.write_weights(pipe)
        install_erasers(pipe.unet, erasers_from_tensors(edit.adapters, pipe.unet))
        return pipe

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """Remove the erasers' hooks."""
        remove_erasers(pipe.unet)

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: the erasers are modules that no export format holds."""
        return (
            f"adds eraser modules to the UNet, which no {fmt} export carries; its edit directory is the artifact "
            "(erasekit.edits.load_erased puts them on the pipeline)"
        )


HOOKED_ERASERS = register_kind(HookedErasers())
