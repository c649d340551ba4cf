"""Training the embedded model on the world: evaluator, then VAE, then the text-conditioned UNet.

``erasekit world train`` runs the stages in order. Each stage checkpoints into a work directory
(an ignored folder, never committed) and resumes from it, so an interrupted session loses at most
one checkpoint interval. The finished pipeline is written to the model directory atomically with a
``provenance.json`` (seed, steps, time, losses, command).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from erasekit.errors import ErasekitError
from erasekit.models import embedded as E
from erasekit.world import vocabulary as V
from erasekit.world.dataset import WorldData, cached_dataset
from erasekit.world.evaluator import HEADS, WorldEvaluator, predict

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel


@dataclass
class TrainConfig:
    """Settings of ``erasekit world train``: seed, data sizes, directories, each stage's steps, batch and
    learning rate (evaluator, VAE, evaluator adaptation, UNet), and an optional time limit per stage."""

    seed: int = 0
    train_images: int = 64_000
    test_images: int = 4_000
    work_dir: Path = Path(".cache/train")
    model_dir: Path = E.EMBEDDED_DIR
    # evaluator
    evaluator_images: int = 24_000  # the first images of the training set
    evaluator_epochs: int = 3
    evaluator_batch: int = 128
    evaluator_lr: float = 2e-3
    # VAE (L1 + MSE + β·KL)
    vae_steps: int = 600
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl: float = 1e-5
    # evaluator adaptation: generated images all pass through the VAE decoder, so the evaluator also
    # learns from decoded renders (true labels), keeping its accuracy on clean renders
    adapt_images: int = 8_000
    adapt_epochs: int = 2
    adapt_lr: float = 5e-4
    # UNet (recipe of shared/embedded-model-recipe.md)
    unet_steps: int = 3400
    unet_batch: int = 64
    unet_lr: float = 1.5e-3
    unet_warmup: int = 200
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    checkpoint_every: int = 200
    # Each stage's training loop (evaluator, VAE, evaluator adaptation, UNet) stops after this many minutes
    # and the run goes on to export; the UNet's minutes add up over resumed runs, the others' count per run.
    # The committed model's `--minutes 60` never cut an earlier stage (the longest took 11 minutes).
    unet_minutes: float | None = None
    command: str = "erasekit world train"
    log: list = field(default_factory=list)

    def __post_init__(self) -> None:
        """One error for a setting that would crash a stage hours in, or make it meaningless."""
        counts = {  # name: (least, most); the most are typo guards far above the recipe
            "train_images": (1, 1_000_000), "test_images": (1, 1_000_000), "evaluator_images": (1, 1_000_000),
            "evaluator_epochs": (1, 1000), "evaluator_batch": (1, 4096), "vae_steps": (1, 10_000_000), "vae_batch": (1, 4096),
            "adapt_images": (1, 1_000_000), "adapt_epochs": (1, 1000), "unet_steps": (1, 10_000_000), "unet_batch": (1, 4096),
            "unet_warmup": (1, 10_000_000), "checkpoint_every": (1, 10_000_000), "seed": (0, 2**32 - 1),
        }  # fmt: skip
        for name, (least, most) in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
                raise ErasekitError(
                    f"world training setting {name} = {value!r}: expected a whole number from {least:,} to {most:,}"
                )
        rates = {"evaluator_lr": (0, 1), "vae_lr": (0, 1), "adapt_lr": (0, 1), "unet_lr": (0, 1), "min_snr_gamma": (0, 1e6)}
        for name, (above, most) in rates.items():
            value = getattr(self, name)
            if not isinstance(value, int | float) or not above < value <= most:  # NaN fails the comparison
                raise ErasekitError(
                    f"world training setting {name} = {value!r}: expected a number above {above} and at most {most}"
                )
        for name, low, high in (("vae_kl", 0.0, 1e6), ("ema_decay", 0.0, 0.999999), ("caption_dropout", 0.0, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not low <= value <= high:
                raise ErasekitError(f"world training setting {name} = {value!r}: expected a number from {low} to {high}")
        minutes = self.unet_minutes
        if minutes is not None and (not isinstance(minutes, int | float) or not 0 < minutes < math.inf):
            raise ErasekitError(f"--minutes (unet_minutes) must be a positive, finite number of minutes, not {minutes!r}")
        # a stage with fewer images than its batch would have no step (and the evaluator's schedule none at all)
        if self.evaluator_batch > min(self.evaluator_images, self.train_images, 2 * self.adapt_images):
            raise ErasekitError(
                f"evaluator_batch {self.evaluator_batch} is more than the evaluator's images or the adaptation's (2 × adapt_images)"
            )
        if max(self.vae_batch, self.unet_batch) > self.train_images:
            raise ErasekitError(f"vae_batch and unet_batch must not exceed train_images ({self.train_images})")


def _out_of_time(cfg: TrainConfig, start: float) -> bool:
    """Whether a stage that started at ``start`` has used its minutes (``cfg.unet_minutes``, if any)."""
    return cfg.unet_minutes is not None and time.time() - start > cfg.unet_minutes * 60


class WorkDir(Protocol):
    """What a training stage logs and checkpoints into: either embedded model's settings (its work
    directory and the log the run keeps)."""

    work_dir: Path
    log: list


def _log(cfg: WorkDir, **record: object) -> None:
    """Print a stage record and append it to the work directory's log, which survives resumed runs."""
    record["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
    cfg.log.append(record)
    line = json.dumps(record, default=str)
    print(line, flush=True)
    with open(cfg.work_dir / "log.jsonl", "a") as f:
        f.write(line + "\n")


def _history(cfg: TrainConfig) -> list[dict]:
    path = cfg.work_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else list(cfg.log)


def _save_torch(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) → float (n, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --- evaluator --------------------------------------------------------------------------------
def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise, colour and shift: generated images are softer and noisier than rendered ones."""
    b = x.shape[0]
    sigma = torch.rand(b, generator=gen) * 1.2
    blurred = torch.stack([_gaussian_blur(img, float(s)) for img, s in zip(x, sigma, strict=True)])
    x = blurred * (1 + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.2)
    x = x + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2
    x = x + torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.08
    shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3)).clamp(0, 1)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return img
    radius = 2
    k = torch.exp(-(torch.arange(-radius, radius + 1).float() ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(img)
    c = img.shape[0]
    img = F.conv2d(F.pad(img[None], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return img[0]


def _targets(data: WorldData, idx: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "shape": torch.from_numpy(data.shape[idx]),
        "artist": torch.from_numpy(data.artist[idx]),
        "character": torch.from_numpy(data.character[idx]),
        "flames": torch.from_numpy(data.flames[idx]),
        "mask": torch.from_numpy(data.masks[idx]).float(),
    }


def evaluator_accuracy(model: WorldEvaluator, images: np.ndarray, data: WorldData) -> dict[str, float]:
    """Held-out accuracy per head (and mask IoU) of ``model`` on ``images`` labelled by ``data``."""
    pred = predict(model, images)
    acc = {head: float((pred.probs[head].argmax(1) == getattr(data, head)).mean()) for head in HEADS}
    with torch.no_grad():
        masks = torch.cat([model(torch.from_numpy(images[i : i + 256]))["mask"] for i in range(0, len(images), 256)])
    inter = ((masks > 0) & torch.from_numpy(data.masks)).sum().item()
    union = ((masks > 0) | torch.from_numpy(data.masks)).sum().item()
    acc["mask_iou"] = inter / max(union, 1)
    return acc


def _evaluator_step(
    model: WorldEvaluator,
    x: torch.Tensor,
    targets: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
) -> torch.Tensor:
    """One optimiser step on the four classification heads and the mask head; returns the loss."""
    out = model(x)
    loss = sum(F.cross_entropy(out[h], targets[h]) for h in HEADS) + F.binary_cross_entropy_with_logits(
        out["mask"], targets["mask"]
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss


def train_evaluator(cfg: TrainConfig, train: WorldData, test: WorldData) -> WorldEvaluator:
    """Train the world evaluator on the first training images (or load its finished checkpoint), save it
    into the model directory and log its held-out accuracy."""
    out_dir = cfg.model_dir / E.EVALUATOR_SUBDIR
    ckpt = cfg.work_dir / "evaluator.pt"
    model = WorldEvaluator()
    if ckpt.exists() and torch.load(ckpt)["done"]:
        model.load_state_dict(torch.load(ckpt)["model"])
        return model.eval()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n_images = min(cfg.evaluator_images, len(train))
    steps_per_epoch = n_images // cfg.evaluator_batch
    total = steps_per_epoch * cfg.evaluator_epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.evaluator_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.evaluator_lr, total_steps=total, pct_start=0.1)
    start = time.time()
    model.train()
    bar = tqdm(total=total, desc="evaluator", mininterval=10)
    cut = False
    for epoch in range(cfg.evaluator_epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n_images)
        for step in range(steps_per_epoch):
            if cut := _out_of_time(cfg, start):
                break
            idx = np.sort(order[step * cfg.evaluator_batch : (step + 1) * cfg.evaluator_batch])
            loss = _evaluator_step(
                model, _augment(_to_float(train.images[idx]).add(1).div(2), gen), _targets(train, idx), opt, sched
            )
            bar.update()
            if step % 100 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if cut:
            break
    bar.close()
    model.eval()
    acc = evaluator_accuracy(model, test.images, test)
    _log(
        cfg, stage="evaluator", seconds=round(time.time() - start), held_out=acc, **({"stopped_at_minutes": True} if cut else {})
    )
    model.save(out_dir)
    # a stage cut short by the minutes is not done: a later run trains it again, whole
    _save_torch({"model": model.state_dict(), "done": not cut, "held_out": acc}, ckpt)
    return model


# --- VAE --------------------------------------------------------------------------------------
def train_vae(cfg: TrainConfig, train: WorldData, test: WorldData, evaluator: WorldEvaluator) -> AutoencoderKL:
    """Train the VAE (L1 + MSE + β·KL, cosine learning rate), resuming from its checkpoint; then set its
    scaling factor for unit-variance latents and log the reconstruction check."""
    ckpt = cfg.work_dir / "vae.pt"
    vae = E.new_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    if step < cfg.vae_steps:
        torch.manual_seed(cfg.seed + step)
        gen = np.random.default_rng([cfg.seed, 1, step])
        start = time.time()
        vae.train()
        bar = tqdm(total=cfg.vae_steps, initial=step, desc="vae", mininterval=10)
        loss = None
        while step < cfg.vae_steps:
            if _out_of_time(cfg, start):  # the checkpoint below keeps the step: a later run goes on from it
                _save_torch({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
                break
            lr = cfg.vae_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = np.sort(gen.choice(len(train), cfg.vae_batch, replace=False))
            x = _to_float(train.images[idx])
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
            loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.vae_kl * posterior.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.vae_steps:
                _save_torch({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
        bar.close()
        _log(
            cfg,
            stage="vae",
            steps=step,
            seconds=round(time.time() - start),
            loss=round(loss.item(), 5) if loss is not None else None,
        )
    vae.eval()
    # scaling_factor makes the latents unit-variance, as SD's 0.18215 does for its VAE.
    with torch.no_grad():
        lat = torch.cat([vae.encode(_to_float(train.images[i : i + 256])).latent_dist.mean for i in range(0, 2048, 256)])
        vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    _log(cfg, stage="vae-check", **reconstruction_check(vae, test, evaluator))
    return vae


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 images through the VAE (posterior mean) and back."""
    out = [vae.decode(vae.encode(_to_float(images[i : i + batch])).latent_dist.mean).sample for i in range(0, len(images), batch)]
    return torch.cat(out).add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def reconstruction_check(vae: AutoencoderKL, test: WorldData, evaluator: WorldEvaluator) -> dict:
    """PSNR of the VAE's reconstructions and the evaluator's accuracy on them, per head and per artist."""
    recon_u8 = reconstruct(vae, test.images)
    mse = float(((recon_u8.astype(np.float32) - test.images.astype(np.float32)) ** 2).mean())
    return {
        "psnr_db": round(10 * math.log10(255**2 / mse), 2),
        "evaluator_on_reconstructions": evaluator_accuracy(evaluator, recon_u8, test),
        "artist_on_reconstructions": per_artist_accuracy(evaluator, recon_u8, test),
    }


def per_artist_accuracy(evaluator: WorldEvaluator, images: np.ndarray, data: WorldData) -> dict[str, float]:
    """The evaluator's artist accuracy on ``images``, per artist that ``data`` labels among them."""
    pred = predict(evaluator, images).probs["artist"].argmax(1)
    present = [a for a in range(len(V.ARTISTS)) if (data.artist == a).any()]
    return {V.ARTIST_LABELS[a]: round(float((pred[data.artist == a] == a).mean()), 4) for a in present}


def adapt_evaluator(
    cfg: TrainConfig, train: WorldData, test: WorldData, evaluator: WorldEvaluator, vae: AutoencoderKL
) -> WorldEvaluator:
    """Fine-tune the evaluator on renders and their VAE reconstructions (true labels for both).

    The model's images all pass through its VAE decoder, which renders fine textures (dots, hatching)
    its own way; the evaluator must read that rendering as well as the clean one. Both held-out
    accuracies are logged.
    """
    ckpt = cfg.work_dir / "evaluator-adapted.pt"
    if ckpt.exists():
        evaluator.load_state_dict(torch.load(ckpt)["model"])
        return evaluator.eval()
    start = time.time()
    n = min(cfg.adapt_images, len(train))
    idx = np.arange(n)
    images = np.concatenate([train.images[:n], reconstruct(vae, train.images[:n])])
    order_labels = np.concatenate([idx, idx])
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    steps_per_epoch = len(images) // cfg.evaluator_batch
    total = steps_per_epoch * cfg.adapt_epochs
    opt = torch.optim.AdamW(evaluator.parameters(), lr=cfg.adapt_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    evaluator.train()
    bar = tqdm(total=total, desc="evaluator on decoded images", mininterval=10)
    cut = False
    for epoch in range(cfg.adapt_epochs):
        perm = np.random.default_rng([cfg.seed, 4, epoch]).permutation(len(images))
        for step in range(steps_per_epoch):
            if cut := _out_of_time(cfg, start):
                break
            pick = perm[step * cfg.evaluator_batch : (step + 1) * cfg.evaluator_batch]
            x = _augment(torch.from_numpy(images[pick]).permute(0, 3, 1, 2).float() / 255.0, gen)
            _evaluator_step(evaluator, x, _targets(train, order_labels[pick]), opt, sched)
            bar.update()
        if cut:
            break
    bar.close()
    evaluator.eval()
    recon = reconstruct(vae, test.images)
    _log(
        cfg,
        stage="evaluator-adapt",
        seconds=round(time.time() - start),
        held_out=evaluator_accuracy(evaluator, test.images, test),
        held_out_reconstructions=evaluator_accuracy(evaluator, recon, test),
        artist_on_reconstructions=per_artist_accuracy(evaluator, recon, test),
        **({"stopped_at_minutes": True} if cut else {}),
    )
    evaluator.save(cfg.model_dir / E.EVALUATOR_SUBDIR)
    if not cut:  # its checkpoint marks it done; one cut short by the minutes is adapted again by a later run
        _save_torch({"model": evaluator.state_dict()}, ckpt)
    return evaluator


# --- UNet -------------------------------------------------------------------------------------
@torch.no_grad()
def encode_captions(captions: list[str], batch: int = 512) -> tuple[list[str], torch.Tensor]:
    """Token states (fp16) of the unique captions, in the same padding as the pipeline uses."""
    tokenizer, encoder = E.load_tokenizer(), E.load_text_encoder()
    unique = sorted(set(captions) | {""})
    states = []
    for i in tqdm(range(0, len(unique), batch), desc="text states", mininterval=10):
        tok = tokenizer(
            unique[i : i + batch], padding="max_length", max_length=E.TOKENIZER_MAX_LENGTH, truncation=True, return_tensors="pt"
        )
        states.append(encoder(tok.input_ids, attention_mask=tok.attention_mask)[0].half())
    return unique, torch.cat(states)


def _unet_inputs(cfg: TrainConfig, train: WorldData, vae: AutoencoderKL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Cached latents (scaled), text states and each image's caption index."""
    path = cfg.work_dir / "unet-inputs.pt"
    if path.exists():
        z = torch.load(path)
        return z["latents"], z["states"], z["caption_idx"], z["empty_idx"]
    with torch.no_grad():
        latents = (
            torch.cat(
                [
                    vae.encode(_to_float(train.images[i : i + 512])).latent_dist.mean
                    for i in tqdm(range(0, len(train), 512), desc="latents", mininterval=10)
                ]
            )
            * vae.config.scaling_factor
        )
    unique, states = encode_captions(train.captions)
    index = {c: i for i, c in enumerate(unique)}
    caption_idx = torch.tensor([index[c] for c in train.captions])
    z = {"latents": latents.half(), "states": states, "caption_idx": caption_idx, "empty_idx": index[""]}
    _save_torch(z, path)
    return z["latents"], z["states"], z["caption_idx"], z["empty_idx"]


@dataclass(frozen=True)
class DenoiserRun:
    """How an embedded model's denoiser trains: its name (the progress bar, the checkpoint and the log
    stage), steps, learning rate with its warm-up, EMA decay, checkpoint interval, minutes (summed over
    resumed runs), and the seed with the random stream of its batch draws."""

    name: str
    steps: int
    lr: float
    warmup: int
    ema_decay: float
    checkpoint_every: int
    minutes: float | None
    seed: int
    stream: int


# (model, batch-index generator, torch generator) -> one batch's loss; its draws come in that order
DenoiserLoss = Callable[[torch.nn.Module, np.random.Generator, torch.Generator], torch.Tensor]


def train_denoiser(
    cfg: WorkDir, run: DenoiserRun, new_model: Callable[[], torch.nn.Module], loss_of: DenoiserLoss
) -> tuple[torch.nn.Module, int, float, list]:
    """The training loop both embedded models share: AdamW with warm-up and a cosine to 10 %, gradient
    clipping, an EMA copy, the loss curve every 50 steps, a checkpoint every ``run.checkpoint_every``
    steps in ``cfg.work_dir`` that a rerun resumes from (the random streams restarted at its step).
    Returns the EMA model, the steps done, the seconds spent over every run and the loss curve."""
    model, ema = new_model(), new_model()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=run.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ckpt = cfg.work_dir / f"{run.name}.pt"
    step, elapsed, losses = 0, 0.0, []
    if ckpt.exists():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed, losses = state["step"], state["elapsed"], state["losses"]
    gen = torch.Generator().manual_seed(run.seed * 1000 + step)
    rng = np.random.default_rng([run.seed, run.stream, step])
    model.train()
    t0 = time.time() - elapsed  # the time of earlier runs counts against the minutes too

    def save(seconds: float) -> None:
        _save_torch({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                     "elapsed": seconds, "losses": losses}, ckpt)  # fmt: skip

    bar = tqdm(total=run.steps, initial=step, desc=run.name, mininterval=15)
    running = []
    while step < run.steps:
        if run.minutes is not None and time.time() - t0 > run.minutes * 60:
            break
        warm = min(1.0, (step + 1) / run.warmup)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / run.steps))
        for g in opt.param_groups:
            g["lr"] = run.lr * warm * cosine
        loss = loss_of(model, rng, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema_update(ema, model, step, run.ema_decay)
        running.append(loss.item())
        bar.update()
        if step % 50 == 0:
            losses.append((step, float(np.mean(running))))
            bar.set_postfix(loss=f"{np.mean(running):.4f}")
            running = []
        if step % run.checkpoint_every == 0:
            save(time.time() - t0)
    bar.close()
    elapsed = time.time() - t0
    save(elapsed)
    _log(cfg, stage=run.name, steps=step, seconds=round(elapsed), final_loss=losses[-1][1] if losses else None)
    return ema.eval(), step, elapsed, losses


def train_unet(cfg: TrainConfig, train: WorldData, vae: AutoencoderKL) -> tuple[UNet2DConditionModel, int, float, list]:
    """Train the text-conditioned UNet (min-SNR-weighted ε loss, caption dropout, EMA), resuming from its
    checkpoint: the EMA UNet, the steps done, the seconds spent and the loss curve."""
    latents, states, caption_idx, empty_idx = _unet_inputs(cfg, train, vae)
    noise_sched = E.train_scheduler()
    alphas_cumprod = noise_sched.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)

    def loss_of(unet: torch.nn.Module, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        idx = torch.from_numpy(rng.choice(len(train), cfg.unet_batch, replace=False))
        x0 = latents[idx].float()
        cap = caption_idx[idx].clone()
        cap[torch.rand(len(idx), generator=gen) < cfg.caption_dropout] = empty_idx
        cond = states[cap].float()
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=cond).sample  # fp32: bf16 is 15x slower without avx512_bf16
        # min-SNR-γ weighting for ε-prediction (Hang et al. 2023): w = min(SNR, γ) / SNR
        weight = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]
        return (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()

    run = DenoiserRun("unet", cfg.unet_steps, cfg.unet_lr, cfg.unet_warmup, cfg.ema_decay, cfg.checkpoint_every,
                      cfg.unet_minutes, cfg.seed, stream=2)  # fmt: skip
    return train_denoiser(cfg, run, E.new_unet, loss_of)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """Move the EMA copy towards ``model`` after optimiser step ``step``, the decay warming up to ``decay``."""
    decay = min(decay, (1 + step) / (10 + step))
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p, 1 - decay)


# --- assembling the pipeline ------------------------------------------------------------------
def export_pipeline(cfg: TrainConfig, unet: UNet2DConditionModel, vae: AutoencoderKL, provenance: dict) -> Path:
    """Write a standard StableDiffusionPipeline directory, replacing ``cfg.model_dir`` atomically."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=E.load_text_encoder(),
        tokenizer=E.load_tokenizer(),
        unet=unet,
        scheduler=E.sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    target = Path(cfg.model_dir)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(tmp / "text_encoder")  # written from the installed package by `erasekit setup`
    if (target / E.EVALUATOR_SUBDIR).exists():
        shutil.copytree(target / E.EVALUATOR_SUBDIR, tmp / E.EVALUATOR_SUBDIR)
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    replace_dir(tmp, target)
    return target


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished directory ``tmp`` in place of ``target``, the old one out of the way first."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def train_all(cfg: TrainConfig) -> Path:
    """Run every stage (each resumes from its checkpoint) and export the pipeline."""
    torch.set_num_threads(os.cpu_count() or 1)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    train = cached_dataset(cfg.work_dir, cfg.train_images, cfg.seed)
    test = cached_dataset(cfg.work_dir, cfg.test_images, cfg.seed + 1000)
    _log(cfg, stage="data", train=len(train), test=len(test), seconds=round(time.time() - start))
    evaluator = train_evaluator(cfg, train, test)
    vae = train_vae(cfg, train, test, evaluator)
    evaluator = adapt_evaluator(cfg, train, test, evaluator, vae)
    unet, steps, seconds, losses = train_unet(cfg, train, vae)
    provenance = {
        "model": "erasekit-tiny",
        "command": cfg.command,
        "config": {k: v for k, v in asdict(cfg).items() if k != "log"},
        "unet_steps": steps,
        "unet_seconds": round(seconds),
        "unet_loss_curve": losses[-20:],
        "log": _history(cfg),
        "torch": torch.__version__,
        "vocabulary": {"shapes": list(V.SHAPES), "characters": len(V.CHARACTERS), "artists": len(V.ARTISTS)},
    }
    return export_pipeline(cfg, unet, vae, provenance)
