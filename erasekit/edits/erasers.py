"""Receler's erasers: a small adapter on the output of every layer where the image reads the text.

An eraser E is ``up(GELU(down(h)))`` with ``up`` initialised to zero (so a fresh eraser changes
nothing), and the block's cross-attention output o becomes o + E(o), as the official
``AttentionWithEraser`` (jasper0314-huang/Receler, ``receler/erasers/diffusers_erasers.py``) wraps
``attn2``. Here a forward hook on each ``attn2`` adds it, so the UNet's own modules and weights stay
untouched and removing the hooks gives the original model back. The erasers are named by their
``attn2`` module and saved in an edit's ``adapters.safetensors`` as ``<attn2>.down.weight`` …

A FLUX transformer has no cross-attention: its joint attention mixes text and image in one softmax.
There an eraser follows the image stream of every joint attention (:func:`eraser_sites`): a double
block's ``attn`` returns (image, text) and E is added to the image part; a single block's ``attn``
returns the text tokens then the image's, and E is added to the image tokens only (their count read
from the block's input by a pre-hook). The text stream is left as it is, as the UNet's text states are.

An edit whose card carries ``"erasers": {"rank": ..., "layers": ...}`` is of the kind
:data:`HOOKED_ERASERS`: applying it hooks the erasers onto the pipeline's denoiser, and no export format
carries them (they are modules, not weights of the model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from erasekit.edits.kind import EditKind, register_kind, shown
from erasekit.errors import ErasekitError
from erasekit.models.families import denoiser
from erasekit.models.layers import cross_attentions, flux_attentions

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

_HOOKS = "_erasekit_eraser_hooks"  # the attribute of a denoiser that holds its erasers' hook handles


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


@dataclass(frozen=True)
class EraserSite:
    """An attention layer whose image output an eraser follows: a UNet's ``attn2`` or a FLUX joint attention."""

    name: str  # the attention's dotted name, e.g. "transformer_blocks.0.attn"
    module: nn.Module
    text_first: bool = False  # a FLUX single block: the output is the text tokens, then the image's

    @property
    def dim(self) -> int:
        """The width of the image output the eraser reads and writes (a single block's attention has no ``to_out``)."""
        out = getattr(self.module, "to_out", None)
        return out[0].out_features if out is not None else self.module.inner_dim

    @property
    def block(self) -> str:
        """The dotted name of the block that calls the attention."""
        return self.name.rsplit(".", 1)[0]


def eraser_sites(model: nn.Module) -> list[EraserSite]:
    """Where erasers go on a denoiser: every ``attn2`` of a UNet; every joint attention of a FLUX transformer,
    the double blocks' and the single blocks' (those with no text stream of their own)."""
    if not hasattr(model, "single_transformer_blocks"):
        return [EraserSite(layer.name, layer.module) for layer in cross_attentions(model)]
    names = {module: name for name, module in model.named_modules()}
    return [EraserSite(names[m], m, text_first=m.added_kv_proj_dim is None) for m in flux_attentions(model)]


def new_erasers(unet: nn.Module, rank: int, generator: torch.Generator) -> dict[str, Eraser]:
    """A fresh float32 eraser for every :func:`eraser_sites` of ``unet`` (a UNet or a FLUX transformer) on its
    device, ``down`` drawn from ``generator`` (CPU: one seed, one eraser on every device)."""
    erasers = {}
    for layer in eraser_sites(unet):
        dim = layer.dim
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


def eraser_sites_of_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of :func:`eraser_tensors` grouped by site (the attention's name), each by its own key."""
    sites: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        site, layer, kind = key.rsplit(".", 2)
        sites.setdefault(site, {})[f"{layer}.{kind}"] = value
    return dict(sorted(sites.items()))


def erasers_from_tensors(tensors: dict[str, torch.Tensor], unet: nn.Module) -> dict[str, Eraser]:
    """The inverse of :func:`eraser_tensors`, on ``unet``'s device and in its dtype (``unet``: a UNet or a FLUX
    transformer); an error if it lacks a site or its width differs."""
    sites = {site.name: site for site in eraser_sites(unet)}
    erasers = {}
    for site, state in eraser_sites_of_tensors(tensors).items():
        if site not in sites:
            raise ErasekitError(f"this edit has an eraser on {site}, which the pipeline's denoiser does not have: "
                                "it was made for another architecture")  # fmt: skip
        rank, dim = state["down.weight"].shape
        if dim != sites[site].dim:
            raise ErasekitError(f"the eraser on {site} reads {dim} channels, the denoiser's layer has {sites[site].dim}")
        eraser = Eraser(dim, rank, unet.device, unet.dtype)
        eraser.load_state_dict(state)
        erasers[site] = eraser.requires_grad_(False)
    return erasers


def _image_hook(
    eraser: Eraser, site: EraserSite, outputs: dict[str, torch.Tensor] | None, text_lengths: dict[str, int]
) -> Callable:
    """The forward hook that adds ``eraser``'s output to the image part of ``site``'s output."""

    def erased(image: torch.Tensor) -> torch.Tensor:
        change = eraser(image)
        if outputs is not None:
            outputs[site.name] = change
        return image + change.to(image.dtype)

    def add(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        if isinstance(output, tuple):  # a FLUX double block: (image, text)
            return (erased(output[0]), *output[1:])
        if site.text_first:  # a FLUX single block: the text tokens, then the image's
            text = text_lengths[site.name]
            return torch.cat([output[:, :text], erased(output[:, text:])], dim=1)
        return erased(output)

    return add


def install_erasers(unet: nn.Module, erasers: dict[str, Eraser], outputs: dict[str, torch.Tensor] | None = None) -> None:
    """Add each eraser's output to the image output of its attention in ``unet`` (a UNet or a FLUX transformer),
    keeping it in ``outputs`` when given (Receler's regularisation), until :func:`remove_erasers`."""
    if getattr(unet, _HOOKS, None):
        raise ErasekitError("this denoiser already carries erasers; leave the first erased pipeline before applying another")
    sites = {site.name: site for site in eraser_sites(unet)}
    missing = sorted(set(erasers) - set(sites))
    if missing:
        raise ErasekitError(f"the denoiser has no layer {missing[0]} for an eraser: it was made for another architecture")
    text_lengths: dict[str, int] = {}  # a single block's text length in the current call, read by its pre-hook

    def record_text_length(site: str) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            text = kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[1]
            text_lengths[site] = text.shape[1]

        return record

    handles = []
    for name, eraser in erasers.items():
        site = sites[name]
        if site.text_first:
            block = unet.get_submodule(site.block)
            handles.append(block.register_forward_pre_hook(record_text_length(name), with_kwargs=True))
        handles.append(site.module.register_forward_hook(_image_hook(eraser, site, outputs, text_lengths)))
    setattr(unet, _HOOKS, handles)


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
    """Receler: erasers in ``adapters.safetensors`` hooked after the denoiser's text-reading attention layers
    (and any changed weights written in); taken off by removing the hooks."""

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
        """The changed weights, and a projection of each attention the erasers read: a UNet's ``attn2.to_out.0``,
        a FLUX attention's ``to_q`` (a single block's attention has no ``to_out``)."""
        sites = eraser_sites_of_tensors(edit.adapters)
        return [*edit.weights, *(f"{s}.to_out.0.weight" if s.endswith("attn2") else f"{s}.to_q.weight" for s in sites)]

    def check_fits(self, edit: Edit, pipe: DiffusionPipeline) -> None:
        """Refuse a denoiser that lacks an eraser's site or has it in another width."""
        erasers_from_tensors(edit.adapters, denoiser(pipe))

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """``pipe`` with the weights written in and the erasers hooked onto its denoiser."""
        edit.write_weights(pipe)
        model = denoiser(pipe)
        install_erasers(model, erasers_from_tensors(edit.adapters, model))
        return pipe

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """Remove the erasers' hooks."""
        remove_erasers(denoiser(pipe))

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: the erasers are modules that no export format holds."""
        return (
            f"adds eraser modules to the denoiser, which no {fmt} export carries; its edit directory is the artifact "
            "(erasekit.edits.load_erased puts them on the pipeline)"
        )


HOOKED_ERASERS = register_kind(HookedErasers())
