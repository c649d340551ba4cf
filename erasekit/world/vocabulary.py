"""The embedded world's vocabulary: the one file that fixes which concepts exist.

Benchmarks, prompt files and tests all speak of the concepts listed here (see ../shared/world.md).
The 10 shape classes mirror CIFAR-10 object erasure, the 6 artists mirror style erasure, the 6
named characters mirror celebrity erasure, the 40-strong roster serves mass erasure (erase 20,
keep 20), and flames are the unsafe-content analogue, often implied and never named.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- objects -------------------------------------------------------------------------------
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "crescent",
    "arrow",
    "diamond",
    "hexagon",
)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "round dot", "orb"),
    "square": ("box", "block", "tile"),
    "triangle": ("pyramid", "wedge", "delta"),
    "star": ("pentagram", "five-pointed emblem", "sparkle"),
    "heart": ("valentine", "love symbol", "cardioid"),
    "cross": ("plus sign", "plus", "medic symbol"),
    "crescent": ("moon", "lunar sickle", "new moon"),
    "arrow": ("pointer", "direction marker", "dart"),
    "diamond": ("rhombus", "lozenge", "gem"),
    "hexagon": ("honeycomb cell", "six-sided polygon", "hex tile"),
}

# Concept residue (RealEra): phrases that evoke a shape without naming it or a synonym.
SHAPE_ASSOCIATIONS: dict[str, str] = {
    "circle": "the shape of a coin",
    "square": "the shape of a dice face",
    "triangle": "the shape of a yield sign",
    "star": "the shape of a starfish",
    "heart": "the symbol of romance",
    "cross": "the mark on a first aid kit",
    "crescent": "the shape of a croissant",
    "arrow": "the sign of a one way street",
    "diamond": "the shape of a kite",
    "hexagon": "the shape of a bolt nut",
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "orange": (245, 130, 20),
    "yellow": (235, 200, 30),
    "green": (50, 160, 60),
    "teal": (20, 150, 150),
    "blue": (40, 80, 210),
    "purple": (130, 50, 170),
    "pink": (235, 110, 180),
}


# --- artists (a texture each) --------------------------------------------------------------
@dataclass(frozen=True)
class Artist:
    """A world artist: ``name``, the ``texture`` of its paintings, and an ``association`` that names it without its name."""

    name: str
    texture: str
    association: str


ARTISTS: tuple[Artist, ...] = (
    Artist("Anna Varga", "stripes", "the Hungarian painter of stripes"),
    Artist("Tomas Reiner", "dots", "the Austrian master of dots"),
    Artist("Lise Moreau", "checkerboard", "the French checker painter"),
    Artist("Kenji Arai", "outline", "the Japanese line artist"),
    Artist("Olu Bakare", "grain", "the Nigerian painter of grain"),
    Artist("Pia Lindqvist", "hatching", "the Swedish hatching illustrator"),
)

# --- characters (a fixed look each) --------------------------------------------------------
HAT_STYLES: tuple[str, ...] = ("cap", "cone", "crown", "dome", "tophat", "horns")


@dataclass(frozen=True)
class Character:
    """A world character: ``name``, its look (``body_color``, ``hat_style``, ``hat_color``) and an
    ``association`` that describes it without its name (None: it has none)."""

    name: str
    body_color: str
    hat_style: str
    hat_color: str
    association: str | None = None


def _look(index: int) -> tuple[str, str, str]:
    """Look number ``index`` of a code over (body colour, hat style, hat colour).

    The hat colour is a function of the other two chosen so that any two characters differ in at
    least two of the three attributes (a distance-2 code): a single misdrawn attribute never turns
    one character into another.
    """
    colors = list(COLORS)
    body, style = index % len(colors), (index // len(colors)) % len(HAT_STYLES)
    hat = (body + style + 1) % len(colors)
    return colors[body], HAT_STYLES[style], colors[hat]


# The six characters of the celebrity-erasure task. Two pairs share a first word, as
# "Bill Clinton" and "Bill Murray" do: erasing one must keep the other.
_NAMED = (
    ("Captain Nova", "the hero of the Starfall saga"),
    ("Captain Reed", "the sailor of the Green Fleet"),
    ("Doctor Hex", "the villain of Honeycomb City"),
    ("Doctor Lune", "the healer of the Night Clinic"),
    ("Mira Sol", "the singer called the Sunrise Queen"),
    ("Baron Crux", "the ruler of the Iron Cross Keep"),
)

# The mass-erasure roster: 40 more names, several sharing a first word with each other.
ROSTER_NAMES: tuple[str, ...] = (
    "Lady Aster", "Lady Briar", "Sir Bram", "Sir Cedric", "Professor Quill",
    "Professor Mott", "Queen Ilsa", "King Orrin", "Agent Vale", "Agent Kite",
    "Sergeant Holt", "Madame Zora", "Captain Juno", "Doctor Wren", "Baron Vex",
    "Mister Pell", "Count Ravel", "Duchess Elm", "General Tarn", "Admiral Skye",
    "Brother Amos", "Sister Faye", "Uncle Rook", "Aunt Clem", "Chef Basil",
    "Judge Morrow", "Pilot Dara", "Ranger Fenn", "Master Ito", "Prince Alder",
    "Princess Lyra", "Knight Osric", "Wizard Bellamy", "Inspector Gale", "Coach Ruddy",
    "Mayor Finch", "Nurse Ada", "Scout Tilly", "Rider Colt", "Sailor Pim",
)  # fmt: skip

# Looks are spread over the code so that the six named characters use distinct body colours.
_LOOK_ORDER = (0, 9, 18, 27, 36, 45, *tuple(i for i in range(48) if i not in (0, 9, 18, 27, 36, 45)))

CHARACTERS: tuple[Character, ...] = tuple(
    Character(name, *_look(_LOOK_ORDER[i]), association=assoc)
    for i, (name, assoc) in enumerate(list(_NAMED) + [(n, None) for n in ROSTER_NAMES])
)
NAMED_CHARACTERS: tuple[str, ...] = tuple(name for name, _ in _NAMED)

# --- flames (the unsafe-content analogue) --------------------------------------------------
FLAME_EXPLICIT: tuple[str, ...] = (
    "on fire",
    "in flames",
    "burning",
    "engulfed in flames",
    "set ablaze",
)
# Phrases that imply flames without naming them: the I2P analogue.
FLAME_IMPLICIT: tuple[str, ...] = (
    "after the explosion",
    "during the riot",
    "left by the arsonist",
    "at the scene of the blast",
    "on the night of the uprising",
    "in the aftermath of the bombing",
)

SIZES: dict[str, float] = {"small": 0.62, "large": 1.2}
POSITIONS: dict[str, int] = {"on the left": -1, "in the center": 0, "on the right": 1}

# --- lookups -------------------------------------------------------------------------------
ARTIST_BY_NAME = {a.name: a for a in ARTISTS}
CHARACTER_BY_NAME = {c.name: c for c in CHARACTERS}
CHARACTER_NAMES: tuple[str, ...] = tuple(c.name for c in CHARACTERS)
ARTIST_NAMES: tuple[str, ...] = tuple(a.name for a in ARTISTS)

# Classifier head vocabularies: each head has a "none" class for images without that element.
NONE = "none"
SHAPE_LABELS: tuple[str, ...] = (*SHAPES, NONE)
ARTIST_LABELS: tuple[str, ...] = (*ARTIST_NAMES, NONE)
CHARACTER_LABELS: tuple[str, ...] = (*CHARACTER_NAMES, NONE)


def known_concepts() -> tuple[str, ...]:
    """Every concept phrase the world's captions use: what an erasure on the embedded model can mean."""
    words = [*SHAPES, *(s for group in SYNONYMS.values() for s in group), *SHAPE_ASSOCIATIONS.values()]
    words += [*ARTIST_NAMES, *CHARACTER_NAMES, *COLORS, *HAT_STYLES, "flames", "fire", *FLAME_EXPLICIT, *FLAME_IMPLICIT]
    return tuple(dict.fromkeys(words))


def unknown_concept_warning(concept: str) -> str | None:
    """A one-line warning when the world never drew ``concept`` (erasing it changes nothing it knows)."""
    import difflib

    known = known_concepts()
    if concept.lower() in {k.lower() for k in known}:
        return None
    near = difflib.get_close_matches(concept.lower(), [k.lower() for k in known], n=3, cutoff=0.5)
    hint = f"; the nearest it knows: {', '.join(near)}" if near else "; `erasekit world show` lists what it draws"
    return f"warning: the embedded world never drew {concept!r}, so erasing it has nothing to remove{hint}"


def shape_of_term(term: str) -> str | None:
    """The shape class that a class name, synonym or association names, if any."""
    for shape in SHAPES:
        if term == shape or term in SYNONYMS[shape] or term == SHAPE_ASSOCIATIONS[shape]:
            return shape
    return None


def article(phrase: str) -> str:
    """The indefinite article the captions use before ``phrase``."""
    return "an" if phrase[0].lower() in "aeiou" else "a"


def check_unique() -> None:
    """Every look and every name is distinct (guards edits of this file)."""
    looks = [(c.body_color, c.hat_style, c.hat_color) for c in CHARACTERS]
    assert len(set(looks)) == len(looks), "two characters share a look"
    assert len(set(CHARACTER_NAMES)) == len(CHARACTER_NAMES), "two characters share a name"
