"""World-FID of the embedded models' gate images: each model against fresh renders of the world, and the
two models against each other, on the same prompts and seeds.

    erasekit gates --samples 8 --out runs/gates-tiny-8
    erasekit gates --model erasekit-tiny-flux --out runs/gates-flux          # 32 samples; the first 8 are shared
    python scripts/gates_world_fid.py runs/gates-tiny-8 runs/gates-flux --samples 8 --renders 4000

World-FID is the Fréchet distance of the world evaluator's pooled features (docs/world.md); the renders
are the training distribution (every kind of scene), so the number says how far a model's gate images
lie from it, not how good one image is. Only the images of the first ``--samples`` seeds of every gate
prompt enter, so runs of different sizes compare on the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from erasekit.eval.generation import Generated
from erasekit.eval.metrics import frechet_distance
from erasekit.world.dataset import render_dataset
from erasekit.world.evaluator import load_world_evaluator, predict


def first_seeds(run: Path, samples: int) -> np.ndarray:
    """The run's images of the first ``samples`` seeds of each prompt, in prompt order."""
    generated = Generated.load(run / "images.npz")
    keep = np.zeros(len(generated.images), dtype=bool)
    for row in np.unique(generated.row_index):
        keep[np.flatnonzero(generated.row_index == row)[:samples]] = True
    return generated.images[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path, help="two gate run directories")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--renders", type=int, default=4000)
    args = parser.parse_args()
    evaluator = load_world_evaluator()
    features = {str(run): predict(evaluator, first_seeds(run, args.samples)).features for run in args.runs}
    renders = predict(evaluator, render_dataset(args.renders, seed=123_456).images).features
    a, b = (str(r) for r in args.runs)
    result = {
        "samples_per_prompt": args.samples,
        "renders": args.renders,
        "images": {name: len(f) for name, f in features.items()},
        "world_fid_to_renders": {name: round(frechet_distance(f, renders), 3) for name, f in features.items()},
        "world_fid_between": round(frechet_distance(features[a], features[b]), 3),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
