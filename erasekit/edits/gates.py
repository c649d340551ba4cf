"""GLoCE's gated low-rank modules (Lee et al., CVPR 2025): after each cross-attention's output projection
``attn2.to_out.0``, an image token x that a concept's gate opens for is mapped towards the surrogate,

    out = (1 − g) x + g η (μ_s + V_sᵀ V_s (I − V_tᵀ V_t)(x − μ_t)),
    g = σ(a (‖V_g (x − μ_g) / ‖x − μ_g‖‖² − b)),

V_t the target's top principal directions at that layer (removed), V_s and μ_s the surrogate's (put in
their place), V_g and μ_g the gate's direction and centre, b and a its threshold and slope. With several
concepts each token goes to the concept whose gate opens widest (the official routing). The gates act
only below a timestep (the official code skips the first ``st_timestep`` of 50 sampling steps), read off
the UNet's own timestep input.

An edit whose card carries ``"gloce": {"concepts": [...], "eta": …, "active_below": …}`` is of the kind
:data:`GATED_MODULES`: its tensors (per layer, stacked over concepts: ``<layer>.mu_s``, ``.mu_t``,
``.mu_g``, ``.update`` (V_s (I − V_tᵀV_t))ᵀ, ``.degen`` V_sᵀ, ``.gate`` V_gᵀ, ``.center``, ``.slope``) are in
``adapters.safetensors``; applying it hooks them onto the UNet, and no export format carries them (the
gate is not a weight).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from erasekit.edits.kind import EditKind, is_number, is_strings, register_kind, shown
from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

PARTS = ("mu_s", "mu_t", "mu_g", "update", "degen", "gate", "center", "slope")
_HOOKS = "_erasekit_gate_hooks"  # the attribute of a UNet that holds the gates' hook handles


class GatedModule:
    """One layer's gates and maps, every concept stacked: (N, D) means, (N, D, r) bases, (N,) thresholds."""

    def __init__(self, tensors: dict[str, torch.Tensor], eta: float) -> None:
        self.t = {k: v.float() for k, v in tensors.items()}
        self.eta = eta

    def openings(self, x: torch.Tensor) -> torch.Tensor:
        """(…, N) each concept's gate g on each token (x: (…, D))."""
        shifted = x[..., None, :] - self.t["mu_g"]  # (…, N, D)
        unit = shifted / shifted.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        score = torch.einsum("...nd,ndr->...nr", unit, self.t["gate"]).square().sum(-1)
        return torch.sigmoid(self.t["slope"] * (score - self.t["center"]))

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """The layer's output with every token routed to its widest-open concept's map."""
        x = output.float()
        gates = self.openings(x)
        g, chosen = gates.max(-1)
        mapped = torch.zeros_like(x)
        for n in chosen.unique().tolist():
            rows = chosen == n
            centred = x[rows] - self.t["mu_t"][n]
            mapped[rows] = self.eta * (self.t["mu_s"][n] + (centred @ self.t["update"][n]) @ self.t["degen"][n].T)
        return ((1 - g[..., None]) * x + g[..., None] * mapped).to(output.dtype)


def layer_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``<layer>.<part>`` tensors grouped by layer."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        layer, _, part = key.rpartition(".")
        if part not in PARTS or not layer:
            raise ErasekitError(f"adapter tensor {key!r} is not one of GLoCE's parts ({', '.join(PARTS)})")
        layers.setdefault(layer, {})[part] = value
    for layer, parts in layers.items():
        if set(parts) != set(PARTS):
            raise ErasekitError(f"GLoCE's module at {layer} lacks {', '.join(sorted(set(PARTS) - set(parts)))}")
    return layers


def install_gates(unet: nn.Module, tensors: dict[str, torch.Tensor], eta: float, active_below: float) -> None:
    """Hook each layer's gated module after its output (``<layer>`` is a Linear of ``unet``), acting while the
    UNet's timestep is at most ``active_below``, until :func:`remove_gates`."""
    if getattr(unet, _HOOKS, None):
        raise ErasekitError("this UNet already carries GLoCE's gates; leave the first erased pipeline before applying another")
    modules = dict(unet.named_modules())
    weight = next(unet.parameters())
    state = {"active": True}

    def timestep(module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        state["active"] = float(torch.as_tensor(t).float().max()) <= active_below

    def hook(gated: GatedModule):  # noqa: ANN202 - a forward hook
        def apply(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            return gated(output) if state["active"] else None

        return apply

    layers = layer_tensors(tensors)
    if missing := next((layer for layer in layers if layer not in modules), None):  # before any hook goes on
        raise ErasekitError(f"this edit's GLoCE module sits at {missing}, which the pipeline's UNet does not have")
    handles = [unet.register_forward_pre_hook(timestep, with_kwargs=True)]
    for layer, parts in layers.items():
        gated = GatedModule({k: v.to(weight.device) for k, v in parts.items()}, eta)
        handles.append(modules[layer].register_forward_hook(hook(gated)))
    setattr(unet, _HOOKS, handles)


def remove_gates(unet: nn.Module) -> None:
    """Take the gates' hooks off ``unet`` (nothing if it has none)."""
    for handle in getattr(unet, _HOOKS, None) or []:
        handle.remove()
    setattr(unet, _HOOKS, [])


class GatedModules(EditKind):
    """GLoCE: gated low-rank modules in ``adapters.safetensors``, hooked after the UNet's ``attn2.to_out.0``."""

    name = "gloce"
    needs_adapters = True

    def check_card(self, card: dict, where: object) -> None:
        """Refuse a ``gloce`` entry without concepts, η and the timestep below which it acts."""
        if not self.named_in(card):
            return
        entry = card["gloce"]
        if not (isinstance(entry, dict) and is_strings(entry.get("concepts")) and entry["concepts"]):
            raise ErasekitError(f"{where}: gloce should be an object with a non-empty list of concepts, not {shown(entry)}")
        for key in ("eta", "active_below"):
            if not is_number(entry.get(key)):
                raise ErasekitError(f"{where}: gloce.{key} should be a number, not {shown(entry.get(key))}")

    def checked_names(self, edit: Edit) -> list[str]:
        """The output projections the modules read."""
        return sorted({f"{layer}.weight" for layer in layer_tensors(edit.adapters)})

    def check_fits(self, edit: Edit, pipe: DiffusionPipeline) -> None:
        """Refuse a UNet that lacks a module's layer or has it in another width."""
        modules = dict(pipe.unet.named_modules())
        for layer, parts in layer_tensors(edit.adapters).items():
            module = modules.get(layer)
            if not isinstance(module, nn.Linear) or parts["mu_s"].shape[-1] != module.out_features:
                raise ErasekitError(
                    f"this edit's GLoCE module at {layer} does not fit the pipeline's UNet: it was made for another model"
                )

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """``pipe`` with the gated modules hooked onto its UNet."""
        entry: dict[str, Any] = edit.card["gloce"]
        install_gates(pipe.unet, edit.adapters, float(entry["eta"]), float(entry["active_below"]))
        return pipe

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """Remove the gates' hooks."""
        remove_gates(pipe.unet)

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: a gate is not a weight."""
        return (
            f"adds gated modules to the UNet (a token-wise gate is not a weight), which no {fmt} export carries; its edit "
            "directory is the artifact (erasekit.edits.load_erased puts them on the pipeline)"
        )


GATED_MODULES = register_kind(GatedModules())
