"""The result of an erasure: changed weights (UNet, text encoder) or added modules, plus a JSON card, saved atomically.

On disk an edit is a directory with ``edit.safetensors`` (the new values of every changed
parameter, by diffusers parameter name: the UNet's as they are, the text encoder's behind
``text_encoder.``, as AdvUnlearn trains it) and ``card.json`` (method, config, concepts, base-model
hash, erasekit version, time and peak memory), and optionally ``pytorch_lora_weights.safetensors``
(the same change as a LoRA that a plain ``pipe.load_lora_weights(dir)`` loads, see :mod:`erasekit.edits.lora`)
and ``adapters.safetensors`` (SPM's adapter factors, or Receler's erasers when the card has
``"erasers"``, see :mod:`erasekit.edits.erasers`). :func:`load_erased` puts it back onto the base
pipeline and refuses a different base model.

What an edit is beyond its weights (sampling guidance, transport, hooked erasers) is its kind, found
from the card in the registry of :mod:`erasekit.edits.kind`; the edit hands each step that depends on
it (putting it on and taking it off, its card's entry, its checks) to that kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import torch
from safetensors.torch import load_file, save_file

from erasekit.edits.kind import INFERENCE, KINDS, EditKind, is_number, is_strings, kind_of, sampling_kinds, shown
from erasekit.edits.lora import LORA_FILE, LoraExport, save_lora
from erasekit.errors import ErasekitError
from erasekit.io import atomic_dir, claim_output
from erasekit.models.families import denoiser

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

WEIGHTS_FILE = "edit.safetensors"
CARD_FILE = "card.json"
ADAPTERS_FILE = "adapters.safetensors"  # SPM's factors (facilitated transport) or Receler's erasers
TEXT_ENCODER = "text_encoder."  # the prefix of the text-encoder parameters an edit changes


def weights_hash(weights: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names and float32 values)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def refuse_non_finite(weights: dict[str, torch.Tensor], what: str) -> None:
    """An error naming the tensors of ``weights`` that hold NaN or ±inf, if any do."""
    bad = [name for name, w in weights.items() if not bool(torch.isfinite(w).all())]
    if bad:
        raise ErasekitError(
            f"{what} has NaN or infinite values in {len(bad)} of {len(weights)} tensors (first: {bad[0]}); "
            "it would break the model, so it is refused: check the method's settings (a huge or tiny scale, a too-high lr)"
        )


def pipeline_parameters(pipe: DiffusionPipeline) -> dict[str, torch.nn.Parameter]:
    """The parameters an edit can change, by the edit's names: the denoiser's (UNet or FLUX transformer)
    as they are, the text encoder's behind :data:`TEXT_ENCODER`."""
    params = dict(denoiser(pipe).named_parameters())
    encoder = getattr(pipe, "text_encoder", None)  # a bare UNet holder (tests, scripts) has none
    if encoder is not None:
        params.update({TEXT_ENCODER + name: p for name, p in encoder.named_parameters()})
    return params


def base_hash(pipe: DiffusionPipeline, names: list[str]) -> str:
    """SHA-256 of the original values of the parameters an edit changes (and their names)."""
    params = pipeline_parameters(pipe)
    return weights_hash({name: params[name] for name in names})


@dataclass
class Edit:
    """An erasure's result: new parameter values, the card that describes them, and any added modules.

    ``weights`` maps each changed parameter's diffusers name (the UNet's as they are, the text encoder's
    behind :data:`TEXT_ENCODER`) to its new value; ``card`` is what ``card.json`` holds (method, config,
    concepts, base hash, cost; for an inference-time edit, ``inference``: how to sample); ``adapters`` are
    SPM's adapter factors or Receler's erasers (``adapters.safetensors``), empty for a plain weight edit.
    """

    weights: dict[str, torch.Tensor]  # parameter name (text encoder's behind TEXT_ENCODER) → new value
    card: dict = field(default_factory=dict)
    adapters: dict[str, torch.Tensor] = field(default_factory=dict)  # SPM's factors or Receler's erasers

    @property
    def unet_names(self) -> list[str]:
        """The UNet parameters this edit changes (its text-encoder ones left out)."""
        return [n for n in self.weights if not n.startswith(TEXT_ENCODER)]

    @property
    def text_encoder_names(self) -> list[str]:
        """The text-encoder parameters this edit changes, by the encoder's own names."""
        return [n.removeprefix(TEXT_ENCODER) for n in self.weights if n.startswith(TEXT_ENCODER)]

    @property
    def kind(self) -> EditKind:
        """What this edit is beyond its weights, as its card says (see :mod:`erasekit.edits.kind`)."""
        return kind_of(self.card)

    def checked_names(self) -> list[str]:
        """The parameters whose original values identify the base model: those the edit changes, and
        whatever else its kind reads (for erasers, the output projections of the cross-attention layers)."""
        return self.kind.checked_names(self)

    def check_architecture(self, pipe: DiffusionPipeline) -> None:
        """Refuse a pipeline whose UNet or text encoder lacks a parameter this edit changes, or has it in
        another shape (what the kind adds too: SPM's adapter factors, Receler's erasers): found here,
        before any image."""
        params = pipeline_parameters(pipe)
        missing = [n for n in self.weights if n not in params]
        if missing:
            raise ErasekitError(
                f"this edit changes {missing[0]}, which the pipeline does not have: it was made for another architecture"
            )
        for name, value in self.weights.items():
            if params[name].shape != value.shape:
                raise ErasekitError(
                    f"this edit's {name} has shape {tuple(value.shape)}, the pipeline's {tuple(params[name].shape)}: "
                    "it was made for another architecture"
                )
        self.kind.check_fits(self, pipe)

    def check_base(self, pipe: DiffusionPipeline) -> None:
        """Refuse a pipeline this edit was not made on (its UNet lacks the parameters, or their hash differs)."""
        self.check_architecture(pipe)
        expected = self.card.get("base_hash")
        if not expected:
            raise ErasekitError(
                "this edit's card has no base_hash, so the model it was made on cannot be checked; "
                "apply it with check_base=False (--no-check-base) if you know the model is right"
            )
        if base_hash(pipe, self.checked_names()) != expected:
            raise ErasekitError(
                "this edit was made on a different base model (base hash mismatch); load it onto the model it was made from"
            )

    @property
    def inference(self) -> dict | None:
        """How to sample from the erased model, for inference-time methods (SLD, SPM's transport); None
        for plain weight edits."""
        return self.card.get("inference")

    def check(self, pipe: DiffusionPipeline, check_base: bool = True) -> None:
        """Refuse non-finite values, and a pipeline this edit does not fit (or, with ``check_base``, was
        not made on)."""
        refuse_non_finite(self.weights, "this edit")
        refuse_non_finite(self.adapters, "this edit's adapters")
        if check_base:
            self.check_base(pipe)
        else:
            self.check_architecture(pipe)

    def write_weights(self, pipe: DiffusionPipeline) -> None:
        """Copy the new values into ``pipe``'s parameters in place, in their dtype."""
        params = pipeline_parameters(pipe)
        with torch.no_grad():
            for name, value in self.weights.items():
                if params[name].shape != value.shape:
                    raise ErasekitError(f"{name}: edit has shape {tuple(value.shape)}, model has {tuple(params[name].shape)}")
                params[name].copy_(value.to(params[name].dtype))

    def apply(self, pipe: DiffusionPipeline, check_base: bool = True) -> DiffusionPipeline:
        """Put this edit onto ``pipe`` in place, after checking the base model's hash; the pipeline to
        sample from (``pipe`` itself with the new weights, or for an inference-time edit a pipeline on its
        modules, whose weights stay the base model's: SPM's transport adds its adapters per prompt instead)."""
        kind = self.kind
        self.check(pipe, check_base)
        return kind.put_on(self, pipe)

    @contextmanager
    def applied(self, pipe: DiffusionPipeline, check_base: bool = True) -> Iterator[DiffusionPipeline]:
        """The pipeline with this edit in place for the block; after it, what the kind added comes off
        (SPM's transport hooks, Receler's erasers) and the original weights come back."""
        kind = self.kind
        params = pipeline_parameters(pipe)
        originals = {n: params[n].detach().clone() for n in self.weights if n in params}
        erased = None
        try:
            erased = self.apply(pipe, check_base=check_base)
            yield erased
        finally:
            if erased is not None:  # (nothing to take off when apply itself failed)
                kind.take_off(self, pipe, erased)
            with torch.no_grad():
                for name, value in originals.items():
                    params[name].copy_(value)

    def save(self, directory: Path, lora: LoraExport | None = None, overwrite: bool = False) -> Path:
        """Write the edit directory whole or not at all; with ``lora``, also as a diffusers LoRA file.

        An existing ``directory`` is replaced only if it holds an earlier edit (or ``overwrite``)."""
        refuse_non_finite(self.weights, "this edit")
        card = dict(self.card)
        if lora is not None:
            card["lora"] = {"file": LORA_FILE, "max_rank": max(lora.ranks.values()), "relative_error": lora.relative_error}
        with claim_output(Path(directory), "edit", overwrite), atomic_dir(Path(directory)) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.weights.items()}, str(tmp / WEIGHTS_FILE))
            if self.adapters:
                save_file({k: v.detach().contiguous().cpu() for k, v in self.adapters.items()}, str(tmp / ADAPTERS_FILE))
            if lora is not None:
                save_lora(lora, tmp)
            (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: Path) -> Edit:
        """The edit in ``directory`` as :meth:`save` wrote it; a missing or damaged file, a card field of the
        wrong type, non-finite weights or missing adapters are refused with one line."""
        directory = Path(directory)
        if not (directory / WEIGHTS_FILE).exists() or not (directory / CARD_FILE).exists():
            raise ErasekitError(f"{directory} is not an erasekit edit (needs {WEIGHTS_FILE} and {CARD_FILE})")
        try:
            weights = load_file(str(directory / WEIGHTS_FILE))
            card = json.loads((directory / CARD_FILE).read_text())
            adapters = load_file(str(directory / ADAPTERS_FILE)) if (directory / ADAPTERS_FILE).exists() else {}
        except Exception as err:  # safetensors and json raise several types for a damaged file
            raise ErasekitError(f"{directory} holds a damaged edit: {err}") from err
        where = directory / CARD_FILE
        if not isinstance(card, dict) or not isinstance(card.get("targets"), list) or not card["targets"]:
            raise ErasekitError(f"{where} is not an edit card (it needs a non-empty list of targets)")

        # Every card field erasekit reads back (eval, attacks, exports, reports) has its type, or the card is
        # refused here in one line naming the field, not by a KeyError in the middle of an evaluation.
        if not all(isinstance(t, str) and t.strip() for t in card["targets"]):
            raise ErasekitError(f"{where}: targets should be a list of concept names, not {shown(card['targets'])}")
        fields = {
            "anchors": ("a list of concept names", is_strings),
            "preserve": ("a list of concept names", is_strings),
            "method": ("a method name", lambda v: isinstance(v, str)),
            "model": ("a model name or path, or null", lambda v: v is None or isinstance(v, str)),
            "base_hash": ("a hash (text), or null", lambda v: v is None or isinstance(v, str)),
            "config": ("an object of settings", lambda v: isinstance(v, dict)),
            INFERENCE: ('null or an object such as {"sld": {...}}', lambda v: v is None or isinstance(v, dict)),
            "expanded": ("an object of the phrases added per target", lambda v: isinstance(v, dict)),
            "lora": ("an object", lambda v: isinstance(v, dict)),
            **dict.fromkeys(("seconds", "seconds_per_concept", "peak_rss_mb", "changed_parameters"), ("a number", is_number)),
            "peak_cuda_mb": ("a number or null", lambda v: v is None or is_number(v)),
        }
        for name, (expected, fits) in fields.items():
            if name in card and not fits(card[name]):
                raise ErasekitError(f"{where}: {name} should be {expected}, not {shown(card[name])}")
        known = sampling_kinds()
        if (inference := card.get(INFERENCE)) and (len(inference) != 1 or next(iter(inference)) not in known):
            names = " or ".join(map(repr, known))
            raise ErasekitError(f"{where}: {INFERENCE} should hold one of {names}, not {shown(list(inference))}")
        for each in KINDS.values():  # each kind checks its own entry, wherever the card has one
            each.check_card(card, where)
        refuse_non_finite(weights, f"the edit in {directory}")
        if kind_of(card).needs_adapters and not adapters:
            raise ErasekitError(
                f"{directory} is an {card.get('method')} edit but has no {ADAPTERS_FILE}; copy the whole directory"
            )
        return cls(weights, card, adapters)


def load_erased(edit_dir: Path, model: str | Path | None = None, check_base: bool = True) -> DiffusionPipeline:
    """The base pipeline (the edit card's model unless ``model`` is given) with the edit applied."""
    from erasekit.models.loading import load_pipeline

    edit = Edit.load(edit_dir)
    pipe = load_pipeline(model if model is not None else edit.card.get("model"), progress=False)
    return edit.apply(pipe, check_base=check_base)


@dataclass
class Usage:
    """What a block of work cost, filled in by :func:`measure` when the block ends.

    ``seconds`` is its wall time, ``peak_rss_mb`` the peak resident memory above the level at its start
    (MiB), and ``peak_cuda_mb`` CUDA's peak allocated memory during it (MiB), None when it did not run on CUDA.
    """

    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # peak resident memory above the level at the start
    peak_cuda_mb: float | None = None


@contextmanager
def measure(device: torch.device | None = None) -> Iterator[Usage]:
    """Wall time and peak memory of the block: RSS sampled every 5 ms, and CUDA's own peak when the
    work runs on a CUDA ``device`` (its kernels are waited for before the clock stops)."""
    on_cuda = device is not None and device.type == "cuda"
    usage = Usage()
    proc = psutil.Process(os.getpid())
    start_rss = proc.memory_info().rss
    peak = [start_rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    thread.start()
    start = time.perf_counter()
    try:
        yield usage
    finally:
        if on_cuda:
            torch.cuda.synchronize(device)
        usage.seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        usage.peak_rss_mb = (peak[0] - start_rss) / 2**20
        if on_cuda:
            usage.peak_cuda_mb = torch.cuda.max_memory_allocated(device) / 2**20
