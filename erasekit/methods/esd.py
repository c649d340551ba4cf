"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).

The model is fine-tuned so that, conditioned on the concept c, it predicts noise guided *away*
from c. Two targets, by ``target`` (θ* the frozen original model):

* ``"official"`` (default) — the current official script, ``esd_sd.py`` of rohitgandikota/erasing
  (commit 25613d2): ε_θ*(x_t, c) − η [ε_θ*(x_t, c) − ε_θ*(x_t)], η = 2;
* ``"paper"`` — the ICCV paper's eq. 3: ε_θ*(x_t) − η [ε_θ*(x_t, c) − ε_θ*(x_t)], η = 1.

(The official η = 2 target equals the paper's with η = 1.) x_t comes from the original model's own
classifier-free-guided denoising of c, stopped at a random step t of the sampler. Which parameters
train decides the kind of erasure: ESD-x (cross-attention; the concept is erased where the prompt
names it, for styles), ESD-u (everything but cross-attention; erased globally, for nudity), ESD-all,
and ESD-x-strict (only attn2.to_k/to_v), each the Linear/Conv2d parameters that ``esd_sd.py``'s
``get_esd_trainable_parameters`` selects (``parameters="with-norms"``: erasekit's earlier choice).

Other defaults are also ``esd_sd.py``'s: 200 iterations, Adam lr 5e-5, x_t sampled with guidance 3
over 50 steps. The ICCV paper trained 1000 iterations at lr 1e-5; both are one ``--set`` away.

erasekit additions, off unless asked for: an anchor replaces the unconditional prediction as the
point guided towards; preserve concepts add ‖ε_θ(x_t, p) − ε_θ*(x_t, p)‖² (weight ``preserve_weight``);
``lora_rank`` trains a LoRA on the group's layers instead of the layers themselves.

On SDXL (``esd_sdxl.py``) the UNet also reads the pooled vector and the added time ids; on FLUX
(``esd_flux.py``) the same target is taken in velocity space on x_σ of the transformer's Euler
sampling, and the groups are FLUX's attention Linears (:func:`~erasekit.models.layers.flux_esd_layers`).
SD3's MMDiT is trained the same way (no official script; its joint blocks' attention Linears, selected
as on FLUX).
The family's conditioning, prediction and sampler come from :mod:`erasekit.primitives.denoising`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.methods.base import register
from erasekit.models.layers import flux_esd_layers, parameter_group
from erasekit.primitives.denoising import denoising
from erasekit.primitives.lora_trainer import check_rank
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fit, group_tuning, loss_record
from erasekit.primitives.xt_plan import XtPoint
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field

ESD_TARGETS = {"official": 2.0, "paper": 1.0}  # each target's η


def esd_target(eps_anchor: torch.Tensor, eps_concept: torch.Tensor, eta: float, target: str) -> torch.Tensor:
    """The noise ESD trains ε_θ(x_t, c) towards; the anchor is the unconditional prompt unless one is given."""
    start = eps_concept if target == "official" else eps_anchor
    return start - eta * (eps_concept - eps_anchor)


@dataclass
class ESDConfig:
    """Defaults of the official esd_sd.py; the paper's (1000 iterations, lr 1e-5, η = 1) are noted per field."""

    # the choices of models.layers' ESD_GROUPS and ESD_SELECTIONS, and of ESD_TARGETS (tests/test_settings.py holds them equal)
    train_method: Literal["esd-x", "esd-u", "esd-all", "esd-x-strict"] = config_field(
        "esd-x", "parameter group: esd-x, esd-u, esd-all or esd-x-strict"
    )
    target: Literal["official", "paper"] = config_field(
        "official", "'official' ε*(c) − η(ε*(c) − ε*(∅)) (esd_sd.py) or 'paper' ε*(∅) − η(…) (eq. 3)"
    )
    parameters: Literal["official", "with-norms"] = config_field(
        "official", "'official' (esd_sd.py's Linear/Conv2d selection) or 'with-norms'"
    )
    iterations: int = config_field(200, "fine-tuning iterations, one x_t each (paper 1000, official script 200)", **ITERATIONS)
    lr: float = config_field(5e-5, "Adam learning rate (paper 1e-5, official script 5e-5)", **LEARNING_RATE)
    eta: float | None = config_field(
        None, "η: negative guidance scale; unset, 2 for the official target, 1 for the paper's", gt=0.0, le=100.0
    )
    start_guidance: float = config_field(3.0, "guidance scale of the original model's sampling of x_t (official 3)", **GUIDANCE)
    sample_steps: int = config_field(
        50, "sampler steps of that sampling; t is one of them at random (official 50)", **SAMPLER_STEPS
    )
    preserve_weight: float = config_field(
        1.0, "weight of the preserve loss, used only when preserve concepts are given", **WEIGHT
    )
    seed: int = config_field(0, "seed of the step choices and of the sampling noise", **SEEDS)
    lora_rank: int = config_field(
        0,
        "0: train the group's parameters themselves (official); r: a rank-r LoRA on its layers instead "
        "(weights only; the original model is the adapter switched off, so FLUX.1 needs no second copy)",
        ge=0,
        le=100_000,
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if self.eta is None:
            self.eta = ESD_TARGETS[self.target]


def erase(run: RunContext, spec: EraseSpec, config: ESDConfig) -> Edit:
    """ESD's fine-tuning of the config's parameter group towards the target above, for ``spec`` (:func:`train_esd`)."""
    return train_esd(run, spec, config)


def esd_parameters(model: torch.nn.Module, group: str, selection: str = "official") -> tuple[list[str], list[str]]:
    """The layers and parameters ESD's ``group`` trains: a UNet's by ``esd_sd.py``'s selection, a flow
    transformer's (FLUX, SD3) in its attention Linears (:func:`~erasekit.models.layers.flux_esd_layers`, in
    module order)."""
    if hasattr(model.config, "cross_attention_dim"):  # a UNet
        names = [name for name, _ in parameter_group(model, group, selection)]
        return sorted({name.rpartition(".")[0] for name in names}), names
    layers = flux_esd_layers(model, group)
    return layers, [f"{layer}.{n}" for layer in layers for n, _ in model.get_submodule(layer).named_parameters()]


# (states, x_t, t, point) -> the concept's states to train at: RACE's adversarial perturbation of them
Adversary = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, XtPoint], torch.Tensor]


def train_esd(
    run: RunContext, spec: EraseSpec, config: ESDConfig, adversary: Adversary | None = None, plain_steps: int = 0
) -> Edit:
    """ESD's fine-tuning; with an ``adversary``, steps after the first ``plain_steps`` train at the concept
    states it returns instead of the concept's own (RACE). On FLUX the same target in velocity space, on
    x_σ of the transformer's own Euler sampling (the official esd_flux.py)."""
    model = run.denoiser
    layers, names = esd_parameters(model, config.train_method, config.parameters)
    if config.lora_rank:
        check_rank(model, layers, config.lora_rank)  # before the x_t plan, which can take long
    rng = random.Random(config.seed)
    steps = plain_steps + config.iterations
    den = denoising(run)
    states, points = den.plan(spec, config.start_guidance, config.sample_steps, steps, rng)

    name = f"{'RACE' if adversary else 'ESD'} ({config.train_method}{f', LoRA r{config.lora_rank}' if config.lora_rank else ''})"
    with group_tuning(run, layers, names, config.lora_rank, config.seed) as tuning:

        def teacher(x_t: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
            return den.predict(tuning.original, x_t, t, cond)

        def loss_at(step: int) -> torch.Tensor:
            point = points[step]
            concept, anchor = states[spec.targets[point.prompt]], states[spec.anchors[point.prompt]]
            x_t, t = point.x_t, point.t
            eps_anchor, eps_concept = teacher(torch.cat([x_t, x_t]), t, den.cat([anchor, concept])).chunk(2)
            target = esd_target(eps_anchor.float(), eps_concept.float(), config.eta, config.target)
            trained_at = adversary(concept, x_t, t, point) if adversary is not None and step >= plain_steps else concept
            loss = F.mse_loss(den.predict(model, x_t, t, trained_at).float(), target)
            if spec.preserve and config.preserve_weight > 0:
                kept = states[rng.choice(spec.preserve)]
                kept_loss = F.mse_loss(den.predict(model, x_t, t, kept).float(), teacher(x_t, t, kept).float())
                loss = loss + config.preserve_weight * kept_loss
            return loss

        params = list(tuning.params.values())
        losses = fit(run, params, loss_at, steps, torch.optim.Adam(params, lr=config.lr), name)
        new_values = tuning.values()
    return Edit(new_values, {"config": asdict(config), **loss_record(losses)})


_GROUP_DOC = ESDConfig.__dataclass_fields__["train_method"].metadata["doc"]


@dataclass
class ESDUConfig(ESDConfig):
    """ESD-u: ESD's defaults on everything but cross-attention."""

    train_method: Literal["esd-x", "esd-u", "esd-all", "esd-x-strict"] = config_field("esd-u", _GROUP_DOC)


@dataclass
class ESDAllConfig(ESDConfig):
    """ESD-all: ESD's defaults on the whole UNet."""

    train_method: Literal["esd-x", "esd-u", "esd-all", "esd-x-strict"] = config_field("esd-all", _GROUP_DOC)


@dataclass
class ESDXStrictConfig(ESDConfig):
    """ESD-x-strict: ESD's defaults on the cross-attention ``to_k`` / ``to_v`` only."""

    train_method: Literal["esd-x", "esd-u", "esd-all", "esd-x-strict"] = config_field("esd-x-strict", _GROUP_DOC)


# One registry entry per variant, so `--method esd-u` needs no extra setting.
register(
    "esd-x",
    "ESD-x (Gandikota et al. 2023): fine-tune cross-attention with negative guidance; erases the named concept",
    ESDConfig,
    families=("sd", "sdxl", "sd3", "flux"),
)(erase)
register("esd-u", "ESD-u: fine-tune everything but cross-attention; erases the concept globally (nudity)", ESDUConfig,
         families=("sd", "sdxl"))(erase)  # fmt: skip
register("esd-all", "ESD-all: fine-tune the whole UNet with negative guidance", ESDAllConfig, families=("sd", "sdxl"))(erase)
register("esd-x-strict", "ESD-x-strict: fine-tune only cross-attention to_k/to_v with negative guidance", ESDXStrictConfig,
         families=("sd", "sdxl", "sd3", "flux"))(erase)  # fmt: skip
