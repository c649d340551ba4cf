"""A diffusion classifier as a judge: the original model's own denoising error decides.

Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier" (ICCV 2023), eq. 3 and
Algorithm 1: with x₀ the image's latent and a fixed set of trials (t_i, ε_i), shared by every
candidate prompt c so that only c differs,

    p(c | x) = exp(−E_i ‖ε_i − ε_θ(x_{t_i}, t_i, c)‖²) / Σ_c' exp(−E_i ‖ε_i − ε_θ(x_{t_i}, t_i, c')‖²)

and the label is the c of least error. The trials' timesteps are evenly spaced over the training
schedule (the paper's choice), their noise drawn from a seed; ‖·‖² sums over the latent. It needs
no weights beyond the model's, so it judges any SD model offline — and, with the embedded model,
it can be checked against the world's ground truth. Use the *original* model: an erased model's
error no longer tells what the image shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from erasekit.judges.base import Reading
from erasekit.primitives.diffusion import predict_noise
from erasekit.primitives.run import RunContext

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

DEFAULT_TEMPLATE = "a photo of {}"


class DiffusionClassifier:
    """Zero-shot classification over ``heads`` by denoising error under each label's prompt."""

    name = "diffusion"

    def __init__(
        self,
        pipe: DiffusionPipeline,
        heads: dict[str, tuple[str, ...]],
        template: str | Callable[[str], str] = DEFAULT_TEMPLATE,
        trials: int = 16,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        self.run = RunContext(pipe, progress=False)
        self.heads = dict(heads)
        self.prompt = template.format if isinstance(template, str) else template
        self.template = template if isinstance(template, str) else getattr(template, "__name__", "callable")
        self.trials, self.seed, self.batch_size = trials, seed, batch_size
        scheduler = pipe.scheduler
        total = scheduler.config.num_train_timesteps
        # evenly spaced over the schedule, centred in each stride (the paper's uniform t)
        self.timesteps = torch.tensor([int((i + 0.5) * total / trials) for i in range(trials)], device=self.run.device)
        self.alphas = scheduler.alphas_cumprod.to(self.run.device, torch.float32)[self.timesteps]
        self.v_prediction = scheduler.config.get("prediction_type", "epsilon") == "v_prediction"

    def settings(self) -> dict:
        """Judge name, template, trials, seed and heads, for the record."""
        return {"judge": self.name, "template": self.template, "trials": self.trials, "seed": self.seed,
                "heads": {k: list(v) for k, v in self.heads.items()}}  # fmt: skip

    @torch.no_grad()
    def latents(self, images: np.ndarray) -> torch.Tensor:
        """x₀ of uint8 (n, H, W, 3) images: the VAE's posterior mean, scaled, at the UNet's native size."""
        vae, run = self.run.pipe.vae, self.run
        x = torch.from_numpy(np.ascontiguousarray(images)).to(run.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        side = self.run.unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
        if x.shape[-1] != side or x.shape[-2] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        return vae.encode(x.to(vae.dtype)).latent_dist.mean.float() * vae.config.scaling_factor

    def errors(self, images: np.ndarray, labels: list[str]) -> np.ndarray:
        """(n, len(labels)) mean denoising error of each image under each label's prompt."""
        return self.prompt_errors(images, [self.prompt(label) for label in labels])

    @torch.no_grad()
    def prompt_errors(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """(n, len(prompts)) mean denoising error of each image under each prompt."""
        run, labels = self.run, prompts
        states = run.states(prompts)  # (k, L, d)
        x0 = self.latents(images)
        noise = run.randn((self.trials, *x0.shape[1:]), run.generator(self.seed), torch.float32)
        a = self.alphas.view(-1, 1, 1, 1)
        out = np.zeros((len(images), len(labels)))
        pairs = [(i, j) for i in range(self.trials) for j in range(len(labels))]  # every trial under every label
        for n in range(len(images)):
            x_t = a.sqrt() * x0[n] + (1 - a).sqrt() * noise  # (trials, C, H, W): the same for every label
            target = a.sqrt() * noise - (1 - a).sqrt() * x0[n] if self.v_prediction else noise
            total = torch.zeros(len(labels), device=run.device)
            for start in range(0, len(pairs), self.batch_size):
                trial, label = (
                    torch.tensor(v, device=run.device) for v in zip(*pairs[start : start + self.batch_size], strict=True)
                )
                eps = predict_noise(run.unet, x_t[trial].to(run.dtype), self.timesteps[trial], states[label]).float()
                total.index_add_(0, label, ((eps - target[trial]) ** 2).flatten(1).sum(1))
            out[n] = (total / self.trials).cpu().numpy()
        return out

    def read(self, images: np.ndarray) -> Reading:
        """Per head, the softmax of minus each label's mean denoising error (p(c | x) above); no features."""
        probs = {head: _softmax(-self.errors(images, list(labels))) for head, labels in self.heads.items()}
        return Reading(self.heads, probs)

    def present(self, images: np.ndarray, concept: str, alternatives: tuple[str, ...] = ()) -> np.ndarray:
        """Least error under ``concept`` among it, ``alternatives`` and the empty prompt (the unconditional
        prediction: "nothing in particular", so an erased concept's image need not look like an alternative)."""
        candidates = list(dict.fromkeys((concept, *alternatives)))
        prompts = [*(self.prompt(c) for c in candidates), ""]
        return self.prompt_errors(images, prompts).argmin(1) == 0


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)
