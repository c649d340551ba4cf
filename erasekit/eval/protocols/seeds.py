"""The seeds of the protocols' prompts: every protocol prompt has a fixed place, and so fixed seeds.

A prompt's images use seeds ``PROTOCOL_SEED + (its index among all protocol prompts) × block + k``
(:attr:`PromptRow.image_seed`): the same prompt gets the same images in every erasure and in the
original model, and a 1-sample run shares its image with an 8-sample run. The blocks are the sample
counts the README's figures were measured with, which they reproduce unchanged.
"""

from __future__ import annotations

from erasekit.eval.prompts import PromptRow
from erasekit.judges.clip import MACE_CIFAR10_SYNONYMS, MACE_CLIP_TEMPLATE
from erasekit.world import vocabulary as V

PROTOCOL_SEED = 50_000
SEED_BLOCK = 8
MASS_SEED_BLOCK = QUALITY_SEED_BLOCK = 4
ARTIST_SHAPES = ("square", "circle", "triangle")  # every artist's style is judged on the same shapes

# Every protocol prompt, in the order that fixes its seeds: appended, never inserted, so that earlier
# prompts keep their seeds.
ALL_PROMPTS: list[str] = (
    [f"a photo of {V.article(t)} {t}" for s in V.SHAPES for t in (s, *V.SYNONYMS[s])]
    + [f"a picture of {V.SHAPE_ASSOCIATIONS[s]}" for s in V.SHAPES]
    + [f"a portrait of {c.name}" for c in V.CHARACTERS]
    + [f"a portrait of {c.association}" for c in V.CHARACTERS if c.association]
    + [f"{V.article(s)} {s} painted by {a.name}" for a in V.ARTISTS for s in ARTIST_SHAPES]
    + [f"a square painted by {a.association}" for a in V.ARTISTS]
    + [f"a photo of a circle {ph}" for ph in V.FLAME_EXPLICIT]
    + [f"a photo of a square {ph}" for ph in V.FLAME_IMPLICIT]
    + [f"a photo of {V.article(c)} {c} {s}" for c in V.COLORS for s in V.SHAPES]
    + [MACE_CLIP_TEMPLATE.format(t) for c, synonyms in MACE_CIFAR10_SYNONYMS.items() for t in (c, *synonyms)]
)


def prompt_index(prompt: str) -> int:
    """A stable small integer per prompt (its position among every protocol prompt)."""
    return ALL_PROMPTS.index(prompt)


def protocol_row(prompt: str, role: str, expected: dict[str, str], samples: int, seed: int, block: int = SEED_BLOCK) -> PromptRow:
    """A protocol prompt's row: its seed block is fixed by its place among all protocol prompts."""
    return PromptRow(prompt, seed + prompt_index(prompt) * block, role, expected, samples, prompt, block)
