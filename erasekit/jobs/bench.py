"""The ``bench`` job: every method on the concepts of a task, mass erasure and its cost, or every
method beside every attack.

:func:`bench` takes :class:`BenchOptions`, runs :func:`check_bench` before any model loads (every
method string, the protocol, every attack budget) and checks the output directory, in every process
of an ``accelerate launch`` run; then it measures in resumable cells and returns a
:class:`BenchResult` in the first process. Modules that load torch are imported inside the functions that need them, so the
command line answers ``--help`` without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.bench.entries import BenchEntry, parse_entry
from erasekit.errors import ErasekitError
from erasekit.io import check_outputs, claim_outputs
from erasekit.primitives.workers import Workers, launched_workers

if TYPE_CHECKING:
    from erasekit.bench.robustness import AttackEntry

DEFAULT_METHODS = ("uce", "esd-x")
COUNTED = ("mass", "cost")  # the benches that erase a growing number of roster characters at once
SUMMARY_FILES = {"mass": "mass.json", "cost": "cost.json", "robustness": "robustness.json"}  # a task's: bench.json


@dataclass(frozen=True)
class BenchOptions:
    """What ``erasekit bench`` is asked.

    ``methods`` are method strings (``"esd-x lr=5e-4 preserve=others"``, see
    :func:`~erasekit.bench.entries.parse_entry`). ``protocol`` is a task (object, character, artist,
    flames; ``concepts`` narrows it, default all of it), ``mass`` (erase ``counts`` roster characters
    at once), ``cost`` (time those erasures, each in a fresh process) or ``robustness`` (every method
    beside every ``attacks`` budget on ``task``'s protocol, ``prompts`` attacked prompts per concept).
    Cells are kept in ``out``; a rerun resumes.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    protocol: str = "object"
    counts: tuple[int, ...] | None = None  # None: 1, 5, 10 and 20 (erasekit.bench.mass.MASS_COUNTS)
    concepts: tuple[str, ...] | None = None  # None: the task's whole list
    attacks: tuple[str, ...] | None = None  # None: every attack at the world's budgets
    task: str = "object"
    prompts: int = 4
    samples: int = 8
    out: Path = Path("runs/bench")
    model: str | None = None  # None: the embedded erasekit-tiny
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 64
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False
    all_at_once: bool = True  # the task benches: also time erasing the whole task in one call


@dataclass(frozen=True)
class CheckedBench:
    """The bench's columns and attacks, parsed once, and this process among those launched."""

    entries: tuple[BenchEntry, ...]
    attacks: tuple[AttackEntry, ...]  # the robustness bench's; empty for the others
    workers: Workers


@dataclass(frozen=True)
class BenchResult:
    """A finished bench: its ``summary`` (what ``summary_file`` holds) and the report page beside it."""

    protocol: str
    summary: dict
    summary_file: Path
    report: Path

    @property
    def table(self) -> str:
        """The summary as the markdown table written beside it (``bench.md``, ``mass.md`` …)."""
        from erasekit.bench.tables import summary_table

        return summary_table(self.summary)


def check_bench(options: BenchOptions) -> CheckedBench:
    """Refuse, before any model loads, a bad method string, protocol, task or attack budget, and a cost
    bench under several processes; the entries and attacks, parsed once."""
    from erasekit.bench.robustness import ROBUSTNESS_CONCEPTS, WORLD_ATTACKS, parse_attack
    from erasekit.bench.tasks import DEFAULT_CONCEPTS
    from erasekit.jobs.attack import refuse_family
    from erasekit.methods.base import get_method, make_config
    from erasekit.models.families import family_of_model
    from erasekit.models.loading import check_load

    check_load(options.model, options.device, options.dtype)
    entries = tuple(parse_entry(text) for text in options.methods)
    protocols = (*DEFAULT_CONCEPTS, *COUNTED, "robustness")
    if options.protocol not in protocols:
        raise ErasekitError(f"the bench runs the {', '.join(protocols)} protocols, not {options.protocol!r}")
    attacks: tuple[AttackEntry, ...] = ()
    if options.protocol == "robustness":
        if options.task not in ROBUSTNESS_CONCEPTS:
            raise ErasekitError(
                f"the robustness bench runs beside the {', '.join(ROBUSTNESS_CONCEPTS)} tasks, not {options.task!r}"
            )
        attacks = tuple(parse_attack(a) for a in options.attacks or WORLD_ATTACKS)  # every budget, before the model loads
    if not options.all_at_once and options.protocol not in DEFAULT_CONCEPTS:
        raise ErasekitError(f"--no-all-at-once is for the task benches ({', '.join(DEFAULT_CONCEPTS)}), not {options.protocol!r}")
    family = family_of_model(options.model)  # from the model's name or directory, nothing loaded
    if family is not None:
        for entry in entries:
            method = get_method(entry.method)
            method.check_on(family, make_config(method, dict(entry.settings)))
        if options.protocol == "robustness":
            refuse_family(family, "the robustness bench")
    workers = launched_workers(options.device)
    if workers.count > 1 and options.protocol == "cost":
        raise ErasekitError("the cost bench times each erasure alone in a fresh process; run it without accelerate launch")
    return CheckedBench(entries, attacks, workers)


def bench(options: BenchOptions) -> BenchResult | None:
    """Measure every cell (resuming from ``options.out``) and summarise.

    Under ``accelerate launch`` every process checks the options and the output directory; the first
    claims the directory and the others write their cells under its lock; each measures its share,
    and the first reads every cell back and returns the result (the others None)."""
    from erasekit.bench.mass import MASS_COUNTS, run_cost, run_mass
    from erasekit.bench.robustness import ROBUSTNESS_CONCEPTS, run_robustness
    from erasekit.bench.tasks import run_bench
    from erasekit.eval.generation import SamplerSettings
    from erasekit.judges.world import WorldJudge
    from erasekit.models.loading import load_pipeline
    from erasekit.report import write_run_report
    from erasekit.world.evaluator import load_world_evaluator

    check_outputs([(options.out, "bench")], options.overwrite)  # a taken path answered before the methods are read
    checked = check_bench(options)
    workers, out, entries = checked.workers, options.out, list(checked.entries)
    counts = MASS_COUNTS if options.counts is None else options.counts
    sampler = SamplerSettings(steps=options.steps, guidance=options.guidance, batch_size=options.batch_size)
    with claim_outputs([(out, "bench")], options.overwrite, claim=workers.is_main):
        workers.barrier()
        if options.protocol == "cost":  # each erasure in a fresh process: no model here
            summary = run_cost(options.model, entries, out, counts, workers.device, options.dtype)
        else:
            pipe = load_pipeline(options.model, options.dtype, workers.device, progress=False)
            if options.protocol == "robustness":
                concepts = options.concepts or ROBUSTNESS_CONCEPTS[options.task]
                summary = run_robustness(pipe, WorldJudge(), entries, list(checked.attacks), options.task, concepts, out,
                                         options.prompts, options.samples, sampler, workers)  # fmt: skip
            elif options.protocol == "mass":
                summary = run_mass(pipe, load_world_evaluator(), entries, out, counts, options.samples, sampler,
                                   workers=workers)  # fmt: skip
            else:
                summary = run_bench(pipe, load_world_evaluator(), entries, options.protocol, out, options.concepts,
                                    options.samples, sampler, workers=workers, model=options.model,
                                    all_at_once=options.all_at_once)  # fmt: skip
        if summary is None:  # not the first process: its share is on disk
            return None
        summary_file = out / SUMMARY_FILES.get(options.protocol, "bench.json")
        return BenchResult(options.protocol, summary, summary_file, write_run_report(out))
