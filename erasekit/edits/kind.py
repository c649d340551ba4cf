"""Edit kinds as strategies: what an edit is beyond its changed weights, and what follows from that.

An :class:`~erasekit.edits.artifact.Edit` holds new parameter values, a card and, for some kinds,
added tensors (``adapters``). Its kind says how it goes onto a pipeline and comes off, what its card
entry is and how a loaded one is checked, which base-model parameters identify it, which export
formats can carry it, and how its weights merge into a whole-model export. Each kind is one
:class:`EditKind` in its own module (plain changed weights, SLD's sampling guidance, SPM's
transport, Receler's hooked erasers) that registers itself in :data:`KINDS`; ``erasekit.edits``
imports them all, and the edit finds its own with :func:`kind_of` from its card.

A kind's card entry sits under its name: in ``card["inference"]`` for a kind that changes how to
sample (``{"inference": {"sld": {...}}}``, at most one), else at the card's top level
(``{"erasers": {...}}``). Plain changed weights have no entry: they are the kind of a card that
names no other.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from erasekit.edits.artifact import Edit

INFERENCE = "inference"  # the card entry of the kinds that change how to sample: {name: settings}
PLAIN = "weights"  # the kind of an edit whose card names no other: changed weights, nothing more
NO_WEIGHTS = "changes no weights (it guides sampling): there is nothing to export; its edit directory is the artifact"


def shown(value: object) -> str:
    """A card value as an error line shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(value: object) -> bool:
    """Whether a card value is a finite number (a bool is not; an int of any size is)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)  # (an int of any size: isfinite overflows)


def is_strings(value: object) -> bool:
    """Whether a card value is a list of strings."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


class EditKind:
    """One kind of edit: a stateless strategy that the :class:`~erasekit.edits.artifact.Edit` of that
    kind hands itself to. The defaults are those of plain changed weights; a kind overrides what
    differs. ``name`` is the kind's key in the card, under ``"inference"`` when ``at_sampling``."""

    name: ClassVar[str]
    at_sampling: ClassVar[bool] = False  # its entry is card["inference"][name]: it changes how to sample
    needs_adapters: ClassVar[bool] = False  # its edits keep tensors in adapters.safetensors
    reads_prompt_text: ClassVar[bool] = False  # its pipeline takes prompts as text only (attacks cannot hand it states)

    def named_in(self, card: dict) -> bool:
        """Whether ``card`` has this kind's key (whatever its value)."""
        holder = card.get(INFERENCE) if self.at_sampling else card
        return isinstance(holder, dict) and self.name in holder

    def entry(self, card: dict) -> Any:
        """This kind's entry in ``card`` (None when the card has none)."""
        holder = card.get(INFERENCE) if self.at_sampling else card
        return holder.get(self.name) if isinstance(holder, dict) else None

    def claims(self, card: dict) -> bool:
        """Whether ``card`` makes its edit one of this kind: its key in ``"inference"`` for a kind that
        changes how to sample (whatever the settings), else a non-empty entry of its own."""
        return self.named_in(card) if self.at_sampling else bool(self.entry(card))

    def card_fields(self, entry: object) -> dict:
        """What this kind adds to an edit's card: ``entry`` under its name."""
        return {INFERENCE: {self.name: entry}} if self.at_sampling else {self.name: entry}

    def check_card(self, card: dict, where: object) -> None:
        """Refuse, in one line naming the field, a loaded card whose entry of this kind has the wrong
        shape (called for every kind on every card, so a kind checks its entry only where it is)."""

    def checked_names(self, edit: Edit) -> list[str]:
        """The parameters whose original values identify the base model ``edit`` was made on."""
        return list(edit.weights)

    def check_fits(self, edit: Edit, pipe: DiffusionPipeline) -> None:
        """Refuse a pipeline that ``edit``'s added tensors do not fit (its weights' shapes are checked by
        the edit itself)."""

    def put_on(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """Put ``edit`` onto ``pipe`` (checked already) and return the pipeline to sample from: by
        default ``pipe`` itself with the new weights written in."""
        edit.write_weights(pipe)
        return pipe

    def take_off(self, edit: Edit, pipe: DiffusionPipeline, erased: DiffusionPipeline) -> None:
        """Undo what :meth:`put_on` added beside the weights (``erased`` is what it returned); the
        edit puts the original weights back itself."""

    def export_refusal(self, edit: Edit, fmt: str) -> str | None:
        """Why no ``fmt`` export can carry ``edit``, as the end of "the <method> edit in <where> …"; None
        when one can (a format's own limits, such as a LoRA's, are checked where it is written)."""
        return None if edit.weights else NO_WEIGHTS

    def export_note(self, edit: Edit, fmt: str) -> str | None:
        """What of ``edit`` does not travel in a ``fmt`` export that carries it; None when everything does."""
        return None

    def merge(self, edit: Edit, pipe: DiffusionPipeline) -> DiffusionPipeline:
        """``pipe`` with ``edit``'s weights written into it, for a whole-model export (checked already)."""
        edit.write_weights(pipe)
        return pipe


def on_modules(cls: type, pipe: DiffusionPipeline) -> DiffusionPipeline:
    """A pipeline of ``cls`` (a subclass of ``pipe``'s class) built on ``pipe``'s own modules, nothing copied,
    with its safety-checker setting and progress-bar configuration."""
    import inspect

    components = dict(pipe.components)
    if "requires_safety_checker" in inspect.signature(cls.__init__).parameters:
        components["requires_safety_checker"] = pipe.config.get("requires_safety_checker", False)
    rebuilt = cls(**components)
    rebuilt.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return rebuilt


KINDS: dict[str, EditKind] = {}  # the kind's name in the card → the kind


def register_kind(kind: EditKind) -> EditKind:
    """Add ``kind`` to :data:`KINDS` under its name (an error if the name is taken) and return it."""
    if kind.name in KINDS:
        raise ValueError(f"an edit kind named {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def sampling_kinds() -> list[str]:
    """The names of the kinds that change how to sample (the keys ``"inference"`` may hold), sorted."""
    return sorted(name for name, kind in KINDS.items() if kind.at_sampling)


def kind_of(card: dict) -> EditKind:
    """The kind of the edit whose card is ``card``: the one kind it names, else plain changed weights.
    An ``"inference"`` entry that names no known kind, or a card that names two kinds, is refused."""
    inference = card.get(INFERENCE)
    known = sampling_kinds()
    if inference and (not isinstance(inference, dict) or len(inference) != 1 or next(iter(inference)) not in known):
        names = ", ".join(map(str, inference)) if isinstance(inference, dict) else shown(inference)
        raise ErasekitError(f"unknown inference-time guidance {names}; this erasekit knows {' and '.join(map(repr, known))}")
    named = [kind for kind in KINDS.values() if kind.claims(card)]
    if len(named) > 1:
        raise ErasekitError(f"this edit's card names two kinds ({named[0].name} and {named[1].name}); an edit is one kind")
    return named[0] if named else KINDS[PLAIN]
