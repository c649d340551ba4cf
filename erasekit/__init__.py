"""erasekit: erase concepts from text-to-image diffusion models and measure how well.

The Python API mirrors the CLI::

    from erasekit import EraseSpec, erase, export_edit, load_erased, load_pipeline

    pipe = load_pipeline()                                   # the embedded erasekit-tiny model
    edit = erase(pipe, EraseSpec(("square",)), "uce")        # an Edit: changed weights and a card
    edit.save("runs/square")
    erased = load_erased("runs/square")                      # the base model with the edit applied
    export_edit("runs/square", "kohya", "square.safetensors")

    from erasekit import read_prompt_file, generate, score, load_world_evaluator

    rows = read_prompt_file("demo.csv")                      # erasekit/prompts/demo.csv
    print(score(generate(erased, rows), rows, load_world_evaluator()).by("role"))

Names are imported on first use, so ``import erasekit`` (and the CLI's ``--help``) does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from erasekit.errors import ErasekitError
from erasekit.version import __version__

# public name → the module that defines it
_WHERE = {
    "Edit": "erasekit.edits",
    "load_erased": "erasekit.edits",
    "EraseSpec": "erasekit.concepts",
    "METHODS": "erasekit.methods",
    "erase": "erasekit.methods.runner",
    "export_edit": "erasekit.exports",
    "Exported": "erasekit.exports",
    "Generated": "erasekit.eval.generation",
    "SamplerSettings": "erasekit.eval.generation",
    "generate": "erasekit.eval.generation",
    "PromptRow": "erasekit.eval.prompts",
    "read_prompt_file": "erasekit.eval.prompts",
    "Evaluation": "erasekit.eval.scoring",
    "score": "erasekit.eval.scoring",
    "load_world_evaluator": "erasekit.world.evaluator",
    "load_pipeline": "erasekit.models.loading",
}

__all__ = [
    "METHODS",
    "Edit",
    "EraseSpec",
    "ErasekitError",
    "Evaluation",
    "Exported",
    "Generated",
    "PromptRow",
    "SamplerSettings",
    "__version__",
    "erase",
    "export_edit",
    "generate",
    "load_erased",
    "load_pipeline",
    "load_world_evaluator",
    "read_prompt_file",
    "score",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'erasekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from erasekit.concepts import EraseSpec
    from erasekit.edits import Edit, load_erased
    from erasekit.eval.generation import Generated, SamplerSettings, generate
    from erasekit.eval.prompts import PromptRow, read_prompt_file
    from erasekit.eval.scoring import Evaluation, score
    from erasekit.exports import Exported, export_edit
    from erasekit.methods import METHODS
    from erasekit.methods.runner import erase
    from erasekit.models.loading import load_pipeline
    from erasekit.world.evaluator import load_world_evaluator
