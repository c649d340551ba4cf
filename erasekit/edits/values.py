"""AdaVD's value decomposition (Wang et al., CVPR 2025): every cross-attention value of the prompt loses
its component along the erased concepts' values, as strongly as the token resembles them.

For each ``attn2`` the target values are t_k = to_v(h_k), h_k the text encoder's state of concept k's last
token with the concept encoded alone (the official ``get_spread_embedding`` copies it to every position,
and ``to_v`` reads positions one by one, so one vector per layer and concept). b_k = Σ_j P_kj t_j is their
Gram–Schmidt basis (P unit lower-triangular). A prompt token's value v (any token but the first, [SOT])
becomes

    v' = v − Σ_j (Σ_k w_k P_kj) s_j t_j,   w_k = ⟨b_k, v⟩ / ‖b_k‖²,
    s_j = s / (1 + exp(−p (cos(t_j, v) − ε)))   (the adaptive shift; s_j = 1 with ``shift`` off),

which for one concept is v − s·(⟨t, v⟩/‖t‖²)·t: the orthogonal complement of t, pushed further
(s up to 2) for a token close to the concept and hardly at all for one far from it. Keys, queries and
every self-attention stay as they are, and the weights are untouched: a forward hook on each
``attn2.to_v`` edits its output, so the edit acts on whatever calls the UNet (a pipeline, a judge, an
attack).

Differences from the official ``src/main.py`` (WYuan1001/AdaVD @ c2d2962): it reshapes SD 1.x's value
batch into 16 = 2 × 8 heads, so it projects the concatenation [uncond value; cond value] and scales
the unconditional value by (1 − w); here each row (uncond and cond alike) is projected on its own, as
the paper's equation reads, which also holds on SDXL's head counts and on a UNet called without
guidance. Its multi-concept Gram–Schmidt projects on the raw t_j (exact only for two concepts); here
the basis is exact. The edit is applied at every step (its default ``decomp_timestep`` 0).

An edit whose card carries ``"inference": {"adavd": {"concepts": [...], "p": …, "epsilon": …, "s": …,
"shift": …}}`` is of the kind :data:`VALUE_DECOMPOSITION`: it has no weights; applying it hooks the
decomposition onto the pipeline's UNet, and no export format carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from erasekit.edits.kind import NO_WEIGHTS, EditKind, is_number, is_strings, register_kind, shown
from erasekit.errors import ErasekitError
from erasekit.models.layers import cross_attentions

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

SHIFT_SETTINGS = ("p", "epsilon", "s")  # the adaptive shift's slope, centre and height
_HOOKS = "_erasekit_value_hooks"  # the attribute of a UNet that holds the decomposition's hook handles


def gram_schmidt(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, B) with B = P · targets the Gram–Schmidt basis of the rows of ``targets`` (n, C), P unit
    lower-triangular; a row already in the span of the earlier ones gets b_k = 0 (it adds nothing)."""
    n = targets.shape[0]
    mix = torch.eye(n, dtype=targets.dtype, device=targets.device)
    basis = targets.clone()
    for k in range(1, n):
        for j in range(k):
            norm = basis[j].square().sum()
            if norm > 0:
                coefficient = (targets[k] @ basis[j]) / norm
                mix[k] -= coefficient * mix[j]
                basis[k] -= coefficient * basis[j]
        if basis[k].norm() <= 1e-6 * targets[k].norm():
            basis[k].zero_()
    return mix, basis


class LayerDecomposition:
    """The decomposition at one ``attn2.to_v``: its concept values, their basis, the shift."""

    def __init__(self, targets: torch.Tensor, settings: dict[str, Any]) -> None:
        self.targets = targets  # (n, C) float32
        self.mix, basis = gram_schmidt(targets)
        norms = basis.square().sum(-1)
        # w_k = ⟨b_k, v⟩/‖b_k‖²; a zero basis vector takes nothing away
        self.projector = torch.where(norms[:, None] > 0, basis / norms.clamp_min(1e-30)[:, None], torch.zeros_like(basis))
        self.unit_targets = torch.nn.functional.normalize(targets, dim=-1)
        self.settings = settings

    def shift(self, values: torch.Tensor) -> torch.Tensor:
        """(…, n) s_j of each token's value against each concept (ones with the shift off)."""
        if not self.settings["shift"]:
            return values.new_ones(*values.shape[:-1], self.targets.shape[0])
        cosine = torch.nn.functional.normalize(values, dim=-1) @ self.unit_targets.T
        p, epsilon, s = (self.settings[k] for k in SHIFT_SETTINGS)
        return s * torch.sigmoid(p * (cosine - epsilon))

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """(rows, L, C) values with their concept components taken away (the first token left as it is)."""
        v = values.float()
        weights = v @ self.projector.T  # (rows, L, n)
        weights[:, 0] = 0  # [SOT] is never touched
        coefficients = (weights @ self.mix) * self.shift(v)
        return (v - coefficients @ self.targets).to(values.dtype)


def concept_states(pipe: DiffusionPipeline, concepts: Sequence[str]) -> torch.Tensor:
    """(n, d) the state of each concept's last token, the concept encoded alone, as the UNet reads text
    (SDXL: both encoders' states side by side)."""
    from erasekit.primitives.run import RunContext

    cache = RunContext(pipe, progress=False).cache
    rows = []
    for concept in concepts:
        cache.word_span(concept, concept)  # a concept that tokenizes to nothing: one line
        rows.append(cache.states([concept])[0, cache.length(concept) - 2])
    return torch.stack(rows)


def check_value_family(pipe: object) -> None:
    """Refuse, in one line, a pipeline whose text is not read by ``attn2.to_v`` straight from the encoder."""
    from erasekit.models.families import pipeline_family

    family = pipeline_family(pipe).name
    if family not in ("sd", "sdxl"):
        raise ErasekitError(
            f"AdaVD edits the values that cross-attention reads from the text encoder (SD 1.x/2.x, SDXL); "
            f"{type(pipe).__name__}'s transformer reads text that changes from block to block"
        )


def install_decomposition(pipe: DiffusionPipeline, concepts: Sequence[str], settings: dict[str, Any]) -> None:
    """Hook the decomposition of ``concepts`` onto every ``attn2.to_v`` of ``pipe``'s UNet until
    :func:`remove_decomposition`."""
    check_value_family(pipe)
    unet = pipe.unet
    if getattr(unet, _HOOKS, None):
        raise ErasekitError("this UNet already carries AdaVD's decomposition; leave the first erased pipeline first")
    with torch.no_grad():
        states = concept_states(pipe, concepts)
        layers = {}
        for layer in cross_attentions(unet):
            weight = layer.to_v.weight
            layers[layer.name] = LayerDecomposition(layer.to_v(states.to(weight.device, weight.dtype)).float(), settings)

    def hook(decomposition: LayerDecomposition):  # noqa: ANN202 - a forward hook
        def edit(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return decomposition(output)

        return edit

    setattr(unet, _HOOKS, [layer.to_v.register_forward_hook(hook(layers[layer.name])) for layer in cross_attentions(unet)])


def remove_decomposition(unet: nn.Module) -> None:
    """Take the decomposition's hooks off ``unet`` (nothing if it has none)."""
    for handle in getattr(unet, _HOOKS, None) or []:
        handle.remove()
    setattr(unet, _HOOKS, [])


class ValueDecomposition(EditKind):
    """AdaVD: no weights, a card entry of the concepts and the shift's settings, applied as hooks on the
    UNet's cross-attention values (:func:`install_decomposition`)."""

    name = "adavd"
    at_sampling = True

    def check_card(self, card: dict, where: object) -> None:
        """Refuse an ``inference.adavd`` without a non-empty list of concepts, numbers and the shift switch."""
        if not self.named_in(card):
            return
        entry = self.entry(card)
        if not (isinstance(entry, dict) and is_strings(entry.get("concepts")) and entry["concepts"]):
            raise ErasekitError(
                f"{where}: inference.adavd should be an object with a non-empty list of concepts, not {shown(entry)}"
            )
        for key in SHIFT_SETTINGS:
            if not is_number(entry.get(key)):
                raise ErasekitError(f"{where}: inference.adavd.{key} should be a number, not {shown(entry.get(key))}")
        if not isinstance(entry.get("shift"), bool):
            raise ErasekitError(f"{where}: inference.adavd.shift should be true or false, not {shown(entry.get('shift'))}")

    def check_fits(self, edit: Edit, pipe: DiffusionPipeline) -> None:
        """Refuse a pipeline without text read straight by cross-attention (FLUX, SD3)."""
        check_value_family(pipe)

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """``pipe`` itself, its UNet's cross-attention values decomposed until the edit comes off."""
        entry = self.entry(edit.card)
        install_decomposition(pipe, entry["concepts"], entry)
        return pipe

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """The hooks off the UNet."""
        remove_decomposition(pipe.unet)

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Always: the edit acts on each prompt's values as it is sampled, with no weights to carry."""
        return NO_WEIGHTS


VALUE_DECOMPOSITION = register_kind(ValueDecomposition())
