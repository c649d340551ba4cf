"""The run context every method receives: pipeline, device, dtype, prompt cache and progress.

Device and dtype are properties of the run, not of each call site: a method asks the context where
its tensors live (``run.device``), which precision the frozen model computes in (``run.dtype``),
where a float64 closed-form solve runs (``run.solve_device``: the model's device, except MPS,
which has no float64) and how to report progress (``run.bar``). Random draws come from CPU
generators seeded by the method's config (``run.generator``) and are moved to the device, so one
seed gives the same edit on CPU, CUDA and MPS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import torch
from tqdm.auto import tqdm

from erasekit.errors import ErasekitError
from erasekit.models.embedded import is_world_model
from erasekit.models.families import Family, denoiser, pipeline_family, sequence_length
from erasekit.primitives.closed_form import TextMoments
from erasekit.primitives.prompt_cache import PromptCache, family_cache
from erasekit.primitives.workers import Workers

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

T = TypeVar("T")
HALF_DTYPES = (torch.float16, torch.bfloat16)
# (description, step, total) after every step of a method's loops: for GUIs and notebooks that draw their own bars
ProgressCallback = Callable[[str, int, int], None]


class ProgressBar(tqdm):
    """tqdm that also calls a :data:`ProgressCallback` after each step."""

    def __init__(
        self, iterable: Iterable[T] | None, desc: str, disable: bool, callback: ProgressCallback | None, total: int | None = None
    ) -> None:
        self.label, self.callback, self.done = desc, callback, 0
        super().__init__(iterable, desc=desc, disable=disable, total=total)

    def update(self, n: float | None = 1) -> bool | None:
        """Advance by ``n`` (a bar driven by hand, see :meth:`RunContext.counter`), telling the callback."""
        shown = super().update(n)
        self.done += int(n or 0)  # tqdm's own count stands still while the bar is off
        if self.callback is not None and n:
            self.callback(self.label, self.done, self.total or 0)
        return shown

    def __iter__(self) -> Iterator[T]:
        for step, item in enumerate(super().__iter__()):
            yield item
            if self.callback is not None:
                self.callback(self.label, step + 1, self.total or 0)


@dataclass
class RunContext:
    """One erasure run: the pipeline and where and how its tensors are computed."""

    pipe: DiffusionPipeline
    progress: bool = True
    callback: ProgressCallback | None = None
    workers: Workers = field(default_factory=Workers)  # the processes sharing the run (MACE's LoRAs)
    cache: PromptCache = field(init=False)  # the text states the text-reading layers see (FLUX: the token path)
    family: Family = field(init=False)
    device: torch.device = field(init=False)
    dtype: torch.dtype = field(init=False)

    def __post_init__(self) -> None:
        self.family = pipeline_family(self.pipe)
        name, pipe = self.family.name, self.pipe
        if name == "flux":  # the token path (T5) is what the transformer's text stream reads
            text_dim = pipe.text_encoder_2.config.hidden_size  # (T5's d_model goes by this name too)
        elif name == "sd3":  # both CLIPs padded to T5's width, then T5, in one sequence
            text_dim = pipe.text_encoder_3.config.d_model
        else:  # SDXL: both encoders' states side by side, as its pipeline concatenates them
            text_dim = pipe.text_encoder.config.hidden_size + (pipe.text_encoder_2.config.hidden_size if name == "sdxl" else 0)
        if self.family.denoiser == "transformer":
            reads, where = pipe.transformer.config.joint_attention_dim, "transformer's context_embedder"
        else:
            reads, where = pipe.unet.config.cross_attention_dim, "UNet's cross-attention"
        if text_dim != reads:
            raise ErasekitError(
                f"this pipeline's text encoder gives {text_dim}-d states but its {where} reads {reads}-d ones: "
                "its text encoder does not belong to its denoiser"
            )
        self.cache = family_cache(pipe)
        # fixed at the start: training upcasts some parameters, which would change what the denoiser reports
        model = denoiser(self.pipe)
        self.device, self.dtype = model.device, model.dtype

    @property
    def unet(self) -> torch.nn.Module:
        """The pipeline's UNet."""
        return self.pipe.unet

    @property
    def denoiser(self) -> torch.nn.Module:
        """The pipeline's denoiser: its UNet, or its transformer (FLUX)."""
        return denoiser(self.pipe)

    @property
    def solve_device(self) -> torch.device:
        """Where float64 closed-form solves run: the model's device, or the CPU for MPS (no float64 there)."""
        return torch.device("cpu") if self.device.type == "mps" else self.device

    @property
    def is_world_model(self) -> bool:
        """Whether the pipeline is the embedded world model (its evaluator and segmenter apply)."""
        return is_world_model(self.pipe)

    @staticmethod
    def generator(seed: int) -> torch.Generator:
        """A CPU generator: draws are made on the CPU and moved, so a seed means the same on every device."""
        return torch.Generator(device="cpu").manual_seed(seed)

    def randn(self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Standard normal noise drawn from ``generator`` (CPU) and placed on the run's device in ``dtype``."""
        noise = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32)
        return noise.to(self.device, dtype or self.dtype)

    def autocast(self) -> AbstractContextManager:
        """Half-precision autocast on the run's device when the model is fp16/bf16: trained parameters
        stay float32 (see :mod:`erasekit.primitives.training`) while the frozen ones compute in half."""
        if self.dtype not in HALF_DTYPES:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def bar(self, iterable: Iterable[T], desc: str) -> ProgressBar:
        """``iterable`` with a progress bar (off when ``progress`` is False) and the callback after each step."""
        return ProgressBar(iterable, desc=desc, disable=not self.progress, callback=self.callback)

    def counter(self, total: int, desc: str) -> ProgressBar:
        """A bar advanced by hand (``.update(n)``, then ``.close()``), for work that is not one loop."""
        return ProgressBar(None, desc=desc, disable=not self.progress, callback=self.callback, total=total)

    def moments(self, dim: int | None = None) -> TextMoments:
        """Empty text-space moments (d×d, float64) where this run's closed forms are solved; d is the token
        states' width unless ``dim`` says otherwise (FLUX's pooled path)."""
        return TextMoments.zeros(dim or self.cache.width, self.solve_device)

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> torch.Tensor:
        """(n, p) pooled text vectors of ``prompts`` as the pipeline encodes them (FLUX's CLIP path; SD3's two
        CLIPs side by side), float32."""
        if self.family.name == "sd3":
            return self.pipe.encode_prompt(list(prompts), None, None, device=self.device, do_classifier_free_guidance=False,
                                           max_sequence_length=sequence_length(self.pipe))[2].float()  # fmt: skip
        return self.pipe._get_clip_prompt_embeds(prompt=list(prompts), device=self.device).float()

    def states(self, prompts: list[str]) -> torch.Tensor:
        """(n, L, d) text states of ``prompts`` on the run's device in the model's dtype."""
        return self.cache.states(prompts).to(self.dtype)
