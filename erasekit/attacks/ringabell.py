"""Ring-A-Bell (Tsai et al., ICLR 2024): a model-agnostic search in the text encoder's space.

The concept's direction is the mean difference of the text encoder's token states between prompts
with and without it,

    ĉ = (1/N) Σ_i [ E(p_i with the concept) − E(p_i without) ],

the attacked prompt's states are pushed along it, P̃ = E(prompt) + η ĉ, and a genetic search over
K real tokens finds the prompt whose states come nearest to P̃ (squared L2 over every position).
Only the original text encoder is used (the attacker's CLIP): no UNet, no gradient, so it runs
against any erasure, and the prompt it finds is plain text; an erasure that changed the text
encoder (AdvUnlearn) reads that text with its own. Paper defaults for nudity: K = 16,
η = 3, population 200, 3000 generations, mutation rate 0.25, crossover rate 0.5. Each generation
keeps the better half; children cross two of its members at a random cut (with the crossover rate)
and have one token replaced at random (with the mutation rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erasekit.attacks.base import AttackContext, AttackTarget, Found, decoded, register
from erasekit.errors import ErasekitError
from erasekit.primitives.soft_prompt import random_tokens, word_tokens
from erasekit.settings import SEEDS, check_settings, config_field

PAIR_TEMPLATES = ("{}", "a photo of {}", "an image of {}", "a picture of {}", "a drawing of {}", "a close-up of {}")


@dataclass
class RingABellConfig:
    """Defaults: the paper's nudity setting."""

    tokens: int = config_field(16, "K: tokens of the prompt searched for (paper 16 for nudity)", ge=1, le=75)
    eta: float = config_field(
        3.0, "η: strength of the concept direction added to the prompt (paper 3 for nudity)", gt=0.0, le=100.0
    )
    # population × generations prompts are encoded: the budget
    population: int = config_field(200, "prompts per generation (paper 200)", ge=2, le=10_000)
    generations: int = config_field(3000, "generations of the genetic search (paper 3000; the attack budget)", ge=1, le=100_000)
    mutation: float = config_field(0.25, "chance a child has one token replaced at random (paper 0.25)", ge=0.0, le=1.0)
    crossover: float = config_field(0.5, "chance a child crosses two parents rather than copying one (paper 0.5)", ge=0.0, le=1.0)
    seed: int = config_field(0, "seed of the search", **SEEDS)

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.population < 2 or self.generations < 1:  # said as the budget, before the ranges
            raise ErasekitError(
                "ring-a-bell needs at least one token, a population of two and one generation (the attack budget)"
            )
        check_settings(self)
        # a child is a parent's copy unless it crosses two parents (which needs two tokens) or mutates
        if self.mutation == 0 and (self.crossover == 0 or self.tokens == 1):
            raise ErasekitError("ring-a-bell with mutation 0 and no crossover (or one token) never makes a new prompt")


@torch.no_grad()
def concept_direction(context: AttackContext, words: str) -> torch.Tensor:
    """ĉ: the mean difference of token states between template prompts with ``words`` and without."""
    states = context.original_token_states([t.format(w).strip() for t in PAIR_TEMPLATES for w in (words, "")])
    return (states[0::2] - states[1::2]).mean(0)


@register("ring-a-bell", "Ring-A-Bell: a genetic search for real tokens near the prompt pushed along the concept's direction",
          RingABellConfig, gradients=False)  # fmt: skip
def search(context: AttackContext, targets: list[AttackTarget], config: RingABellConfig) -> list[Found]:
    """Ring-A-Bell on each target in turn: the genetic search for the K real tokens nearest to E(prompt) + η ĉ (above)."""
    return [_attack(context, target, config) for target in targets]


@torch.no_grad()
def _attack(context: AttackContext, target: AttackTarget, config: RingABellConfig) -> Found:
    run, device = context.run, context.run.device
    candidates = word_tokens(context.tokenizer, device)
    generator = run.generator(config.seed * 1_000_003 + target.seed)
    wanted = context.original_token_states([target.prompt])[0] + config.eta * concept_direction(
        context, target.word or target.concept
    )
    layout = context.slotted("", config.tokens)  # [BOS] K tokens [EOS] padding

    def distance(population: torch.Tensor) -> torch.Tensor:
        ids = layout.ids.repeat(len(population), 1)
        ids[:, list(layout.slots)] = population
        return ((context.original_tokens(ids, layout.length) - wanted) ** 2).sum((1, 2))

    def draw(high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(high, shape, generator=generator, device="cpu").to(device)

    population = random_tokens(candidates, config.population * config.tokens, generator).view(config.population, -1)
    scores, losses = distance(population), []
    for _ in run.bar(range(config.generations), f"ring-a-bell {target.prompt[:30]!r}"):
        better = scores.argsort()[: max(config.population // 2, 1)]
        keep, kept_scores = population[better], scores[better]
        children = len(population) - len(keep)
        first, second = keep[draw(len(keep), (children,))], keep[draw(len(keep), (children,))]
        cut = 1 + draw(config.tokens, (children, 1))
        crossed = torch.where(torch.arange(config.tokens, device=device) < cut, first, second)
        cross = (torch.rand(children, 1, generator=generator, device="cpu") < config.crossover).to(device)
        child = torch.where(cross, crossed, first)
        mutate = (torch.rand(children, generator=generator, device="cpu") < config.mutation).to(device)
        where = draw(config.tokens, (children,))
        fresh = random_tokens(candidates, children, generator)
        child[mutate, where[mutate]] = fresh[mutate]
        population = torch.cat([keep, child])
        scores = torch.cat([kept_scores, distance(child)])
        losses.append(float(scores.min()))
    ids = layout.with_tokens(population[scores.argmin()].tolist())
    return Found(ids, decoded(context.tokenizer, ids), config.generations, losses[:: max(len(losses) // 50, 1)],
                 length=layout.length)  # fmt: skip
