"""ANT: Set You Straight: Auto-Steering Denoising Trajectories to Sidestep Unwanted Concepts (Li et al., ACM MM 2025).

Classifier-free guidance is reversed only where the concept's details form. On x_t of the original
model's guided sampling of the concept c, stopped after k of the sampler's steps (θ* the original),

    k < K  (kept):      ε_θ(x_t, c) → ε*(x_t) + η (ε*(x_t, c) − ε*(x_t))     the original guidance
    k ≥ K  (reversed):  ε_θ(x_t, c) → ε*(x_t) − η (ε*(x_t, c) − ε*(x_t))     guidance turned away

and the unconditional prediction is held, ℓ_∅ = ‖ε_θ(x_t) − ε*(x_t)‖², at both points of one
trajectory:

    L = ℓ_rev + α₂ ℓ_∅(rev) + α₁ (ℓ_keep + α₂ ℓ_∅(keep)).

The first steps lay the image out; keeping their score field keeps the trajectory on the image
manifold, so no anchor concept is needed. Only the weights of an augmentation-enhanced saliency map
train: the gradient of L summed over ``mask_iterations`` steps is ranked within each tensor, the top
``mask_ratio`` kept, and the masks of every seed and target intersected.

Defaults are the official single-concept run (lileyang1210/ANT @ 78ce8f3, ``Single/configs/
ant_train.yaml``, ``ant_gradient.yaml``): the whole UNet, Adam lr 5e-4, 250 iterations, K = 7 of 50,
η = 1, α₁ = 1, α₂ = 0.5, x_t at guidance 3; the mask from 10 gradient steps for each of 5 seeds,
the top half of each tensor.
Differences from that code, on purpose:
- **Which steps keep.** ``kept_stage="early"`` keeps the first K steps from noise, as the paper says
  and the multi-concept code does (``Multiple/train_ant.py``, K = 4). The single-concept script's
  sampler counts from the clean end, so there the *last* K steps keep (t < 140) and the early ones
  are reversed: ``kept_stage="late"``.
- **ℓ_∅ trains.** The single-concept script computes both ℓ_∅ terms under ``no_grad`` (they do
  nothing); the multi-concept code and the paper train them, as here.
- **The mask keeps the most salient weights.** The released ``generate_mask.py`` sorts ascending and
  keeps the *smallest* half of each tensor; the paper's saliency keeps the largest. Its gradient pass
  also steps the optimiser at lr 1e-2 between the gradients it sums; here they are summed at the
  original weights.
- **x_t** comes from the original model, drawn before training (the multi-concept code; the
  single-concept one samples with the model being trained), at the sampler's own timestep.
The multi-concept path (a LoRA per concept, fused by MACE's closed form) is MACE's fusion with this
loss; here several concepts take turns, one per iteration, in one model.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.models.layers import sdd_parameters
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, fit, loss_record, masked_gradients
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field


@dataclass
class ANTConfig:
    """Defaults: the official single-concept configs (their YAML keys in brackets)."""

    # the choices of models.layers.SDD_GROUPS, the same names as the official train_method
    train_method: Literal["xattn", "selfattn", "noxattn", "notime", "full"] = config_field(
        "full", "what trains: full (official), xattn, selfattn, noxattn or notime (train_method)"
    )
    iterations: int = config_field(250, "training steps, one trajectory each (iterations 250)", **ITERATIONS)
    lr: float = config_field(5e-4, "Adam learning rate (lr 5e-4)", **LEARNING_RATE)
    eta: float = config_field(1.0, "η: the guidance kept early and reversed later (negative_guidance 1)", gt=0.0, le=100.0)
    before_step: int = config_field(
        7, "K: the sampler steps whose guidance is kept (before_step 7; the multi-concept code 4)", ge=1, le=999
    )
    kept_stage: Literal["early", "late"] = config_field(
        "early", "which K steps keep: 'early' from noise (paper, multi-concept code) or 'late' (single-concept script)"
    )
    alpha1: float = config_field(1.0, "α₁: weight of the kept-guidance branch (alpha1 1)", **WEIGHT)
    alpha2: float = config_field(0.5, "α₂: weight of the unconditional-prediction terms (alpha2 0.5)", **WEIGHT)
    start_guidance: float = config_field(3.0, "guidance of the original model's sampling of x_t (start_guidance 3)", **GUIDANCE)
    sample_steps: int = config_field(50, "sampler steps of that sampling (ddim_steps 50)", **SAMPLER_STEPS)
    mask_ratio: float = config_field(
        0.5, "share of each tensor one saliency map keeps (threshold 0.5); 1: no mask", gt=0.0, le=1.0
    )
    mask_seeds: int = config_field(5, "seeds whose saliency maps are intersected (5: 24, 42, 98, 403, 3407)", ge=1, le=1000)
    mask_iterations: int = config_field(10, "steps each saliency map sums (ant_gradient.yaml iterations 10)", ge=1, le=10_000)
    seed: int = config_field(0, "seed of the trajectories and their stops", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.before_step >= self.sample_steps:
            raise ErasekitError(
                f"ANT's before_step {self.before_step} leaves no reversed step of {self.sample_steps}; "
                "give before_step below sample_steps"
            )


class Trajectories:
    """Two points of one trajectory of the original model per step: one where the guidance is kept, one
    where it is reversed (x_t and t of each), drawn up front for the targets in turn."""

    def __init__(self, run: RunContext, den: UNetDenoising, spec: EraseSpec, config: ANTConfig, count: int) -> None:
        rng = random.Random(config.seed)
        steps, k = config.sample_steps, config.before_step
        kept = range(k) if config.kept_stage == "early" else range(steps - k, steps)
        reversed_ = range(k, steps) if config.kept_stage == "early" else range(steps - k)
        self.prompt = [i % len(spec.targets) for i in range(count)]
        plan = [(rng.choice(kept), rng.choice(reversed_), rng.randrange(2**31)) for _ in range(count)]
        self.states = {p: den.conditioning([p]) for p in dict.fromkeys(["", *spec.targets])}
        empty: list[Any] = [None] * count
        self.keep_x, self.keep_t, self.rev_x, self.rev_t = list(empty), list(empty), list(empty), list(empty)
        bar = run.counter(2 * count, "x_t plan")
        for index, target in enumerate(spec.targets):
            mine = [i for i in range(count) if self.prompt[i] == index]
            if not mine:
                continue
            stops = [plan[i][0] for i in mine] + [plan[i][1] for i in mine]
            seeds = [plan[i][2] for i in mine] * 2
            with torch.no_grad():
                x, t = den.sample(self.states[target], self.states[""], config.start_guidance, steps, stops, seeds, bar.update)
            for j, i in enumerate(mine):
                self.keep_x[i], self.keep_t[i] = x[j : j + 1], t[j]
                self.rev_x[i], self.rev_t[i] = x[len(mine) + j : len(mine) + j + 1], t[len(mine) + j]
        bar.close()


@register(
    "ant",
    "ANT (Li et al. 2025): keep the concept's guidance early in the trajectory and reverse it later, on salient weights",
    ANTConfig,
    families=("sd", "sdxl"),
)
def erase(run: RunContext, spec: EraseSpec, config: ANTConfig) -> Edit:
    """ANT's fine-tuning of ``config.train_method``'s weights inside the saliency mask, for ``spec`` (above)."""
    spec.targets_only("ANT steers away from the concept's own guidance")
    model, den = run.denoiser, denoising(run)
    masked = config.mask_ratio < 1
    mask_steps = config.mask_seeds * config.mask_iterations * len(spec.targets) if masked else 0
    plan = Trajectories(run, den, spec, config, mask_steps + config.iterations)
    uncond = plan.states[""]

    with fine_tuning(run, sdd_parameters(model, config.train_method)) as tuning:

        def loss_at(step: int) -> torch.Tensor:
            concept = plan.states[spec.targets[plan.prompt[step]]]
            x_t = torch.cat([plan.keep_x[step], plan.rev_x[step]])
            t = torch.stack([plan.keep_t[step], plan.rev_t[step]])
            with torch.no_grad():
                eps_u, eps_c = den.predict(tuning.original, torch.cat([x_t, x_t]), torch.cat([t, t]),
                                           den.cat([uncond, uncond, concept, concept])).float().chunk(2)  # fmt: skip
            sign = torch.tensor([1.0, -1.0], device=x_t.device).view(2, *[1] * (x_t.dim() - 1))
            target = eps_u + sign * config.eta * (eps_c - eps_u)  # row 0 kept, row 1 reversed
            now_u, now_c = den.predict(model, torch.cat([x_t, x_t]), torch.cat([t, t]),
                                       den.cat([uncond, uncond, concept, concept])).float().chunk(2)  # fmt: skip
            guided = ((now_c - target) ** 2).flatten(1).mean(1)
            held = ((now_u - eps_u) ** 2).flatten(1).mean(1)
            return guided[1] + config.alpha2 * held[1] + config.alpha1 * (guided[0] + config.alpha2 * held[0])

        mask = saliency_mask(run, tuning.params, loss_at, config, len(spec.targets)) if masked else {}
        with masked_gradients(tuning.params, mask):  # no mask: every weight trains
            params = list(tuning.params.values())
            losses = fit(run, params, lambda step: loss_at(mask_steps + step), config.iterations,
                         torch.optim.Adam(params, lr=config.lr), f"ANT ({config.train_method})")  # fmt: skip
        values = tuning.values()
    if masked:
        values = {name: value for name, value in values.items() if mask[name].any()}
        share = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    return Edit(values, {"config": asdict(config), **({"mask_share": round(share, 4)} if masked else {}),
                         **loss_record(losses)})  # fmt: skip


def saliency_mask(
    run: RunContext, params: dict[str, torch.nn.Parameter], loss_at: object, config: ANTConfig, targets: int
) -> dict[str, torch.Tensor]:
    """The intersection, over every seed and target, of the weights in the top ``mask_ratio`` of their tensor
    by |Σ ∇L| over ``mask_iterations`` steps (steps 0 … of the plan: seed-major, the targets in turn)."""
    names, tensors = list(params), list(params.values())
    mask = {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}
    per_map = config.mask_iterations * targets
    for first in run.bar(range(0, config.mask_seeds * per_map, per_map), "ANT saliency"):
        sums = {name: torch.zeros_like(p) for name, p in params.items()}
        for step in range(first, first + per_map):
            with run.autocast():
                loss = loss_at(step)  # type: ignore[operator]
            for name, grad in zip(names, torch.autograd.grad(loss, tensors, allow_unused=True), strict=True):
                if grad is not None:
                    sums[name] += grad.float()
        for name, total in sums.items():
            # steps are targets in turn, so each map sums every target; the seeds' maps intersect
            scores = total.abs().flatten()
            kept = max(1, round(config.mask_ratio * scores.numel()))
            threshold = torch.topk(scores, kept, sorted=False).values.min()
            mask[name] &= (total.abs() >= threshold).view_as(mask[name])
    return mask
