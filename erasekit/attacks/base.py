"""What an attack works on, what it returns, and the one registry of attacks.

An attack gets an :class:`AttackContext` (the erased pipeline, the original model's noise
prediction, the prompt cache, a way to ask whether an image shows the concept) and one
:class:`AttackTarget` (a prompt the erased model should no longer draw the concept for), and
returns the adversarial prompt it :class:`Found`: token ids, and for a continuous attack (concept
inversion) the learned vectors in its slots. The robustness protocol (``erasekit.eval.attack_run``)
draws and judges the images; an attack only searches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from erasekit.errors import ErasekitError
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.diffusion import FrozenCopy, pipeline_images
from erasekit.primitives.prompt_cache import token_states
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import SlottedPrompt, TextPath
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
    def typed(self) -> str:
        """The found prompt's words as typed, a learned vector's placeholder left out (what an encoder the
        slots do not reach reads: FLUX.1's CLIP)."""
        return " ".join(self.text.replace("<v*>", " ").split())

    @property
    def prompt(self) -> SlottedPrompt:
        """The token layout of this prompt: its ids, the ``slots`` that hold ``vectors`` and its real length."""
        return SlottedPrompt(self.ids, self.slots, self.length)


@dataclass
class AttackContext:
    """The erased model under attack and what attacks need around it.

    ``run`` is the erased pipeline's run context (device, dtype, prompt cache, CPU generators) and
    ``denoise`` its family's denoising interface (conditioning, prediction, noising and target: ε on SD's
    UNets, the velocity on FLUX's transformer); ``path`` puts an attack's token slots into the family's
    prompt (:class:`~erasekit.primitives.soft_prompt.TextPath`); ``original`` is the original denoiser
    (P4D's target, the concept images) and ``original_path`` encodes prompts with the original text
    encoder (an edit may change it); ``shows`` draws images of a found prompt with the erased pipeline and
    asks the judge, one bool per seed. The runner calls an attack one target at a time (each prompt's
    outcome is kept as it comes).
    """

    run: RunContext
    original: FrozenCopy
    original_path: TextPath
    steps: int  # sampling steps of every image an attack draws or judges
    guidance: float
    shows: Callable[[Found, AttackTarget, list[int]], np.ndarray]
    targets: list[AttackTarget] = field(default_factory=list)  # every prompt of the run (concept inversion learns from all)
    memo: dict = field(default_factory=dict)  # what an attack learns once per run (concept inversion's v* per concept)
    text_prompts: bool = False  # the erased pipeline takes prompts as text only (SLD's, SPM's transport)
    denoise: UNetDenoising = field(init=False)
    path: TextPath = field(init=False)

    def __post_init__(self) -> None:
        self.denoise, self.path = denoising(self.run), TextPath(self.run.pipe)

    @property
    def pipe(self) -> DiffusionPipeline:
        """The erased pipeline under attack."""
        return self.run.pipe

    @property
    def denoiser(self) -> torch.nn.Module:
        """The erased pipeline's denoiser (UNet or transformer)."""
        return self.run.denoiser

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        """The tokenizer of the prompt's token path (FLUX: T5's)."""
        return self.path.tokenizer

    @property
    def num_train_timesteps(self) -> int:
        """How many training timesteps the scheduler has (the attacks' timesteps k = 0…N−1)."""
        return self.pipe.scheduler.config.num_train_timesteps

    def slotted(self, prompt: str, slots: int, replace: str | None = None) -> SlottedPrompt:
        """``prompt`` laid out for the token path with ``slots`` token slots (after [BOS], or where ``replace`` stands)."""
        return self.path.slotted(prompt, slots, replace)

    def conditioning(self, prompt: SlottedPrompt, vectors: torch.Tensor | None, text: str) -> Any:
        """The erased pipeline's conditioning of ``prompt`` with ``vectors`` in its slots (gradients flow to them),
        in the model's dtype; ``text`` is what an encoder the slots do not reach reads."""
        return self.path.conditioning(prompt, vectors, text).to(self.run.dtype)

    def uncond(self) -> Any:
        """The conditioning of the empty prompt (the unconditional), in the model's dtype."""
        return self.denoise.conditioning([""])

    def original_conditioning(self, prompts: list[str]) -> Any:
        """The conditioning of ``prompts`` through the original text encoder, in the model's dtype."""
        with torch.no_grad():
            return self.original_path.plain(prompts).to(self.run.dtype)

    def original_token_states(self, prompts: list[str]) -> torch.Tensor:
        """(n, L, d) float token states of ``prompts`` through the original text encoder (Ring-A-Bell's space)."""
        cond = self.original_conditioning(prompts)
        return token_states(cond).float()

    def original_tokens(self, ids: torch.Tensor, length: int) -> torch.Tensor:
        """(n, L, d) float token states of token ids (n, L) with ``length`` real tokens, through the original text encoder."""
        with torch.no_grad():
            return self.original_path.token_states(SlottedPrompt(ids, (), length)).float()

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The erased denoiser's prediction (ε, or the velocity) at (x_t, t) under ``cond``."""
        return self.denoise.predict(self.denoiser, x_t, t, cond)

    def predict_original(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """The original denoiser's prediction at (x_t, t) under ``cond``."""
        return self.denoise.predict(self.original, x_t, t, cond)

    @torch.no_grad()
    def concept_latents(self, prompt: str, seeds: list[int]) -> torch.Tensor:
        """x₀ latents the *original* model draws for ``prompt``, one per seed: the images of the concept
        that UnlearnDiffAtk and concept inversion fit the erased model to."""
        cond, uncond = self.original_conditioning([prompt]), self.original_conditioning([""])
        steps = self.steps
        return self.denoise.sample(cond, uncond, self.guidance, steps, [steps] * len(seeds), seeds, model=self.original)[0]

    def timestep(self, k: torch.Tensor) -> torch.Tensor:
        """What the denoiser takes for training timesteps k = 0…N−1 (a tensor on the run's device): k, or FLUX's σ."""
        return self.denoise.training_time(k)

    def noised(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t of ``x0`` at ``t`` (:meth:`timestep`'s) with fresh ε from ``generator``, and what the denoiser
        should predict there: ε (√ᾱ_t x₀ + √(1−ᾱ_t) ε on SD), the velocity ε − x₀ on a flow model."""
        noise = self.run.randn(tuple(x0.shape), generator)
        return self.denoise.noised(x0, noise, t), self.denoise.noise_target(x0, noise, t)

    def states(self, found: Found) -> Any:
        """The conditioning of a found prompt, in the model's dtype."""
        with torch.no_grad():
            return self.conditioning(found.prompt, found.vectors, found.typed)

    def images(self, found: Found, seeds: list[int]) -> np.ndarray:
        """uint8 images of a found prompt from the erased pipeline: through its conditioning where the
        pipeline takes it, else (an inference-time erasure's pipeline) through its text."""
        if self.text_prompts:
            if found.vectors is not None:
                raise ErasekitError(
                    "this erased pipeline reads prompts as text (an inference-time erasure), so a learned token "
                    "cannot be given to it; use a discrete attack (unlearndiff, p4d, ring-a-bell, mma-diffusion)"
                )
            return pipeline_images(self.pipe, seeds, self.steps, self.guidance, prompt=[found.text] * len(seeds))
        return self.denoise.images(self.states(found), self.uncond(), seeds, self.steps, self.guidance)


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


ATTACK_MODULES = ("inversion", "mma", "p4d", "ringabell", "unlearndiff")  # each registers itself when imported


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
    ``step(x_t, t, target)`` on freshly noised x₀ (``target``: what the denoiser should predict there), then the prompt with real ``tokens()`` in its
    slots is judged on the target's seed; the search stops at the first success (``stop_on_success``)."""
    losses: list[float] = []
    spent, found = 0, None
    for t in context.run.bar(timesteps, f"attacking {target.prompt[:30]!r}"):
        block = 0.0
        timestep = context.timestep(torch.tensor([t], device=context.run.device))
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
