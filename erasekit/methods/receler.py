"""Receler: Reliable Concept Erasing via Lightweight Erasers (Huang et al., ECCV 2024).

An eraser E_l after every cross-attention layer l (:mod:`erasekit.edits.erasers`) is trained with
the UNet θ frozen:

    L = ‖ε_{θ,E}(x_t, c ⊕ δ) − [ε_θ(x_t) − η (ε_θ(x_t, c) − ε_θ(x_t))]‖²  +  λ · mean_l Σ_pixels ‖E_l(o_l) ⊙ (1 − M)‖² / Σ (1 − M)

* the first term is ESD's target (paper eq. 3, η = 1) read through the erasers;
* **concept-localised regularisation**: M is where the concept's words look in the original model
  (their cross-attention maps at one resolution, 16×16 on SD's 64×64 latents, averaged over layers,
  heads and tokens, min-max normalised and thresholded at ``mask_threshold``); outside M the erasers'
  outputs (mean of squares over channels) are pushed to zero, so the rest of the image stays;
* **adversarial prompt learning**: δ, ``adversarial_tokens`` vectors written into the concept's text
  states right after its words, is trained for ``adversarial_steps`` Adam steps per iteration (lr
  0.1, weight decay 0.1, from U(0, 1), kept across iterations) to make the erased model predict
  ε_θ(x_t, c) again; the erasers then train at c ⊕ δ.

Defaults are the official ``train_receler.py`` (jasper0314-huang/Receler): rank 128, 500
iterations, Adam lr 3e-4, λ = 0.1, threshold 0.1, 50 adversarial steps on 16 vectors, x_t from
50-step sampling at guidance 3, η = 1. Differences: x_t drawn up front from the original model (the
official samples with the erasers on), and the erasers train at δ after its steps (the official
takes the prediction made before the last one). erasekit addition, off unless preserve concepts are
given: ‖ε_{θ,E}(x_t, p) − ε_θ(x_t, p)‖² for one of them per step (weight ``preserve_weight``), as
erasekit's ESD has.

Found in the official script: its δ never reaches the prompt. ``emb_n[:, idx, :].data = δ`` writes
into a copy that advanced indexing makes, so the erasers train at c alone and the 50 inner steps
recompute one prediction. ``adversarial=False`` trains that way, as the released models were.

On SDXL (no official code) the same erasers follow every ``attn2``, which reads both encoders' states
side by side; δ is written into those token states, the pooled vector and the added time ids stay the
concept's, and x_t comes from SDXL's own sampler (:mod:`erasekit.primitives.denoising`).

On FLUX (no official code, erasekit's design) an eraser follows the image stream of every joint
attention, double and single blocks (:mod:`erasekit.edits.erasers`); M comes from the image tokens'
attention to the concept's words in those layers (FLUX's probe, one resolution: the packed token
grid); δ is written into the token path's states after the concept's words, the pooled vector stays
the concept's; the target is ESD's in velocity space.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.erasers import HOOKED_ERASERS, eraser_tensors, erasers_on, new_erasers
from erasekit.methods.base import register
from erasekit.methods.esd import esd_target
from erasekit.primitives.attention import probing
from erasekit.primitives.denoising import denoising
from erasekit.primitives.prompt_cache import token_states, with_tokens
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, fit, loss_record
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field


@dataclass
class RecelerConfig:
    """Defaults of the official train_receler.py; the world's working setting is in the README."""

    rank: int = config_field(128, "width of each eraser's bottleneck (official eraser_rank 128)", ge=1, le=4096)
    iterations: int = config_field(500, "training iterations, one x_t each (official 500)", **ITERATIONS)
    lr: float = config_field(3e-4, "Adam learning rate of the erasers (official 3e-4)", **LEARNING_RATE)
    eta: float = config_field(1.0, "η: negative guidance of ESD's target (official negative_guidance 1)", gt=0.0, le=100.0)
    reg_weight: float = config_field(0.1, "λ: weight of the concept-localised regularisation (official 0.1)", **WEIGHT)
    mask_threshold: float = config_field(
        0.1, "threshold of the normalised attention map that makes M (official 0.1)", ge=0.0, lt=1.0
    )
    mask_resolution: int = config_field(
        0, "side of the attention maps M is made from; 0: the latent side / 4 (16 on SD; FLUX has one grid)", ge=0, le=1024
    )
    adversarial: bool = config_field(True, "the paper's adversarial prompt learning; False: what the official script trains")
    # δ's steps run inside every iteration: iterations × adversarial_steps UNet passes
    adversarial_steps: int = config_field(50, "Adam steps on δ per iteration (official advrs_iters 50)", ge=0, le=1000)
    adversarial_tokens: int = config_field(
        16, "vectors in δ (official num_advrs_prompts 16); fewer if the prompt is full", ge=1, le=1000
    )
    adversarial_lr: float = config_field(0.1, "learning rate of δ (official 0.1, weight decay 0.1)", **LEARNING_RATE)
    start_guidance: float = config_field(3.0, "guidance of the original model's sampling of x_t (official 3)", **GUIDANCE)
    sample_steps: int = config_field(
        50, "sampler steps of that sampling; t is one of them at random (official ddim_steps 50)", **SAMPLER_STEPS
    )
    preserve_weight: float = config_field(
        1.0, "weight of the preserve loss, used only when preserve concepts are given", **WEIGHT
    )
    seed: int = config_field(0, "seed of the x_t plan, the erasers' start and δ's", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)


def concept_mask(maps: list[torch.Tensor], tokens: int, side: int, threshold: float) -> torch.Tensor:
    """M (1, 1, side', side'): where the concept's tokens look, from the probe's masked attention maps
    (B, heads, N, L) of every layer, at the recorded resolution nearest ``side``."""
    sides = sorted({round(m.shape[2] ** 0.5) for m in maps})
    chosen = min(sides, key=lambda s: (abs(s - side), -s))
    per_layer = [m.sum(-1).mean(1) / tokens for m in maps if round(m.shape[2] ** 0.5) == chosen]  # (B, N) each
    average = torch.stack(per_layer).mean(0)[:1].float().view(1, 1, chosen, chosen)
    low, high = average.min(), average.max()
    return ((average - low) / (high - low).clamp_min(1e-12) >= threshold).float()


def default_mask_side(model: torch.nn.Module) -> int:
    """The side M is made at when ``mask_resolution`` is 0: the latent side / 4 (16 on SD's 64×64 latents);
    FLUX's maps have one resolution, the packed token grid, which any side selects."""
    return max(getattr(model.config, "sample_size", 4) // 4, 1)


def localisation_loss(outputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """The mean over erasers of Σ_pixels mean_channels (E(o) ⊙ (1 − M))² / Σ (1 − M)."""
    losses = []
    for erased in outputs.values():  # (B, N, C)
        side = round(erased.shape[1] ** 0.5)
        outside = 1 - F.interpolate(mask, size=(side, side), mode="nearest").view(1, -1, 1)
        losses.append(((erased.float() * outside) ** 2).mean(-1).sum() / (outside.sum() + 1e-9))
    return torch.stack(losses).mean()


@register(
    "receler",
    "Receler (Huang et al. 2024): eraser adapters after cross-attention, concept-localised and trained against adversarial prompts",
    RecelerConfig,
    changes_weights=False,
    families=("sd", "sdxl", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: RecelerConfig) -> Edit:
    """Receler on ``spec``: erasers after every layer where the image reads the text, trained on the loss above
    with the denoiser frozen; the edit carries only the erasers."""
    model, den = run.denoiser, denoising(run)
    rng = random.Random(config.seed)
    states, points = den.plan(spec, config.start_guidance, config.sample_steps, config.iterations, rng)
    generator = run.generator(config.seed + 1)
    _, length, width = token_states(states[""]).shape
    spans = [run.cache.word_span(t, t) for t in spec.targets]  # the concept's token positions in its own prompt
    token_masks = [torch.zeros((1, length), dtype=torch.bool, device=run.device) for _ in spans]  # what the probe maps
    for token_mask, span in zip(token_masks, spans, strict=True):
        token_mask[0, span.start : span.stop] = True
    slots = [range(s.stop, min(s.stop + config.adversarial_tokens, length)) for s in spans]  # from [EOS]/[SEP] on, as official
    deltas = [torch.rand((len(r), width), generator=generator, device="cpu").to(run.device).requires_grad_(True)
              for r in slots]  # fmt: skip
    delta_optimisers = [torch.optim.Adam([d], lr=config.adversarial_lr, weight_decay=0.1) for d in deltas]
    side = config.mask_resolution or default_mask_side(model)
    erasers = new_erasers(model, config.rank, generator)
    outputs: dict[str, torch.Tensor] = {}

    def with_delta(index: int, tracked: bool = True) -> object:
        """The concept's conditioning with δ written into its token states (SDXL's pooled vector kept); untracked,
        δ's value out of autograd."""
        concept = states[spec.targets[index]]
        tokens = token_states(concept).clone()
        if len(slots[index]):
            delta = deltas[index] if tracked else deltas[index].detach()
            tokens[0, slots[index].start : slots[index].stop] = delta.to(tokens.dtype)
        return with_tokens(concept, tokens)

    with fine_tuning(run, []):  # the denoiser frozen, in train mode; nothing of it trains
        params = [p for e in erasers.values() for p in e.parameters()]

        def loss_at(step: int) -> torch.Tensor:
            point = points[step]
            index, x_t, t = point.prompt, point.x_t, point.t
            concept, anchor = states[spec.targets[index]], states[spec.anchors[index]]
            kept = states[rng.choice(spec.preserve)] if spec.preserve and config.preserve_weight > 0 else None
            with torch.no_grad(), probing(model, run.family.name) as probe:  # the original model: erasers not yet on
                eps_anchor = den.predict(model, x_t, t, anchor).float()
                eps_kept = den.predict(model, x_t, t, kept).float() if kept is not None else None
                probe.token_mask = token_masks[index]
                eps_concept = den.predict(model, x_t, t, concept).float()
            mask = concept_mask(probe.maps, len(spans[index]), side, config.mask_threshold)
            with erasers_on(model, erasers, outputs):
                for _ in range(config.adversarial_steps if config.adversarial and len(slots[index]) else 0):
                    pulled = F.mse_loss(den.predict(model, x_t, t, with_delta(index)).float(), eps_concept)
                    (deltas[index].grad,) = torch.autograd.grad(pulled, [deltas[index]])
                    delta_optimisers[index].step()
                trained_at = with_delta(index, tracked=False) if config.adversarial else concept  # δ's steps are over
                erased = den.predict(model, x_t, t, trained_at).float()
                regularised = localisation_loss(outputs, mask)  # read before the preserve pass overwrites the outputs
                kept_loss = F.mse_loss(den.predict(model, x_t, t, kept).float(), eps_kept) if kept is not None else 0
            loss = F.mse_loss(erased, esd_target(eps_anchor, eps_concept, config.eta, "paper"))
            return loss + config.reg_weight * regularised + config.preserve_weight * kept_loss

        losses = fit(run, params, loss_at, config.iterations, torch.optim.Adam(params, lr=config.lr), "Receler")
    erasers_entry = HOOKED_ERASERS.card_fields({"rank": config.rank, "layers": len(erasers)})
    card = {"config": asdict(config), **erasers_entry, **loss_record(losses)}
    return Edit({}, card, eraser_tensors(erasers, run.dtype))
