"""The ``eval`` jobs: an edit judged against its base model on a protocol's prompts, and a run's images scored.

:func:`evaluate` takes :class:`EvaluateOptions`, runs :func:`check_evaluate` before any model loads
(the protocol, the judge, the edit, the prompt file of a prompt-file protocol, the concept), claims
the run directory (``EDIT/eval-PROTOCOL`` by default), generates and judges both models, and writes
``results.json``, ``before_after.png`` and ``report.html`` together; it returns an
:class:`EvaluateResult`. :func:`score_run` scores the images of a run (or of a prompt file it
generates first) with the world evaluator. Modules that load torch are imported inside the functions, so the command
line answers ``--help`` and a bad flag without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.errors import ErasekitError
from erasekit.io import atomic_dir, claim_outputs, write_json

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits import Edit
    from erasekit.eval.protocols import Protocol, ProtocolResult
    from erasekit.eval.scoring import Evaluation
    from erasekit.primitives.workers import Workers

GRID_PROMPTS = 16  # the before/after grid shows the first prompts
GRID_SAMPLES = 8  # and at most this many images of each


@dataclass(frozen=True)
class EvaluateOptions:
    """What ``erasekit eval --protocol`` is asked: the protocol, the ``edit`` directory, the erased concept
    (None: the edit's first target), samples per prompt, the judge (and the CLIP a clip judge loads), the
    prompt file of a prompt-file protocol, the run directory (None: ``EDIT/eval-PROTOCOL``), the model
    (None: the edit's), the sampler and where it runs. ``check_base`` refuses an edit made on another model."""

    protocol: str
    edit: Path | None
    concept: str | None = None
    samples: int = 16
    judge: str = "auto"
    prompts: Path | None = None
    clip_model: str | None = None
    out: Path | None = None
    model: str | None = None
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 64
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False
    check_base: bool = True


@dataclass(frozen=True)
class CheckedEvaluate:
    """The protocol, the edit, the erased concept and the run directory, made once before the model loads."""

    protocol: Protocol
    edit: Edit
    target: str
    run_dir: Path


@dataclass(frozen=True)
class EvaluateResult:
    """What the evaluation found and where it wrote it: the protocol's result, the run directory, and the
    edit's method."""

    result: ProtocolResult
    run_dir: Path
    method: str | None

    @property
    def judge_name(self) -> str:
        """The judge that read the images, by name."""
        return (self.result.judge or {}).get("judge", "world evaluator")


def check_evaluate(options: EvaluateOptions) -> CheckedEvaluate:
    """Everything that can be checked without the model: a bad flag costs no loading."""
    from erasekit.edits import Edit
    from erasekit.eval.protocols import get_protocol
    from erasekit.judges import JUDGES
    from erasekit.models.loading import check_device_and_dtype

    check_device_and_dtype(options.device, options.dtype)
    protocol = get_protocol(options.protocol)
    if options.judge not in JUDGES:
        raise ErasekitError(f"unknown judge {options.judge!r}; choose one of {', '.join(JUDGES)}")
    if options.edit is None:
        raise ErasekitError("--protocol needs --edit DIR (an edit written by `erasekit erase`)")
    if protocol.prompt_file:  # the whole file is read here: a bad row is one line before loading
        protocol.rows("", options.samples, prompt_file=str(options.prompts) if options.prompts else None)
    edit = Edit.load(options.edit)
    if options.concept is not None and not options.concept.strip():
        raise ErasekitError("--concept is empty; give the concept, or leave the option out for the edit's first target")
    target = options.concept or edit.card["targets"][0]
    return CheckedEvaluate(protocol, edit, target, options.out or options.edit / f"eval-{protocol.name}")


def evaluate(options: EvaluateOptions) -> EvaluateResult | None:
    """Judge the edit on the protocol and write the run directory.

    Under ``accelerate launch`` the processes share out the images: every one checks the run directory,
    the first claims and writes it and gets the result, the others get None."""
    from erasekit.models.loading import load_pipeline
    from erasekit.primitives.workers import launched_workers

    checked = check_evaluate(options)
    workers = launched_workers(options.device)
    with claim_outputs([(checked.run_dir, "eval")], options.overwrite, claim=workers.is_main):
        pipe = load_pipeline(options.model or checked.edit.card.get("model"), options.dtype, workers.device, progress=False)
        result = _judge(pipe, options, checked, workers)
        if not workers.is_main:  # every process holds the result; the first writes it
            return None
        _write(result, checked.run_dir, min(options.samples, GRID_SAMPLES))
    return EvaluateResult(result, checked.run_dir, checked.edit.card.get("method"))


def _judge(pipe: DiffusionPipeline, options: EvaluateOptions, checked: CheckedEvaluate, workers: Workers) -> ProtocolResult:
    from erasekit.eval.generation import SamplerSettings
    from erasekit.eval.protocols import run_protocol

    settings = SamplerSettings(steps=options.steps, guidance=options.guidance, batch_size=options.batch_size)
    prompt_file = str(options.prompts) if options.prompts else None
    return run_protocol(pipe, checked.edit, checked.protocol.name, checked.target, options.judge, options.samples, settings,
                        workers.is_main, prompt_file=prompt_file, clip_model=options.clip_model,
                        check_base=options.check_base, workers=workers)  # fmt: skip


def _write(result: ProtocolResult, run_dir: Path, per_prompt: int) -> None:
    """``results.json``, the before/after grid and the run's page, together or none of them."""
    import numpy as np

    from erasekit.eval.generation import image_grid
    from erasekit.report import write_run_report

    tiles, labels = [], []
    for i, prompt in enumerate(result.prompts[:GRID_PROMPTS]):  # each prompt: the original's row, then the erased one's
        for which in ("original", "erased"):
            generated = result.images[which]
            tiles.append(generated.images[generated.row_index == i][:per_prompt])
            labels.append(f"{which[:4]}: {prompt[:40]}")
    grid = image_grid(np.concatenate(tiles), per_prompt, labels)
    with atomic_dir(run_dir) as tmp:
        write_json(tmp / "results.json", result.to_json())
        grid.save(tmp / "before_after.png", format="PNG")
        write_run_report(tmp, name=run_dir.name)


@dataclass(frozen=True)
class ScoreOptions:
    """What ``erasekit eval SOURCE`` is asked: a run directory of ``erasekit generate``, or a prompt file
    to generate first (into ``out``, default ``runs/STEM``) with the model, sampler and device given;
    ``out`` also says where ``results.json`` goes (default: the run directory)."""

    source: Path
    out: Path | None = None
    model: str | None = None
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 64
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False


@dataclass(frozen=True)
class ScoreResult:
    """The world evaluator's reading of a run, per prompt and role, and where it was written."""

    evaluation: Evaluation
    run_dir: Path
    results_file: Path


def score_run(options: ScoreOptions) -> ScoreResult:
    """Score a run's images (generated first from a prompt file) with the world evaluator; write ``results.json``."""
    from contextlib import nullcontext

    from erasekit.eval.generation import Generated, SamplerSettings
    from erasekit.eval.prompts import read_prompt_file
    from erasekit.eval.scoring import score
    from erasekit.io import claim_output
    from erasekit.jobs.generate import generate_run
    from erasekit.models.embedded import is_world_model
    from erasekit.models.loading import check_device_and_dtype, load_pipeline
    from erasekit.world.evaluator import load_world_evaluator

    check_device_and_dtype(options.device, options.dtype)  # bad flags are one line before anything loads
    source, out = options.source, options.out
    if source.is_dir():
        rows, generated = read_prompt_file(source / "prompts.csv"), Generated.load(source / "images.npz")
        run_dir = source
    else:
        run_dir = out or Path("runs") / source.stem
        rows = read_prompt_file(source)
        with claim_output(run_dir, "run", options.overwrite):
            pipe = load_pipeline(options.model, options.dtype, options.device, progress=False)
            if not is_world_model(pipe):
                raise ErasekitError(
                    "a prompt file is judged by the world evaluator, which reads the embedded world's images only; "
                    "for a real model use --protocol object|explicit|captions with --judge"
                )
            sampler = SamplerSettings(steps=options.steps, guidance=options.guidance, batch_size=options.batch_size)
            generated = generate_run(rows, run_dir, pipe, options.model, sampler, source=str(source))
    evaluation = score(generated, rows, load_world_evaluator())
    target = (out or run_dir) / "results.json"
    elsewhere = out is not None and out != run_dir  # results of a run written elsewhere: that directory is claimed too
    with claim_output(out, "eval", options.overwrite) if elsewhere else nullcontext():
        write_json(target, evaluation.to_json())
    return ScoreResult(evaluation, run_dir, target)
