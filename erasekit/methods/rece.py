"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024).

RECE starts from a UCE edit and then, for a few epochs, asks in closed form which text embedding
would still make the edited model produce the concept, and erases that one too:

* **Adversarial embedding** (the official ``close_form_emb_regzero``): for the concept's token
  states c, the embedding c′ whose keys and values under the edited weights W best match the
  original's on c, regularised towards zero:
  c′ = argmin Σ_l ‖W_l c′ − W₀_l c‖² + ρ‖c′‖²  ⇒  c′ = c [(ρI + Σ W_lᵀW_l)⁻¹ Σ W_lᵀW₀_l]ᵀ,
  over every cross-attention ``to_k`` and ``to_v``.
* **Erasing it**: a UCE step on the current weights maps c′ (every token) onto the guide's states,
  keeping the empty prompt and the preserve concepts (official ``edit_model_adversarial``:
  λ = 0.1, s_e = 1, s_p = 0.1).
* **Choosing the epoch**: the official script generates images of validation prompts after every
  epoch, classifies them and keeps the best epoch. Here a judge does the same (``validate``: the
  world evaluator on the embedded model, CLIP on any other, or the diffusion classifier): how often
  the erased and the preserve concepts are present on their validation prompts
  (``VALIDATION_TEMPLATES``, not the protocols' prompts), and the epoch with the best harmonic mean
  H(1 − Acc_erased, Acc_preserve) is kept. Epoch 0 is the UCE edit itself.

Defaults: the official ``train_object.py`` (5 epochs, ρ = 1e-3, λ = 0.1, s_p = 0.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.judges import harmonic_mean
from erasekit.methods import uce
from erasekit.methods.base import register
from erasekit.models.layers import FLUX_POOLED_INPUT, FLUX_TOKEN_INPUT, flux_text_inputs, kv_weights
from erasekit.primitives.closed_form import TextMoments, float64_on, text_space_map
from erasekit.primitives.denoising import denoising
from erasekit.primitives.run import RunContext
from erasekit.settings import GUIDANCE, RIDGE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field

if TYPE_CHECKING:
    from erasekit.judges import Judge


@dataclass
class RECEConfig:
    """Defaults: the official RECE object script; the starting UCE edit is train_erase.py's (last-token span, s_p 0.1)."""

    epochs: int = config_field(5, "adversarial epochs after the UCE edit (official 5)", ge=0, le=1000)
    reg_scale: float = config_field(
        1e-3, "ρ: pull of the adversarial embedding towards zero (official regular_scale 1e-3)", **RIDGE
    )
    lam: float = config_field(0.1, "λ of each epoch's closed-form edit (official lamb 0.1)", **RIDGE)
    erase_scale: float = config_field(1.0, "s_e of each epoch's edit (official 1)", gt=0.0, le=1e6)
    preserve_scale: float = config_field(0.1, "s_p of each epoch's edit (official 0.1)", **WEIGHT)
    uce_templates: tuple[str, ...] = config_field(("{}",), "templates of the starting UCE edit (UCE's default: the bare concept)")
    validate: Literal["auto", "world", "clip", "diffusion", "none"] = config_field(
        "auto",
        "judge that picks the best epoch, as the official script's classifier does: 'world', 'clip', 'diffusion', "
        "'auto' (world on the embedded model, clip on any other) or 'none' (keep the last epoch)",
    )
    # drawn in one pipeline call: the batch size of the check
    validation_samples: int = config_field(8, "images per check of attack success and of each preserve concept", ge=1, le=256)
    sample_steps: int = config_field(25, "sampler steps of the validation images", **SAMPLER_STEPS)
    guidance: float = config_field(7.5, "guidance scale of the validation images (the pipeline's default)", **GUIDANCE)
    seed: int = config_field(0, "seed of the validation images", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.uce_templates or any("{}" not in t for t in self.uce_templates):  # else the UCE step refuses them later
            raise ErasekitError("each of uce_templates must contain {} where the concept goes")


def adversarial_states(
    concept: torch.Tensor, current: list[torch.Tensor], original: list[torch.Tensor], reg: float
) -> torch.Tensor:
    """c′ = c [(ρI + Σ WᵀW)⁻¹ Σ WᵀW₀]ᵀ for token states ``concept`` (L, d), in float64 on its device."""
    dim, device = concept.shape[-1], concept.device

    def f64(x: torch.Tensor) -> torch.Tensor:
        return float64_on(x, device)

    gram = reg * torch.eye(dim, dtype=torch.float64, device=device) + sum(f64(w).T @ f64(w) for w in current)
    cross = sum(f64(w).T @ f64(w0) for w, w0 in zip(current, original, strict=True))
    return f64(concept) @ torch.linalg.solve(gram, cross).T


VALIDATION_TEMPLATES = ("{}", "an image of {}")


class Validator:
    """How often the erased and the preserve concepts are present on their validation prompts, by a judge."""

    def __init__(self, run: RunContext, spec: EraseSpec, config: RECEConfig, judge: Judge) -> None:
        self.run, self.config, self.judge = run, config, judge
        self.denoise = denoising(run)
        self.uncond = self.denoise.conditioning([""])
        self.concepts = (*spec.targets, *spec.preserve)  # each is judged against the others
        if judge.name == "world":  # refuse a concept the evaluator cannot see before any epoch runs
            from erasekit.world.evaluator import present_label

            unknown = [c for c in self.concepts if present_label(c) is None]
            if unknown:
                raise ErasekitError(f"the world evaluator has no label {unknown[0]!r}; use validate=none for this concept")

    @torch.no_grad()
    def _images(self, cond: object) -> np.ndarray:
        seeds = list(range(self.config.seed, self.config.seed + self.config.validation_samples))
        return self.denoise.images(cond, self.uncond, seeds, self.config.sample_steps, self.config.guidance)

    def score(self, targets: tuple[str, ...], preserve: tuple[str, ...]) -> float:
        """H(1 − Acc on the erased concepts, Acc on the preserve concepts), both from prompts of the
        validation templates (the official script classifies images of its validation prompts)."""

        def accuracy(concept: str) -> float:
            conds = self.denoise.conditioning([t.format(concept) for t in VALIDATION_TEMPLATES])
            others = tuple(c for c in self.concepts if c != concept)
            return float(np.mean([self.judge.present(self._images(conds[k : k + 1]), concept, others).mean()
                                  for k in range(len(VALIDATION_TEMPLATES))]))  # fmt: skip

        erased = float(np.mean([accuracy(c) for c in targets]))
        kept = [accuracy(p) for p in preserve]
        return harmonic_mean(1 - erased, float(np.mean(kept))) if kept else 1 - erased


def make_validator(run: RunContext, spec: EraseSpec, config: RECEConfig) -> Validator | None:
    """The validator ``config.validate`` names, judging with the model's labels (None: keep the last epoch)."""
    if config.validate == "none" or not config.epochs:
        return None
    from erasekit.judges import default_judge_name, make_judge

    name = config.validate if config.validate != "auto" else default_judge_name(run.pipe)
    heads = None if name == "world" else {"concept": (*spec.targets, *spec.preserve)}  # presence is all it asks
    return Validator(run, spec, config, make_judge(name, run.pipe, heads))


@dataclass
class TextSpace:
    """One space of text inputs RECE works in: the weights that read it (float64), the concept's and each
    guide's inputs there, and the preserve moments. SD's and SDXL's token states, read by every
    ``attn2.to_k/to_v``; on FLUX also the pooled vector, read by the pooled text embedder."""

    dim: int
    originals: dict[str, torch.Tensor]
    concepts: dict[str, torch.Tensor]
    guides: dict[str, torch.Tensor]
    keep: TextMoments  # of the empty prompt and the preserve concepts

    def attack(self, current: dict[str, torch.Tensor], reg: float) -> dict[str, torch.Tensor]:
        """Each concept's closed-form adversarial inputs under the ``current`` weights."""
        names = list(self.originals)
        w, w0 = [current[n] for n in names], [self.originals[n] for n in names]
        return {c: adversarial_states(x, w, w0, reg) for c, x in self.concepts.items()}


def text_spaces(run: RunContext, spec: EraseSpec) -> list[TextSpace]:
    """The spaces of ``run``'s family: token states (SD's and SDXL's cross-attention keys and values, FLUX's
    ``context_embedder``), and on FLUX the pooled vector (its pooled text embedder)."""

    def space(weights: dict[str, torch.Tensor], encode: Callable[[list[str]], torch.Tensor], dim: int) -> TextSpace:
        to = run.solve_device
        return TextSpace(
            dim,
            {n: float64_on(w, to) for n, w in weights.items()},
            {c: encode([c]).reshape(-1, dim).to(to) for c in spec.targets},
            {a: encode([a or " "]).reshape(-1, dim).to(to) for a in set(spec.anchors)},
            run.moments(dim).add(encode(["", *spec.preserve]).reshape(-1, dim)),
        )

    if run.family.name != "flux":
        return [space(kv_weights(run.unet), run.cache.states, run.cache.width)]
    tokens_in, pooled_in = flux_text_inputs(run.denoiser)
    return [
        space({f"{FLUX_TOKEN_INPUT}.weight": tokens_in.weight.detach()}, run.cache.states, run.cache.width),
        space({f"{FLUX_POOLED_INPUT}.weight": pooled_in.weight.detach()}, run.pooled, pooled_in.in_features),
    ]


@register("rece", "RECE (Gong et al. 2024): UCE, then erase the closed-form adversarial embedding each epoch", RECEConfig,
          families=("sd", "sdxl", "flux"))  # fmt: skip
def erase(run: RunContext, spec: EraseSpec, config: RECEConfig) -> Edit:
    """RECE on ``spec`` (above): a UCE edit, then each epoch a UCE step erasing the closed-form adversarial
    embedding; the epoch the validator scores best is kept (without one, the last). On FLUX the same in
    each of its two text spaces (token states, pooled vector)."""
    # RECE starts from a checkpoint of UCE's older train_erase.py (its README's `--target_ckpt
    # ...method_replace...pt`), so its start keeps that script's span and s_p, not UCE's new defaults.
    start = uce.erase(run, spec, uce.UCEConfig(templates=config.uce_templates, token_span="last", preserve_scale=0.1))
    spaces = text_spaces(run, spec)  # after UCE's batched encoding, whose states the prompt cache then keeps
    current = {n: float64_on(start.weights[n], run.solve_device) for space in spaces for n in space.originals}
    validator = make_validator(run, spec, config)
    history: list[tuple[float, dict[str, torch.Tensor]]] = []
    for epoch in run.bar(range(config.epochs + 1), "RECE epochs"):
        if validator is not None:
            with Edit(current).applied(run.pipe, check_base=False):
                history.append((validator.score(spec.targets, spec.preserve), dict(current)))
        if epoch == config.epochs:
            break
        for space in spaces:
            attack = space.attack(current, config.reg_scale)
            erase_m = run.moments(space.dim)
            for target, anchor in zip(spec.targets, spec.anchors, strict=True):
                erase_m.add(attack[target], space.guides[anchor])
            text_map = text_space_map(erase_m, space.keep, config.lam, config.erase_scale, config.preserve_scale)
            current.update({n: current[n] @ text_map for n in space.originals})  # a UCE step on the current weights
    scores = [s for s, _ in history]
    # ties go to the later epoch: it has erased more adversarial embeddings at the same validation score
    best = max(range(len(scores)), key=lambda k: (scores[k], k)) if history else config.epochs
    chosen = history[best][1] if history else current
    card = {"config": asdict(config), "best_epoch": best, "validation_scores": [round(s, 4) for s in scores],
            "validator": validator.judge.settings() if validator else None}  # fmt: skip
    params = dict(run.denoiser.named_parameters())
    return Edit({n: w.to(params[n].device, params[n].dtype) for n, w in chosen.items()}, card)
