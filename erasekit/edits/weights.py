"""Plain changed weights: the kind of an edit that is new values of the model's own parameters and
nothing more (UCE, ESD, MACE, SPM with its transport off, …), applied by writing them in.

Its card names no kind: it is what an edit is when the card names no other. Every export format can
carry it (within the format's own limits: a LoRA holds no text-encoder change, kohya no bias).
"""

from __future__ import annotations

from typing import Any

from erasekit.edits.kind import PLAIN, EditKind, register_kind


class ChangedWeights(EditKind):
    """New values of the UNet's and text encoder's parameters, written in place; everything else is
    :class:`~erasekit.edits.kind.EditKind`'s default."""

    name = PLAIN

    def claims(self, card: dict) -> bool:
        """False: a card never names this kind; it is the kind of a card that names no other."""
        return False

    def entry(self, card: dict) -> Any:
        """None: a plain weight edit has no card entry."""
        return None

    def card_fields(self, entry: object) -> dict:
        """Nothing: a plain weight edit adds no entry to the card."""
        return {}


CHANGED_WEIGHTS = register_kind(ChangedWeights())
