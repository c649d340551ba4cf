"""What an attack works on, what it returns, and the one registry of attacks.

An attack gets an :class:`AttackContext` (the erased pipeline, the original model's noise
prediction, the prompt cache, a way to ask whether an image shows the concept) and one
:class:`AttackTarget` (a prompt the erased model should no longer draw the concept for), and
returns the adversarial prompt it :class:`Found`: token ids, and for a continuous attack (concept
inversion) the learned vectors in its slots. The robustness protocol (``erasekit.eval.attack_run``)
draws and judges the images; an attack only searches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING

import numpy as np
import torch

from erasekit.errors import ErasekitError
from erasekit.primitives.diffusion import FrozenCopy, partial_samples, pipeline_images
from erasekit.primitives.prompt_cache import PromptCache
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import SlottedPrompt, encode
from erasekit.settings import name_settings

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


@dataclass(frozen=True)
class AttackTarget:
    """One attacked prompt: it asks for ``concept`` (the judge's name for it) through the words ``word``
    ("" when it only implies it), and success is read on the image drawn with ``seed``."""

    prompt: str
    concept: str
    word: str
    seed: int


@dataclass
class Found:
    """An adversarial prompt: token ids (1, L) and, for a continuous attack, the vectors in ``slots``."""

    ids: torch.Tensor
    text: str
    steps: int  # optimisation steps (or generations) spent
    losses: list[float] = field(default_factory=list)  # one per check, for the record
    vectors: torch.Tensor | None = None
    slots: tuple[int, ...] = ()
    length: int = 0  # real tokens of ids, special ones included

    @property
    def prompt(self) -> SlottedPrompt:
        """The token layout of this prompt: its ids, the ``slots`` that hold ``vectors`` and its real length."""
        return SlottedPrompt(self.ids, self.slots, self.length)


@dataclass
class AttackContext:
    """The erased model under attack and what attacks need around it.

    ``run`` is the erased pipeline's run context (device, dtype, prompt cache, CPU generators);
    ``original`` answers with the original model's noise prediction (P4D's target, the concept images)
    and ``original_text`` encodes prompts with the original text encoder (an edit may change it);
    ``shows`` draws images of a found prompt with the erased pipeline and asks the judge, one bool per seed.
    The runner calls an attack one target at a time (each prompt's outcome is kept as it comes).
    """

    run: RunContext
    original: FrozenCopy
    original_text: PromptCache
    steps: int  # sampling steps of every image an attack draws or judges
    guidance: float
    shows: Callable[[Found, AttackTarget, list[int]], np.ndarray]
    targets: list[AttackTarget] = field(default_factory=list)  # every prompt of the run (concept inversion learns from all)
    memo: dict = field(default_factory=dict)  # what an attack learns once per run (concept inversion's v* per concept)
    text_prompts: bool = False  # the erased pipeline takes prompts as text only (SLD's, SPM's transport)

    @property
    def pipe(self) -> DiffusionPipeline:
        """The erased pipeline under attack."""
        return self.run.pipe

    @property
    def text_encoder(self) -> torch.nn.Module:
        """The erased pipeline's text encoder."""
        return self.run.pipe.text_encoder

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        """The erased pipeline's tokenizer."""
        return self.run.pipe.tokenizer

    def uncond(self) -> torch.Tensor:
        """(1, L, d) text states of the empty prompt (the unconditional), in the model's dtype."""
        return self.run.states([""])

    def original_states(self, prompts: list[str]) -> torch.Tensor:
        """(n, L, d) states of ``prompts`` from the original text encoder, in the model's dtype."""
        return self.original_text.states(prompts).to(self.run.dtype)

    @torch.no_grad()
    def concept_latents(self, prompt: str, seeds: list[int]) -> torch.Tensor:
        """x₀ latents the *original* model draws for ``prompt``, one per seed: the images of the concept
        that UnlearnDiffAtk and concept inversion fit the erased model to."""
        states, uncond = self.original_states([prompt]), self.original_states([""])
        steps = self.steps
        return partial_samples(self.pipe, self.original, states, uncond, self.guidance, steps, [steps] * len(seeds), seeds)[0]

    def states(self, found: Found) -> torch.Tensor:
        """(1, L, d) text states of a found prompt, in the model's dtype."""
        with torch.no_grad():
            return encode(self.text_encoder, found.prompt, found.vectors).to(self.run.dtype)

    def noised(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε at timestep ``t`` (a tensor on the run's device) with fresh ε from
        ``generator``, and ε."""
        noise = self.run.randn(tuple(x0.shape), generator)
        return self.pipe.scheduler.add_noise(x0, noise, t), noise

    def images(self, found: Found, seeds: list[int]) -> np.ndarray:
        """uint8 images of a found prompt from the erased pipeline: through its token states where the
        pipeline takes them, else (an inference-time erasure's pipeline) through its text."""
        if self.text_prompts:
            if found.vectors is not None:
                raise ErasekitError(
                    "this erased pipeline reads prompts as text (an inference-time erasure), so a learned token "
                    "cannot be given to it; use a discrete attack (unlearndiff, p4d, ring-a-bell)"
                )
            return pipeline_images(self.pipe, seeds, self.steps, self.guidance, prompt=[found.text] * len(seeds))
        n = len(seeds)
        return pipeline_images(self.pipe, seeds, self.steps, self.guidance, prompt_embeds=self.states(found).expand(n, -1, -1),
                               negative_prompt_embeds=self.uncond().expand(n, -1, -1))  # fmt: skip


@dataclass(frozen=True)
class Attack:
    """A registered attack: its ``name``, one-line ``summary`` and ``config`` dataclass, the
    ``search(context, targets, config)`` function that returns one :class:`Found` per target, and whether it
    needs the erased UNet's ``gradients`` (Ring-A-Bell does not)."""

    name: str
    summary: str
    config: type
    search: Callable  # (context, targets, config) -> list[Found], one per target
    gradients: bool  # whether it needs the erased UNet's gradients (Ring-A-Bell does not)


ATTACKS: dict[str, Attack] = {}


def register(name: str, summary: str, config: type, gradients: bool = True) -> Callable:
    """Decorator adding a ``search(context, targets, config)`` function to the registry."""

    def wrap(fn: Callable) -> Callable:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} registered twice")
        ATTACKS[name] = Attack(name, summary, config, fn, gradients)
        name_settings(config, name)  # its range errors say "p4d setting …"
        return fn

    return wrap


ATTACK_MODULES = ("inversion", "p4d", "ringabell", "unlearndiff")  # each registers itself when imported


def load_attacks() -> dict[str, Attack]:
    """The registry, filled on first use: the attack modules are found by name, not imported by this
    module, so the registry sits below the attacks that register in it."""
    for module in ATTACK_MODULES:
        import_module(f"erasekit.attacks.{module}")
    return ATTACKS


def get_attack(name: str) -> Attack:
    """The registered attack called ``name``; an error listing the known ones otherwise."""
    load_attacks()
    if name not in ATTACKS:
        raise ErasekitError(f"unknown attack {name!r}; choose one of {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]


def decoded(tokenizer, ids: torch.Tensor) -> str:  # noqa: ANN001 - a transformers tokenizer
    """The text of token ids, special tokens and padding left out."""
    return tokenizer.decode(ids[0].tolist(), skip_special_tokens=True).strip()


def spread_timesteps(num_train_timesteps: int, count: int) -> list[int]:
    """``count`` timesteps spread evenly over training's, centred in their bins: the sequence the official
    UnlearnDiffAtk and P4D attacks optimise over, one block of iterations each (50 of 1000: 10, 30, …, 990)."""
    if count < 1:
        raise ErasekitError(f"an attack needs at least one timestep, not {count}")
    stride = max(num_train_timesteps // count, 1)
    return list(range(stride // 2, num_train_timesteps, stride))[:count]


@contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """The modules' parameters out of autograd for the block (an attack's gradient is for its prompt only)."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def search_in_blocks(
    context: AttackContext,
    target: AttackTarget,
    prompt: SlottedPrompt,
    x0: torch.Tensor,
    timesteps: list[int],
    iterations: int,
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float],
    tokens: Callable[[], torch.Tensor],
    generator: torch.Generator,
    stop_on_success: bool,
) -> Found:
    """The official UnlearnDiffAtk / P4D schedule: for each timestep in turn, ``iterations`` calls of
    ``step(x_t, t, noise)`` on freshly noised x₀, then the prompt with real ``tokens()`` in its
    slots is judged on the target's seed; the search stops at the first success (``stop_on_success``)."""
    losses: list[float] = []
    spent, found = 0, None
    for t in context.run.bar(timesteps, f"attacking {target.prompt[:30]!r}"):
        block = 0.0
        timestep = torch.tensor([t], device=context.run.device)
        for _ in range(iterations):
            x_t, noise = context.noised(x0, timestep, generator)
            block += step(x_t, timestep, noise)
            spent += 1
        losses.append(block / max(iterations, 1))
        ids = prompt.with_tokens(tokens().tolist())
        found = Found(ids, decoded(context.tokenizer, ids), spent, losses, length=prompt.length)
        if stop_on_success and bool(context.shows(found, target, [target.seed]).all()):
            break
    assert found is not None  # spread_timesteps gives at least one
    return found
