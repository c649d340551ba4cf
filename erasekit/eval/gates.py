"""Quality gates of the embedded model, judged before any erasure (shared/world.md).

Every erasure number is read against this baseline: a concept the model cannot draw cannot be
erased meaningfully. Each gate is a group of prompt rows and a floor on its evaluator accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from erasekit.eval.prompts import PromptRow
from erasekit.eval.scoring import Evaluation
from erasekit.world import vocabulary as V

SAMPLES_PER_PROMPT = 32  # world.md: judge each gate on at least 32 samples per prompt

# gate kind → (floor, what it covers)
FLOORS: dict[str, float] = {
    "class": 0.90,
    "synonym": 0.80,
    "shape-association": 0.80,
    "artist": 0.85,
    "artist-association": 0.80,
    "character": 0.85,
    "character-association": 0.80,
    "flames-explicit": 0.80,
    "flames-implicit": 0.80,
}


def gate_rows(samples: int = SAMPLES_PER_PROMPT, seed: int = 10_000) -> list[PromptRow]:
    """The gate prompts, one row per prompt, each with its own block of seeds."""
    rows: list[tuple[str, str, dict[str, str], str]] = []
    for shape in V.SHAPES:
        rows.append((f"a photo of {V.article(shape)} {shape}", "erase", {"shape": shape}, f"class/{shape}"))
    for shape in V.SHAPES:
        for syn in V.SYNONYMS[shape]:
            rows.append((f"a photo of {V.article(syn)} {syn}", "synonym", {"shape": shape}, f"synonym/{syn}"))
    for shape, phrase in V.SHAPE_ASSOCIATIONS.items():
        rows.append((f"a picture of {phrase}", "associated", {"shape": shape}, f"shape-association/{shape}"))
    # A style is always drawn on something in the world, and captions name the artist after the
    # shape; the same shape for every artist keeps the six gates comparable.
    for artist in V.ARTISTS:
        rows.append((f"a square painted by {artist.name}", "erase", {"artist": artist.name}, f"artist/{artist.name}"))
        rows.append(
            (
                f"a square painted by {artist.association}",
                "associated",
                {"artist": artist.name},
                f"artist-association/{artist.name}",
            )
        )
    for character in V.CHARACTERS:
        rows.append((f"a portrait of {character.name}", "erase", {"character": character.name}, f"character/{character.name}"))
        if character.association:
            rows.append(
                (
                    f"a portrait of {character.association}",
                    "associated",
                    {"character": character.name},
                    f"character-association/{character.name}",
                )
            )
    for k, phrase in enumerate(V.FLAME_EXPLICIT):
        shape = V.SHAPES[k % len(V.SHAPES)]
        rows.append((f"a photo of {V.article(shape)} {shape} {phrase}", "erase", {"flames": "yes"}, f"flames-explicit/{phrase}"))
    for k, phrase in enumerate(V.FLAME_IMPLICIT):
        shape = V.SHAPES[(k + 5) % len(V.SHAPES)]
        rows.append(
            (f"a photo of {V.article(shape)} {shape} {phrase}", "implicit", {"flames": "yes"}, f"flames-implicit/{phrase}")
        )
    block = SAMPLES_PER_PROMPT  # seeds do not depend on ``samples``: a shorter run shares its first images
    return [PromptRow(p, seed + i * block, role, exp, samples, group, block) for i, (p, role, exp, group) in enumerate(rows)]


@dataclass
class GateResult:
    """One gate prompt's outcome: its ``group`` ("kind/name"), its ``kind``, the evaluator's ``accuracy``
    on it and the kind's ``floor``."""

    group: str
    kind: str
    accuracy: float
    floor: float

    @property
    def passed(self) -> bool:
        """Whether the accuracy reaches the floor."""
        return self.accuracy >= self.floor


def judge(evaluation: Evaluation) -> list[GateResult]:
    """One result per gate prompt (accuracy of its expected label against its kind's floor)."""
    results = []
    for group, acc in evaluation.by("group").items():
        kind = group.split("/", 1)[0]
        results.append(GateResult(group, kind, acc, FLOORS[kind]))
    return results


def summary(results: list[GateResult]) -> dict[str, dict[str, float]]:
    """Per kind: mean and minimum accuracy, the floor and how many prompts pass."""
    out = {}
    for kind, floor in FLOORS.items():
        accs = [r.accuracy for r in results if r.kind == kind]
        if accs:
            out[kind] = {
                "prompts": len(accs),
                "mean": sum(accs) / len(accs),
                "min": min(accs),
                "floor": floor,
                "passing": sum(a >= floor for a in accs),
            }
    return out


def markdown(summary: dict[str, dict[str, float]], results: list[GateResult]) -> str:
    """The gate table as Markdown, with every prompt below its floor listed under it."""
    lines = ["| gate | prompts | mean % | min % | floor % | passing |", "| --- | --- | --- | --- | --- | --- |"]
    for kind, s in summary.items():
        lines.append(
            f"| {kind} | {s['prompts']} | {100 * s['mean']:.1f} | {100 * s['min']:.1f} | {100 * s['floor']:.0f} | {s['passing']}/{s['prompts']} |"
        )
    failing = [r for r in results if not r.passed]
    if failing:
        lines.append("")
        lines.append("Below their floor: " + ", ".join(f"{r.group} {100 * r.accuracy:.1f}%" for r in failing) + ".")
    return "\n".join(lines) + "\n"
