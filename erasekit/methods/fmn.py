"""FMN: Forget-Me-Not, learning to forget in text-to-image diffusion models (Zhang et al., CVPR-W 2024).

Attention re-steering: on images of the concept, the denoiser is fine-tuned so that its image
positions stop attending to the concept's tokens. The loss is the attention itself, with no
denoising term: over every layer where the image reads the text (SD's ``attn2``, FLUX's joint
attention), the probabilities A that all image positions and heads give to the marked token
columns, concatenated, in one L2 norm (official ``train_attn.py``: ``torch.cat(attn_probs).norm()``),

    min_θ ‖ [A_l(x_t, "a photo of {c}")[:, :, marked]]_l ‖₂ ,   x_t noised images of c, t ~ U[0, T).

The marked columns are the concept's tokens and the first end-of-text token (``use_pooler``).
With ``inversion_steps`` > 0 the concept is first replaced by 4 tokens learned by textual
inversion on the same images (official ``train_ti.py``: MSE denoising, AdamW lr 1e-3, weight
decay 0.1, 500 steps, each step pulling the tokens' norms 10 % of the way to 0.4). The attention
stage then marks those tokens. The text encoder is never changed: the learned tokens only locate
the concept during training.

Defaults are the official configs (SHI-Labs/Forget-Me-Not ``configs/attn.yaml`` and ``ti.yaml``):
the whole UNet (``only_optimize_ca: false``), AdamW lr 2e-6, weight decay 1e-2, batch 1,
35 steps, constant rate, 10 concept images, template "a photo of {}" ("a photo in the style of
{}" for a style).
Differences from that code:
- **Images.** The official code trains on 10 photos the user supplies. Here the original model
  draws them. They are kept as latents.
- **End token.** The official code marks every end-of-text token, which on SD 1.x, whose padding is
  end-of-text, also marks ~70 padding positions. Here only the first is marked, as on SD 2.1
  (padding "!").
- **Gradient clipping.** The official ``max_grad_norm: 1.0`` acts only with
  ``only_optimize_ca``: in the default config the clip receives an exhausted generator. Here
  ``max_grad_norm`` 0 means no clipping, the default's effective behaviour.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.methods.base import register
from erasekit.primitives.attention import probing
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.image_batches import Images, draw_images, noised_batch
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import SlottedPrompt, TextPath
from erasekit.primitives.training import fine_tuning, fit, loss_record
from erasekit.settings import GUIDANCE, ITERATIONS, LEARNING_RATE, SAMPLER_STEPS, SEEDS, check_settings, config_field

TEMPLATES = {"object": "a photo of {}", "style": "a photo in the style of {}"}  # official, per concept type
INVERSION_TOKENS = 4  # official <s1><s2><s3><s4>
NORM_TARGET, NORM_PULL = 0.4, 0.1  # official clip_ti_decay: each step 10 % of the way to norm 0.4


@dataclass
class FMNConfig:
    """Defaults: the official attention and textual-inversion configs; the world's setting is in the README."""

    parameter_group: Literal["full-weight", "cross-attn"] = config_field(
        "full-weight",
        "what trains: the whole denoiser (official only_optimize_ca false) or every cross-attention parameter "
        "(SD's attn2 q/k/v/out; FLUX's text-stream projections)",
    )
    steps: int = config_field(35, "attention re-steering steps (official max_train_steps 35)", **ITERATIONS)
    lr: float = config_field(2e-6, "AdamW learning rate (official 2e-6)", **LEARNING_RATE)
    weight_decay: float = config_field(1e-2, "AdamW weight decay (official 1e-2)", ge=0.0, le=100.0)
    batch_size: int = config_field(1, "images per step (official 1)", ge=1, le=256)
    max_grad_norm: float = config_field(0.0, "gradient-norm clip, 0 for none (the official default's effect)", ge=0.0, le=1e6)
    concept_type: Literal["object", "style"] = config_field(
        "object", "'object' ('a photo of {}') or 'style' ('a photo in the style of {}'), the official templates"
    )
    use_pooler: bool = config_field(True, "also mark the end-of-text token (official use_pooler true)")
    concept_images: int = config_field(
        10, "images of the concept the original model draws (official: 10 photos)", ge=1, le=10_000
    )
    sample_steps: int = config_field(25, "sampler steps of those images", **SAMPLER_STEPS)
    guidance: float = config_field(7.5, "their guidance scale", **GUIDANCE)
    inversion_steps: int = config_field(
        500, "textual-inversion steps that first learn the concept's 4 tokens (official 500; 0: its own words)", ge=0, le=100_000
    )
    inversion_lr: float = config_field(1e-3, "textual-inversion AdamW learning rate (official 1e-3)", **LEARNING_RATE)
    seed: int = config_field(0, "seed of the images, the batches, the timesteps and the noise", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)


def fmn_parameters(run: RunContext, group: str) -> list[str]:
    """Names of the denoiser parameters FMN trains: all, or those of the layers where the image reads the text."""
    model = run.denoiser
    if group == "full-weight":
        return [name for name, _ in model.named_parameters()]
    keys = (
        ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out") if run.family.name == "flux" else ("attn2.",)
    )
    return [name for name, _ in model.named_parameters() if any(k in name for k in keys)]


def marked_positions(path: TextPath, prompt: SlottedPrompt, span: range, use_pooler: bool) -> torch.Tensor:
    """(1, L) bool: the concept's token positions ``span``, and the first end-of-text token with ``use_pooler``."""
    mask = torch.zeros(1, prompt.ids.shape[1], dtype=torch.bool, device=prompt.ids.device)
    mask[0, list(span)] = True
    end = path.tokenizer.eos_token_id if path.tokenizer.eos_token_id is not None else path.tokenizer.sep_token_id
    ends = (prompt.ids[0, : prompt.length] == end).nonzero()
    if use_pooler and len(ends):
        mask[0, int(ends[0])] = True
    return mask


def learn_tokens(
    run: RunContext, den: UNetDenoising, path: TextPath, prompt: SlottedPrompt, concept: str, images: Images, config: FMNConfig
) -> torch.Tensor:
    """Textual inversion (official ``train_ti.py``): 4 token vectors, from the concept's own tokens (then
    N(0, 1)), fitted by the denoising loss on the concept's images under the template."""
    words = path.tokenizer(concept, add_special_tokens=False).input_ids[:INVERSION_TOKENS]
    prompt_text = TEMPLATES[config.concept_type].format(concept)
    table = path.table.float()
    generator = run.generator(config.seed + 7)
    extra = torch.randn(INVERSION_TOKENS - len(words), table.shape[1], generator=generator, device="cpu").to(table.device)
    vectors = torch.cat([table[torch.tensor(words, device=table.device)], extra]).requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=config.inversion_lr, weight_decay=0.1)
    rng, noise_gen = random.Random(config.seed + 1), run.generator(config.seed + 1)
    model = run.denoiser
    for _ in run.bar(range(config.inversion_steps), f"FMN inversion of {concept!r}"):
        batch = noised_batch(run, images, config.batch_size, rng, noise_gen, den)
        with run.autocast():
            cond = path.conditioning(prompt, vectors, prompt_text)  # (an encoder the slots miss reads the words)
            cond = den.cat([cond] * config.batch_size) if config.batch_size > 1 else cond
            loss = F.mse_loss(den.predict(model, batch.x_t, batch.t, cond).float(), batch.target.float())
        optimizer.zero_grad()
        (vectors.grad,) = torch.autograd.grad(loss, [vectors])
        optimizer.step()
        with torch.no_grad():  # each token's norm 10 % of the way to 0.4
            norms = vectors.norm(dim=-1, keepdim=True)
            vectors.copy_(vectors / norms * (norms + NORM_PULL * (NORM_TARGET - norms)))
    return vectors.detach()


@register(
    "fmn",
    "FMN, Forget-Me-Not (Zhang et al. 2024): fine-tune so the image stops attending to the concept's tokens",
    FMNConfig,
    families=("sd", "sdxl", "flux"),
)
def erase(run: RunContext, spec: EraseSpec, config: FMNConfig) -> Edit:
    """FMN on ``spec``: for each concept, images drawn by the original model, optionally its 4 inverted tokens,
    then the attention re-steering loss above on the chosen parameters; the concepts take turns step by step."""
    spec.targets_only("FMN re-steers the concept's own attention")
    den, path = denoising(run), TextPath(run.pipe)
    template = TEMPLATES[config.concept_type]
    prompts, masks, images = [], [], []
    for k, concept in enumerate(spec.targets):
        drawn = draw_images(run, [template.format(concept)], config.concept_images, config.guidance, config.sample_steps,
                            config.seed + 10_000 * k, den)  # fmt: skip
        if config.inversion_steps:
            prompt = path.slotted(template.format(concept), INVERSION_TOKENS, replace=concept)
            vectors = learn_tokens(run, den, path, prompt, concept, drawn, config)
            span = range(prompt.slots[0], prompt.slots[-1] + 1)
        else:
            prompt, vectors = path.slotted(template.format(concept), 0), None
            span = run.cache.word_span(template.format(concept), concept)  # the token path's ids, as laid out
        with torch.no_grad():
            prompts.append(path.conditioning(prompt, vectors, template.format(concept)).to(run.dtype))
        masks.append(marked_positions(path, prompt, span, config.use_pooler))
        images.append(drawn)
    model = run.denoiser
    rng, generator = random.Random(config.seed), run.generator(config.seed)
    with fine_tuning(run, fmn_parameters(run, config.parameter_group)) as tuning, probing(model, run.family.name) as probe:

        def loss_at(step: int) -> torch.Tensor:
            k = step % len(spec.targets)
            batch = noised_batch(run, images[k], config.batch_size, rng, generator, den)
            cond = den.cat([prompts[k]] * config.batch_size) if config.batch_size > 1 else prompts[k]
            probe.token_mask = masks[k].expand(config.batch_size, -1)
            probe.reset()
            den.predict(model, batch.x_t, batch.t, cond)
            return torch.sqrt(sum(m.float().square().sum() for m in probe.maps))

        params = list(tuning.params.values())
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        clip = config.max_grad_norm or None
        losses = fit(run, params, loss_at, config.steps, optimizer, "FMN attention re-steering", clip)
        new_values = tuning.values()
    return Edit(new_values, {"config": asdict(config), **loss_record(losses)})
