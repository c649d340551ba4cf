"""The ``gates`` job: the quality gates of the embedded model before any erasure (shared/world.md).

The gate prompts are generated into a run directory, judged by the world evaluator, and their
summary written beside the images as ``gates.json`` and ``gates.md``. Modules that load torch are
imported inside the function that needs them, so the command line answers ``--help`` without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.io import claim_outputs, write_json, write_with
from erasekit.jobs.generate import generate_run

if TYPE_CHECKING:
    from erasekit.eval.gates import GateResult


@dataclass(frozen=True)
class GatesOptions:
    """What ``erasekit gates`` is asked: the run directory, samples per gate prompt, the model, the
    sampler and where it runs."""

    out: Path = Path("runs/gates")
    samples: int = 32
    model: str | None = None  # None: the embedded erasekit-tiny
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 64
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False


@dataclass(frozen=True)
class GatesResult:
    """The gates' outcome: per kind of gate its ``summary`` (prompts, mean, min, floor, passing), one
    ``results`` entry per gate prompt, and the run directory ``out`` that holds them."""

    out: Path
    summary: dict[str, dict[str, float]]
    results: list[GateResult]

    @property
    def failing(self) -> list[GateResult]:
        """The gate prompts below their floor."""
        return [r for r in self.results if not r.passed]


def gates(options: GatesOptions) -> GatesResult:
    """Generate and judge the gate prompts; write the run, ``gates.json`` and ``gates.md``."""
    from erasekit.eval import gates as G
    from erasekit.eval.generation import SamplerSettings
    from erasekit.eval.scoring import score
    from erasekit.models.loading import check_load, load_pipeline
    from erasekit.world.evaluator import load_world_evaluator

    check_load(options.model, options.device, options.dtype)  # before the output is claimed
    out = options.out
    sampler = SamplerSettings(steps=options.steps, guidance=options.guidance, batch_size=options.batch_size)
    with claim_outputs([(out, "gates")], options.overwrite):
        pipe = load_pipeline(options.model, options.dtype, options.device, progress=False)
        rows = G.gate_rows(options.samples)
        generated = generate_run(rows, out, pipe, options.model, sampler, source="gates")
        results = G.judge(score(generated, rows, load_world_evaluator()))
        summary = G.summary(results)
        prompts = [{"group": r.group, "accuracy": r.accuracy, "floor": r.floor, "passed": r.passed} for r in results]
        write_json(out / "gates.json", {
            "samples_per_prompt": options.samples, "steps": options.steps, "guidance": options.guidance,
            "model": str(options.model or "erasekit-tiny"), "summary": summary, "prompts": prompts,
        })  # fmt: skip
        write_with(out / "gates.md", lambda tmp: tmp.write_text(G.markdown(summary, results)))
    return GatesResult(out, summary, results)
