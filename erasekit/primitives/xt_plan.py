"""x_t plans: the noisy latents a fine-tuning method trains on, drawn before training starts.

ESD and RealEra's alignment train on x_t from the *original* model's own classifier-free-guided
sampling of a prompt, stopped at a random step. Training never changes the original model, so
every step's x_t can be drawn up front, one batch per prompt, instead of one trajectory per step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from erasekit.primitives.diffusion import FrozenCopy, partial_samples

if TYPE_CHECKING:
    from erasekit.concepts import EraseSpec
    from erasekit.primitives.run import RunContext


# (cond, stop indices, seeds, on_captured) -> (x_t, t): one prompt's trajectories, stopped where asked
Sampler = Callable[[Any, list[int], list[int], Callable[[int], None]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class XtPoint:
    """One training step's input: the prompt it is about and an x_t (1, C, H, W; FLUX: 1, tokens, channels)
    at timestep t (FLUX: σ)."""

    prompt: int
    x_t: torch.Tensor
    t: torch.Tensor
    seed: int = 0  # of the trajectory's starting noise x_T (RACE's attack aims the prediction at it)


def plan_xt(
    run: RunContext,
    denoise: nn.Module | FrozenCopy,
    conds: Sequence[Any],
    uncond: Any,
    guidance: float,
    sample_steps: int,
    count: int,
    choose: Callable[[int], int],
    rng: random.Random,
    sampler: Sampler | None = None,
) -> list[XtPoint]:
    """``count`` points: step k is about prompt ``choose(k)`` (an index into ``conds``), stopped at a
    step drawn from ``rng`` of a trajectory whose noise seed is drawn from ``rng`` too. ``sampler``
    draws the trajectories of a family whose sampler is not the pipeline's UNet loop (FLUX's Euler
    flow, :func:`~erasekit.primitives.flow.flow_partial_samples`); ``denoise``, ``uncond``,
    ``guidance`` and ``sample_steps`` are then its business.

    The draws are made in step order (prompt, stop, seed), so a method that also draws from ``rng``
    later sees the same stream whatever the batching.
    """
    plan = [(choose(k), rng.randrange(sample_steps), rng.randrange(2**31)) for k in range(count)]
    points: list[XtPoint | None] = [None] * count
    bar = run.counter(count, "x_t plan")  # sampling the trajectories can take as long as the training
    for prompt, cond in enumerate(conds):
        mine = [k for k, (p, _, _) in enumerate(plan) if p == prompt]
        if not mine:
            continue
        stops, seeds = [plan[k][1] for k in mine], [plan[k][2] for k in mine]
        if sampler is not None:
            x, t = sampler(cond, stops, seeds, bar.update)
        else:
            x, t = partial_samples(run.pipe, denoise, cond, uncond, guidance, sample_steps, stops, seeds, on_captured=bar.update)
        for j, k in enumerate(mine):
            points[k] = XtPoint(prompt, x[j : j + 1], t[j], plan[k][2])
    bar.close()
    if any(p is None for p in points):
        raise ValueError(f"choose() gave a prompt index outside the {len(conds)} prompts")
    return points  # type: ignore[return-value]


def concept_plan(
    run: RunContext, spec: EraseSpec, guidance: float, sample_steps: int, count: int, rng: random.Random
) -> tuple[dict[str, torch.Tensor], list[XtPoint]]:
    """ESD's inputs, shared by the methods trained on its target (ESD, RACE, AdvUnlearn, Receler): the
    (1, L, d) states of "", every target, anchor and preserve concept (read before any training), and
    ``count`` x_t points of the targets in turn from the original model's guided sampling."""
    prompts = list(dict.fromkeys(["", *spec.targets, *spec.anchors, *spec.preserve]))
    encoded = run.states(prompts)
    states = {p: encoded[i : i + 1] for i, p in enumerate(prompts)}
    points = plan_xt(run, run.unet, [states[t] for t in spec.targets], states[""], guidance, sample_steps, count,
                     lambda k: k % len(spec.targets), rng)  # fmt: skip
    return states, points
