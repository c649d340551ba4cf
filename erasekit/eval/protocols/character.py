"""The character protocol (MACE's celebrity task on the world's named characters), and its mass form.

Acc_e on the erased character's portrait, Acc_s over the other named characters, residue on the
portrait of its association (which never names it), and H_c = 2 / (1/(1−Acc_e) + 1/Acc_s).
"""

from __future__ import annotations

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import PromptRow
from erasekit.eval.protocols.base import LabelSets
from erasekit.eval.protocols.judged import JudgedProtocol, Metrics, by_kind
from erasekit.eval.protocols.results import ProtocolResult
from erasekit.eval.protocols.seeds import MASS_SEED_BLOCK, PROTOCOL_SEED, protocol_row
from erasekit.eval.scoring import Evaluation
from erasekit.judges import harmonic_mean
from erasekit.world import vocabulary as V


def character_rows(
    target: str, samples: int = 16, seed: int = PROTOCOL_SEED, keep: tuple[str, ...] | None = None
) -> list[PromptRow]:
    """Prompts of the character protocol; ``keep`` defaults to the other named characters."""
    if target not in V.CHARACTER_NAMES:
        raise ErasekitError(f"{target!r} is not a character of the world; `erasekit world vocabulary` lists them")
    keep = keep if keep is not None else tuple(c for c in V.NAMED_CHARACTERS if c != target)
    rows = [(f"a portrait of {target}", "erase", target)]
    association = V.CHARACTER_BY_NAME[target].association
    if association:
        rows.append((f"a portrait of {association}", "associated", target))
    rows += [(f"a portrait of {c}", "retain", c) for c in keep]
    return [protocol_row(p, role, {"character": c}, samples, seed) for p, role, c in rows]


def mass_character_rows(
    targets: tuple[str, ...], keep: tuple[str, ...], samples: int = 4, seed: int = PROTOCOL_SEED
) -> list[PromptRow]:
    """MACE's multi-concept celebrity task on the roster: every erased and every kept character's portrait."""
    unknown = [c for c in (*targets, *keep) if c not in V.CHARACTER_NAMES]
    if unknown:
        raise ErasekitError(f"{', '.join(unknown)} not characters of the world; `erasekit world vocabulary` lists them")
    rows = [(f"a portrait of {c}", "erase", c) for c in targets] + [(f"a portrait of {c}", "retain", c) for c in keep]
    return [protocol_row(p, role, {"character": c}, samples, seed, MASS_SEED_BLOCK) for p, role, c in rows]


def character_metrics(evaluation: Evaluation) -> Metrics:
    """Acc_e, Acc_s, residue (when the character has an association) and H_c."""

    def metrics(acc: dict[str, float]) -> dict[str, float]:
        out = {"Acc_e": acc["erase"], "Acc_s": acc["retain"], "H_c": harmonic_mean(1 - acc["erase"], acc["retain"])}
        return out | ({"residue": acc["associated"]} if "associated" in acc else {})

    return by_kind(evaluation, "character", metrics)


class CharacterProtocol(JudgedProtocol):
    """Erasing a named character of the world, the other named characters kept."""

    name = "character"
    world_only = True

    def rows(self, target: str, samples: int, world: bool = True, prompt_file: str | None = None) -> list[PromptRow]:
        """The erased character's portrait, its association's, and the other named characters'."""
        return character_rows(target, samples)

    def labels(self, world: bool) -> LabelSets | None:
        """Every character of the world, by portrait."""
        return ({"character": V.CHARACTER_NAMES}, "a portrait of {}".format) if world else None

    def metrics(self, evaluation: Evaluation, world: bool = True) -> Metrics:
        """Acc_e, Acc_s, H_c and residue."""
        return character_metrics(evaluation)

    def verdict(self, result: ProtocolResult) -> str:
        """How often the character is gone from its portraits, and the others kept."""
        m, was = result.metrics["erased"]["accuracy"], result.metrics["original"]["accuracy"]
        return (f"{result.target}: erased in {self.erased_share(result, 'Acc_e')} of portraits (was {1 - was['Acc_e']:.0%}), "
                f"other characters kept at {m['Acc_s']:.0%}")  # fmt: skip
