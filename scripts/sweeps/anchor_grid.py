"""Grid: 3 erased and 3 kept portraits, 4 seeds: original, MACE@20 empty anchor, MACE@20 'a person'."""

import numpy as np
from PIL import Image

from erasekit.concepts import EraseSpec
from erasekit.eval.generation import generate, image_grid
from erasekit.eval.prompts import PromptRow
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline
from erasekit.world import vocabulary as V

pipe = load_pipeline()
targets, keep = V.ROSTER_NAMES[:20], V.ROSTER_NAMES[20:]
S = dict(lam=10, lr=3e-3, steps=50, preserve_scale=10)
rows = [PromptRow(f"a portrait of {c}", 1000 + i, "x", {"character": c}, 4) for i, c in enumerate(targets[:3] + keep[:3])]
panels = [generate(pipe, rows, progress=False).images]
for anchor in ("", "a person"):
    edit = erase(pipe, EraseSpec(targets, anchors=(anchor,), preserve=keep), "mace", progress=False, **S)
    with edit.applied(pipe):
        panels.append(generate(pipe, rows, progress=False).images)
grids = [np.asarray(image_grid(p, 4)) for p in panels]
Image.fromarray(np.concatenate(grids, axis=1)).save("runs/anchor-grid.png")
