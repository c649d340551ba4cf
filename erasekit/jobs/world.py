"""The ``world`` jobs: train the embedded model on the world, draw scenes of it, list its concepts.

Training and rendering load torch and numpy, so their modules are imported inside the functions
that use them: the command line answers ``--help`` and a bad flag without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erasekit.io import claim_outputs, write_with
from erasekit.world import vocabulary as V


@dataclass(frozen=True)
class WorldTrainOptions:
    """What ``erasekit world train`` is asked: where checkpoints and caches go (a rerun resumes from
    them), a time limit per training stage in minutes, the UNet's optimisation steps, the seed, and
    the command line recorded with the exported model."""

    work_dir: Path = Path(".cache/train")
    minutes: float | None = None  # None: each stage runs to its end
    unet_steps: int | None = None  # the denoiser's steps; None: 3400 for the UNet, 6000 for FLUX's transformer
    seed: int = 0
    command: str = "erasekit world train"
    family: str = "sd"  # "flux": erasekit-tiny-flux (its work directory defaults to .cache/train-flux)


def train_world(options: WorldTrainOptions) -> Path:
    """Train an embedded model on the world (sd: evaluator, VAE and UNet of erasekit-tiny; flux: the
    transformer of erasekit-tiny-flux on erasekit-tiny's VAE and evaluator); the exported pipeline's path."""
    if options.family == "flux":
        from erasekit.world.flux_training import FluxTrainConfig, train_flux

        work_dir = Path(".cache/train-flux") if options.work_dir == Path(".cache/train") else options.work_dir
        steps = {"steps": options.unet_steps} if options.unet_steps is not None else {}
        return train_flux(FluxTrainConfig(seed=options.seed, work_dir=work_dir, minutes=options.minutes,
                                          command=options.command, **steps))  # fmt: skip
    from erasekit.world.training import TrainConfig, train_all

    return train_all(TrainConfig(seed=options.seed, work_dir=options.work_dir, unet_steps=options.unet_steps or 3400,
                                 unet_minutes=options.minutes, command=options.command))  # fmt: skip


@dataclass(frozen=True)
class WorldShowOptions:
    """What ``erasekit world show`` is asked: the PNG to write, how many scenes and the world's seed."""

    out: Path = Path("runs/world.png")
    count: int = 32
    seed: int = 0
    overwrite: bool = False


@dataclass(frozen=True)
class WorldShowResult:
    """The PNG written, and the caption of each scene on it, in order."""

    out: Path
    captions: list[str]


def show_world(options: WorldShowOptions) -> WorldShowResult:
    """Draw scenes of the world (ground truth, no model involved) as one grid image."""
    from erasekit.eval.generation import image_grid
    from erasekit.world.dataset import render_dataset

    with claim_outputs([(options.out, None)], options.overwrite):
        data = render_dataset(options.count, options.seed, workers=1)
        grid = image_grid(data.images, 8)
        write_with(options.out, lambda tmp: grid.save(tmp, format="PNG"))
    return WorldShowResult(options.out, list(data.captions))


def world_vocabulary() -> dict[str, dict[str, Any]]:
    """The world's concepts by section: shapes with synonyms, artists, characters, flame phrases."""
    return {
        "shapes": {s: {"synonyms": list(V.SYNONYMS[s]), "association": V.SHAPE_ASSOCIATIONS[s]} for s in V.SHAPES},
        "artists": {a.name: {"texture": a.texture, "association": a.association} for a in V.ARTISTS},
        "characters": {
            c.name: {"look": [c.body_color, c.hat_style, c.hat_color], "association": c.association} for c in V.CHARACTERS
        },
        "flames": {"explicit": list(V.FLAME_EXPLICIT), "implicit": list(V.FLAME_IMPLICIT)},
    }
