"""MACE: Mass Concept Erasure in Diffusion Models (Lu et al., CVPR 2024).

Three stages, each on a shared primitive:

1. **Closed-form cross-attention refinement** (eq. 1–2). A concept's information also lives in the
   words around it: the encoder mixes it into every token. For each augmented prompt p(c) and the
   same prompt with the anchor, p(c*), the tokens the two prompts share (the co-existing words,
   [EOS] and padding) are mapped onto their states in p(c*); the concept's own tokens are left
   alone (the official ``find_matching_indices``). With λ pulling towards W₀ and an optional prior
   cache P, W' = (λW₀ + Σ W₀e_g e_fᵀ + s_p W₀P)(λI + Σ e_f e_fᵀ + s_p P)⁻¹.
2. **One LoRA per concept** (eq. 3–5). Rank-r adapters on every ``attn2.to_k``/``to_v`` of the
   refined model, trained to drive to zero the attention that the concept's tokens receive inside
   the concept's segmentation mask, Σ_l ‖A_{t,l} ⊙ M‖, on images the original model generated for the
   concept; t is drawn by concept-focal importance sampling ξ(t).
3. **Closed-form fusion** (eq. 6–7). One weight per layer reproduces every concept's LoRA on that
   concept's prompts while staying near W': W* = (λW' + Σ_i (W'+ΔW_i)E_i + s_p W₀P)(λI + Σ_i E_i + s_p P)⁻¹.

Defaults follow the official object configs (``configs/object/*.yaml``): λ=1e3, rank 1,
lr 1e-5, 50 steps, batch 1, CFIS with t₁=200, t₂=400, γ=0.05, no prior cache (scale 0).

SDXL: the same three stages on ``attn2.to_k/to_v``, which read both encoders' states side by side.
FLUX has no cross-attention; the one Linear whose input is the token states is ``context_embedder``,
so all three stages edit it (the closed forms in the same token space, the LoRA on it), and the
attention loss reads the joint attention of every block, image queries against the concept's text
keys (:class:`~erasekit.primitives.attention.FluxAttentionProbe`); CFIS's window is read as
σ = t/1000. The refinement also maps the pooled vector of every augmented prompt onto its anchor
prompt's (the pooled text embedder): CLIP's pooled vector is its [EOS] state, one of the co-existing
tokens the refinement maps on SD. SD3 takes FLUX's path: its ``context_embedder`` reads one sequence of both
CLIPs' states, then T5's, so the co-existing words are aligned and the concept's tokens masked in each of the
two segments, and the attention loss reads SD3's joint attention, whose image tokens come first
(:class:`~erasekit.primitives.attention.SD3AttentionProbe`).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit, weights_hash
from erasekit.errors import ErasekitError
from erasekit.io import atomic_path
from erasekit.methods.base import register
from erasekit.models.layers import FLUX_POOLED_INPUT, FLUX_TOKEN_INPUT, flux_text_inputs, kv_projections
from erasekit.primitives.attention import probing
from erasekit.primitives.closed_form import TextMoments, edited_weights, fused_weights, text_space_map
from erasekit.primitives.denoising import UNetDenoising, denoising
from erasekit.primitives.diffusion import pipeline_images
from erasekit.primitives.lora_trainer import check_rank, lora_adapter
from erasekit.primitives.prompt_cache import PromptCache
from erasekit.primitives.run import RunContext
from erasekit.primitives.segmenters import (
    BOX_THRESHOLD,
    GROUNDING_MODEL,
    SAM_MODEL,
    TEXT_THRESHOLD,
    Segmenter,
    make_segmenter,
)
from erasekit.primitives.timesteps import TimestepSampler, concept_focal_weights
from erasekit.primitives.training import fit, loss_record
from erasekit.settings import (
    GUIDANCE,
    LEARNING_RATE,
    LORA_RANK,
    RIDGE,
    SAMPLER_STEPS,
    SEEDS,
    WEIGHT,
    check_settings,
    config_field,
)

if TYPE_CHECKING:
    from torch import nn

# Prompt augmentation in the manner of MACE's (one phrasing per line, the concept where {} is).
OBJECT_TEMPLATES = (
    "a photo of {}", "{} in a photo", "an image of {}", "a picture of {}", "a drawing of {}",
    "a rendering of {}", "a snapshot of {}", "a close-up of {}", "{} on a plain background", "a sketch of {}",
    "a painting of {}", "{} captured in an image",
)  # fmt: skip
STYLE_TEMPLATES = (
    "an artwork by {}", "a painting by {}", "a drawing by {}", "an illustration by {}", "art in the style of {}",
    "a picture painted by {}", "a sketch by {}", "a famous piece by {}", "an image in the manner of {}",
    "a work of art by {}", "a canvas by {}", "a study by {}",
)  # fmt: skip


@dataclass
class MACEConfig:
    """Defaults: the official MACE object configs (symbols of the paper in brackets)."""

    lam: float = config_field(
        1e3, "λ: pull of the refinement and the fusion towards the current weights (official lamb 1e3)", **RIDGE
    )
    concept_type: Literal["object", "style"] = config_field(
        "object", "'object' (objects, identities) or 'style': which prompt augmentation"
    )
    templates: tuple[str, ...] = config_field((), "augmented prompts with {} for the concept (default: the concept type's)")
    preserve_scale: float = config_field(
        1.0, "s_p: weight of the preserve concepts' token moments in both closed forms", **WEIGHT
    )
    prior_prompts: str = config_field(
        "", "prior cache P (MACE caches COCO): 'world' (500 world captions that name no target) or a prompt file"
    )
    prior_scale: float = config_field(0.0, "weight of the prior cache (official object configs: 0)", **WEIGHT)
    lora: bool = config_field(True, "train the per-concept LoRAs (False: closed-form refinement only)")
    rank: int = config_field(1, "r: LoRA rank per concept (official 1)", **LORA_RANK)
    lr: float = config_field(1e-5, "LoRA learning rate, AdamW (official 1e-5)", **LEARNING_RATE)
    steps: int = config_field(50, "LoRA gradient steps per concept (official max_train_steps 50)", ge=0, le=100_000)
    batch_size: int = config_field(1, "images per LoRA step (official 1)", ge=1, le=256)
    focal: bool = config_field(True, "concept-focal importance sampling of t (CFIS); False: uniform")
    t1: float = config_field(200.0, "t₁: start of CFIS's high-probability window", ge=0.0, le=10_000.0)
    t2: float = config_field(400.0, "t₂: end of CFIS's high-probability window", ge=0.0, le=10_000.0)
    gamma: float = config_field(0.05, "γ: CFIS temperature", ge=1e-4, le=100.0)  # below it ξ(t) is flat to float64
    # generated in one pipeline call: the batch size of that call
    images_per_concept: int = config_field(8, "images generated for each concept to train its LoRA on", ge=1, le=256)
    # 'auto' or one of primitives.segmenters' SEGMENTERS (tests/test_settings.py holds them equal)
    segmenter: Literal["auto", "world", "none", "grounded-sam"] = config_field(
        "auto",
        "masks M of those images: 'world' (evaluator mask head), 'grounded-sam' (MACE's, for real models), 'none' "
        "(whole image), 'auto' (world on the embedded model, grounded-sam on any other)",
    )
    grounding_model: str = config_field(GROUNDING_MODEL, "Grounded-SAM's GroundingDINO: hub id or directory")
    sam_model: str = config_field(SAM_MODEL, "Grounded-SAM's SAM: hub id or directory")
    # scores lie in [0, 1]; a threshold above 1 keeps no box (tests use 1.01 for "find nothing")
    box_threshold: float = config_field(BOX_THRESHOLD, "GroundingDINO box score threshold", ge=0.0, le=2.0)
    text_threshold: float = config_field(TEXT_THRESHOLD, "GroundingDINO text score threshold", ge=0.0, le=2.0)
    adapter_dir: str = config_field(
        "", "keep each concept's LoRA here; a rerun reuses those made on the same refined base with the same settings"
    )
    fusion: Literal["closed-form", "sum"] = config_field(
        "closed-form", "'closed-form' (eq. 7) or 'sum' (the naive sum of eq. 6, for ablation)"
    )
    sample_steps: int = config_field(25, "sampler steps for the generated training images", **SAMPLER_STEPS)
    guidance: float = config_field(7.5, "guidance scale for the generated training images", **GUIDANCE)
    seed: int = config_field(0, "seed of image generation, timesteps and noise", **SEEDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if any("{}" not in t for t in self.templates):
            raise ErasekitError("each template must contain {} where the concept goes")
        if self.focal and not self.t1 < self.t2:  # CFIS would refuse it only after the images are drawn
            raise ErasekitError(f"CFIS needs t1 < t2, got t1={self.t1}, t2={self.t2}")
        if self.prior_prompts and self.prior_prompts != "world" and not Path(self.prior_prompts).is_file():
            raise ErasekitError(f"prior prompt file {self.prior_prompts} does not exist")

    @property
    def segmenter_options(self) -> dict[str, object]:
        """Grounded-SAM's models and thresholds when it is the segmenter; empty otherwise."""
        if self.segmenter != "grounded-sam":
            return {}
        return {
            "grounding_model": self.grounding_model, "sam_model": self.sam_model,
            "box_threshold": self.box_threshold, "text_threshold": self.text_threshold,
        }  # fmt: skip

    @property
    def lora_settings(self) -> dict[str, object]:
        """What a concept's LoRA depends on besides the refined base and the concept."""
        fields = ("rank", "lr", "steps", "batch_size", "focal", "t1", "t2", "gamma", "images_per_concept", "segmenter",
                  "sample_steps", "guidance", "seed")  # fmt: skip
        settings = {f: getattr(self, f) for f in fields}
        return {**settings, **self.segmenter_options, "templates": list(self.prompt_templates)}

    @property
    def prompt_templates(self) -> tuple[str, ...]:
        """The augmented prompts in use: ``templates``, else the concept type's defaults."""
        return augmented_templates(self.templates, self.concept_type)


def augmented_templates(templates: tuple[str, ...], concept_type: str) -> tuple[str, ...]:
    """The user's templates, else the concept type's default augmentation."""
    return templates or (OBJECT_TEMPLATES if concept_type == "object" else STYLE_TEMPLATES)


def co_existing_pairs(cache: PromptCache, prompt: str, anchor_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """States of the tokens ``prompt`` shares with ``anchor_prompt`` (common prefix, common suffix,
    padding), and the anchor prompt's states at the same words; the differing middle is skipped."""
    mine, theirs = cache.aligned(prompt, anchor_prompt, middle=False)  # SD3: in each of its two segments
    states = cache.states([prompt, anchor_prompt])
    return states[0, mine], states[1, theirs]


def refinement_moments(run: RunContext, spec: EraseSpec, templates: tuple[str, ...]) -> TextMoments:
    """E = Σ e_f e_fᵀ and E* = Σ e_g e_fᵀ over every concept's augmented prompts (eq. 1)."""
    moments = run.moments()
    for target, anchor in zip(spec.targets, spec.anchors, strict=True):
        for template in templates:
            moments.add(*co_existing_pairs(run.cache, template.format(target), template.format(anchor).strip() or " "))
    return moments


def preserve_moments(run: RunContext, spec: EraseSpec, config: MACEConfig) -> TextMoments | None:
    """P over all tokens of the preserve concepts' prompts (weight s_p) and of the prior prompt file."""
    if not (spec.preserve and config.preserve_scale > 0) and not (config.prior_prompts and config.prior_scale > 0):
        return None
    cache = run.cache
    moments = run.moments()
    if spec.preserve and config.preserve_scale > 0:
        prompts = [t.format(p) for p in spec.preserve for t in config.prompt_templates]
        moments.add(cache.states(prompts), weight=config.preserve_scale)
    if config.prior_prompts and config.prior_scale > 0:
        moments.add(cache.states(prior_prompts(config.prior_prompts, spec.targets)), weight=config.prior_scale)
    return moments


def prior_prompts(source: str, targets: tuple[str, ...], count: int = 500, seed: int = 0) -> list[str]:
    """The prior's prompts: world captions (seeded; those naming a target are left out) or a file's lines."""
    if source != "world":
        from erasekit.io import read_user_text

        return [line.strip() for line in read_user_text(source, "prior prompt file").splitlines() if line.strip()]
    from erasekit.world.captions import describe, sample_scene

    rng = np.random.default_rng(seed)
    captions = (describe(sample_scene(rng), rng).caption for _ in range(4 * count))
    kept = [c for c in captions if not any(t.lower() in c.lower() for t in targets)]
    return kept[:count]


def token_layers(run: RunContext) -> dict[str, nn.Linear]:
    """The Linears MACE edits, those that read the token states: every to_k/to_v (SD, SDXL), the context_embedder
    of FLUX and SD3."""
    if run.family.denoiser == "transformer":
        return {FLUX_TOKEN_INPUT: flux_text_inputs(run.denoiser)[0]}
    return kv_projections(run.denoiser)


def pooled_refinement(run: RunContext, spec: EraseSpec, config: MACEConfig) -> dict[str, torch.Tensor]:
    """FLUX's (SD3's) pooled text embedder with every augmented prompt's pooled vector sent to its anchor prompt's
    (the [EOS] state of SD's refinement), the preserve prompts' kept."""
    templates = config.prompt_templates
    pairs = [
        (t.format(c), t.format(a).strip() or " ") for c, a in zip(spec.targets, spec.anchors, strict=True) for t in templates
    ]
    vectors = run.pooled([p for pair in pairs for p in pair])
    erase = run.moments(vectors.shape[-1]).add(vectors[0::2], vectors[1::2])
    preserve = None
    if spec.preserve and config.preserve_scale > 0:
        kept = run.pooled([t.format(p) for p in spec.preserve for t in templates])
        preserve = run.moments(vectors.shape[-1]).add(kept, weight=config.preserve_scale)
    layer = flux_text_inputs(run.denoiser)[1]
    weights = edited_weights({FLUX_POOLED_INPUT: layer}, text_space_map(erase, preserve, config.lam))
    return {f"{name}.weight": w for name, w in weights.items()}


@torch.no_grad()
def concept_images(
    run: RunContext, den: UNetDenoising, prompts: list[str], config: MACEConfig, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Latents x₀ (packed on FLUX) and uint8 images the (original) model generates for ``prompts``, one per prompt."""
    seeds = range(seed, seed + len(prompts))
    latents = pipeline_images(run.pipe, seeds, config.sample_steps, config.guidance, "latent", prompt=prompts, **den.image_size())
    decoded = den.decode(latents)
    images = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return latents, images


@dataclass
class ConceptData:
    """What one concept's LoRA trains on: prompts, their x₀ latents, masks M and token positions S."""

    prompts: list[str]
    latents: torch.Tensor
    masks: torch.Tensor
    token_masks: torch.Tensor
    usable: list[int]


def concept_data(run: RunContext, concept: str, index: int, config: MACEConfig, segmenter: Segmenter) -> ConceptData:
    """Generate the concept's images with the pipeline as it is now, segment them, locate its tokens."""
    cache = run.cache
    templates = config.prompt_templates
    prompts = [templates[k % len(templates)].format(concept) for k in range(config.images_per_concept)]
    latents, images = concept_images(run, denoising(run), prompts, config, seed=config.seed + 1000 * index)
    masks = segmenter(images, concept).to(run.device)
    usable = [i for i in range(len(prompts)) if masks[i].sum() > 0]
    if not usable:
        raise ErasekitError(
            f"the segmenter found no foreground in any of the {len(prompts)} images generated for {concept!r}; "
            "the model may not draw it, or use segmenter=none for concepts without a region (styles)"
        )
    token_masks = torch.zeros((len(prompts), cache.sequence_length), dtype=torch.bool, device=run.device)
    for i, prompt in enumerate(prompts):
        token_masks[i, cache.word_positions(prompt, concept)] = True
    return ConceptData(prompts, latents, masks, token_masks, usable)


def train_concept_lora(
    run: RunContext, data: ConceptData, index: int, config: MACEConfig
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """ΔW of one concept's LoRA on the pipeline's current (refined) weights: min Σ_l ‖A_{t,l} ⊙ M‖ (eq. 3),
    and the loss of every step."""
    model, den = run.denoiser, denoising(run)
    rng = random.Random(config.seed + index)
    states = den.conditioning(data.prompts)
    sampler = TimestepSampler(run.pipe.scheduler.config.num_train_timesteps, config.focal, config.t1, config.t2, config.gamma,
                              config.seed + index)  # fmt: skip
    generator = run.generator(config.seed + index)
    layers = list(token_layers(run))
    with lora_adapter(model, layers, config.rank, seed=config.seed + index) as adapter, probing(model, run.family.name) as probe:
        params = adapter.parameters()

        def attention_loss(_: int) -> torch.Tensor:
            batch = [rng.choice(data.usable) for _ in range(config.batch_size)]
            x0 = data.latents[batch]
            t = den.training_time(sampler(len(batch)).to(run.device))
            noise = run.randn(tuple(x0.shape), generator, x0.dtype)
            probe.reset()
            probe.token_mask, probe.pixel_mask = data.token_masks[batch], data.masks[batch]
            den.predict(model, den.noised(x0, noise, t), t, states[batch])
            return probe.loss()

        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
        losses = fit(run, params, attention_loss, config.steps, optimizer, f"MACE LoRA {index + 1}", max_grad_norm=1.0)
        probe.reset()
        return adapter.deltas(), losses


class AdapterStore:
    """Per-concept LoRA deltas on disk (MACE trains and saves them one by one, then fuses), so that an
    interrupted run resumes, and adapters from another base or other settings are refused, not fused."""

    def __init__(self, directory: Path, base: str, settings: dict[str, object]) -> None:
        self.directory, self.base, self.settings = directory, base, json.dumps(settings, sort_keys=True)

    def path(self, concept: str) -> Path:
        """The file of ``concept``'s LoRA, named by the concept in lower-case letters, digits and underscores."""
        return self.directory / f"{re.sub(r'[^A-Za-z0-9]+', '_', concept).strip('_').lower() or 'concept'}.safetensors"

    def load(self, concept: str, index: int) -> dict[str, torch.Tensor] | None:
        """``concept``'s saved LoRA deltas, None if there are none; an error if they belong to another concept,
        base, settings or list position ``index``."""
        path = self.path(concept)
        if not path.exists():
            return None
        with safe_open(str(path), "pt") as file:
            meta = file.metadata() or {}
            deltas = {name: file.get_tensor(name) for name in file.keys()}
        if meta.get("concept") != concept:
            raise ErasekitError(f"{path} holds the LoRA of {meta.get('concept')!r}, not of {concept!r}")
        if meta.get("base_hash") != self.base:
            raise ErasekitError(
                f"the LoRA of {concept!r} in {path.parent} was trained on a different base (another model, concept list "
                "or refinement setting); fusing it would be wrong. Use another adapter_dir or remove that file"
            )
        if meta.get("settings") != self.settings or meta.get("index") != str(index):
            raise ErasekitError(
                f"the LoRA of {concept!r} in {path.parent} was trained with other settings or at another position in "
                "the concept list; use another adapter_dir or remove that file"
            )
        return deltas

    def losses(self, concept: str) -> dict[str, object] | None:
        """The loss record saved with the concept's LoRA (None for a file from before it was kept)."""
        with safe_open(str(self.path(concept)), "pt") as file:
            record = (file.metadata() or {}).get("losses")
        return json.loads(record) if record else None

    def save(self, concept: str, index: int, deltas: dict[str, torch.Tensor], losses: dict[str, object]) -> None:
        """Write ``concept``'s LoRA deltas atomically, with what :meth:`load` checks and the loss record."""
        meta = {"concept": concept, "index": str(index), "base_hash": self.base, "settings": self.settings,
                "losses": json.dumps(losses)}  # fmt: skip
        with atomic_path(self.path(concept)) as tmp:
            save_file({n: d.contiguous() for n, d in deltas.items()}, str(tmp), metadata=meta)


@register("mace", "MACE (Lu et al. 2024): closed-form refinement, one LoRA per concept, closed-form fusion", MACEConfig,
          families=("sd", "sdxl", "sd3", "flux"))  # fmt: skip
def erase(run: RunContext, spec: EraseSpec, config: MACEConfig) -> Edit:
    """MACE's three stages for ``spec`` (above): closed-form refinement, one LoRA per concept (reused from
    ``adapter_dir`` where saved) and their closed-form fusion; refinement alone when ``lora`` is off."""
    config = replace(config, segmenter=resolved_segmenter(run, config))  # the card records what 'auto' chose
    cache, pipe = run.cache, run.pipe
    projections = token_layers(run)
    if config.lora:  # what stage 2 would refuse only after its images are drawn, refused now
        if run.workers.count > 1 and not config.adapter_dir:
            raise ErasekitError("MACE in several processes shares its LoRAs through a directory: set adapter_dir=DIR")
        check_rank(run.denoiser, list(projections), config.rank)
        if config.focal:
            concept_focal_weights(pipe.scheduler.config.num_train_timesteps, config.t1, config.t2, config.gamma)
    originals = {f"{name}.weight": layer.weight.detach().clone() for name, layer in projections.items()}
    templates = config.prompt_templates
    preserve = preserve_moments(run, spec, config)

    # Stage 1: closed-form refinement of the co-existing words (eq. 2): one text-space map serves all layers.
    text_map = text_space_map(refinement_moments(run, spec, templates), preserve, config.lam)
    refined = {f"{name}.weight": w for name, w in edited_weights(projections, text_map).items()}
    pooled = pooled_refinement(run, spec, config) if run.family.denoiser == "transformer" else {}
    if not config.lora:
        return Edit({**refined, **pooled}, {"config": asdict(config)})

    # Stage 2: one LoRA per concept on the refined model, trained on images of the original model.
    # Under several processes each trains every n-th missing LoRA; they meet in the adapter directory.
    base = weights_hash({**refined, **pooled})
    store = AdapterStore(Path(config.adapter_dir), base, config.lora_settings) if config.adapter_dir else None
    deltas: list[dict[str, torch.Tensor] | None] = [store.load(c, k) if store else None for k, c in enumerate(spec.targets)]
    missing = [k for k, d in enumerate(deltas) if d is None]
    curves: dict[str, dict[str, object]] = {}  # the LoRAs trained in this run (a resumed one's is on its first card)
    if mine := run.workers.share(missing):
        segmenter = make_segmenter(config.segmenter, run.device, **config.segmenter_options)
        data = {k: concept_data(run, spec.targets[k], k, config, segmenter) for k in mine}
        with Edit({**refined, **pooled}).applied(pipe, check_base=False):  # the original weights come back, also on Ctrl-C
            run.denoiser.requires_grad_(False)
            for k in mine:
                deltas[k], losses = train_concept_lora(run, data[k], k, config)
                curves[spec.targets[k]] = loss_record(losses)
                if store:
                    store.save(spec.targets[k], k, deltas[k], curves[spec.targets[k]])
    if run.workers.count > 1:
        run.workers.barrier()
        deltas = [store.load(c, k) for k, c in enumerate(spec.targets)]  # every process's share, with its curve
        curves = {spec.targets[k]: store.losses(spec.targets[k]) for k in missing}

    # Stage 3: fuse the LoRAs in closed form (eq. 7), or add them up (eq. 6 with ω_i = 1, the ablation).
    if config.fusion == "sum":
        fused = {n: w + sum(d[n].to(w.device) for d in deltas).to(w.dtype) for n, w in refined.items()}
    else:
        moments = [run.moments().add(cache.states([t.format(c) for t in templates])).source for c in spec.targets]
        fused = fused_weights(refined, deltas, moments, config.lam, preserve.source if preserve else None, originals)
    return Edit({**fused, **pooled}, {"config": asdict(config), "lora_losses": curves})


def resolved_segmenter(run: RunContext, config: MACEConfig) -> str:
    """The segmenter ``auto`` stands for: the world's mask head on the embedded model, MACE's Grounded-SAM elsewhere."""
    if config.segmenter != "auto":
        return config.segmenter
    return "world" if run.is_world_model else "grounded-sam"
