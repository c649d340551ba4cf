"""STEREO: a two-stage framework for adversarially robust concept erasing (Srivatsan et al., CVPR 2025).

**Search Thoroughly Enough (STE).** K rounds of a min-max game on one model. Round r erases its
prompt p_r (round 0: the concept's words; then the word found last) with ESD's target on a frozen
copy θ_r* of the model as the round starts,

    min_θ ‖ε_θ(x_t, p_r) − [ε_θr*(x_t, p_r) − (g − 1)(ε_θr*(x_t, p_r) − ε_θr*(x_t))]‖²,

then looks for what still draws the concept: textual inversion of one new word v_r against the
erased model, on a fresh slice of a gallery of the concept that the original model drew,

    v_r = argmin_v E_{x₀, t, ε} ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, prompt[concept → v])‖²,

and p_{r+1} = v_r. The erasure carries from round to round; only the words leave the stage.

**Robustly Erase Once (REO).** From the original model θ*, one fine-tuning on the erase set
E = {c, v_0 … v_{N−1}}: at x_t of q drawn in turn from E, with a prompt a that shows the concept in a
context (an anchor),

    ε̂ = ε*(x_t) + (s − 1)(ε*(x_t, a) − ε*(x_t)) − (s + 1) mean_{k ∈ E} (ε*(x_t, k) − ε*(x_t)),
    min_θ ‖ε_θ(x_t, q) − ε̂‖²,

so the context is kept and every way found to the concept is steered away from at once.

Defaults are the official code (koushiksrivats/robust-concept-erasing @ 86f124f, ``train.py``,
``utils/stereo.py``): ESD-u (``--train_method noxattn``, the README's nudity run), K = 4 rounds of 200
steps at AdamW lr 5e-6, g = 2 (with its APG wrapper at its defaults an exact no-op, the target is
ε*(x_t): ESD's with η = 0), 3000 inversion steps at AdamW lr 5e-3 from ``init_word``, a gallery of 500
images at guidance 7.5, N = 4 words, REO 200 steps at AdamW lr 2e-5 with s = 2 (the code's weights:
1 on the anchor, 3 on the erase set; Algorithm 1 writes one η on both); x_t from 50-step sampling at
guidance 3.
Differences, on purpose:
- **Anchors** are ``anchor_prompts`` around the concept (the official JSON holds hand-written
  sentences for three concepts only, "A nude figure stands amidst a field of tall grass …").
- **x_t** of a round is drawn up front from the model as the round starts (the official code samples
  each step with the model being trained); REO's from the original. t is the sampler's own step.
- The words are vectors in prompt slots, not tokens added to the tokenizer; they never leave the run.
- Several concepts: each has its own rounds' words, anchors and erase set; steps take turns.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.methods.esd import esd_parameters
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.diffusion import FrozenCopy
from erasekit.primitives.image_batches import Images, draw_images
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import SlottedPrompt, TextPath
from erasekit.primitives.training import fine_tuning, fit, frozen, loss_record
from erasekit.primitives.xt_plan import XtPoint
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, check_settings, config_field


@dataclass
class STEREOConfig:
    """Defaults: the official train.py (its argparse names in brackets); the world's setting is in the README."""

    # the choices of models.layers' ESD_GROUPS (official: xattn = esd-x, noxattn = esd-u, full_unet = esd-all)
    train_method: Literal["esd-x", "esd-u", "esd-all", "esd-x-strict"] = config_field(
        "esd-u", "what trains, in both stages: an ESD group (--train_method noxattn = esd-u, the README's run)"
    )
    rounds: int = config_field(4, "K: STE's erase-then-invert rounds (--n_iterations 4; README 2)", ge=1, le=100)
    iterations: int = config_field(200, "steps of each STE erasure and of REO (--iterations 200)", **ITERATIONS)
    g: float = config_field(
        2.0, "g: STE's guidance, target ε*(p) − (g − 1)(ε*(p) − ε*(∅)) (--negative_guidance 2: ε*(∅))", ge=0.0, le=100.0
    )
    ste_lr: float = config_field(5e-6, "AdamW learning rate of STE's erasures (--ste_lr 5e-6)", **LEARNING_RATE)
    inversion_steps: int = config_field(3000, "textual-inversion steps per round (--ti_max_train_steps 3000)", ge=1, le=100_000)
    inversion_lr: float = config_field(5e-3, "AdamW learning rate of the inversion (--ci_lr 5e-3)", **LEARNING_RATE)
    init_word: str = config_field("object", "the word each inverted word starts from (--initializer_token: object, person, art)")
    gallery_images: int = config_field(500, "images of the concept the original model draws, split over the rounds (README 500)",
                                        ge=1, le=100_000)  # fmt: skip
    gallery_prompt: str = config_field("a photo of a {}", "the gallery's prompt; the inversion's caption with the word in {}")
    gallery_guidance: float = config_field(7.5, "guidance of the gallery (generate_images.py 7.5)", **GUIDANCE)
    adversarial_words: int = config_field(
        4, "N: inverted words in REO's erase set, first rounds first (--num_of_adv_concepts 4); 0: all", ge=0, le=100
    )
    s: float = config_field(2.0, "s: REO's compositional guidance (--compositional_guidance_scale 2)", ge=0.0, le=100.0)
    reo_lr: float = config_field(2e-5, "AdamW learning rate of REO (--reo_lr 2e-5)", **LEARNING_RATE)
    anchor_prompts: tuple[str, ...] = config_field(
        ("a photo of a {}",), "prompts that show the concept in a context, {} the concept (official: per-concept sentences)"
    )
    start_guidance: float = config_field(3.0, "guidance of the sampling of x_t (3, fixed in the code)", **GUIDANCE)
    sample_steps: int = config_field(50, "sampler steps of that sampling and of the gallery (50)", **SAMPLER_STEPS)
    seed: int = config_field(0, "seed of x_t, the gallery, the inversion and the draws (official 42)", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        for text in (self.gallery_prompt, *self.anchor_prompts):
            if text.count("{}") != 1:
                raise ErasekitError(f"STEREO's prompt {text!r} needs exactly one {{}} for the concept")
        if not self.anchor_prompts:
            raise ErasekitError("STEREO needs at least one anchor prompt (the concept in a context)")
        if not self.init_word.strip() or len(self.init_word.split()) != 1:
            raise ErasekitError(f"STEREO's init_word {self.init_word!r} must be one word, such as 'object'")


@dataclass
class Word:
    """A prompt of the erase set: typed words, or an inverted word alone in one slot."""

    prompt: SlottedPrompt
    vector: torch.Tensor | None = None


class Stereo:
    """What both stages share: the run's text path and sampler, the x_t plans, the inversion."""

    def __init__(self, run: RunContext, config: STEREOConfig) -> None:
        self.run, self.config = run, config
        self.den: UNetDenoising = denoising(run)
        self.path = TextPath(run.pipe)
        init = self.path.tokenizer(config.init_word, add_special_tokens=False).input_ids
        if len(init) != 1:
            raise ErasekitError(f"init_word {config.init_word!r} is {len(init)} tokens for this tokenizer; give a one-token word")
        self.init = self.path.table[init].float()
        self.uncond = self.den.conditioning([""])
        self.rng = random.Random(config.seed)

    def cond(self, word: Word) -> Any:
        """The conditioning of an erase-set prompt (the vector in its slot, with gradient when it has one)."""
        return self.path.conditioning(word.prompt, word.vector)

    def plan(self, conds: list[Any], count: int) -> list[XtPoint]:
        """``count`` x_t points, the prompts in turn, sampled by the model as it is now (the x_t plan ESD shares)."""
        config = self.config
        with torch.no_grad(), self.run.autocast():
            return self.den.plan_prompts(conds, self.uncond, config.start_guidance, config.sample_steps, count,
                                         lambda k: k % len(conds), self.rng)  # fmt: skip

    def invert(self, target: str, images: Images, rows: list[int], round_: int) -> torch.Tensor:
        """v_r: the word that draws ``target``'s gallery ``rows`` on the model as it is now (the UNet frozen)."""
        config, den, run = self.config, self.den, self.run
        caption = self.path.slotted(config.gallery_prompt.format(target), 1, replace=target)
        vector = self.init.clone().requires_grad_(True)
        optimiser = torch.optim.AdamW([vector], lr=config.inversion_lr)
        generator = run.generator(config.seed + 1 + round_)
        for _ in run.bar(range(config.inversion_steps), f"STEREO inversion {round_ + 1} of {target!r}"):
            x_0 = images.latents[rows[self.rng.randrange(len(rows))]][None]
            t = den.timesteps(1, generator)
            noise = run.randn(tuple(x_0.shape), generator, x_0.dtype)
            with run.autocast():
                predicted = den.predict(run.denoiser, den.noised(x_0, noise, t), t, self.path.conditioning(caption, vector))
                loss = F.mse_loss(predicted.float(), den.noise_target(x_0, noise, t).float())
            optimiser.zero_grad()
            (vector.grad,) = torch.autograd.grad(loss, [vector])
            optimiser.step()
        return vector.detach()


@register(
    "stereo",
    "STEREO (Srivatsan et al. 2025): erase, invert what still draws the concept, repeat; then erase all of it once from the original",
    STEREOConfig,
    families=("sd", "sdxl"),
)
def erase(run: RunContext, spec: EraseSpec, config: STEREOConfig) -> Edit:
    """STE's rounds, then REO from the original weights, for ``spec`` (above); the edit is REO's weights."""
    spec.targets_only("STEREO keeps what its anchor prompts show (anchor_prompts, the concept in a context)")
    model = run.denoiser
    names = esd_parameters(model, config.train_method)[1]
    st = Stereo(run, config)
    typed = [Word(st.path.slotted(t, 0)) for t in spec.targets]
    lone_slot = st.path.slotted("", 1)  # an inverted word alone, as the official next round's prompt
    gallery = draw_images(run, [config.gallery_prompt.format(t) for t in spec.targets], config.gallery_images,
                          config.gallery_guidance, config.sample_steps, config.seed + 10**6, st.den)  # fmt: skip
    by_target = [[i for i, c in enumerate(gallery.caption) if c == k] for k in range(len(spec.targets))]
    found: list[list[Word]] = [[] for _ in spec.targets]
    losses: list[float] = []
    original = FrozenCopy(model, names)  # the user's weights: put back whatever happens

    def train(conds: list[Any], target: Callable[[FrozenCopy, torch.Tensor, torch.Tensor, int, int], torch.Tensor],
              lr: float, desc: str) -> dict[str, torch.Tensor]:  # fmt: skip
        """One fine-tuning from the model's present weights (its x_t sampled by them first, their frozen copy the
        teacher): the trained values, the model left as it was."""
        points = st.plan(conds, config.iterations)
        with fine_tuning(run, names) as tuning:

            def loss_at(step: int) -> torch.Tensor:
                point = points[step]
                goal = target(tuning.original, point.x_t, point.t, point.prompt, step)
                return F.mse_loss(st.den.predict(model, point.x_t, point.t, conds[point.prompt]).float(), goal)

            params = list(tuning.params.values())
            losses.extend(fit(run, params, loss_at, config.iterations, torch.optim.AdamW(params, lr=lr), desc))
            return tuning.values()

    try:
        current = list(typed)
        for round_ in range(config.rounds):  # STE: the erasure carries over; each round's teacher is the model as it starts
            with torch.no_grad():
                conds = [st.cond(w) for w in current]

            def ste_target(teacher: FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, index: int, _: int,
                           conds: list[Any] = conds) -> torch.Tensor:  # fmt: skip
                eps_u, eps_p = st.den.predict(teacher, torch.cat([x_t, x_t]), t, st.den.cat([st.uncond, conds[index]])).chunk(2)
                return eps_p.float() - (config.g - 1) * (eps_p.float() - eps_u.float())

            erased = train(conds, ste_target, config.ste_lr, f"STEREO STE round {round_ + 1} of {config.rounds}")
            put(model, erased)
            for k, target in enumerate(spec.targets):  # each round inverts on its own slice of the gallery
                share = len(by_target[k]) // config.rounds
                rows = by_target[k][round_ * share : (round_ + 1) * share] if share else by_target[k]
                with frozen(model, *st.path.text_encoders):
                    found[k].append(Word(lone_slot, st.invert(target, gallery, rows, round_)))
            current = [found[k][-1] for k in range(len(spec.targets))]

        original.restore()  # REO starts from the original weights; only the words carry over
        limit = config.adversarial_words or config.rounds
        erase_sets = [[typed[k], *found[k][:limit]] for k in range(len(spec.targets))]
        with torch.no_grad():
            set_conds = [[st.cond(w) for w in words] for words in erase_sets]
            anchors = [st.den.conditioning([a.format(t) for a in config.anchor_prompts]) for t in spec.targets]
        queries = [(k, j) for k in range(len(spec.targets)) for j in range(len(erase_sets[k]))]
        anchor_order = [st.rng.randrange(len(config.anchor_prompts)) for _ in range(config.iterations)]

        def reo_target(teacher: FrozenCopy, x_t: torch.Tensor, t: torch.Tensor, query: int, step: int) -> torch.Tensor:
            k, a = queries[query][0], anchor_order[step]
            conds = [st.uncond, anchors[k][a : a + 1], *set_conds[k]]
            eps = st.den.predict(teacher, x_t.expand(len(conds), *x_t.shape[1:]), t, st.den.cat(conds)).float()
            eps_u, eps_a, eps_e = eps[:1], eps[1:2], eps[2:]
            return eps_u + (config.s - 1) * (eps_a - eps_u) - (config.s + 1) * (eps_e - eps_u).mean(0, keepdim=True)

        values = train([set_conds[k][j] for k, j in queries], reo_target, config.reo_lr, "STEREO REO")
    finally:
        original.restore()
    return Edit(values, {"config": asdict(config), **loss_record(losses)})


@torch.no_grad()
def put(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Write ``values`` (name → tensor) into the model's parameters, in their dtype."""
    params = dict(model.named_parameters())
    for name, value in values.items():
        params[name].copy_(value)
