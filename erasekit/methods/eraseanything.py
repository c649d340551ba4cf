"""EraseAnything: Enabling Concept Erasure in Rectified Flow Transformers (Gao et al., ICML 2025).

A rank-8 LoRA on the text stream's query and key (``attn.add_q_proj`` / ``attn.add_k_proj``) of every
double block of a FLUX transformer, trained bi-level: even steps minimise the upper loss, odd steps
the lower one (θ the LoRA-equipped model, no gradient through sg):

* upper: λ₁ ‖v_θ(x_σ, c) − sg[v_θ(x_σ, c*) − η (v_θ(x_σ, c) − v_θ(x_σ, c*))]‖² (ESD's negative guidance
  in velocity space, the anchor prompt c* as its null) + λ₂ Σ ‖A ⊙ M‖, the attention every token pays to
  the concept's tokens in the last double block, on the concept's images noised at σ;
* lower: λ₃ ‖v_θ(x_σ, p) − (ε − x₀)‖² (flow matching on the concept's images under their caption p) +
  λ₄ L_steer, the "reverse self-contrastive" loss: the attention column the concept's tokens receive
  (head 0, averaged over the concept's tokens) is pushed away from the same column of a synonym's
  prompt, relative to K irrelevant concepts' columns (InfoNCE with temperature τ, the positive's
  log-probability minimised).

Defaults are the official ``config/config.yaml`` (tomguluson92/EraseAnything @ 67d8c0b): rank 8, AdamW
lr 1e-3, weight decay 1e-5, 200 steps, η = 1, x_σ sampled at guidance 3 over 28 steps, λ = (1, 1e-3,
0.1, 0.1), τ = 0.07, captions' words shuffled with probability 0.9. Differences, all for lack of what
the official code reaches out for: the concept's images are drawn by the original model (the official
script reads a folder of them); the irrelevant concepts are the preserve set's first K (the official
script asks GPT-4o for three); a synonym replaces the concept in half the captions only where
``synonyms`` are given (the official script draws them from WordNet), else the steer anchor is the
concept's own caption; the steer anchor's and the irrelevant concepts' columns come from the original
model on the same x_σ (the official script samples them with the trained model); ESD's x_σ is a stopped
trajectory of the original model, as in ESD on FLUX (the official loop samples to the end before it
predicts at σ). ``teacher=original`` takes ESD's target from the original model (the official: the
trained model itself). On erasekit-tiny-flux no setting erases (docs/methods/eraseanything.md).
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.primitives.attention import FluxAttentionProbe, probing
from erasekit.primitives.denoising import denoising
from erasekit.primitives.image_batches import draw_images, noised_batch
from erasekit.primitives.lora_trainer import check_rank, lora_adapter
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, fit, loss_record
from erasekit.settings import (
    GUIDANCE,
    ITERATIONS,
    LEARNING_RATE,
    LORA_RANK,
    SAMPLER_STEPS,
    SEEDS,
    WEIGHT,
    check_settings,
    config_field,
)


@dataclass
class EraseAnythingConfig:
    """Defaults: the official config/config.yaml (symbols of the paper in brackets)."""

    rank: int = config_field(8, "LoRA rank on every double block's add_q_proj / add_k_proj (official 8)", **LORA_RANK)
    lr: float = config_field(1e-3, "AdamW learning rate (official 1e-3)", **LEARNING_RATE)
    weight_decay: float = config_field(1e-5, "AdamW weight decay (official 1e-5)", ge=0.0, le=100.0)
    steps: int = config_field(200, "optimiser steps, upper and lower in turn (official max_train_steps 200)", **ITERATIONS)
    eta: float = config_field(1.0, "η: ESD's negative guidance (official negative_guidance 1)", gt=0.0, le=100.0)
    start_guidance: float = config_field(3.0, "guidance of the original model's sampling of x_σ (official 3)", **GUIDANCE)
    sample_steps: int = config_field(28, "sampler steps of that sampling and of the concept's images (official 28)",
                                     **SAMPLER_STEPS)  # fmt: skip
    esd_weight: float = config_field(1.0, "λ₁: ESD loss (official lamb1 1)", **WEIGHT)
    attention_weight: float = config_field(1e-3, "λ₂: attention loss (official lamb2 1e-3)", **WEIGHT)
    flow_weight: float = config_field(0.1, "λ₃: flow matching on the concept's images (official lamb3 0.1)", **WEIGHT)
    steer_weight: float = config_field(0.1, "λ₄: reverse self-contrastive loss (official lamb4 0.1)", **WEIGHT)
    teacher: Literal["current", "original"] = config_field(
        "current", "the model that gives ESD's target: 'current' (official: the LoRA-equipped model, no gradient) or 'original'"
    )
    temperature: float = config_field(0.07, "τ: InfoNCE temperature (official 0.07)", gt=0.0, le=100.0)
    irrelevant: int = config_field(
        3, "K: irrelevant concepts, the preserve set's first K (official: 3 from GPT-4o)", ge=0, le=100
    )
    synonyms: tuple[str, ...] = config_field((), "synonyms of the concept for half the captions (official: WordNet's)")
    concept_images: int = config_field(16, "images of the concept the original model draws (official: a folder)", ge=1,
                                       le=10_000)  # fmt: skip
    templates: tuple[str, ...] = config_field(
        ("a photo of {}", "a picture of {}", "an image of {}"), "captions of those images, {} where the concept goes"
    )
    shuffle: float = config_field(0.9, "chance a caption's words are shuffled (official 0.9)", ge=0.0, le=1.0)
    seed: int = config_field(0, "seed of the images, the plan, the captions and the noise", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ErasekitError("each template needs exactly one {} for the concept")
        if self.esd_weight + self.attention_weight == 0:
            raise ErasekitError("EraseAnything's upper loss needs λ₁ or λ₂ above 0: with both 0 nothing is erased")


def lora_layers(transformer: torch.nn.Module) -> list[str]:
    """The text stream's query and key of every double block: the official target_modules."""
    blocks = getattr(transformer, "transformer_blocks", None)
    if not blocks or not hasattr(blocks[0].attn, "add_q_proj"):
        raise ErasekitError(f"{type(transformer).__name__} has no double blocks with a text stream: not a FLUX transformer")
    return [f"transformer_blocks.{i}.attn.{p}" for i in range(len(blocks)) for p in ("add_q_proj", "add_k_proj")]


def caption(template: str, concept: str, rng: random.Random, shuffle: float) -> str:
    """``template`` around ``concept``, its other words shuffled with probability ``shuffle`` (the concept stays whole)."""
    words = template.replace("{}", "\0").split()
    if rng.random() < shuffle:
        rng.shuffle(words)
    return " ".join(words).replace("\0", concept)


@register("eraseanything", "EraseAnything (Gao et al. 2025): bi-level LoRA on FLUX's text query/key, ESD + attention + "
          "contrastive losses", EraseAnythingConfig, families=("flux",))  # fmt: skip
def erase(run: RunContext, spec: EraseSpec, config: EraseAnythingConfig) -> Edit:
    """EraseAnything's bi-level LoRA training for ``spec`` (above), one concept after another on the same adapter."""
    model, den, cache = run.denoiser, denoising(run), run.cache
    layers = lora_layers(model)
    check_rank(model, layers, config.rank)
    rng = random.Random(config.seed)
    bilevel = config.flow_weight + config.steer_weight > 0  # else the upper loss every step (official)
    texts, points = den.plan(spec, config.start_guidance, config.sample_steps, (config.steps + 1) // 2 if bilevel else config.steps,
                             rng)  # fmt: skip
    prompts = [t.format(c) for c in spec.targets for t in config.templates]
    images = draw_images(run, prompts, config.concept_images, config.start_guidance, config.sample_steps, config.seed, den)
    irrelevant = list(spec.preserve[: config.irrelevant])
    generator = run.generator(config.seed)
    probe = FluxAttentionProbe(all_queries=True)

    def attention_to(prompt: str, word: str, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The velocity at (x_t, t) under ``prompt``, and the last double block's attention from every token to
        ``word``'s tokens in it (B, heads, L + N, L), zero elsewhere."""
        probe.reset()
        probe.token_mask = torch.zeros(1, cache.max_length, dtype=torch.bool, device=run.device)
        probe.token_mask[0, list(cache.word_span(prompt, word))] = True
        velocity = den.predict(model, x_t, t, den.conditioning([prompt]))
        attention = probe.maps[0]
        probe.reset()
        probe.token_mask = None
        return velocity, attention

    def steer_feature(attention: torch.Tensor) -> torch.Tensor:
        """Head 0's attention to the word, averaged over its tokens, from every token: (L + N,)."""
        return attention[0, 0].sum(-1) / attention[0, 0].ne(0).any(0).sum().clamp(min=1)

    def training_caption(index: int) -> tuple[str, str]:
        """The caption of image ``index`` (words shuffled, the concept sometimes a synonym) and the word in it."""
        target = spec.targets[index // len(config.templates)]
        word = rng.choice(config.synonyms) if config.synonyms and rng.random() < 0.5 else target
        return caption(config.templates[index % len(config.templates)], word, rng, config.shuffle), word

    with fine_tuning(run, []), lora_adapter(model, layers, config.rank, seed=config.seed) as adapter, \
            probing(model, "flux", probe, only=[model.transformer_blocks[-1].attn]):  # fmt: skip

        def upper(k: int) -> torch.Tensor:
            point = points[k]
            concept, anchor = texts[spec.targets[point.prompt]], texts[spec.anchors[point.prompt]]
            with torch.no_grad(), adapter.disabled() if config.teacher == "original" else nullcontext():
                v_anchor, v_concept = den.predict(model, torch.cat([point.x_t] * 2), point.t, den.cat([anchor, concept])).chunk(2)
            target = v_anchor.float() - config.eta * (v_concept.float() - v_anchor.float())
            loss = config.esd_weight * F.mse_loss(den.predict(model, point.x_t, point.t, concept).float(), target)
            if config.attention_weight > 0:
                batch = noised_batch(run, images, 1, rng, generator, den)
                _, attention = attention_to(*training_caption(batch.caption[0]), batch.x_t, batch.t)
                loss = loss + config.attention_weight * torch.linalg.vector_norm(attention)
            return loss

        def lower() -> torch.Tensor:
            batch = noised_batch(run, images, 1, rng, generator, den)
            index = batch.caption[0]
            velocity, attention = attention_to(*training_caption(index), batch.x_t, batch.t)
            loss = config.flow_weight * F.mse_loss(velocity.float(), batch.target.float())
            if config.steer_weight > 0 and irrelevant:
                word = rng.choice(config.synonyms) if config.synonyms else spec.targets[index // len(config.templates)]
                anchor_text = config.templates[index % len(config.templates)].format(word)
                with adapter.disabled(), torch.no_grad():  # the anchor and the irrelevant columns: the original model's
                    anchor = steer_feature(attention_to(anchor_text, word, batch.x_t, batch.t)[1])
                    others = [
                        steer_feature(attention_to(config.templates[0].format(o), o, batch.x_t, batch.t)[1]) for o in irrelevant
                    ]
                candidates = torch.stack([steer_feature(attention), *others]).float()
                logits = F.cosine_similarity(anchor.float()[None], candidates, dim=-1) / config.temperature
                loss = loss + config.steer_weight * (logits[0] - torch.logsumexp(logits, dim=0))
            return loss

        def loss_at(step: int) -> torch.Tensor:
            if not bilevel:
                return upper(step)
            return lower() if step % 2 else upper(step // 2)

        params = adapter.parameters()
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        losses = fit(run, params, loss_at, config.steps, optimizer, f"EraseAnything (LoRA r{config.rank})")
        new_values = adapter.merged(run.dtype)
    return Edit(new_values, {"config": asdict(config), **loss_record(losses)})
