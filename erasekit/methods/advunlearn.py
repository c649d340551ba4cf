"""AdvUnlearn: Defensive Unlearning with Adversarial Training (Zhang et al., NeurIPS 2024).

A min-max erasure: ESD's unlearning loss is taken at the prompt an attacker would find, beside a
utility-retaining term,

    min_θ  ℓ_u(θ, c ⊕ δ*) + γ ℓ_r(θ),        δ* = argmin_δ ‖ε_θ(x_t, c ⊕ δ) − ε_θ*(x_t, c)‖²,

    ℓ_u = ‖ε_θ(x_t, c ⊕ δ*) − [ε_θ*(x_t) − η (ε_θ*(x_t, c) − ε_θ*(x_t))]‖²     (ESD's eq. 3, η = 1),
    ℓ_r = E_{r ~ retain set} ‖ε_θ(x_t, r) − ε_θ*(x_t, r)‖²,

θ* the original model. δ is k soft word embeddings put before the concept's words (``prefix_k``),
found by ``attack_steps`` Adam steps on the model being trained and started from the last round's
(``attack_init="latest"``). θ is the text encoder by default (the official ``text_encoder_full``:
every transformer layer and the final norm, not the embedding tables), which makes the erasure a
text encoder other pipelines can plug in; ``train_method`` may name one of ESD's UNet groups instead.

Defaults are the official ``train-scripts/AdvUnlearn.py`` with its README command (OPTML-Group/
AdvUnlearn): text encoder, 1000 iterations, Adam lr 1e-5, 200 plain warm-up iterations, then an
attack at every iteration (``adv_prompt_update_step`` 1) of 30 steps at lr 1e-3 with k = 1, η = 1,
x_t from 50-step sampling at guidance 3, retain weight γ = 0.3 over 5 prompts per step (``reg``).
Differences: the retain prompts are the preserve set (the official draws COCO object prompts) and
are scored on the step's x_t, as erasekit's ESD preserve loss; every x_t, the attack's included,
comes from one plan drawn up front (the official samples a new trajectory for each attack step).

On SDXL, SD3 and FLUX an ESD group trains (the official ``train_method`` choices beside the text
encoder); the text encoder is SD's only, refused elsewhere in one line (SDXL and SD3 read two or three
encoders, FLUX's token path is T5-XXL). δ sits in every encoder of the prompt's vocabulary (SDXL's two
CLIPs side by side; SD3's two CLIPs; FLUX's T5 path), ε is the flow velocity on x_σ of the Euler
sampling on SD3 and FLUX, as ESD's there. ``lora_rank`` trains a LoRA on the group's layers instead
(erasekit's, as ESD's): on FLUX.1 the attention group is 2.5 B parameters.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import TEXT_ENCODER, Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.methods.esd import esd_parameters, esd_target
from erasekit.models.families import Family
from erasekit.models.layers import FLUX_ESD_GROUPS
from erasekit.primitives.denoising import denoising
from erasekit.primitives.diffusion import FrozenCopy
from erasekit.primitives.lora_trainer import check_rank
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import SlottedPrompt, TextPath, random_tokens, word_tokens
from erasekit.primitives.training import fine_tuning, fit, group_tuning, loss_record
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field

TEXT_ENCODER_METHOD = "text-encoder"


@dataclass
class AdvUnlearnConfig:
    """Defaults of the official AdvUnlearn.py and its README command; the world's setting is in the README."""

    # the text encoder, or one of ESD's UNet groups (models.layers' ESD_GROUPS)
    train_method: Literal["text-encoder", "esd-x", "esd-u", "esd-all", "esd-x-strict"] = config_field(
        "text-encoder", "'text-encoder' (official text_encoder_full) or an ESD UNet group (esd-x, esd-u, …)"
    )
    iterations: int = config_field(1000, "training iterations, one x_t each (official 1000)", **ITERATIONS)
    lr: float = config_field(1e-5, "Adam learning rate (official 1e-5)", **LEARNING_RATE)
    eta: float = config_field(
        1.0, "η: negative guidance of the unlearning target (official negative_guidance 1)", gt=0.0, le=100.0
    )
    warmup_iterations: int = config_field(
        200, "plain ESD iterations before the attacks start (official warmup_iter 200)", ge=0, le=100_000
    )
    # each attack runs inside an iteration: iterations × attack_steps passes
    attack_steps: int = config_field(30, "Adam steps of each attack on δ (official attack_step 30)", ge=0, le=1000)
    attack_lr: float = config_field(1e-3, "learning rate of the attack (official attack_lr 1e-3)", **LEARNING_RATE)
    attack_tokens: int = config_field(
        1, "k: soft tokens put before the concept's words (official adv_prompt_num 1)", ge=1, le=1000
    )
    attack_init: Literal["latest", "random"] = config_field(
        "latest", "'latest': each attack starts from the last δ; 'random': from random words"
    )
    retain_weight: float = config_field(0.3, "γ: weight of the utility-retaining loss on the preserve set (README 0.3)", **WEIGHT)
    retain_batch: int = config_field(5, "retain prompts per step (official retain_batch 5)", ge=1, le=256)
    start_guidance: float = config_field(3.0, "guidance of the original model's sampling of x_t (official 3)", **GUIDANCE)
    sample_steps: int = config_field(
        50, "sampler steps of that sampling; t is one of them at random (official 50)", **SAMPLER_STEPS
    )
    seed: int = config_field(0, "seed of the x_t plan, the attacks' starts and the retain draws", **SEEDS)
    lora_rank: int = config_field(
        0,
        "0: train the parameters themselves (official); r: a rank-r LoRA on the ESD group's layers instead "
        "(the original model is the adapter switched off, so FLUX.1 needs no second copy)",
        ge=0,
        le=100_000,
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if self.lora_rank and self.train_method == TEXT_ENCODER_METHOD:
            raise ErasekitError(
                "AdvUnlearn's lora_rank adapts an ESD group of the denoiser, not the text encoder: "
                "set train_method to esd-x (or another ESD group), or lora_rank to 0"
            )

    def check_family(self, family: Family) -> None:
        """The text encoder trains on SD 1.x/2.x only; beyond it an ESD group does (on FLUX, its attention groups)."""
        if family.name != "sd" and self.train_method == TEXT_ENCODER_METHOD:
            raise ErasekitError(
                f"AdvUnlearn trains the text encoder on SD 1.x/2.x only: {family.title}'s prompt goes through more than one "
                "encoder (and FLUX's token path is T5-XXL); set train_method to one of the denoiser's ESD groups (esd-x, …)"
            )
        if family.denoiser == "transformer" and self.train_method not in FLUX_ESD_GROUPS:
            raise ErasekitError(
                f"ESD group {self.train_method!r} has no {family.title} form; there choose {' or '.join(FLUX_ESD_GROUPS)}"
            )


def text_encoder_layers(encoder: torch.nn.Module) -> list[str]:
    """The official ``text_encoder_full``: every transformer layer and the final norm, not the embeddings
    (CLIP's ``text_model.encoder.*``/``final_layer_norm``; BERT's ``encoder.*``, its pooler left out)."""
    return [n for n, _ in encoder.named_parameters() if "encoder." in n or "final_layer_norm" in n]


@register(
    "advunlearn",
    "AdvUnlearn (Zhang et al. 2024): ESD trained against a soft-prompt attacker inside the loop, on the text encoder",
    AdvUnlearnConfig,
    families=("sd", "sdxl", "sd3", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: AdvUnlearnConfig) -> Edit:
    """AdvUnlearn's min-max training for ``spec`` (above): ESD's loss at the attacker's soft prompt c ⊕ δ*
    plus the retain loss, on the text encoder or an ESD parameter group. The prompts are the family's
    (:class:`~erasekit.primitives.soft_prompt.TextPath`: δ in SDXL's and SD3's CLIPs, in FLUX's T5 path)
    and so are the prediction and the x_t plan (:mod:`~erasekit.primitives.denoising`)."""
    model, den, path = run.denoiser, denoising(run), TextPath(run.pipe)
    on_text = config.train_method == TEXT_ENCODER_METHOD
    encoder = path.text_encoders[0]
    layers, names = ([], text_encoder_layers(encoder)) if on_text else esd_parameters(model, config.train_method)
    if config.lora_rank:
        check_rank(model, layers, config.lora_rank)  # before the x_t plan, which can take long
    rng, generator = random.Random(config.seed), run.generator(config.seed + 1)
    # token layouts first: too many attack_tokens for the prompt is refused before the x_t plan's sampling
    attacked = [path.slotted(t, config.attack_tokens) for t in spec.targets]
    plain = [path.slotted(t, 0) for t in spec.targets]
    kept = [path.slotted(p, 0) for p in spec.preserve]
    # states by the original text encoder, read before it trains
    states, points = den.plan(spec, config.start_guidance, config.sample_steps, config.iterations, rng)
    by_target = [[p for p in points if p.prompt == i] for i in range(len(spec.targets))]
    table = path.table
    candidates = word_tokens(path.tokenizer, run.device)
    latest: dict[int, torch.Tensor] = {}
    unseen: list[int] = []

    training = fine_tuning(run, names, encoder) if on_text else group_tuning(run, layers, names, config.lora_rank, config.seed)
    with training as tuning:
        original = FrozenCopy(model, []) if on_text else tuning.original  # θ*: the UNet is the original when it is not trained

        def prompt_states(prompt: SlottedPrompt, text: str, vectors: torch.Tensor | None = None) -> object:
            """The conditioning of ``prompt`` by the text encoder as it trains, with ``vectors`` in its slots."""
            return path.conditioning(prompt, vectors, text).to(run.dtype)

        def attack(index: int) -> torch.Tensor:
            """δ*: the soft tokens before target ``index``'s words that bring its prediction back to θ*'s."""
            start = latest.get(index) if config.attack_init == "latest" else None
            if start is None:
                start = table[random_tokens(candidates, config.attack_tokens, generator)].float()
            vectors = start.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([vectors], lr=config.attack_lr)
            target = spec.targets[index]
            for _ in range(config.attack_steps):
                point = rng.choice(by_target[index])
                with run.autocast():
                    wanted = den.predict(original, point.x_t, point.t, states[target]).float()
                    found = prompt_states(attacked[index], target, vectors)
                    loss = F.mse_loss(den.predict(model, point.x_t, point.t, found).float(), wanted)
                (vectors.grad,) = torch.autograd.grad(loss, [vectors])
                optimiser.step()
            latest[index] = vectors.detach()
            return latest[index]

        def retain_draw() -> list[int]:
            if len(unseen) < min(config.retain_batch, len(kept)):  # every retain prompt is seen before any repeats
                unseen[:] = rng.sample(range(len(kept)), len(kept))
            return [unseen.pop() for _ in range(min(config.retain_batch, len(kept)))]

        def loss_at(step: int) -> torch.Tensor:
            point = points[step]
            target, anchor = spec.targets[point.prompt], spec.anchors[point.prompt]
            x_t, t = point.x_t, point.t
            eps_anchor, eps_concept = den.predict(
                original, torch.cat([x_t, x_t]), t, den.cat([states[anchor], states[target]])
            ).chunk(2)
            goal = esd_target(eps_anchor.float(), eps_concept.float(), config.eta, "paper")
            if step >= config.warmup_iterations and config.attack_steps:
                trained_at = prompt_states(attacked[point.prompt], target, attack(point.prompt))
            else:
                trained_at = prompt_states(plain[point.prompt], target)
            loss = F.mse_loss(den.predict(model, x_t, t, trained_at).float(), goal)
            if kept and config.retain_weight > 0:
                draw = retain_draw()
                now = den.cat([prompt_states(kept[k], spec.preserve[k]) for k in draw])
                before = den.cat([states[spec.preserve[k]] for k in draw])
                x_r = x_t.expand(len(draw), *x_t.shape[1:])
                retained = F.mse_loss(den.predict(model, x_r, t, now).float(), den.predict(original, x_r, t, before).float())
                loss = loss + config.retain_weight * retained
            return loss

        params = list(tuning.params.values())
        lora = f", LoRA r{config.lora_rank}" if config.lora_rank else ""
        losses = fit(run, params, loss_at, config.iterations, torch.optim.Adam(params, lr=config.lr),
                     f"AdvUnlearn ({config.train_method}{lora})")  # fmt: skip
        values = tuning.values()
    if on_text:
        values = {TEXT_ENCODER + name: value for name, value in values.items()}
    return Edit(values, {"config": asdict(config), **loss_record(losses)})
