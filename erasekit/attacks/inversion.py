"""Concept inversion (CCE, Pham et al., ICLR 2024): a new word learned on the erased model.

Textual inversion (Gal et al.) against the erased weights: one token embedding v* is put where the
concept's words stand in the attacked prompts and fitted, with the UNet and text encoder frozen,
to images of the concept that the original model drew,

    min_v*  E_{x₀, t, ε} ‖ ε − ε_θ*(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, prompt[concept → v*]) ‖².

If the erased model can still draw the concept from some input, v* finds it; the attacked prompts
are then drawn with v* in the concept's place. One v* is learned per concept and serves all its
prompts. Defaults are textual inversion's (lr 5e-3, one vector, initialised at a neutral word);
CCE's own step count per concept is not restated here: ``steps`` is the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.attacks.base import AttackContext, AttackTarget, Found, register
from erasekit.errors import ErasekitError
from erasekit.primitives.soft_prompt import SlottedPrompt
from erasekit.primitives.training import frozen
from erasekit.settings import LEARNING_RATE, SEEDS, check_settings, config_field


@dataclass
class InversionConfig:
    """Defaults: textual inversion's recipe, which CCE applies to erased models."""

    steps: int = config_field(1000, "optimisation steps per concept (the attack budget)", ge=1, le=100_000)
    lr: float = config_field(5e-3, "AdamW learning rate on v* (textual inversion's base rate 5e-3)", **LEARNING_RATE)
    batch_size: int = config_field(4, "images per step", ge=1, le=256)
    # drawn one by one by the original model before the first step, and held as latents
    images: int = config_field(
        16, "images of the concept the original model draws, spread over the attacked prompts", ge=1, le=10_000
    )
    init_word: str = config_field("object", "the word v* starts from (a neutral word, not the concept)")
    seed: int = config_field(0, "seed of the images, timesteps and noise", **SEEDS)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.images < 1:  # said as the budget, before the ranges
            raise ErasekitError("inversion needs at least one step, one image and a batch of one (the attack budget)")
        check_settings(self)
        # the tokenizer decides whether it is one token (at the start of the search); empty or spaced text never is
        if not self.init_word.strip() or len(self.init_word.split()) != 1:
            raise ErasekitError(
                f"inversion's init_word {self.init_word!r} must be one word (v* starts from its embedding), such as 'object'"
            )


def _slotted(context: AttackContext, target: AttackTarget) -> SlottedPrompt:
    return context.slotted(target.prompt, 1, replace=target.word or None)


@register("inversion", "concept inversion (CCE): a word embedding learned on the erased model from the concept's images",
          InversionConfig)  # fmt: skip
def search(context: AttackContext, targets: list[AttackTarget], config: InversionConfig) -> list[Found]:
    """Concept inversion on each target: v* learned once per concept (the objective above, kept in
    ``context.memo``), put in place of the concept's words, or before the prompt when it only implies the concept."""
    found = []
    for target in targets:
        if target.concept not in context.memo:
            context.memo[target.concept] = _learn(context, target.concept, config)
        vector, losses = context.memo[target.concept]
        prompt = _slotted(context, target)
        text = target.prompt.replace(target.word, "<v*>") if target.word else f"<v*> {target.prompt}"
        found.append(Found(prompt.ids, text, config.steps, losses, vector, prompt.slots, prompt.length))
    return found


def _learn(context: AttackContext, concept: str, config: InversionConfig) -> tuple[torch.Tensor, list[float]]:
    """v* for ``concept``, fitted on the original model's images of every attacked prompt of it."""
    run = context.run
    mine = [t for t in context.targets if t.concept == concept] or [t for t in context.targets]
    prompts = [_slotted(context, t) for t in mine]
    # the original model's images of the concept, round-robin over the attacked prompts
    init = context.tokenizer(config.init_word, add_special_tokens=False).input_ids  # refused before the images are drawn
    if len(init) != 1:
        raise ErasekitError(f"init_word {config.init_word!r} is {len(init)} tokens for this tokenizer; give a one-token word")
    seeds = [config.seed * 1_000_003 + 7919 * k for k in range(config.images)]
    drawn = run.bar(list(enumerate(seeds)), f"drawing {concept!r} with the original model")  # minutes for many images
    x0 = torch.cat([context.concept_latents(mine[k % len(mine)].prompt, [seed]) for k, seed in drawn])
    vector = context.path.table[init].float().clone().requires_grad_(True)
    optimiser = torch.optim.AdamW([vector], lr=config.lr)
    generator = run.generator(config.seed)
    # what an encoder the slot does not reach reads (FLUX.1's CLIP): each prompt without the concept's words
    typed = [" ".join(t.prompt.replace(t.word, " ").split()) if t.word else t.prompt for t in mine]
    losses = []
    with frozen(context.denoiser, *context.path.text_encoders):
        for _ in run.bar(range(config.steps), f"inverting {concept!r}"):
            picks = torch.randint(len(x0), (config.batch_size,), generator=generator, device="cpu").tolist()
            k = torch.randint(context.num_train_timesteps, (config.batch_size,), generator=generator, device="cpu")
            t = context.timestep(k.to(run.device))
            noise = run.randn((config.batch_size, *x0.shape[1:]), generator)
            x_t, wanted = context.denoise.noised(x0[picks], noise, t), context.denoise.noise_target(x0[picks], noise, t)
            # image k was drawn for prompt k mod n: each image is fitted under its own prompt
            cond = context.denoise.cat([context.conditioning(prompts[j % len(prompts)], vector, typed[j % len(prompts)])
                                        for j in picks])  # fmt: skip
            with run.autocast():
                loss = F.mse_loss(context.predict(x_t, t, cond).float(), wanted.float())
            optimiser.zero_grad()
            (vector.grad,) = torch.autograd.grad(loss, [vector])
            optimiser.step()
            losses.append(float(loss.detach()))
    return vector.detach(), _every(losses, 50)


def _every(losses: list[float], count: int) -> list[float]:
    """Mean loss over ``count`` equal stretches of the run: the curve, short enough for results.json."""
    size = max(len(losses) // count, 1)
    return [sum(losses[i : i + size]) / len(losses[i : i + size]) for i in range(0, len(losses), size)]
