"""SalUn: gradient-based weight saliency for machine unlearning (Fan et al., ICLR 2024), its diffusion part.

First a saliency mask: over one pass of the concept's images x₀ (noised at uniform t), the gradient of
the forgetting loss is summed, and the weights whose |Σ g| is in the top ``mask_ratio`` of the whole
UNet (one global ranking) are the only ones that train,

    m = 1( |Σ_batches ∇_θ ℓ_f(θ)| ≥ γ ),   ℓ_f = −‖ε − ((1 + w) ε_θ(x_t, c) − w ε_θ(x_t, ""))‖²,

then unlearning by relabelling: the concept's prediction on its own images is pulled to the
prediction of another label c′ (no gradient through it, the current model), beside the plain
denoising loss on images to keep,

    min_θ ‖ε_θ(x_t, c) − sg(ε_θ(x_t, c′))‖² + α ‖ε_θ(x_t', c_r) − ε'‖²,   gradients × m, Adam.

Defaults are the official SD code (OPTML-Group/Unlearn-Saliency @ a6e89fd, ``SD/train-scripts/
generate_mask.py`` and ``random_label.py``, with its README's command): the whole UNet (``full``), mask
ratio 0.5 from the guidance-extrapolated loss (w = 7.5), Adam lr 1e-5, batch 8, α = 0.5, 5 epochs over
the concept's images, prompt "an image of a {}". The images are the model's own, as the official NSFW
run (800 images of the concept and 800 to keep, drawn by SD itself; the class run used real
Imagenette photos).

c′ is the concept's anchor (``relabel=anchor``; the empty anchor: the unconditional prediction), as the
official NSFW run maps "a nude person" to "a person wearing clothes" and the class run each class to
the next; ``relabel=preserve`` draws c′ from the preserve set per image, the paper's random label. The
images kept are the preserve concepts', or with no preserve set the anchor's, as the NSFW run keeps
images of its relabel.
Differences: the mask's threshold is the ``mask_ratio`` quantile taken by ``kthvalue`` (the official code
ranks all 860 M weights with two argsorts); the mask pass draws its timesteps and noise from the run's
seeded generator; the images are latents (no decode / encode).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.methods.base import register
from erasekit.models.layers import sdd_parameters
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.image_batches import Images, draw_images, noised_batch
from erasekit.primitives.run import RunContext
from erasekit.primitives.training import fine_tuning, fit, loss_record, masked_gradients
from erasekit.settings import GUIDANCE, LEARNING_RATE, SAMPLER_STEPS, SEEDS, WEIGHT, check_settings, config_field


@dataclass
class SalUnConfig:
    """Defaults: the official SD scripts and README command (their argparse names in brackets)."""

    train_method: Literal["full", "xattn"] = config_field("full", "what trains: the whole UNet (README) or every attn2 parameter")
    mask_ratio: float = config_field(0.5, "share of the weights the mask lets train, by saliency (official 0.5)", gt=0.0, le=1.0)
    mask_guidance: float = config_field(
        7.5, "w of the mask's loss, (1 + w) ε(c) − w ε(∅) against ε (--c_guidance 7.5; 0: the paper's plain loss)", **GUIDANCE
    )
    relabel: Literal["anchor", "preserve"] = config_field(
        "anchor", "c′: the concept's anchor (official: the next class, 'clothed') or a random preserve concept (paper)"
    )
    alpha: float = config_field(
        0.5, "α: weight of the denoising loss on the kept images (README 0.5; argparse and NSFW 0.1)", **WEIGHT
    )
    epochs: int = config_field(5, "passes over the concept's images (--epochs 5)", ge=1, le=10_000)
    lr: float = config_field(1e-5, "Adam learning rate (--lr 1e-5)", **LEARNING_RATE)
    batch_size: int = config_field(8, "images per step, forget and kept alike (--batch_size 8)", ge=1, le=256)
    template: str = config_field("an image of a {}", "the prompt around each concept (official 'an image of a {}')")
    concept_images: int = config_field(800, "images of the concept the model draws (official NSFW run 800)", ge=1, le=100_000)
    preserve_images: int = config_field(800, "images to keep, over the kept concepts (official NSFW run 800)", ge=1, le=100_000)
    sample_steps: int = config_field(50, "sampler steps of those images", **SAMPLER_STEPS)
    guidance: float = config_field(7.5, "their guidance scale", **GUIDANCE)
    seed: int = config_field(0, "seed of the images, the batches, the timesteps and the noise", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.template.count("{}") != 1:
            raise ErasekitError("the SalUn template needs exactly one {} for the concept")

    @property
    def iterations(self) -> int:
        """Steps: the epochs over the concept's images, a batch a step."""
        return self.epochs * math.ceil(self.concept_images / self.batch_size)


def saliency_mask(
    run: RunContext,
    den: UNetDenoising,
    params: dict[str, torch.nn.Parameter],
    images: Images,
    states: object,
    config: SalUnConfig,
) -> dict[str, torch.Tensor]:
    """The boolean mask of every parameter: True where |Σ ∇ℓ_f| over one pass of ``images`` is in the top ``mask_ratio``."""
    model, generator, w = run.denoiser, run.generator(config.seed + 1), config.mask_guidance
    uncond = den.conditioning([""])
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    count = len(images.caption)
    for start in run.bar(range(0, count, config.batch_size), "SalUn saliency"):
        rows = list(range(start, min(start + config.batch_size, count)))
        x_0 = images.latents[rows]
        t = den.timesteps(len(rows), generator)
        noise = run.randn(tuple(x_0.shape), generator, x_0.dtype)
        x_t, target = den.noised(x_0, noise, t), den.noise_target(x_0, noise, t)
        with run.autocast():
            guided = (1 + w) * den.predict(model, x_t, t, states[[images.caption[i] for i in rows]]).float()
            if w:
                guided = guided - w * den.predict(model, x_t, t, uncond[[0] * len(rows)]).float()
            loss = -F.mse_loss(guided, target.float())
        for name, grad in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            sums[name] += grad.float()
    scores = torch.cat([s.abs().flatten() for s in sums.values()])
    kept = max(1, round(config.mask_ratio * scores.numel()))
    threshold = torch.kthvalue(scores.cpu(), scores.numel() - kept + 1).values.to(scores.device)
    return {name: s.abs() >= threshold for name, s in sums.items()}


@register(
    "salun",
    "SalUn (Fan et al. 2024): relabel the concept's images, training only the weights most salient to forgetting it",
    SalUnConfig,
    families=("sd", "sdxl"),
)
def erase(run: RunContext, spec: EraseSpec, config: SalUnConfig) -> Edit:
    """SalUn on ``spec``: the saliency mask, then masked relabelling with the kept images' denoising loss."""
    if config.relabel == "preserve" and not spec.preserve:
        raise ErasekitError("SalUn's relabel=preserve draws the new label from the preserve set: give --preserve")
    model, den = run.denoiser, denoising(run)
    prompts = [config.template.format(t) for t in spec.targets]
    anchors = [config.template.format(a) if a else "" for a in spec.anchors]
    kept_concepts = list(spec.preserve) if spec.preserve else [a for a in spec.anchors]
    kept_prompts = [config.template.format(k) if k else "" for k in kept_concepts]
    relabels = [config.template.format(p) for p in spec.preserve] if config.relabel == "preserve" else anchors
    concept_states, relabel_states, kept_states = (den.conditioning(p) for p in (prompts, relabels, kept_prompts))
    concept_images = draw_images(run, prompts, config.concept_images, config.guidance, config.sample_steps, config.seed, den)
    kept_images = draw_images(run, kept_prompts, config.preserve_images, config.guidance, config.sample_steps,
                              config.seed + 10**6, den)  # fmt: skip
    rng, generator = random.Random(config.seed), run.generator(config.seed)

    with fine_tuning(run, sdd_parameters(model, config.train_method)) as tuning:
        mask = saliency_mask(run, den, tuning.params, concept_images, concept_states, config)

        def loss_at(_: int) -> torch.Tensor:
            batch = noised_batch(run, concept_images, config.batch_size, rng, generator, den)
            labels = batch.caption if config.relabel == "anchor" else [rng.randrange(len(relabels)) for _ in batch.caption]
            with torch.no_grad():
                target = den.predict(model, batch.x_t, batch.t, relabel_states[labels]).float()
            loss = F.mse_loss(den.predict(model, batch.x_t, batch.t, concept_states[batch.caption]).float(), target)
            kept = noised_batch(run, kept_images, config.batch_size, rng, generator, den)
            kept_loss = F.mse_loss(den.predict(model, kept.x_t, kept.t, kept_states[kept.caption]).float(), kept.target.float())
            return loss + config.alpha * kept_loss

        with masked_gradients(tuning.params, mask):
            params = list(tuning.params.values())
            losses = fit(run, params, loss_at, config.iterations, torch.optim.Adam(params, lr=config.lr), "SalUn")
        new_values = {name: value for name, value in tuning.values().items() if mask[name].any()}
    share = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    return Edit(new_values, {"config": asdict(config), "mask_share": round(share, 4), **loss_record(losses)})
