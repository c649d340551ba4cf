"""Training erasekit-tiny-flux: a FLUX-layout flow transformer on the same world as erasekit-tiny.

``erasekit world train --family flux`` reuses erasekit-tiny's evaluator and VAE (same world, same
decoder, so the two models differ only in their denoiser) and trains a ``FluxTransformer2DModel``
with the rectified-flow objective: x_σ = (1 − σ)·x₀ + σ·ε, the transformer predicts the velocity
ε − x₀, σ drawn logit-normal (SD3's choice) so that the middle of the path, where the picture is
decided, is seen most. Text states come from the pipeline's own ``encode_prompt`` (the pooled path
and the token path, no attention mask, padded to the tokenizer's length), so the model is trained
on exactly what ``FluxPipeline`` feeds it. Checkpoints in the work directory; a rerun resumes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from erasekit.errors import ErasekitError
from erasekit.models import embedded as E
from erasekit.world import vocabulary as V
from erasekit.world.dataset import WorldData, cached_dataset
from erasekit.world.training import DenoiserRun, _log, _save_torch, _to_float, replace_dir, train_denoiser


@dataclass
class FluxTrainConfig:
    """Settings of ``erasekit world train --family flux``: seed, data size, directories, the transformer's
    steps, batch, learning rate, warm-up, EMA, caption dropout, checkpoint interval and time limit."""

    seed: int = 0
    train_images: int = 64_000
    work_dir: Path = Path(".cache/train-flux")
    model_dir: Path = E.EMBEDDED_FLUX_DIR
    steps: int = 6000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    checkpoint_every: int = 200
    minutes: float | None = None  # adds up over resumed runs
    command: str = "erasekit world train --family flux"
    log: list = field(default_factory=list)

    def __post_init__(self) -> None:
        """One error for a setting that would crash the run hours in, or make it meaningless."""
        for name, most in (("train_images", 1_000_000), ("steps", 10_000_000), ("batch", 4096), ("warmup", 10_000_000),
                           ("checkpoint_every", 10_000_000)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ErasekitError(f"flux training setting {name} = {value!r}: expected a whole number from 1 to {most:,}")
        if not isinstance(self.lr, int | float) or not 0 < self.lr <= 1:
            raise ErasekitError(f"flux training setting lr = {self.lr!r}: expected a number above 0 and at most 1")
        if self.batch > self.train_images:
            raise ErasekitError(f"batch {self.batch} must not exceed train_images ({self.train_images})")
        if self.minutes is not None and (not isinstance(self.minutes, int | float) or not 0 < self.minutes < math.inf):
            raise ErasekitError(f"--minutes must be a positive, finite number of minutes, not {self.minutes!r}")


def packed_latents(latents: torch.Tensor) -> torch.Tensor:
    """VAE latents (B, C, H, W) as FLUX's 2×2 patch tokens (B, H/2·W/2, 4C)."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


@torch.no_grad()
def _inputs(cfg: FluxTrainConfig, train: WorldData, pipe: object) -> dict:
    """Cached packed latents, the unique captions' token and pooled states, and each image's caption."""
    path = cfg.work_dir / "flux-inputs.pt"
    if path.exists():
        return torch.load(path)
    vae = pipe.vae
    latents = torch.cat(
        [
            vae.encode(_to_float(train.images[i : i + 512])).latent_dist.mean
            for i in tqdm(range(0, len(train), 512), desc="latents", mininterval=10)
        ]
    )
    latents = packed_latents((latents - vae.config.shift_factor) * vae.config.scaling_factor)
    unique = sorted(set(train.captions) | {""})
    tokens, pooled = [], []
    for i in tqdm(range(0, len(unique), 512), desc="text states", mininterval=10):
        embeds, pooled_embeds, _ = pipe.encode_prompt(unique[i : i + 512], max_sequence_length=E.TOKENIZER_MAX_LENGTH)
        tokens.append(embeds.half())
        pooled.append(pooled_embeds.half())
    index = {c: i for i, c in enumerate(unique)}
    inputs = {
        "latents": latents.half(),
        "tokens": torch.cat(tokens),
        "pooled": torch.cat(pooled),
        "caption_idx": torch.tensor([index[c] for c in train.captions]),
        "empty_idx": index[""],
    }
    _save_torch(inputs, path)
    return inputs


def train_transformer(cfg: FluxTrainConfig, train: WorldData, pipe: object) -> tuple[torch.nn.Module, int, float, list]:
    """Train the transformer (rectified flow, logit-normal σ, caption dropout, EMA) in the embedded models'
    shared loop, resuming from its checkpoint: the EMA transformer, the steps done, the seconds spent and
    the loss curve."""
    from diffusers import FluxPipeline

    data = _inputs(cfg, train, pipe)
    tokens_per_side = math.isqrt(data["latents"].shape[1])
    img_ids = FluxPipeline._prepare_latent_image_ids(1, tokens_per_side, tokens_per_side, "cpu", torch.float32)
    txt_ids = torch.zeros(data["tokens"].shape[1], 3)

    def loss_of(model: torch.nn.Module, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        idx = torch.from_numpy(rng.choice(len(train), cfg.batch, replace=False))
        x0 = data["latents"][idx].float()
        cap = data["caption_idx"][idx].clone()
        cap[torch.rand(len(idx), generator=gen) < cfg.caption_dropout] = data["empty_idx"]
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.sigmoid(torch.randn(len(idx), generator=gen))
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        pred = model(hidden_states=xt, encoder_hidden_states=data["tokens"][cap].float(),
                     pooled_projections=data["pooled"][cap].float(), timestep=sigma, img_ids=img_ids, txt_ids=txt_ids).sample  # fmt: skip
        return F.mse_loss(pred, noise - x0)

    run = DenoiserRun("transformer", cfg.steps, cfg.lr, cfg.warmup, cfg.ema_decay, cfg.checkpoint_every, cfg.minutes,
                      cfg.seed, stream=3)  # fmt: skip
    return train_denoiser(cfg, run, E.new_flux_transformer, loss_of)


def export_flux_pipeline(cfg: FluxTrainConfig, pipe: object, provenance: dict) -> Path:
    """Write a standard FluxPipeline directory, replacing ``cfg.model_dir`` atomically; the text encoders
    are left out (``erasekit setup`` writes them from the installed package), and so is the evaluator:
    the world is the same, and erasekit-tiny's serves both models."""
    target = Path(cfg.model_dir)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    for name in ("text_encoder", "text_encoder_2"):
        shutil.rmtree(tmp / name)
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    replace_dir(tmp, target)
    return target


def train_flux(cfg: FluxTrainConfig) -> Path:
    """Train erasekit-tiny-flux's transformer (resuming from its checkpoint) and export the pipeline."""
    torch.set_num_threads(os.cpu_count() or 1)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    train = cached_dataset(cfg.work_dir, cfg.train_images, cfg.seed)
    _log(cfg, stage="data", train=len(train), seconds=round(time.time() - start))
    pipe = E.flux_pipeline(E.new_flux_transformer())
    transformer, steps, seconds, losses = train_transformer(cfg, train, pipe)
    pipe.transformer = transformer
    history = cfg.work_dir / "log.jsonl"
    provenance = {
        "model": "erasekit-tiny-flux",
        "command": cfg.command,
        "config": {k: v for k, v in asdict(cfg).items() if k != "log"},
        "transformer_steps": steps,
        "transformer_seconds": round(seconds),
        "loss_curve": losses[-20:],
        "log": [json.loads(line) for line in history.read_text().splitlines() if line.strip()],
        "torch": torch.__version__,
        "vae_and_evaluator": "erasekit-tiny's",
        "vocabulary": {"shapes": list(V.SHAPES), "characters": len(V.CHARACTERS), "artists": len(V.ARTISTS)},
    }
    return export_flux_pipeline(cfg, pipe, provenance)
