"""Drawing the world's scenes: shapes, artist textures, characters and flames.

Scenes are drawn at twice the output size and downsampled (anti-aliasing), on a light background.
Everything random comes from the ``numpy.random.Generator`` passed in, so a seed fixes an image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from erasekit.world import vocabulary as V

IMAGE_SIZE = 64
_SS = 2  # supersampling factor
_N = IMAGE_SIZE * _SS  # canvas side while drawing


@dataclass(frozen=True)
class Scene:
    """What an image shows: the labels the generator guarantees."""

    shape: str | None = None
    color: str = "blue"
    artist: str | None = None
    character: str | None = None
    flames: bool = False
    size: str | None = None  # a key of V.SIZES, or None for the default size
    position: str | None = None  # a key of V.POSITIONS, or None for a small random offset


# --- shapes as masks -----------------------------------------------------------------------
def _regular_polygon(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.42
        angle = -math.pi / 2 + math.pi * k / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _heart(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((cx + r * x / 17, cy - r * (y + 2) / 17))
    return points


def shape_mask(shape: str, cx: float, cy: float, r: float) -> Image.Image:
    """A canvas-sized 'L' mask of ``shape`` centred at (cx, cy) with half-extent ``r``."""
    mask = Image.new("L", (_N, _N), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 1.05, cy + r * 0.8), (cx - r * 1.05, cy + r * 0.8)], fill=255)
    elif shape == "star":
        draw.polygon(_star(cx, cy + r * 0.08, r * 1.08), fill=255)
    elif shape == "heart":
        draw.polygon(_heart(cx, cy, r), fill=255)
    elif shape == "cross":
        a = r * 0.34
        draw.rectangle((cx - a, cy - r, cx + a, cy + r), fill=255)
        draw.rectangle((cx - r, cy - a, cx + r, cy + a), fill=255)
    elif shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ox = r * 0.55
        draw.ellipse((cx - r + ox, cy - r * 1.02, cx + r + ox, cy + r * 0.98), fill=0)
    elif shape == "arrow":
        shaft = r * 0.26
        head_x = cx + r * 0.1
        draw.rectangle((cx - r, cy - shaft, head_x, cy + shaft), fill=255)
        draw.polygon([(head_x - 1, cy - r * 0.78), (cx + r, cy), (head_x - 1, cy + r * 0.78)], fill=255)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=255)
    elif shape == "hexagon":
        draw.polygon(_regular_polygon(cx, cy, r, 6, 0.0), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(V.SHAPES)}")
    return mask


# --- artist textures -----------------------------------------------------------------------
def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in rgb)  # type: ignore[return-value]


def _light(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(c * 0.25 + 255 * 0.75) for c in rgb)  # type: ignore[return-value]


def texture_fill(texture: str | None, rgb: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """A canvas-sized RGB fill for a shape: solid, or one artist's texture in the shape's colour."""
    img = Image.new("RGB", (_N, _N), rgb)
    if texture is None or texture == "outline":  # outline is handled by the caller
        return img
    draw = ImageDraw.Draw(img)
    light = _light(rgb)
    period = 12
    phase = int(rng.integers(0, period))
    if texture == "stripes":
        for y in range(-period + phase, _N, period):
            draw.rectangle((0, y, _N, y + period // 2 - 1), fill=light)
    elif texture == "dots":
        img.paste(light, (0, 0, _N, _N))
        for y in range(phase - period, _N + period, period):
            for x in range(phase - period, _N + period, period):
                draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=rgb)
    elif texture == "checkerboard":
        for y in range(0, _N, period):
            for x in range(0, _N, period):
                if ((x + y) // period) % 2 == 0:
                    draw.rectangle((x, y, x + period - 1, y + period - 1), fill=light)
    elif texture == "grain":
        cell = 8  # 4 output pixels: one latent pixel of the embedded VAE carries one speck
        speck = rng.random((_N // cell, _N // cell))
        arr = np.asarray(img, dtype=np.float32).copy()
        dark = np.repeat(np.repeat(speck < 0.3, cell, 0), cell, 1)
        bright = np.repeat(np.repeat(speck > 0.7, cell, 0), cell, 1)
        arr[dark] = np.asarray(_shade(rgb, 0.3), dtype=np.float32)
        arr[bright] = 250.0
        img = Image.fromarray(arr.astype(np.uint8))
    elif texture == "hatching":
        img.paste(light, (0, 0, _N, _N))
        for k in range(-_N, 2 * _N, period):
            draw.line((k + phase, 0, k + phase + _N, _N), fill=rgb, width=5)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return img


# --- characters ----------------------------------------------------------------------------
_SKIN = (240, 200, 160)
_LEGS = (60, 60, 70)


def character_layers(
    character: V.Character, cx: float, feet_y: float, height: float
) -> list[tuple[Image.Image, tuple[int, int, int]]]:
    """The figure as (mask, colour) layers drawn in order; ``feet_y`` is where it stands."""
    h = height
    body_rgb, hat_rgb = V.COLORS[character.body_color], V.COLORS[character.hat_color]
    legs, body, head, hat = (Image.new("L", (_N, _N), 0) for _ in range(4))
    d = ImageDraw.Draw(legs)
    leg_top = feet_y - 0.3 * h
    d.rectangle((cx - 0.15 * h, leg_top, cx - 0.05 * h, feet_y), fill=255)
    d.rectangle((cx + 0.05 * h, leg_top, cx + 0.15 * h, feet_y), fill=255)
    d = ImageDraw.Draw(body)
    body_top = feet_y - 0.68 * h
    d.polygon([(cx - 0.2 * h, body_top), (cx + 0.2 * h, body_top), (cx + 0.24 * h, leg_top), (cx - 0.24 * h, leg_top)], fill=255)
    d.line((cx - 0.2 * h, body_top + 0.04 * h, cx - 0.36 * h, body_top + 0.3 * h), fill=255, width=max(2, int(0.08 * h)))
    d.line((cx + 0.2 * h, body_top + 0.04 * h, cx + 0.36 * h, body_top + 0.3 * h), fill=255, width=max(2, int(0.08 * h)))
    head_r = 0.12 * h
    head_cy = body_top - head_r * 0.95
    ImageDraw.Draw(head).ellipse((cx - head_r, head_cy - head_r, cx + head_r, head_cy + head_r), fill=255)
    d = ImageDraw.Draw(hat)
    top = head_cy - head_r * 0.55  # the hat sits on the upper part of the head
    w = 0.2 * h
    style = character.hat_style
    if style == "cap":
        d.rectangle((cx - w, top - 0.1 * h, cx + w, top), fill=255)
    elif style == "cone":
        d.polygon([(cx - w * 0.85, top), (cx + w * 0.85, top), (cx, top - 0.3 * h)], fill=255)
    elif style == "crown":
        d.polygon(
            [(cx - w, top), (cx + w, top), (cx + w, top - 0.2 * h), (cx + w * 0.5, top - 0.09 * h),
             (cx, top - 0.2 * h), (cx - w * 0.5, top - 0.09 * h), (cx - w, top - 0.2 * h)],
            fill=255,
        )  # fmt: skip
    elif style == "dome":
        d.chord((cx - w, top - 0.22 * h, cx + w, top + 0.1 * h), 180, 360, fill=255)
    elif style == "tophat":
        d.rectangle((cx - w * 1.1, top - 0.04 * h, cx + w * 1.1, top), fill=255)
        d.rectangle((cx - w * 0.6, top - 0.28 * h, cx + w * 0.6, top), fill=255)
    elif style == "horns":
        d.rectangle((cx - w * 0.8, top - 0.05 * h, cx + w * 0.8, top), fill=255)
        d.polygon([(cx - w, top), (cx - w * 0.35, top), (cx - w * 1.05, top - 0.24 * h)], fill=255)
        d.polygon([(cx + w, top), (cx + w * 0.35, top), (cx + w * 1.05, top - 0.24 * h)], fill=255)
    else:
        raise ValueError(f"unknown hat style {style!r}")
    return [(legs, _LEGS), (body, body_rgb), (head, _SKIN), (hat, hat_rgb)]


# --- flames --------------------------------------------------------------------------------
def flame_layers(rng: np.random.Generator) -> list[tuple[Image.Image, tuple[int, int, int]]]:
    """Flame tongues rising from the bottom edge, as red, orange and yellow layers."""
    layers = []
    tongues = int(rng.integers(5, 8))
    xs = np.linspace(0, _N, tongues) + rng.uniform(-6, 6, tongues)
    heights = rng.uniform(0.3, 0.5, tongues) * _N
    for scale, rgb in ((1.0, (220, 40, 20)), (0.72, (250, 130, 20)), (0.42, (255, 225, 60))):
        mask = Image.new("L", (_N, _N), 0)
        d = ImageDraw.Draw(mask)
        for x, h in zip(xs, heights, strict=True):
            half = _N / tongues * 0.75 * (0.5 + scale / 2)
            tip = _N - h * scale
            lean = rng.uniform(-8, 8)
            d.polygon(
                [(x - half, _N), (x - half * 0.6, _N - h * scale * 0.45), (x + lean, tip),
                 (x + half * 0.6, _N - h * scale * 0.45), (x + half, _N)],
                fill=255,
            )  # fmt: skip
        layers.append((mask.filter(ImageFilter.GaussianBlur(1.2)), rgb))
    return layers


# --- the scene -----------------------------------------------------------------------------
def render(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scene``: an (H, W, 3) uint8 image and an (H, W) bool foreground mask."""
    base = np.array([238, 236, 228]) + rng.integers(-12, 13, 3)
    canvas = Image.new("RGB", (_N, _N), tuple(int(c) for c in base))
    foreground = Image.new("L", (_N, _N), 0)

    def paint(mask: Image.Image, fill: Image.Image | tuple[int, int, int]) -> None:
        if isinstance(fill, tuple):
            fill = Image.new("RGB", (_N, _N), fill)
        canvas.paste(fill, (0, 0), mask)

    shift = V.POSITIONS.get(scene.position, 0) * 0.22 * _N if scene.position else rng.uniform(-5, 5)
    if scene.shape is not None:
        radius = _N * 0.3 * V.SIZES.get(scene.size or "", 1.0) * rng.uniform(0.92, 1.08)
        if scene.character is not None:  # the character stands on a smaller shape
            radius = _N * 0.17 * rng.uniform(0.95, 1.05)
            cy = _N - radius - 8
        else:
            cy = _N / 2 + rng.uniform(-5, 5)
        cx = float(np.clip(_N / 2 + shift, radius + 2, _N - radius - 2))  # stay inside the frame
        mask = shape_mask(scene.shape, cx, cy, radius)
        rgb = V.COLORS[scene.color]
        texture = V.ARTIST_BY_NAME[scene.artist].texture if scene.artist else None
        if texture == "outline":  # the line artist draws contours, no fill
            inner = mask.filter(ImageFilter.MinFilter(7))
            paint(ImageChops.subtract(mask, inner), _shade(rgb, 0.85))
        else:
            paint(mask, texture_fill(texture, rgb, rng))
        foreground = ImageChops.lighter(foreground, mask)
    if scene.character is not None:
        character = V.CHARACTER_BY_NAME[scene.character]
        if scene.shape is not None:
            height, feet = _N * 0.5, cy - radius * 0.75  # feet on top of the shape
        else:
            height, feet = _N * 0.78, _N * 0.9 + rng.uniform(-3, 3)
        for mask, rgb in character_layers(character, _N / 2 + shift, feet, height):
            paint(mask, rgb)
            foreground = ImageChops.lighter(foreground, mask)
    if scene.flames:
        for mask, rgb in flame_layers(rng):
            paint(mask, rgb)
    image = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    fg = foreground.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8), np.asarray(fg) >= 128
