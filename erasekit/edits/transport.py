"""Facilitated transport (SPM, Lyu et al. CVPR 2024): each SPM adapter acts on a prompt as strongly as
the prompt carries its concept, so unrelated prompts run (nearly) the untouched model and many SPMs
can be plugged in at once.

The strength of adapter k on prompt p is γ_k(p) = max(s_cos, s_tok) clamped to [0, 1] (the official
``clipcos_tokenuni``; ``clipcos`` or ``tokenuni`` alone are its other matching metrics):

* s_cos: the cosine between the text encoder's states of p and of the concept, each flattened over
  all token positions (as the official ``infer_spm.py`` computes "clipcos");
* s_tok = |T(c) ∩ T(p)| / |T(c)|: the share of the concept's tokens (special tokens left out) that
  occur in the prompt (the official "tokenuni").

It runs inside a standard diffusers pipeline: :func:`transported_pipeline` builds the pipeline's own
class on its modules, whose ``__call__`` scores the prompts and passes one row of strengths per UNet
row through ``cross_attention_kwargs``; a pre-hook on every ``Transformer2DModel`` takes them out
(the attention processors never see them) and the adapted layers add Σ_k γ_k · up_k(down_k(x)) row
by row. On FLUX ``joint_attention_kwargs`` carry them to a pre-hook on every double and single block,
with a transformer call per guidance branch. The uncond row of an image gets its prompt's strengths, as the official code applies one
multiplier to the whole call. Unlike ``infer_spm.py``, which scales both factors of every SPM by γ
and sums them (an effective γ² and cross terms between SPMs), each adapter here is scaled by γ once,
the paper's Σ_k γ_k M_k.

An edit whose card carries ``"inference": {"spm": {"concepts": [...], "metric": ...}}`` is of the kind
:data:`FACILITATED_TRANSPORT`: its weights are every adapter merged at strength 1, its adapters'
factors are in ``adapters.safetensors``, and applying it leaves the weights alone and returns the
transported pipeline. A LoRA or whole-model export carries the merged weights, transport off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from erasekit.edits.kind import EditKind, is_strings, on_modules, register_kind, shown
from erasekit.errors import ErasekitError
from erasekit.models.families import denoiser
from erasekit.models.layers import transformer_layers

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

SCALES_KEY = "erasekit_spm_scales"  # the cross_attention_kwargs entry that carries the strengths
METRICS = ("clipcos_tokenuni", "clipcos", "tokenuni")  # the official infer_spm.py's matching metrics


@dataclass
class SPMAdapter:
    """One SPM: the concept it erases and its factors per layer (down (1, in[, kh, kw]), up (out, 1))."""

    concept: str
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def flat(self, index: int) -> dict[str, torch.Tensor]:
        """The factors as named tensors, for a safetensors file."""
        out = {}
        for layer, (down, up) in self.factors.items():
            out[f"{index}.{layer}.down"], out[f"{index}.{layer}.up"] = down, up
        return out


def adapters_from_flat(tensors: dict[str, torch.Tensor], concepts: Sequence[str]) -> list[SPMAdapter]:
    """The inverse of :meth:`SPMAdapter.flat` over all adapters, in the order of ``concepts``."""
    adapters = [SPMAdapter(c, {}) for c in concepts]
    for key in tensors:
        index, _, rest = key.partition(".")
        layer, _, kind = rest.rpartition(".")
        if not index.isdigit() or int(index) >= len(adapters) or kind not in ("down", "up"):
            raise ErasekitError(f"adapter tensor {key!r} does not belong to one of the card's {len(concepts)} SPMs")
        if kind == "down":
            adapters[int(index)].factors[layer] = (tensors[key], tensors[f"{index}.{layer}.up"])
    return adapters


class PromptScorer:
    """γ_k(p) of every prompt for every adapter's concept (see the module's docstring)."""

    def __init__(self, pipe: DiffusionPipeline, concepts: Sequence[str], metric: str = METRICS[0]) -> None:
        from erasekit.primitives.prompt_cache import family_cache

        if metric not in METRICS:
            raise ErasekitError(f"unknown SPM matching metric {metric!r}; choose one of {', '.join(METRICS)}")
        self.metric = metric
        self.cache = family_cache(pipe)
        self.tokenizer = self.cache.tokenizer  # the token path's: FLUX's T5
        self.special = set(self.tokenizer.all_special_ids)
        self.concept_tokens = [self.tokens(c) for c in concepts]
        self.concept_states = F.normalize(self.cache.states(list(concepts)).float().flatten(1), dim=-1)

    def tokens(self, text: str) -> set[int]:
        """The token ids of ``text``, special tokens left out."""
        return set(self.tokenizer(text).input_ids) - self.special

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """(n prompts, k adapters) strengths in [0, 1]."""
        states = F.normalize(self.cache.states(list(prompts)).float().flatten(1), dim=-1)
        cosine = states @ self.concept_states.to(states.device).T
        overlap = torch.tensor(
            [[len(c & self.tokens(p)) / max(1, len(c)) for c in self.concept_tokens] for p in prompts],
            device=cosine.device,
        )
        scores = {"clipcos": cosine, "tokenuni": overlap}.get(self.metric, torch.maximum(cosine, overlap))
        return scores.clamp(0, 1)


class Transport:
    """Hooks that add the adapters to a denoiser's transformer layers with per-row strengths: a UNet's
    ``Transformer2DModel`` blocks read them from ``cross_attention_kwargs``, a FLUX transformer from
    ``joint_attention_kwargs``."""

    def __init__(self, model: nn.Module, adapters: Sequence[SPMAdapter]) -> None:
        layers = transformer_layers(model)
        weight = next(model.parameters())
        self.model, self.count = model, len(adapters)
        self.flow = hasattr(model, "transformer_blocks")  # FLUX: the strengths travel in joint_attention_kwargs
        self.kwarg = "joint_attention_kwargs" if self.flow else "cross_attention_kwargs"
        self.stacked: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in dict.fromkeys(n for a in adapters for n in a.factors):
            if name not in layers:
                raise ErasekitError(
                    f"this SPM adapts {name}, which the pipeline's denoiser does not have: it was made for another model"
                )
            downs, ups = [], []
            for adapter in adapters:  # an adapter without this layer contributes zeros
                down, up = adapter.factors.get(name, (None, None))
                shape = layers[name].weight.shape
                zeros = {"device": weight.device, "dtype": weight.dtype}
                downs.append(down.to(**zeros) if down is not None else torch.zeros(1, *shape[1:], **zeros))
                ups.append(up.to(**zeros) if up is not None else torch.zeros(shape[0], 1, **zeros))
            self.stacked[name] = (
                torch.cat(downs).to(weight.device, weight.dtype),
                torch.cat(ups, dim=1).to(weight.device, weight.dtype),
            )
        self.current: torch.Tensor | None = None  # (rows, k) strengths of the transformer block running now
        self.handles: list[Any] = []

    def install(self) -> None:
        """Hook the adapters into the denoiser's transformer layers; an error if it already carries SPM adapters."""
        if getattr(self.model, "_erasekit_transport", None) is not None:
            raise ErasekitError("this denoiser already carries SPM adapters; release the first pipeline before applying another")
        modules = dict(self.model.named_modules())
        # the blocks that get the kwargs: a UNet's Transformer2DModel, FLUX's double and single blocks (a
        # transformer-level hook would miss the chunks a fixed-shape caller splits its rows into)
        carriers = (
            [*self.model.transformer_blocks, *self.model.single_transformer_blocks]
            if self.flow
            else [m for m in modules.values() if type(m).__name__ == "Transformer2DModel"]
        )
        for module in carriers:
            self.handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._leave))
        for name in self.stacked:
            self.handles.append(modules[name].register_forward_hook(self._adapted(name)))
        self.model._erasekit_transport = self

    def remove(self) -> None:
        """Take the hooks off, leaving the denoiser as it was."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.model._erasekit_transport = None

    def _enter(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["hidden_states"]
        extra = dict(kwargs.get(self.kwarg) or {})
        scales = extra.pop(SCALES_KEY, None)
        if scales is None:  # a direct UNet call (a judge, an attack): every adapter at full strength
            scales = torch.ones(hidden.shape[0], self.count, device=hidden.device, dtype=hidden.dtype)
        if scales.shape != (hidden.shape[0], self.count):
            raise ErasekitError(
                f"SPM strengths for {tuple(scales.shape)} rows × adapters reached a block of {hidden.shape[0]} rows "
                f"and {self.count} adapters"
            )
        self.current = scales.to(hidden.device, hidden.dtype)
        return args, {**kwargs, self.kwarg: extra or None}

    def _leave(self, *_: Any) -> None:
        self.current = None

    def _adapted(self, name: str):  # noqa: ANN202 - a forward hook
        down, up = self.stacked[name]

        def hook(layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x, scales = args[0], self.current
            if scales is None:
                scales = torch.ones(x.shape[0], self.count, device=x.device, dtype=x.dtype)
            if isinstance(layer, nn.Conv2d):
                h = F.conv2d(x, down, None, layer.stride, layer.padding, layer.dilation) * scales[:, :, None, None]
                return output + F.conv2d(h, up[:, :, None, None])
            h = F.linear(x, down) * scales.view(x.shape[0], *([1] * (x.ndim - 2)), self.count)
            return output + F.linear(h, up)

        return hook


def transported_pipeline(pipe: DiffusionPipeline, adapters: Sequence[SPMAdapter], metric: str = METRICS[0]) -> DiffusionPipeline:
    """``pipe``'s own pipeline class on its modules, with ``adapters`` under facilitated transport
    (strengths by ``metric``); the adapters stay on the denoiser until the returned pipeline's ``release()``."""
    model = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if model is None:
        raise ErasekitError(f"SPM transport adapts a denoiser's transformer blocks; {type(pipe).__name__} has none")
    if not callable(getattr(pipe, "encode_prompt", None)):
        raise ErasekitError(f"{type(pipe).__name__} is not a text-to-image pipeline: SPM transport cannot host it")
    scorer = PromptScorer(pipe, [a.concept for a in adapters], metric)
    transport = Transport(model, adapters)

    class Transported(type(pipe)):
        def __call__(self, prompt: str | list[str] | None = None, **kwargs: Any) -> Any:
            if prompt is None:
                raise ErasekitError("SPM transport scores prompts by their text: give `prompt`, not prompt_embeds")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            per_image = scorer(prompts).repeat_interleave(kwargs.get("num_images_per_prompt") or 1, dim=0)
            # a UNet pipeline stacks [uncond; cond] in one call; FLUX's runs a negative prompt as a call of its own
            guided = not transport.flow and kwargs.get("guidance_scale", 7.5) > 1 and self.unet.config.time_cond_proj_dim is None
            rows = torch.cat([per_image, per_image]) if guided else per_image
            extra = {**(kwargs.pop(transport.kwarg, None) or {}), SCALES_KEY: rows}
            return super().__call__(prompts, **{transport.kwarg: extra}, **kwargs)

        def release(self) -> None:
            """Take the adapters off the denoiser (the pipeline's modules are the user's)."""
            transport.remove()

    transported = on_modules(Transported, pipe)
    transport.install()
    return transported


class FacilitatedTransport(EditKind):
    """SPM: merged weights plus each concept's adapter factors, applied per prompt by
    :func:`transported_pipeline` (the weights stay the base model's until it is released)."""

    name = "spm"
    at_sampling = True
    reads_prompt_text = True
    needs_adapters = True

    def check_card(self, card: dict, where: object) -> None:
        """Refuse an ``inference.spm`` without a non-empty list of concepts, or with an unknown metric."""
        if not self.named_in(card):
            return
        spm = self.entry(card)
        if not (isinstance(spm, dict) and is_strings(spm.get("concepts")) and spm["concepts"]):
            raise ErasekitError(f"{where}: inference.spm should be an object with a non-empty list of concepts, not {shown(spm)}")
        if "metric" in spm and spm["metric"] not in METRICS:
            raise ErasekitError(
                f"{where}: inference.spm.metric should be one of {', '.join(METRICS)}, not {shown(spm['metric'])}"
            )

    def check_fits(self, edit: Edit, pipe: DiffusionPipeline) -> None:
        """Refuse factors that belong to none of the card's SPMs or do not fit the denoiser layer they adapt:
        down (r, in[, kh, kw]) and up (out, r)."""
        concepts = len(self.entry(edit.card)["concepts"])
        for key, down in edit.adapters.items():
            index, _, rest = key.partition(".")
            layer, _, kind = rest.rpartition(".")
            if not index.isdigit() or int(index) >= concepts or kind not in ("down", "up"):
                raise ErasekitError(f"adapter tensor {key!r} does not belong to one of the card's {concepts} SPMs")
            if kind == "up":
                continue
            up = edit.adapters.get(f"{index}.{layer}.up")
            try:
                weight = denoiser(pipe).get_submodule(layer).weight
            except AttributeError:
                raise ErasekitError(f"this edit adapts {layer}, which the pipeline's denoiser does not have") from None
            if not (
                up is not None and down.dim() == weight.dim() and down.shape[1:] == weight.shape[1:]
                and tuple(up.shape) == (weight.shape[0], down.shape[0])
            ):  # fmt: skip
                shapes = f"{tuple(down.shape)} and {tuple(up.shape) if up is not None else 'no up factor'}"
                raise ErasekitError(
                    f"this edit's SPM factors for {layer} ({shapes}) do not fit its weight {tuple(weight.shape)}: "
                    "it was made for another architecture"
                )

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """The transported pipeline on ``pipe``'s modules; ``pipe``'s weights stay the base model's."""
        spm = self.entry(edit.card)
        return transported_pipeline(pipe, adapters_from_flat(edit.adapters, spm["concepts"]), spm.get("metric", METRICS[0]))

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """Take the adapters' hooks off the denoiser."""
        erased.release()

    def export_note(self, edit: Edit, fmt: str) -> str | None:
        """Transport stays behind: an export holds the merged weights."""
        return (
            f"{edit.card.get('method')}'s per-prompt inference ({self.name}) does not travel in a {fmt} "
            "export: it holds the merged weights, every prompt at full strength"
        )


FACILITATED_TRANSPORT = register_kind(FacilitatedTransport())
