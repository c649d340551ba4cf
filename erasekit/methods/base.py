"""What to erase, and the one registry of methods.

A concept string travels once: parsed into an :class:`EraseSpec` at the edge (CLI or API),
encoded once by the prompt cache, turned into an :class:`~erasekit.edits.Edit` by a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class EraseSpec:
    """Targets to erase, the anchor each maps to ("" = the unconditional/empty prompt), and concepts to preserve."""

    targets: tuple[str, ...]
    anchors: tuple[str, ...] = ()
    preserve: tuple[str, ...] = ()

    def __post_init__(self) -> None:
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


def anchor_prompt(template: str, anchor: str) -> str:
    """The prompt a target's prompt maps onto: the template around the anchor, or " " for the empty
    anchor (the official UCE script's unconditional guide, a prompt of no words)."""
    return template.format(anchor) if anchor else " "


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    config: type
    erase: Callable  # (run: RunContext, spec, config) -> Edit


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, config: type) -> Callable:
    """Decorator adding an ``erase(run, spec, config)`` function to the registry; ``run`` is the
    :class:`~erasekit.primitives.run.RunContext` (pipeline, device, dtype, prompt cache, progress)."""

    def wrap(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, summary, config, fn)
        return fn

    return wrap


def get_method(name: str) -> Method:
    import erasekit.methods  # noqa: F401 - importing the package registers every method

    if name not in METHODS:
        raise ErasekitError(f"unknown method {name!r}; `erasekit methods` lists them: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_config(method: Method, overrides: dict[str, object]) -> object:
    """The method's config with the paper's defaults, overridden by name (an error for unknown names)."""
    known = {f.name: f for f in fields(method.config)}
    unknown = set(overrides) - set(known)
    if unknown:
        raise ErasekitError(f"{method.name} has no setting {', '.join(sorted(unknown))}; its settings: {', '.join(known)}")
    return method.config(**overrides)


def config_field(default: object, doc: str) -> object:
    """A config field whose help text (with the paper's symbol) is kept in its metadata."""
    return field(default=default, metadata={"doc": doc})
