"""What to erase, and the one registry of methods.

A concept string travels once: parsed into an :class:`EraseSpec` at the edge (CLI or API),
encoded once by the prompt cache, turned into an :class:`~erasekit.edits.Edit` by a method.
"""

from __future__ import annotations

import ast
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Union, get_args, get_origin, get_type_hints

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
    changes_weights: bool = True  # False: an inference-time method, whose edit is a sampling configuration


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, config: type, changes_weights: bool = True) -> Callable:
    """Decorator adding an ``erase(run, spec, config)`` function to the registry; ``run`` is the
    :class:`~erasekit.primitives.run.RunContext` (pipeline, device, dtype, prompt cache, progress)."""

    def wrap(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, summary, config, fn, changes_weights)
        return fn

    return wrap


def get_method(name: str) -> Method:
    import erasekit.methods  # noqa: F401 - importing the package registers every method

    if name not in METHODS:
        raise ErasekitError(f"unknown method {name!r}; `erasekit methods` lists them: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_config(method: Method, overrides: dict[str, object]) -> object:
    """The method's config with the paper's defaults, overridden by name. Every value is parsed to its
    field's type (text from the command line as well as Python values): a wrong name or a value that
    is not of the type is one clear error, before any model is loaded."""
    return method.config(**typed_settings(method, overrides))


def typed_settings(method: Method, overrides: dict[str, object]) -> dict[str, object]:
    """``overrides`` checked against the method's settings and parsed to their types (see :func:`parse_setting`)."""
    known = {f.name for f in fields(method.config)}
    unknown = set(overrides) - known
    if unknown:
        raise ErasekitError(f"{method.name} has no setting {', '.join(sorted(unknown))}; its settings: {', '.join(known)}")
    hints = get_type_hints(method.config)
    return {name: parse_setting(f"{method.name} setting {name}", hints[name], value) for name, value in overrides.items()}


def parse_setting(what: str, kind: object, value: object) -> object:
    """``value`` (a Python value, or text as typed after ``--set key=``) as a value of type ``kind``:
    bool, int, float (finite), str, tuple[str, ...], or ``X | None``."""
    if get_origin(kind) in (Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        return parse_setting(what, options[0], value)
    text = value.strip() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false", "yes", "no", "1", "0"):
            return text.lower() in ("true", "yes", "1")
        raise ErasekitError(f"{what} = {value!r}: expected true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        raise ErasekitError(f"{what} = {value!r}: expected a whole number")
    if kind is float:
        if isinstance(value, bool):
            raise ErasekitError(f"{what} = {value!r}: expected a number")
        try:
            number = float(text) if text is not None else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ErasekitError(f"{what} = {value!r}: expected a number such as 0.5 or 1e-3") from None
        if not math.isfinite(number):
            raise ErasekitError(f"{what} = {value!r}: expected a finite number")
        return number
    if kind is str:
        if text is None:
            raise ErasekitError(f"{what} = {value!r}: expected text")
        return text
    if get_origin(kind) is tuple:
        if text is not None:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = (text,)  # a bare word is a one-element tuple
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise ErasekitError(f"{what} = {value!r}: expected a tuple of strings, e.g. ('{{}}', 'a photo of a {{}}')")
        return tuple(value)
    return value


def config_field(default: object, doc: str) -> object:
    """A config field whose help text (with the paper's symbol) is kept in its metadata."""
    return field(default=default, metadata={"doc": doc})
