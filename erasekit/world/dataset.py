"""Rendered datasets of the world: images, captions and label arrays, cached on disk.

Item ``i`` of the dataset with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``, so any
slice is reproducible on its own and rendering parallelises without changing a pixel.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erasekit.world import vocabulary as V
from erasekit.world.captions import describe, sample_scene
from erasekit.world.render import IMAGE_SIZE, Scene, render


@dataclass
class WorldData:
    """``n`` rendered scenes: uint8 images (n, 64, 64, 3), masks, captions and label indices."""

    images: np.ndarray
    masks: np.ndarray
    captions: list[str]
    shape: np.ndarray  # index into V.SHAPE_LABELS
    artist: np.ndarray  # index into V.ARTIST_LABELS
    character: np.ndarray  # index into V.CHARACTER_LABELS
    flames: np.ndarray  # 0 or 1
    terms: list[str]  # the words the caption used for the shape (class, synonym or association), "" if none
    colors: list[str]  # the shape's colour name

    def __len__(self) -> int:
        return len(self.captions)


def label_indices(scene: Scene) -> tuple[int, int, int, int]:
    """The classifier targets of ``scene`` (shape, artist, character, flames)."""
    return (
        V.SHAPE_LABELS.index(scene.shape or V.NONE),
        V.ARTIST_LABELS.index(scene.artist or V.NONE),
        V.CHARACTER_LABELS.index(scene.character or V.NONE),
        int(scene.flames),
    )


def _render_range(seed: int, start: int, stop: int) -> tuple:
    n = stop - start
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), bool)
    labels = np.empty((n, 4), np.int64)
    captions, terms, colors = [], [], []
    for k, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, i])
        captioned = describe(sample_scene(rng), rng)
        images[k], masks[k] = render(captioned.scene, rng)
        labels[k] = label_indices(captioned.scene)
        captions.append(captioned.caption)
        terms.append(captioned.term or "")
        colors.append(captioned.scene.color)
    return images, masks, labels, captions, terms, colors


def render_dataset(n: int, seed: int, workers: int | None = None) -> WorldData:
    """Render ``n`` scenes with ``seed`` in parallel processes."""
    workers = workers or min(4, os.cpu_count() or 1)
    bounds = np.linspace(0, n, workers * 4 + 1).astype(int)
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_render_range, [seed] * (len(bounds) - 1), bounds[:-1], bounds[1:]))
    labels = np.concatenate([p[2] for p in parts])
    return WorldData(
        images=np.concatenate([p[0] for p in parts]),
        masks=np.concatenate([p[1] for p in parts]),
        captions=[c for p in parts for c in p[3]],
        shape=labels[:, 0],
        artist=labels[:, 1],
        character=labels[:, 2],
        flames=labels[:, 3],
        terms=[t for p in parts for t in p[4]],
        colors=[c for p in parts for c in p[5]],
    )


def cached_dataset(cache_dir: Path, n: int, seed: int) -> WorldData:
    """``render_dataset(n, seed)``, kept as an .npz in ``cache_dir`` after the first call."""
    path = Path(cache_dir) / f"world-v2-seed{seed}-n{n}.npz"  # v2: with terms and colours
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return WorldData(
            images=z["images"],
            masks=np.unpackbits(z["masks"], axis=-1).astype(bool)[..., :IMAGE_SIZE],
            captions=list(z["captions"]),
            shape=z["shape"],
            artist=z["artist"],
            character=z["character"],
            flames=z["flames"],
            terms=list(z["terms"]),
            colors=list(z["colors"]),
        )
    data = render_dataset(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        images=data.images,
        masks=np.packbits(data.masks, axis=-1),
        captions=np.array(data.captions),
        shape=data.shape,
        artist=data.artist,
        character=data.character,
        flames=data.flames,
        terms=np.array(data.terms),
        colors=np.array(data.colors),
    )
    os.replace(tmp, path)
    return data
