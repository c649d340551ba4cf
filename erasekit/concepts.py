"""What to erase: targets, their anchors and the concepts to preserve.

A concept string travels once: parsed into an :class:`EraseSpec` at the edge (CLI or API), encoded
once by the prompt cache, turned into an :class:`~erasekit.edits.Edit` by a method. It sits below
every layer that reads it (primitives, methods, attacks, eval).
"""

from __future__ import annotations

from dataclasses import dataclass

from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class EraseSpec:
    """Targets to erase, the anchor each maps to ("" = the unconditional/empty prompt), and concepts to preserve."""

    targets: tuple[str, ...]
    anchors: tuple[str, ...] = ()
    preserve: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("targets", "anchors", "preserve"):  # one concept given as a string is one concept, not its letters
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif not all(isinstance(v, str) for v in value):
                raise ErasekitError(f"{name} must be concepts (strings), not {value!r}")
        targets = tuple(t.strip() for t in self.targets)
        if not targets or not all(targets):
            raise ErasekitError("nothing to erase: give at least one non-empty target concept")
        anchors = tuple(a.strip() for a in self.anchors) or ("",) * len(targets)
        if len(anchors) == 1 and len(targets) > 1:
            anchors = anchors * len(targets)
        if len(anchors) != len(targets):
            raise ErasekitError(f"{len(targets)} targets but {len(anchors)} anchors: give one anchor, or one per target")
        for target, anchor in zip(targets, anchors, strict=True):
            if target.lower() == anchor.lower():
                raise ErasekitError(
                    f"the anchor of {target!r} is the target itself; choose a different concept or '' (unconditional)"
                )
        preserve = tuple(p.strip() for p in self.preserve if p.strip())
        both = {t.lower() for t in targets} & {p.lower() for p in preserve}
        if both:
            raise ErasekitError(f"{', '.join(sorted(both))} is both erased and preserved; remove it from one list")
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "anchors", anchors)
        object.__setattr__(self, "preserve", preserve)

    def targets_only(self, method: str) -> None:
        """Refuse anchors and a preserve set in one line, for a method whose objective has no place for them;
        ``method`` says what it does instead ("SLD steers away from the concepts at sampling time")."""
        if any(self.anchors) or self.preserve:
            raise ErasekitError(f"{method}: it takes no anchors and no preserve set")


def anchor_prompt(template: str, anchor: str) -> str:
    """The prompt a target's prompt maps onto: the template around the anchor, or " " for the empty
    anchor (the official UCE script's unconditional guide, a prompt of no words)."""
    return template.format(anchor) if anchor else " "
