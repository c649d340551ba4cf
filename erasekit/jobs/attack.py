"""The ``attack`` job: one attack on one edit (or on the unedited model, the baseline), judged.

:func:`attack` takes :class:`AttackOptions`, runs :func:`check_attack` before any model loads (the
attack and its budget, the judge, device and precision, the edit, and on the embedded model the
concept's prompts), claims the run directory, attacks every prompt (cells resume, see
:mod:`erasekit.eval.attack_run`), writes ``results.json``, ``grid.png`` and ``report.html`` and
returns an :class:`AttackResult`. Modules that load torch are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.errors import ErasekitError
from erasekit.io import claim_outputs, write_json, write_with
from erasekit.methods.base import make_config

if TYPE_CHECKING:
    from erasekit.attacks.base import Attack
    from erasekit.edits import Edit
    from erasekit.models.families import Family


@dataclass(frozen=True)
class AttackOptions:
    """What ``erasekit attack`` is asked: the attack and its ``settings`` by name (Python values, or text
    as typed after ``--set key=``), the ``edit`` directory (None: the unedited model, on ``concept``),
    the concept (None: the edit's first target), attacked prompts and images judged per prompt, the
    judge, the run directory (None: ``EDIT/attack-NAME``, or ``runs/attack-NAME-baseline`` without an
    edit; a rerun resumes), the model (None: the edit's), the sampler and where it runs.
    ``check_base`` refuses an edit made on another model."""

    attack: str
    edit: Path | None = None
    concept: str | None = None
    prompts: int = 8
    samples: int = 4
    settings: Mapping[str, object] = field(default_factory=dict)
    judge: str = "auto"
    out: Path | None = None
    model: str | None = None
    steps: int = 25
    guidance: float = 7.5
    device: str | None = None
    dtype: str = "fp32"
    overwrite: bool = False
    check_base: bool = True


@dataclass(frozen=True)
class CheckedAttack:
    """The attack with its config, the edit (the identity edit for the baseline), the concept, the model
    to load and the run directory, made once before the model loads."""

    attack: Attack
    config: object
    edit: Edit
    concept: str
    model: str | None
    run_dir: Path


@dataclass(frozen=True)
class AttackResult:
    """A finished attack: what ``results.json`` holds (``summary``) and the run directory that holds it,
    ``grid.png`` and ``report.html``."""

    summary: dict
    run_dir: Path
    report: Path


def _no_notice(concept: str) -> None:
    """The default for :func:`attack`'s ``on_baseline``: nothing to say."""


def check_attack(options: AttackOptions, on_baseline: Callable[[str], None] = _no_notice) -> CheckedAttack:
    """Refuse, before any model loads, an unknown attack or judge, a bad setting, device or precision, a
    baseline without a concept, an edit that cannot be read, and on the embedded model a concept it has
    no prompts of; ``on_baseline`` hears the concept when no edit is given (the unedited model is attacked)."""
    from erasekit.attacks import get_attack
    from erasekit.edits import Edit
    from erasekit.eval.attack_run import attack_targets, unedited
    from erasekit.judges import JUDGES
    from erasekit.models.families import family_of_model
    from erasekit.models.loading import EMBEDDED_FLUX_NAME, EMBEDDED_NAME, check_device_and_dtype

    chosen = get_attack(options.attack)
    config = make_config(chosen, dict(options.settings))  # type: ignore[arg-type]
    if options.judge not in JUDGES:
        raise ErasekitError(f"unknown judge {options.judge!r}; choose one of {', '.join(JUDGES)}")
    check_device_and_dtype(options.device, options.dtype)
    if options.edit is None:
        if not options.concept:
            raise ErasekitError("without --edit the unedited model is attacked as the baseline; give --concept")
        on_baseline(options.concept)
        edit, run_dir = unedited(options.concept), options.out or Path("runs") / f"attack-{options.attack}-baseline"
    else:
        edit = Edit.load(options.edit)
        run_dir = options.out or options.edit / f"attack-{options.attack}"
    concept = options.concept or edit.card["targets"][0]
    model = options.model or edit.card.get("model")
    refuse_family(family_of_model(model), f"the {options.attack} attack")
    if model is None or str(model) in (EMBEDDED_NAME, EMBEDDED_FLUX_NAME):  # the embedded models' prompts are known now
        attack_targets(concept, options.prompts, world=True)
    return CheckedAttack(chosen, config, edit, concept, model, run_dir)


def refuse_family(family: Family | None, what: str) -> None:
    """One line for an attack on a model family whose text path the attacks do not reach."""
    from erasekit.primitives.soft_prompt import TextPath

    if family is not None and family.name not in TextPath.FAMILIES:
        raise ErasekitError(f"{what} does not run on {family.title} models: the attacks do not reach its prompt")


def attack(options: AttackOptions, on_baseline: Callable[[str], None] = _no_notice) -> AttackResult:
    """Attack the edit on the concept's prompts, judge every image, and write the run directory."""
    from PIL import Image

    from erasekit.eval.attack_run import attack_grid, attack_targets, run_attack
    from erasekit.eval.generation import SamplerSettings
    from erasekit.judges import make_judge
    from erasekit.models.embedded import is_world_model
    from erasekit.models.families import pipeline_family
    from erasekit.models.loading import load_pipeline
    from erasekit.report import write_run_report

    checked = check_attack(options, on_baseline)
    run_dir = checked.run_dir
    with claim_outputs([(run_dir, "attack")], options.overwrite):
        pipe = load_pipeline(checked.model, options.dtype, options.device, progress=False)
        refuse_family(pipeline_family(pipe), f"the {options.attack} attack")  # a hub id's family is known once it has loaded
        targets = attack_targets(checked.concept, options.prompts, is_world_model(pipe))
        result = run_attack(pipe, checked.edit, checked.attack, checked.config, targets, make_judge(options.judge, pipe),
                            run_dir, options.samples, SamplerSettings(steps=options.steps, guidance=options.guidance),
                            check_base=options.edit is not None and options.check_base)  # fmt: skip
        write_json(run_dir / "results.json", result)
        write_with(run_dir / "grid.png", lambda tmp: Image.fromarray(attack_grid(run_dir, result)).save(tmp, format="PNG"))
        report = write_run_report(run_dir, name=run_dir.name)
    return AttackResult(result, run_dir, report)
