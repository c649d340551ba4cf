from pathlib import Path

import pytest

from erasekit.models.embedded import EMBEDDED_DIR


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The committed embedded model, completed with its text encoder."""
    from erasekit.models.embedded import ensure_text_encoder

    return ensure_text_encoder(EMBEDDED_DIR)


@pytest.fixture(scope="session")
def pipe(embedded_dir):
    from erasekit.models.loading import load_pipeline

    return load_pipeline(embedded_dir)


@pytest.fixture(scope="session")
def evaluator():
    from erasekit.world.evaluator import load_world_evaluator

    return load_world_evaluator()
