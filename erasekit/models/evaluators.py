"""Locating the classifiers that judge generated images."""

from __future__ import annotations

from pathlib import Path

from erasekit.errors import ErasekitError
from erasekit.eval.evaluator import WorldEvaluator
from erasekit.models.embedded import EMBEDDED_DIR, EVALUATOR_SUBDIR


def load_world_evaluator(model_dir: Path = EMBEDDED_DIR) -> WorldEvaluator:
    """The world evaluator shipped beside the embedded model."""
    try:
        return WorldEvaluator.load(Path(model_dir) / EVALUATOR_SUBDIR)
    except (FileNotFoundError, ValueError) as err:
        raise ErasekitError(str(err)) from err
