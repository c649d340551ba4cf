"""The artist protocol (MACE's CLIP_e / CLIP_s, read by the world's style head).

Style accuracy on the erased artist's prompts (Acc_e) and the other artists' (Acc_s), residue on
the artist's association, and their difference Acc_s − Acc_e.
"""

from __future__ import annotations

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import PromptRow
from erasekit.eval.protocols.base import LabelSets
from erasekit.eval.protocols.judged import JudgedProtocol, Metrics, by_kind
from erasekit.eval.protocols.results import ProtocolResult
from erasekit.eval.protocols.seeds import ARTIST_SHAPES, PROTOCOL_SEED, protocol_row
from erasekit.eval.scoring import Evaluation
from erasekit.world import vocabulary as V


def artist_rows(target: str, samples: int = 16, seed: int = PROTOCOL_SEED) -> list[PromptRow]:
    """The erased artist on three shapes and by its association; every other artist on a square."""
    if target not in V.ARTIST_BY_NAME:
        raise ErasekitError(f"{target!r} is not an artist of the world; choose one of {', '.join(V.ARTIST_NAMES)}")
    rows = [(f"{V.article(s)} {s} painted by {target}", "erase", target) for s in ARTIST_SHAPES]
    rows.append((f"a square painted by {V.ARTIST_BY_NAME[target].association}", "associated", target))
    rows += [(f"a square painted by {a}", "retain", a) for a in V.ARTIST_NAMES if a != target]
    return [protocol_row(p, role, {"artist": a}, samples, seed) for p, role, a in rows]


def artist_metrics(evaluation: Evaluation) -> Metrics:
    """Acc_e, Acc_s, residue (the artist's association) and the gap Acc_s − Acc_e of the style head."""
    return by_kind(
        evaluation,
        "artist",
        lambda acc: {
            "Acc_e": acc["erase"],
            "Acc_s": acc["retain"],
            "residue": acc["associated"],
            "gap": acc["retain"] - acc["erase"],
        },
    )


class ArtistProtocol(JudgedProtocol):
    """Erasing an artist's style of the world, the other artists' kept."""

    name = "artist"
    world_only = True

    def rows(self, target: str, samples: int, world: bool = True, prompt_file: str | None = None) -> list[PromptRow]:
        """The erased artist's paintings and association, and the other artists' squares."""
        return artist_rows(target, samples)

    def labels(self, world: bool) -> LabelSets | None:
        """Every artist of the world, by a square they painted."""
        return ({"artist": V.ARTIST_NAMES}, "a square painted by {}".format) if world else None

    def metrics(self, evaluation: Evaluation, world: bool = True) -> Metrics:
        """Acc_e, Acc_s, residue and gap of the style head."""
        return artist_metrics(evaluation)

    def verdict(self, result: ProtocolResult) -> str:
        """How often the style is gone from the artist's paintings, and the other artists kept."""
        m, was = result.metrics["erased"]["accuracy"], result.metrics["original"]["accuracy"]
        return (f"{result.target}: style erased in {self.erased_share(result, 'Acc_e')} of paintings "
                f"(was {1 - was['Acc_e']:.0%}), other artists kept at {m['Acc_s']:.0%}")  # fmt: skip
