"""RealEra: semantic-level concept erasure via neighbor-concept mining (Liu et al., arXiv 2410.09140).

Its Algorithm 1, step by step:

* **Neighbor-concept mining** (§4.1, eq. 3–6). For each prompt p of a concept with token states e,
  draw v ~ N(0, I), the direction v̂ = (v − e)/‖v − e‖, a radius r ~ U[0, D₁) and η = r·v̂; keep η
  when S₂ ≤ cos(e, e + η) ≤ S₁, until M are kept. η is added to the concept token and every token
  after it; the anchor prompt's states get η′ = r′·v̂ with r′ ~ U[0, D₁′), the "tolerance" that lets
  associated concepts land near the anchor rather than on one point. These pairs join E and E*.
* **Beyond-concept regularisation** (§4.2). N more samples with radius l ~ U[D₁, D₂) and
  cos(e, e + η) < S₂ stay where they are: they join the preserve set Pre.
* **Closed form** (eq. 7): min_W Σ_E ‖We − W₀e*‖² + λ₁ Σ_Pre ‖We − W₀e‖², λ₁ = 0.1.
* **Prediction-noise alignment** (§4.3, eq. 8–9). A LoRA on ``to_k``/``to_v`` aligns ε(z_t, p_c)
  with the frozen model's ε̂(z_t, p_c*) on odd steps; on even steps the perturbed p′_c is aligned
  with p_c* and the beyond-concept p″_c with itself. Perturbations are resampled every epoch; z_t
  comes from images of the anchor prompt. The paper: 200 epochs, lr 1e-5, γ₁ = 0.3, γ₂ = 0.7.

What the paper leaves open, and the choices made here (recorded in each field's doc):
* D, S, M, N are set in a figure only. Radii here are *relative to ‖e‖*, the concept token's norm,
  so one default serves encoders whose states differ in scale (CLIP's are ~3.5× the embedded
  model's). Defaults come from the sweep recorded in the README.
* γ₁, γ₂ are not defined in the text; they are read as the weights of the two terms of eq. 9.
* Eq. 7 has no pull towards W₀; a small ridge (UCE's λ) keeps the solve well-posed when E and Pre
  do not span the text space.
* An erasekit addition, off by default: ``outside_preserve`` (τ) draws the neighbours' directions
  only from the subspace the preserve prompts' states leave empty, so that mining does not drag what
  the preserve set pins (on the world, a random η of "cross" puts 38 % of its energy in the 144
  directions the nine other classes use). Measured on the world, it lowers drift but gives back
  synonyms: the same trade-off as a heavier preserve weight (README, RealEra).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.concepts import EraseSpec, anchor_prompt
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods import uce
from erasekit.methods.base import register
from erasekit.methods.mace import augmented_templates
from erasekit.models.layers import FLUX_POOLED_INPUT, FLUX_TOKEN_INPUT, flux_text_inputs, kv_projections
from erasekit.primitives.closed_form import edited_weights, text_space_map
from erasekit.primitives.denoising import denoising
from erasekit.primitives.lora_trainer import check_rank, lora_adapter
from erasekit.primitives.prompt_cache import PooledText, PromptCache, aligned_positions
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fit, loss_record
from erasekit.primitives.xt_plan import plan_xt
from erasekit.settings import (
    GUIDANCE,
    LEARNING_RATE,
    LORA_RANK,
    RIDGE,
    SAMPLER_STEPS,
    SEEDS,
    WEIGHT,
    check_settings,
    config_field,
)

MAX_DRAWS = 10_000  # draws per prompt before a perturbation setting is declared empty


@dataclass
class RealEraConfig:
    """The paper's λ₁, epochs, lr, γ₁, γ₂; D, S, M, N from the world sweep (radii relative to ‖e‖)."""

    # λ₁ divides the preserve weight: a tiny one overflows it, as a tiny ridge makes the solve singular
    lam1: float = config_field(0.1, "λ₁: weight of the preserve set Pre in the closed form (paper 0.1)", **RIDGE)
    ridge: float = config_field(0.5, "pull towards W₀ that keeps eq. 7 well-posed (UCE's λ; not in the paper)", **RIDGE)
    # M·L·d states per prompt are held at once
    m: int = config_field(32, "M: perturbed (associated) concepts mined per prompt (world sweep: 32)", ge=0, le=4096)
    n: int = config_field(
        0, "N: beyond-concept samples kept fixed per prompt (world sweep: 0 when a preserve set is given)", ge=0, le=4096
    )
    d1: float = config_field(1.0, "D₁: neighbourhood radius, in units of ‖e‖", gt=0.0, le=100.0)
    d1_anchor: float = config_field(0.3, "D₁′: radius of the anchor's tolerance η′, in units of ‖e*‖", ge=0.0, le=100.0)
    d2: float = config_field(2.0, "D₂: outer radius of the beyond-concept samples, in units of ‖e‖", gt=0.0, le=100.0)
    s1: float = config_field(0.95, "S₁: upper cosine bound of a mined neighbour", ge=-1.0, le=1.0)
    s2: float = config_field(0.6, "S₂: lower cosine bound of a neighbour; beyond-concept samples lie below it", ge=-1.0, le=1.0)
    span: Literal["auto", "following", "all"] = config_field(
        "auto",
        "tokens mapped and perturbed: 'following' (the concept token onwards, the paper, for causal CLIP), "
        "'all' (every token, for bidirectional encoders, whose every state carries the concept), 'auto' picks by encoder",
    )
    templates: tuple[str, ...] = config_field((), "prompts with {} for the concept (default: MACE-style object prompts)")
    concept_type: Literal["object", "style"] = config_field("object", "'object' or 'style': which default prompts")
    preserve_scale: float = config_field(1.0, "weight of the user's preserve concepts beside Pre", **WEIGHT)
    lora: bool = config_field(True, "run the prediction-noise alignment (False: closed form only)")
    epochs: int = config_field(200, "T: noise-alignment steps (paper 200 epochs)", ge=0, le=100_000)
    lr: float = config_field(1e-5, "LoRA learning rate (paper 1e-5)", **LEARNING_RATE)
    rank: int = config_field(4, "LoRA rank (the paper does not give one)", **LORA_RANK)
    gamma1: float = config_field(0.3, "γ₁: weight of the associated-concept term of eq. 9 (paper 0.3)", **WEIGHT)
    gamma2: float = config_field(0.7, "γ₂: weight of the beyond-concept term of eq. 9 (paper 0.7)", **WEIGHT)
    sample_steps: int = config_field(25, "sampler steps for the anchor images that give z_t", **SAMPLER_STEPS)
    guidance: float = config_field(7.5, "guidance scale for those images", **GUIDANCE)
    outside_preserve: float = config_field(
        0.0,
        "τ: mine neighbours only in directions the preserve prompts' states leave empty (singular values below "
        "τ·σ_max), so that moving the neighbourhood does not pull on what is preserved; 0 = anywhere (the paper)",
        ge=0.0,
        lt=1.0,
    )
    seed: int = config_field(0, "seed of the perturbations, images and noise", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.d2 <= self.d1:
            raise ErasekitError(f"radii need 0 < D₁ < D₂; got D₁={self.d1}, D₂={self.d2}")
        if self.s2 > self.s1:
            raise ErasekitError(f"cosine bounds need -1 ≤ S₂ ≤ S₁ ≤ 1; got S₁={self.s1}, S₂={self.s2}")
        if any("{}" not in t for t in self.templates):
            raise ErasekitError("each template must contain {} where the concept goes")

    @property
    def prompt_templates(self) -> tuple[str, ...]:
        """The augmented prompts in use: ``templates``, else the concept type's defaults."""
        return augmented_templates(self.templates, self.concept_type)


def sample_perturbations(
    e: torch.Tensor,
    count: int,
    r_low: float,
    r_high: float,
    accept: Callable[[float], bool],
    rng: torch.Generator,
    projector: torch.Tensor | None = None,
) -> torch.Tensor:
    """``count`` directions η = r v̂ (eq. 5) with r ~ U[r_low, r_high)·‖e‖ that ``accept(cos)`` admits;
    ``projector`` (d×d) restricts v̂ to a subspace. Drawn and tested on the CPU from the CPU generator
    ``rng`` (one small vector at a time: a GPU would wait on every test), returned on ``e``'s device."""
    home = e.device
    e = e.cpu()
    projector = projector.cpu() if projector is not None else None
    kept: list[torch.Tensor] = []
    scale = e.norm()
    for _ in range(MAX_DRAWS):
        if len(kept) == count:
            break
        v = torch.randn(e.shape, generator=rng, dtype=e.dtype, device=e.device)
        direction = v - e if projector is None else projector @ (v - e)
        direction = direction / direction.norm()
        r = (r_low + (r_high - r_low) * torch.rand((), generator=rng, dtype=e.dtype, device=e.device)) * scale
        eta = r * direction
        if accept(float(F.cosine_similarity(e, e + eta, dim=0))):
            kept.append(eta)
    if len(kept) < count:
        raise ErasekitError(
            f"only {len(kept)} of {count} perturbations met the bounds in {MAX_DRAWS} draws; "
            "widen the radius range or the cosine bounds (S₂ ≤ cos ≤ S₁)"
        )
    return (torch.stack(kept) if kept else torch.zeros(0, *e.shape, dtype=e.dtype, device=e.device)).to(home)


@dataclass
class Neighbourhood:
    """One prompt's states and its mined neighbours: E pairs (source → target) and Pre states."""

    prompt: torch.Tensor  # (L, d) states of p(c)
    anchor: torch.Tensor  # (L, d) states of p(c*)
    positions: list[int]  # tokens of p(c) that are mapped (and perturbed) ...
    anchor_positions: list[int]  # ... onto these tokens of p(c*)
    associated: torch.Tensor  # (M, L, d) p′_c
    associated_anchor: torch.Tensor  # (M, L, d) p_c* + η′
    beyond: torch.Tensor  # (N, L, d) p″_c


def mine(run: RunContext, prompt: str, concept: str, anchor_prompt: str, anchor: str, config: RealEraConfig,
         rng: torch.Generator, projector: torch.Tensor | None = None) -> Neighbourhood:  # fmt: skip
    """Algorithm 1, steps 3–22, for one prompt; ``projector`` confines the neighbours' directions."""
    cache = run.cache
    states, anchor_states = cache.states([prompt, anchor_prompt]).to(run.solve_device, torch.float64)
    start = cache.word_span(prompt, concept).start
    if token_span(cache, config) == "following":  # UCE's alignment: the concept token onwards
        anchor_start = cache.word_span(anchor_prompt, anchor).start if anchor else cache.length(anchor_prompt) - 2
        length = states.shape[0] - max(start, anchor_start)
        positions, anchor_positions = list(range(start, start + length)), list(range(anchor_start, anchor_start + length))
    else:
        ids = [cache.token_ids(p) for p in (prompt, anchor_prompt)]
        positions, anchor_positions = aligned_positions(*ids, cache.max_length)
    e = states[start]
    etas = sample_perturbations(e, config.m, 0.0, config.d1, lambda c: config.s2 <= c <= config.s1, rng, projector)
    directions = etas / etas.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    r_anchor = torch.rand(len(etas), 1, generator=rng, dtype=e.dtype, device=rng.device).to(e.device)
    r_anchor = r_anchor * config.d1_anchor * anchor_states[anchor_positions[0]].norm()
    beyond = sample_perturbations(e, config.n, config.d1, config.d2, lambda c: c < config.s2, rng)

    def shifted(base: torch.Tensor, offsets: torch.Tensor, where: list[int]) -> torch.Tensor:
        out = base.expand(len(offsets), -1, -1).clone()
        out[:, sorted(set(where))] += offsets[:, None, :]
        return out

    return Neighbourhood(
        states, anchor_states, positions, anchor_positions, shifted(states, etas, positions),
        shifted(anchor_states, r_anchor * directions, anchor_positions), shifted(states, beyond, positions),
    )  # fmt: skip


def token_span(cache: PromptCache, config: RealEraConfig) -> str:
    """'following' for causal encoders (CLIP), where only later tokens see the concept; 'all' otherwise."""
    if config.span != "auto":
        return config.span
    return "following" if "CLIP" in type(cache.text_encoder).__name__ else "all"


def preserve_complement(run: RunContext, spec: EraseSpec, config: RealEraConfig) -> torch.Tensor | None:
    """The projector onto the directions the preserve prompts' states (every template, every position)
    leave empty: singular values below τ·σ_max. None when τ = 0 or nothing is preserved."""
    if config.outside_preserve == 0 or not spec.preserve:
        return None
    states = preserve_states(run.cache, spec, config)
    states = states.reshape(-1, states.shape[-1]).to(run.solve_device, torch.float64)
    _, singular, directions = torch.linalg.svd(states, full_matrices=False)
    used = directions[singular >= config.outside_preserve * singular[0]]
    return torch.eye(states.shape[-1], dtype=torch.float64, device=states.device) - used.T @ used


def preserve_states(cache: PromptCache, spec: EraseSpec, config: RealEraConfig) -> torch.Tensor:
    """(n, L, d) states of the user's preserve concepts in the method's prompt templates."""
    return cache.states([t.format(p) for p in spec.preserve for t in config.prompt_templates])


def neighbourhoods(
    run: RunContext, spec: EraseSpec, config: RealEraConfig, rng: torch.Generator, projector: torch.Tensor | None = None
) -> Iterator[Neighbourhood]:
    """Every concept's prompts, each with its mined neighbours (Algorithm 1, steps 2–23), one at a time:
    the closed form needs only their sums, and M·L·d states per prompt would add up over 20 concepts."""
    for target, anchor in zip(spec.targets, spec.anchors, strict=True):
        for template in config.prompt_templates:
            yield mine(run, template.format(target), target, anchor_prompt(template, anchor), anchor, config, rng, projector)


def closed_form_map(run: RunContext, spec: EraseSpec, config: RealEraConfig, hoods: Iterable[Neighbourhood]) -> torch.Tensor:
    """Eq. 7 with E, E* (the prompts and their neighbours) and Pre (beyond-concept samples, user preserves)."""
    erase, preserve = run.moments(), run.moments()
    for n in hoods:
        erase.add(n.prompt[n.positions], n.anchor[n.anchor_positions])
        if len(n.associated):
            erase.add(n.associated[:, n.positions], n.associated_anchor[:, n.anchor_positions])
        if len(n.beyond):
            preserve.add(n.beyond[:, sorted(set(n.positions))])
    if spec.preserve and config.preserve_scale > 0:
        preserve.add(preserve_states(run.cache, spec, config), weight=config.preserve_scale / config.lam1)
    return text_space_map(erase, preserve if preserve.count else None, config.ridge, 1.0, config.lam1)


def align_noise(
    run: RunContext, spec: EraseSpec, config: RealEraConfig, names: list[str], projector: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """§4.3: a LoRA on the closed-form model's layers ``names``, aligning the concept's noise with the
    anchor's (eq. 8–9); its dense deltas and the loss of every step. On SDXL and FLUX the perturbed
    token states keep their prompt's pooled vector, and FLUX aligns velocities (its denoising interface)."""
    model, den = run.denoiser, denoising(run)
    rng = random.Random(config.seed)
    torch_rng = run.generator(config.seed + 1)
    anchors = list(dict.fromkeys(spec.anchors))
    anchor_conds = {a: den.conditioning([a or ""]) for a in anchors}
    uncond = den.conditioning([""])
    pooled = run.family.name != "sd"

    def cond(prompt: str, tokens: torch.Tensor | None = None) -> Any:
        """The conditioning of ``prompt``, or of token states ``tokens`` (n, L, d) mined from it."""
        if tokens is None:
            return den.conditioning([prompt])
        return PooledText(tokens, den.conditioning([prompt]).pooled.expand(len(tokens), -1)) if pooled else tokens

    # z_t from images of the anchor prompt (original model): target k's steps sample anchor k
    conds = [anchor_conds[a] for a in spec.anchors]
    sampler = None
    if pooled:

        def sampler(c: Any, stops: list[int], seeds: list[int], on_captured: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return den.sample(c, uncond, config.guidance, config.sample_steps, stops, seeds, on_captured)

    points = plan_xt(run, model, conds, uncond, config.guidance, config.sample_steps, config.epochs,
                     lambda _: rng.randrange(len(spec.targets)), rng, sampler=sampler)  # fmt: skip
    one_each = _one_each(config)
    with lora_adapter(model, names, config.rank, seed=config.seed) as adapter:

        def alignment_loss(step: int) -> torch.Tensor:
            k = points[step].prompt
            target, anchor = spec.targets[k], spec.anchors[k]
            template = rng.choice(config.prompt_templates)
            z_t, t = points[step].x_t, points[step].t
            with torch.no_grad(), adapter.disabled():
                eps_anchor = den.predict(model, z_t, t, cond(template.format(anchor) if anchor else "")).float()
            if step % 2 == 0:  # odd step of the paper (1-based): eq. 8 on the plain prompt
                return F.mse_loss(den.predict(model, z_t, t, cond(template.format(target))).float(), eps_anchor)
            # even step: eq. 9 with perturbations resampled now
            hood = mine(run, template.format(target), target, anchor_prompt(template, anchor), anchor, one_each, torch_rng,
                        projector)  # fmt: skip
            associated = cond(template.format(target), hood.associated.to(run.device, run.dtype))
            beyond = cond(template.format(target), hood.beyond.to(run.device, run.dtype))
            with torch.no_grad(), adapter.disabled():
                eps_beyond = den.predict(model, z_t, t, beyond).float()
            loss = config.gamma1 * F.mse_loss(den.predict(model, z_t, t, associated).float(), eps_anchor)
            return loss + config.gamma2 * F.mse_loss(den.predict(model, z_t, t, beyond).float(), eps_beyond)

        params = adapter.parameters()
        losses = fit(run, params, alignment_loss, config.epochs, torch.optim.AdamW(params, lr=config.lr), "RealEra alignment")
        return adapter.deltas(), losses


def _one_each(config: RealEraConfig) -> RealEraConfig:
    """The config with M = N = 1: one associated and one beyond-concept prompt per even step."""
    return RealEraConfig(**{**asdict(config), "m": 1, "n": 1})


def text_layers(run: RunContext) -> dict[str, nn.Linear]:
    """The Linears that read the token states: every ``attn2.to_k/to_v`` (SD, SDXL), FLUX's ``context_embedder``."""
    if run.family.name == "flux":
        return {FLUX_TOKEN_INPUT: flux_text_inputs(run.denoiser)[0]}
    return kv_projections(run.unet)


def pooled_weights(run: RunContext, spec: EraseSpec, config: RealEraConfig) -> dict[str, torch.Tensor]:
    """FLUX's pooled text embedder, edited as UCE edits it (each prompt's pooled vector onto its anchor prompt's,
    the preserve prompts' kept), in the method's templates: the pooled vector has no tokens to mine around."""
    moments = uce.pooled_moments(run, spec, uce.UCEConfig(templates=config.prompt_templates))
    pooled_map = text_space_map(*moments, config.ridge, 1.0, config.preserve_scale)
    return {
        f"{n}.weight": w for n, w in edited_weights({FLUX_POOLED_INPUT: flux_text_inputs(run.denoiser)[1]}, pooled_map).items()
    }


@register(
    "realera",
    "RealEra (Liu et al. 2024): neighbor-concept mining, beyond-concept regularisation, closed form + LoRA",
    RealEraConfig,
    families=("sd", "sdxl", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: RealEraConfig) -> Edit:
    """RealEra's Algorithm 1 for ``spec`` (above): neighbour mining, the closed form of eq. 7, then the
    prediction-noise alignment LoRA unless ``lora`` is off or ``epochs`` is 0. On SDXL the same on both
    encoders' states; on FLUX on ``context_embedder`` (and the pooled embedder by UCE's closed form)."""
    rng = run.generator(config.seed)
    projections = text_layers(run)
    if config.lora and config.epochs:  # the alignment would refuse it only after mining and drawing z_t
        check_rank(run.denoiser, list(projections), config.rank)
    projector = preserve_complement(run, spec, config)
    hoods = neighbourhoods(run, spec, config, rng, projector)
    text_map = closed_form_map(run, spec, config, hoods)
    edited = {f"{name}.weight": w for name, w in edited_weights(projections, text_map).items()}
    if run.family.name == "flux":
        edited.update(pooled_weights(run, spec, config))
    if not config.lora or config.epochs == 0:
        return Edit(edited, {"config": asdict(config)})
    with Edit(edited).applied(run.pipe, check_base=False):  # the original weights come back, also on Ctrl-C
        run.denoiser.requires_grad_(False)
        deltas, losses = align_noise(run, spec, config, list(projections), projector)
    new_values = {n: (w + deltas[n].to(w.device, w.dtype)) if n in deltas else w for n, w in edited.items()}
    return Edit(new_values, {"config": asdict(config), **loss_record(losses)})
