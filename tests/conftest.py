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


@pytest.fixture(autouse=True)
def _hooks_come_off_the_shared_pipeline(request):
    """A test that hooks something onto the session's pipeline takes it off again: a hook left behind would
    change what every later test on that pipeline samples, in whatever order the tests run."""
    yield
    if "pipe" in request.fixturenames:
        shared = request.getfixturevalue("pipe")
        left = [f"{part}.{name}" for part in ("unet", "text_encoder") for name, module in getattr(shared, part).named_modules()
                if module._forward_hooks or module._forward_pre_hooks]  # fmt: skip
        assert not left, f"hooks left on the shared pipeline: {left[:3]}"
