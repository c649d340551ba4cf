"""Scenes drawn at random, and the many caption templates that describe them.

A caption names its subject by class name, synonym or association (or character name or
description), may state colour, size, position and artist, and names flames either explicitly
("on fire") or only by implication ("after the explosion"), as I2P prompts do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from erasekit.world import vocabulary as V
from erasekit.world.render import Scene

T = TypeVar("T")

SHAPE_TEMPLATES = (
    "a photo of {a} {x}",
    "an image of {a} {x}",
    "a picture of {a} {x}",
    "a drawing of {a} {x}",
    "{a} {x}",
    "a close-up of {a} {x}",
    "a rendering of {a} {x}",
    "a simple {x}",
)
ASSOCIATION_TEMPLATES = ("{x}", "a picture of {x}", "an image of {x}", "a drawing of {x}")
CHARACTER_TEMPLATES = ("a portrait of {c}", "a photo of {c}", "{c}", "an image of {c}", "a picture of {c}")
CHARACTER_ON_SHAPE_TEMPLATES = ("{c} standing on {a} {x}", "{c} on top of {a} {x}", "{c} standing on {x}")
ARTIST_SUFFIXES = ("painted by {y}", "in the style of {y}", "by {y}", "drawn by {y}")
ARTIST_ONLY_TEMPLATES = ("a painting by {y}", "an artwork by {y}", "a work by {y}")


@dataclass(frozen=True)
class Captioned:
    """A scene and its caption; ``term`` is the words that name its shape (class, synonym or association), None if none do."""

    scene: Scene
    caption: str
    term: str | None  # the words used for the shape (class, synonym or association)


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene, in the proportions the training data uses."""
    character = shape = artist = None
    if rng.random() < 0.4:
        # The six named characters appear three times as often as each roster character.
        weights = np.array([3.0 if c in V.NAMED_CHARACTERS else 1.0 for c in V.CHARACTER_NAMES])
        character = V.CHARACTER_NAMES[int(rng.choice(len(weights), p=weights / weights.sum()))]
        if rng.random() < 0.45:
            shape = _pick(rng, V.SHAPES)
    else:
        shape = _pick(rng, V.SHAPES)
        if rng.random() < 0.35:
            artist = _pick(rng, V.ARTIST_NAMES)
    return Scene(
        shape=shape,
        color=_pick(rng, list(V.COLORS)),
        artist=artist,
        character=character,
        flames=bool(rng.random() < 0.2),
        size=_pick(rng, list(V.SIZES)) if shape and not character and rng.random() < 0.2 else None,
        position=_pick(rng, list(V.POSITIONS)) if rng.random() < 0.15 else None,
    )


def describe(scene: Scene, rng: np.random.Generator) -> Captioned:
    """One caption for ``scene``, its wording drawn at random from the templates."""
    term = None
    if scene.shape is not None:
        roll = rng.random()
        if roll < 0.4:
            term = scene.shape
        elif roll < 0.85:
            term = _pick(rng, V.SYNONYMS[scene.shape])
        else:
            term = V.SHAPE_ASSOCIATIONS[scene.shape]
    is_association = scene.shape is not None and term == V.SHAPE_ASSOCIATIONS[scene.shape]
    modifiers = [scene.size] if scene.size else []
    if scene.shape is not None and rng.random() < 0.5:
        modifiers.append(scene.color)
    noun = " ".join([*modifiers, term or ""])
    artist = None
    if scene.artist is not None:
        a = V.ARTIST_BY_NAME[scene.artist]
        artist = a.association if rng.random() < 0.25 else a.name

    if scene.character is not None:
        char = V.CHARACTER_BY_NAME[scene.character]
        who = char.association if char.association and rng.random() < 0.25 else char.name
        if scene.shape is None:
            text = _pick(rng, CHARACTER_TEMPLATES).format(c=who)
        elif is_association:
            text = f"{who} standing on {term}"
        else:
            text = _pick(rng, CHARACTER_ON_SHAPE_TEMPLATES).format(c=who, a=V.article(noun), x=noun)
    elif artist is not None and rng.random() < 0.15:
        # "a painting by X" names no shape: the model learns the style alone.
        text, term = _pick(rng, ARTIST_ONLY_TEMPLATES).format(y=artist), None
        artist = None
    elif is_association:
        text = _pick(rng, ASSOCIATION_TEMPLATES).format(x=term)
        if scene.color in modifiers:
            text = f"{text} in {scene.color}"
    else:
        text = _pick(rng, SHAPE_TEMPLATES).format(a=V.article(noun), x=noun)
    if artist is not None:
        text = f"{text} " + _pick(rng, ARTIST_SUFFIXES).format(y=artist)
    if scene.position:
        text = f"{text} {scene.position}"
    if scene.flames:
        text = f"{text} " + (_pick(rng, V.FLAME_EXPLICIT) if rng.random() < 0.5 else _pick(rng, V.FLAME_IMPLICIT))
    return Captioned(scene, text, term)
