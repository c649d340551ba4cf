"""Seeded, batched generation from prompt rows, and image grids.

Each image has its own ``torch.Generator`` seeded from its row, so an image depends only on its
prompt, seed and sampler settings, never on the batch it happened to share: the text encoder, the
UNet and the VAE decoder always see calls of exactly ``SamplerSettings.chunk`` rows (the last
padded), because their kernels pick an algorithm by batch size and two algorithms round
differently. On CPU the same command then gives bit-identical images whatever ``--batch-size``.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import PromptRow
from erasekit.io import write_with
from erasekit.primitives.diffusion import pipeline_images
from erasekit.primitives.workers import Workers

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


@dataclass(frozen=True)
class SamplerSettings:
    """How images are sampled: ``steps`` sampler steps at classifier-free ``guidance``.

    ``batch_size`` is the images per pipeline call and ``chunk`` the rows per text-encoder, UNet and VAE
    call (always that many, the last call padded, so an image never depends on its batch); ``height`` and
    ``width`` are in pixels, None for the UNet's native size.
    """

    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 64  # images per pipeline call
    chunk: int = 32  # rows per UNet / VAE call (with guidance a row per image and prompt/unconditional)
    height: int | None = None  # None: the UNet's native size
    width: int | None = None


@dataclass
class Generated:
    """Images with the row each came from and the seed that made it."""

    images: np.ndarray  # (n, H, W, 3) uint8
    row_index: np.ndarray  # (n,)
    seeds: np.ndarray  # (n,)

    def save(self, path: Path) -> None:
        """Write the images, row indices and seeds to ``path`` as a compressed .npz, replacing it whole."""
        write_with(
            path, lambda tmp: np.savez_compressed(open(tmp, "wb"), images=self.images, row_index=self.row_index, seeds=self.seeds)
        )

    @classmethod
    def load(cls, path: Path) -> Generated:
        """The images :meth:`save` wrote to ``path``; an error for a missing or damaged file."""
        if not Path(path).exists():
            raise ErasekitError(f"no generated images at {path}; run `erasekit generate` first")
        try:
            with np.load(path) as z:
                return cls(z["images"], z["row_index"], z["seeds"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # numpy's ways to say "damaged"
            raise ErasekitError(f"{path} is not an images.npz written by erasekit generate ({type(err).__name__})") from None


def check_prompts(pipe: DiffusionPipeline, prompts: list[str]) -> None:
    """Reject prompts the tokenizer cannot take whole (the pipeline would silently truncate them)."""
    tokenizers = [pipe.tokenizer, *([pipe.tokenizer_2] if getattr(pipe, "tokenizer_2", None) is not None else [])]
    for prompt in dict.fromkeys(prompts):
        if not prompt.strip():
            raise ErasekitError("empty prompt; give the text to generate")
        for tokenizer in tokenizers:
            limit = min(tokenizer.model_max_length, 512)  # (FLUX pads its T5 path to at most 512)
            n = len(tokenizer(prompt).input_ids)
            if n > limit:
                raise ErasekitError(
                    f"prompt {prompt!r} has {n} tokens but this model's tokenizer takes at most {limit}; shorten it"
                )


def expand(rows: list[PromptRow]) -> list[tuple[int, str, int]]:
    """(row index, prompt, seed) for every image the rows ask for."""
    return [(i, row.prompt, row.image_seed(k)) for i, row in enumerate(rows) for k in range(row.samples)]


def _rows_of(value: Any, start: int, rows: int, n: int) -> Any:
    """``value``'s rows start..start+rows when it is batched (leading dimension ``n``), padded by
    repeating the last row; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n:
        piece = value[start : start + rows]
        return torch.cat([piece, piece[-1:].expand(rows - len(piece), *piece.shape[1:])]) if len(piece) < rows else piece
    if isinstance(value, dict):
        return {k: _rows_of(v, start, rows, n) for k, v in value.items()}
    return value


def _joined(outputs: list[Any], n: int) -> Any:
    """The chunks' outputs as one output of ``n`` rows (tensors, tuples, diffusers output dataclasses)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)[:n]
    if isinstance(first, tuple):
        return tuple(_joined([o[k] for o in outputs], n) for k in range(len(first)))
    if is_dataclass(first):
        return type(first)(**{f.name: _joined([getattr(o, f.name) for o in outputs], n) for f in fields(first)})
    return first


POSITION_IDS = ("txt_ids", "img_ids")  # FLUX's rotary position ids: (tokens, 3), shared by every row


@contextmanager
def fixed_shape_calls(module: torch.nn.Module, method: str, rows: int) -> Iterator[None]:
    """Run ``module.<method>`` in calls of exactly ``rows`` rows, the last padded, so that each row's
    arithmetic does not depend on how many rows came with it. A call by keywords alone (FLUX's
    transformer) counts its rows in ``hidden_states``; its position ids are per token, not per row."""
    own = module.__dict__.get(method)  # an accelerate hook may have set one already
    call: Callable[..., Any] = getattr(module, method)

    def chunked(*args: Any, **kwargs: Any) -> Any:
        n = (args[0] if args else kwargs["hidden_states"]).shape[0]
        per_token = {key: kwargs.pop(key) for key in POSITION_IDS if key in kwargs}
        outputs = [
            call(*(_rows_of(a, s, rows, n) for a in args), **_rows_of(kwargs, s, rows, n), **per_token) for s in range(0, n, rows)
        ]
        return _joined(outputs, n)

    setattr(module, method, chunked)
    try:
        yield
    finally:
        if own is None:
            delattr(module, method)
        else:
            setattr(module, method, own)


@torch.no_grad()
def generate(
    pipe: DiffusionPipeline,
    rows: list[PromptRow],
    settings: SamplerSettings | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> Generated:
    """Generate every image of ``rows`` with ``pipe`` (any StableDiffusionPipeline-like pipeline).

    Under several ``workers`` each process draws every n-th image and all of them get every image back:
    an image depends only on its row and seed, so the result is the one-process result."""
    settings = settings or SamplerSettings()
    workers = workers or Workers()
    jobs = expand(rows)
    check_prompts(pipe, [p for _, p, _ in jobs])
    mine = workers.share(range(len(jobs)))
    drawn = []
    bar = tqdm(total=len(mine), desc="generating", unit="img", disable=not progress or not workers.is_main)
    with ExitStack() as fixed:
        for name, method in (("text_encoder", "forward"), ("text_encoder_2", "forward"), ("unet", "forward"),
                             ("transformer", "forward"), ("vae", "decode")):  # fmt: skip
            if getattr(pipe, name, None) is not None:
                fixed.enter_context(fixed_shape_calls(getattr(pipe, name), method, settings.chunk))
        for start in range(0, len(mine), settings.batch_size):
            batch = [jobs[k] for k in mine[start : start + settings.batch_size]]
            images = pipeline_images(
                pipe,
                [seed for _, _, seed in batch],
                settings.steps,
                settings.guidance,
                prompt=[p for _, p, _ in batch],
                height=settings.height,
                width=settings.width,
            )
            drawn.append(images)
            bar.update(len(batch))
    bar.close()
    # C order whatever layout the pipeline's output had: a judge's kernels may round differently by layout
    images = np.ascontiguousarray(np.concatenate(drawn)) if drawn else None
    if workers.count > 1:  # each process's images back into job order, in every process
        pieces = [(share, part) for share, part in workers.gather((mine, images)) if part is not None]
        images = np.empty((len(jobs), *pieces[0][1].shape[1:]), pieces[0][1].dtype)
        for share, part in pieces:
            images[share] = part
    return Generated(images, np.array([i for i, _, _ in jobs]), np.array([s for _, _, s in jobs]))


LABEL_FONT_SIZE = 16  # px: legible beside 128-px tiles and still ~11 px when a phone shrinks the grid to its width


@functools.cache
def label_font(size: int = LABEL_FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, the TrueType font matplotlib ships (a dependency): the same glyphs on every machine,
    so a grid is the same image everywhere; PIL's built-in font only where that file is missing."""
    import matplotlib
    from matplotlib import font_manager

    shipped = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for path in (shipped, font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))):
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:  # no such file, or Pillow built without FreeType
            continue
    return ImageFont.load_default()


def image_grid(images: np.ndarray, columns: int, labels: list[str] | None = None, scale: int = 2) -> Image.Image:
    """Tile images into a grid; ``labels`` (one per row of the grid) are written on the left."""
    n, h, w, _ = images.shape
    rows = (n + columns - 1) // columns
    font = label_font(max(8, min(LABEL_FONT_SIZE, h * scale - 4)))  # a row of tiny tiles gets a smaller font
    label_w = 0 if not labels else 16 + int(np.ceil(max(font.getlength(s) for s in labels)))
    grid = Image.new("RGB", (label_w + columns * w * scale, rows * h * scale), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k in range(n):
        r, c = divmod(k, columns)
        tile = Image.fromarray(images[k]).resize((w * scale, h * scale), Image.Resampling.NEAREST)
        grid.paste(tile, (label_w + c * w * scale, r * h * scale))
    _, top, _, bottom = font.getbbox("Ag")  # one box for every label, so that all sit on the same line in their row
    for r, text in enumerate(labels or []):
        draw.text((8, r * h * scale + (h * scale - (bottom - top)) // 2 - top), text, fill=(0, 0, 0), font=font)
    return grid


def save_grid(path: Path, generated: Generated, rows: list[PromptRow], per_row: int = 8) -> None:
    """A PNG with up to ``per_row`` images of each prompt row, labelled by prompt."""
    picks, labels = [], []
    for i, row in enumerate(rows):
        idx = np.flatnonzero(generated.row_index == i)[:per_row]
        if len(idx) == 0:
            continue
        tiles = generated.images[idx]
        if len(tiles) < per_row:
            tiles = np.concatenate([tiles, np.full((per_row - len(tiles), *tiles.shape[1:]), 255, np.uint8)])
        picks.append(tiles)
        labels.append(row.prompt[:48])
    grid = image_grid(np.concatenate(picks), per_row, labels)
    write_with(path, lambda tmp: grid.save(tmp, format="PNG"))
