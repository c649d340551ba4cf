"""Why SDD does not erase on the world: how often the *unconditional* prompt and the concept draw the
square, before and after SDD's self-distillation (its target is the model's own unconditional
prediction, which the trained cross-attention also moves).

    python scripts/sweeps/sdd_drift.py '{"lr": 3e-3, "iterations": 400, "ema_decay": 0.99}' ...
"""

import json
import sys

from erasekit.concepts import EraseSpec
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline
from erasekit.primitives.diffusion import pipeline_images
from erasekit.world.evaluator import load_world_evaluator, predict

pipe = load_pipeline(None, progress=False)
evaluator = load_world_evaluator()
SEEDS = list(range(32))


def square_share(model: object, prompt: str) -> float:
    """Share of 32 images of ``prompt`` the world evaluator reads as a square (25 steps, guidance 7.5)."""
    images = pipeline_images(model, SEEDS, 25, 7.5, prompt=[prompt] * len(SEEDS))
    labels = predict(evaluator, images).label("shape")
    return sum(label == "square" for label in labels) / len(labels)


prompts = ("", "a photo of a square")
print("original", {p or '""': square_share(pipe, p) for p in prompts}, flush=True)
for arg in sys.argv[1:]:
    edit = erase(pipe, EraseSpec(("square",)), "sdd", progress=False, **json.loads(arg))
    with edit.applied(pipe) as erased:
        print(arg, {p or '""': square_share(erased, p) for p in prompts}, flush=True)
