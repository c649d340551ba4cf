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
  epoch, classifies them and keeps the best epoch. Here ``validate="world"`` does the same with the
  world evaluator: accuracy on the erased concepts' and the preserve concepts' validation prompts
  (``VALIDATION_TEMPLATES``, not the protocols' prompts), and the epoch with the best harmonic mean
  H(1 − Acc_erased, Acc_preserve) is kept. Epoch 0 is the UCE edit itself.

Defaults: the official ``train_object.py`` (5 epochs, ρ = 1e-3, λ = 0.1, s_p = 0.1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval.metrics import harmonic_mean
from erasekit.methods import uce
from erasekit.methods.base import EraseSpec, config_field, register
from erasekit.models.layers import kv_weights
from erasekit.primitives.closed_form import TextMoments, text_space_map
from erasekit.primitives.prompt_cache import PromptCache

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


@dataclass
class RECEConfig:
    """Defaults: the official RECE object script; the starting UCE edit uses UCE's own defaults."""

    epochs: int = config_field(5, "adversarial epochs after the UCE edit (official 5)")
    reg_scale: float = config_field(1e-3, "ρ: pull of the adversarial embedding towards zero (official regular_scale 1e-3)")
    lam: float = config_field(0.1, "λ of each epoch's closed-form edit (official lamb 0.1)")
    erase_scale: float = config_field(1.0, "s_e of each epoch's edit (official 1)")
    preserve_scale: float = config_field(0.1, "s_p of each epoch's edit (official 0.1)")
    uce_templates: tuple[str, ...] = config_field(("{}",), "templates of the starting UCE edit (UCE's default: the bare concept)")
    validate: str = config_field("world", "'world' (evaluator picks the best epoch, as the official script) or 'none' (last)")
    validation_samples: int = config_field(8, "images per check of attack success and of each preserve concept")
    sample_steps: int = config_field(25, "sampler steps of the validation images")
    seed: int = config_field(0, "seed of the validation images")

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.reg_scale <= 0 or self.lam <= 0 or self.erase_scale <= 0 or self.preserve_scale < 0:
            raise ErasekitError("epochs must be ≥ 0; ρ (reg_scale), λ and s_e positive; s_p non-negative")
        if self.validate not in ("world", "none"):
            raise ErasekitError(f"validate must be 'world' or 'none', not {self.validate!r}")


def adversarial_states(
    concept: torch.Tensor, current: list[torch.Tensor], original: list[torch.Tensor], reg: float
) -> torch.Tensor:
    """c′ = c [(ρI + Σ WᵀW)⁻¹ Σ WᵀW₀]ᵀ for token states ``concept`` (L, d), in float64."""
    dim = concept.shape[-1]
    gram = reg * torch.eye(dim, dtype=torch.float64) + sum(w.double().T @ w.double() for w in current)
    cross = sum(w.double().T @ w0.double() for w, w0 in zip(current, original, strict=True))
    return concept.double() @ torch.linalg.solve(gram, cross).T


VALIDATION_TEMPLATES = ("{}", "an image of {}")


class WorldValidator:
    """Accuracy on the erased and the preserve concepts' validation prompts, read by the world evaluator."""

    def __init__(self, pipe: DiffusionPipeline, cache: PromptCache, spec: EraseSpec, config: RECEConfig) -> None:
        from erasekit.eval.evaluator import predict, present_label
        from erasekit.models.evaluators import load_world_evaluator

        self.pipe, self.cache, self.config, self.predict = pipe, cache, config, predict
        self.model = load_world_evaluator()
        self.labels: dict[str, tuple[str, str]] = {}  # concept -> (evaluator head, the label that means "present")
        for concept in (*spec.targets, *spec.preserve):
            label = present_label(concept)
            if label is None:
                raise ErasekitError(f"the world evaluator has no label {concept!r}; use validate=none for this concept")
            self.labels[concept] = label

    @torch.no_grad()
    def _labels(self, states: torch.Tensor, head: str) -> list[str]:
        n = self.config.validation_samples
        uncond = self.cache.states([""]).expand(n, -1, -1)
        images = self.pipe(
            prompt_embeds=states.float().expand(n, -1, -1),
            negative_prompt_embeds=uncond,
            num_inference_steps=self.config.sample_steps,
            generator=[torch.Generator().manual_seed(self.config.seed + i) for i in range(n)],
            output_type="np",
        ).images
        return self.predict(self.model, (np.clip(images, 0, 1) * 255).round().astype(np.uint8)).label(head)

    def score(self, targets: tuple[str, ...], preserve: tuple[str, ...]) -> float:
        """H(1 − Acc on the erased concepts, Acc on the preserve concepts), both from prompts of the
        validation templates (the official script classifies images of its validation prompts)."""

        def accuracy(concept: str) -> float:
            states = self.cache.states([t.format(concept) for t in VALIDATION_TEMPLATES])
            head, present = self.labels[concept]
            return float(np.mean([np.mean([lab == present for lab in self._labels(st, head)]) for st in states]))

        erased = float(np.mean([accuracy(c) for c in targets]))
        kept = [accuracy(p) for p in preserve]
        return harmonic_mean(1 - erased, float(np.mean(kept))) if kept else 1 - erased


@register("rece", "RECE (Gong et al. 2024): UCE, then erase the closed-form adversarial embedding each epoch", RECEConfig)
def erase(
    pipe: DiffusionPipeline, spec: EraseSpec, config: RECEConfig, progress: bool = True, cache: PromptCache | None = None
) -> Edit:
    cache = cache or PromptCache(pipe)
    originals = kv_weights(pipe.unet)
    names = list(originals)
    start = uce.erase(pipe, spec, uce.UCEConfig(templates=config.uce_templates), progress=False, cache=cache)
    current = {n: start.weights[n].double() for n in names}
    concepts = {c: cache.states([c])[0] for c in spec.targets}
    guides = {a: cache.states([a or " "])[0] for a in set(spec.anchors)}
    keep = TextMoments.zeros(cache.text_encoder.config.hidden_size).add(cache.states(["", *spec.preserve]))
    validator = WorldValidator(pipe, cache, spec, config) if config.validate == "world" and config.epochs else None
    history: list[tuple[float, dict[str, torch.Tensor]]] = []

    def next_attack() -> dict[str, torch.Tensor]:
        w = [current[n] for n in names]
        return {c: adversarial_states(s, w, [originals[n] for n in names], config.reg_scale) for c, s in concepts.items()}

    for epoch in tqdm(range(config.epochs + 1), desc="RECE epochs", disable=not progress):
        if validator is not None:
            with Edit(current).applied(pipe, check_base=False):
                history.append((validator.score(spec.targets, spec.preserve), dict(current)))
        if epoch == config.epochs:
            break
        attack = next_attack()
        erase_m = TextMoments.zeros(keep.source.shape[0])
        for target, anchor in zip(spec.targets, spec.anchors, strict=True):
            erase_m.add(attack[target], guides[anchor])
        text_map = text_space_map(erase_m, keep, config.lam, config.erase_scale, config.preserve_scale)
        current = {n: w @ text_map for n, w in current.items()}  # a UCE step on the current weights
    scores = [s for s, _ in history]
    # ties go to the later epoch: it has erased more adversarial embeddings at the same validation score
    best = max(range(len(scores)), key=lambda k: (scores[k], k)) if history else config.epochs
    chosen = history[best][1] if history else current
    card = {"config": asdict(config), "best_epoch": best, "validation_scores": [round(s, 4) for s in scores]}
    return Edit({n: w.to(originals[n].dtype) for n, w in chosen.items()}, card)
