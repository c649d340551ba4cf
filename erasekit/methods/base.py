"""The one registry of methods and their typed settings.

What to erase is an :class:`~erasekit.concepts.EraseSpec` (below every layer that reads it); a
method turns it into an :class:`~erasekit.edits.Edit`.
"""

from __future__ import annotations

import ast
import math
import re
import types
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Literal, Union, get_args, get_origin, get_type_hints

from erasekit.concepts import EraseSpec  # noqa: F401 - kept for `from erasekit.methods import EraseSpec`
from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class Method:
    """A registered erasure method: its ``name``, one-line ``summary`` and ``config`` dataclass, the
    ``erase(run, spec, config)`` function that returns an :class:`~erasekit.edits.Edit`, and whether it
    ``changes_weights`` (False for SLD's sampling configuration and Receler's added erasers)."""

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
        name_settings(config, name)
        return fn

    return wrap


# Every method's module: importing one registers its methods (see :func:`register`).
METHOD_MODULES = ("ac", "advunlearn", "doco", "esd", "mace", "race", "realera", "rece", "receler", "sld", "spm", "uce")


def load_methods() -> dict[str, Method]:
    """The registry, every method module imported (the first call imports torch and the methods)."""
    from importlib import import_module

    for module in METHOD_MODULES:
        import_module(f"erasekit.methods.{module}")
    return METHODS


def get_method(name: str) -> Method:
    """The registered method called ``name``; an error listing the known ones otherwise."""
    load_methods()

    if name not in METHODS:
        raise ErasekitError(f"unknown method {name!r}; `erasekit methods` lists them: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_config(method: Method, overrides: dict[str, object]) -> object:
    """The method's config with the paper's defaults, overridden by name. Every value is parsed to its
    field's type (text from the command line as well as Python values): a wrong name, a value that
    is not of the type or one outside the field's range (the config's own check, :func:`check_settings`)
    is one clear error, before any model is loaded."""
    return method.config(**typed_settings(method, overrides))


def typed_settings(method: Method, overrides: dict[str, object]) -> dict[str, object]:
    """``overrides`` checked against the method's settings and parsed to their types (see :func:`parse_setting`)."""
    by_name = {f.name: f for f in fields(method.config)}
    unknown = set(overrides) - set(by_name)
    if unknown:
        raise ErasekitError(f"{method.name} has no setting {', '.join(sorted(unknown))}; its settings: {', '.join(by_name)}")
    hints = get_type_hints(method.config)
    return {name: parse_setting(f"{method.name} setting {name}", hints[name], value) for name, value in overrides.items()}


def parse_setting(what: str, kind: object, value: object) -> object:
    """``value`` (a Python value, or text as typed after ``--set key=``) as a value of type ``kind``:
    bool, int, float (finite), str, ``Literal[...]`` (one of its choices), tuple[str, ...] (at most
    :data:`MAX_TUPLE_ITEMS` items), or ``X | None``. Ranges are the config's own check (:func:`check_settings`)."""
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
        raise ErasekitError(f"{what} = {_shown(value)}: expected true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None and re.fullmatch(r"[+-]?\d+", text):
            try:
                return int(text)
            except ValueError:  # over Python's 4,300 digits: far outside every setting's range
                raise ErasekitError(f"{what} = {_shown(value)}: a whole number of {len(text):,} digits is out of range") from None
        raise ErasekitError(f"{what} = {_shown(value)}: expected a whole number")
    if kind is float:
        if isinstance(value, bool):
            raise ErasekitError(f"{what} = {_shown(value)}: expected a number")
        try:
            number = float(text) if text is not None else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # OverflowError: a Python int beyond float's range
            raise ErasekitError(f"{what} = {_shown(value)}: expected a number such as 0.5 or 1e-3") from None
        if not math.isfinite(number):
            raise ErasekitError(f"{what} = {_shown(value)}: expected a finite number")
        return number
    if kind is str:
        if text is None:
            raise ErasekitError(f"{what} = {_shown(value)}: expected text")
        return text
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        parsed = parse_setting(what, type(choices[0]), value)
        if parsed not in choices:
            raise ErasekitError(f"{what} = {_shown(value)}: expected one of {', '.join(map(str, choices))}")
        return parsed
    if get_origin(kind) is tuple:
        if text is not None:
            if len(text) > MAX_TUPLE_TEXT:
                raise ErasekitError(f"{what}: {len(text):,} characters of text; a tuple setting takes at most {MAX_TUPLE_TEXT:,}")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = (text,)  # a bare word is a one-element tuple
            except (RecursionError, MemoryError):  # a deeply nested expression overflows the parser
                raise ErasekitError(f"{what}: too deeply nested to read; give a flat tuple of strings") from None
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise ErasekitError(f"{what} = {_shown(value)}: expected a tuple of strings, e.g. ('{{}}', 'a photo of a {{}}')")
        if len(value) > MAX_TUPLE_ITEMS:  # every item is encoded, often per concept: more is a mistake
            raise ErasekitError(f"{what}: {len(value):,} items; a tuple setting takes at most {MAX_TUPLE_ITEMS:,}")
        return tuple(value)
    return value


def _shown(value: object) -> str:
    """``repr(value)``, cut to one readable length for an error line."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int over 4,300 digits has no repr; nor has a too deeply nested list
        return f"a whole number of {value.bit_length():,} bits" if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= 80 else f"{text[:77]}..."


# Ranges many settings share: typo guards far above every recipe in docs/methods and bench/, and floors
# below which a setting means nothing (a count under 1) or breaks the computation (a singular solve).
SEEDS = {"ge": 0, "le": 2**32 - 1}  # numpy's seed range; every generator takes it
SAMPLER_STEPS = {"ge": 1, "le": 1000}  # the models' 1000 training timesteps, as the CLI's --steps
GUIDANCE = {"ge": 0.0, "le": 100.0}  # as the CLI's --guidance
LEARNING_RATE = {"ge": 1e-12, "le": 10.0}  # a subnormal lr (1e-320) trains nothing
ITERATIONS = {"ge": 1, "le": 100_000}  # optimiser steps: 100,000 is about 14 h at 0.5 s a step on SD
RIDGE = {"ge": 1e-6, "le": 1e8}  # λ of a closed form (in float64): below it the solve is singular (1e-320 was)
WEIGHT = {"ge": 0.0, "le": 1e6}  # a loss weight or a moment's scale
LORA_RANK = {"ge": 1, "le": 100_000}  # a typo guard: erase() checks the rank against the model's own layers at once

MAX_TUPLE_ITEMS = 1_000  # items of a tuple setting (templates): far above any recipe's dozen
MAX_TUPLE_TEXT = 1_000_000  # characters of a tuple setting's text, read before it is parsed


@dataclass(frozen=True)
class Bounds:
    """The range a numeric setting may take: ``ge``/``gt`` below, ``le``/``lt`` above (None: open)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies within every bound (NaN never does)."""
        # written so that NaN fails every comparison, hence every bound
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """The rule in words, e.g. "must be at least 1 and at most 100,000"."""
        lower = ""
        if self.gt is not None:
            lower = "must be positive" if self.gt == 0 else f"must be above {_number(self.gt)}"
        elif self.ge is not None:
            if self.ge == 0:
                lower = "must be at least 0 (not negative)"
            elif self.ge > 0 and isinstance(self.ge, float):  # a floor that keeps a solve well-posed
                lower = f"must be positive (at least {_number(self.ge)})"
            else:
                lower = f"must be at least {_number(self.ge)}"
        upper = (
            f"at most {_number(self.le)}" if self.le is not None else f"below {_number(self.lt)}" if self.lt is not None else ""
        )
        if lower and upper:
            return f"{lower} and {upper}"
        return lower or f"must be {upper}"


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def config_field(
    default: object,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> object:
    """A config field whose help text (with the paper's symbol) and range are kept in its metadata.

    ``ge``/``gt``/``le``/``lt`` bound a numeric setting (≥, >, ≤, <); every config checks them with
    :func:`check_settings` when it is built, from the command line or from Python alike."""
    metadata: dict[str, object] = {"doc": doc}
    if (ge, gt, le, lt) != (None, None, None, None):
        metadata["bounds"] = Bounds(ge, gt, le, lt)
    return field(default=default, metadata=metadata)


def setting_label(f: Field) -> str:
    """A setting's name with the paper's symbol where its doc starts with one: ``lam (λ)``."""
    match = re.match(r"(\S{1,4}): ", f.metadata.get("doc", ""))
    return f"{f.name} ({match.group(1)})" if match and match.group(1) != f.name else f.name


def check_bounds(what: str, f: Field, value: object) -> None:
    """One error naming the setting and its range when ``value`` lies outside ``f``'s bounds."""
    bounds = f.metadata.get("bounds")
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if not bounds.admits(value):
        raise ErasekitError(f"{what} = {_shown(value)}: {bounds.describe()}")


def name_settings(config: type, name: str) -> None:
    """Remember the registry name of ``config``, for its messages (each class keeps its own)."""
    config._erasekit_name = name  # type: ignore[attr-defined]


def check_settings(config: object) -> None:
    """Check every bounded field of a config instance; each config's ``__post_init__`` calls it first, so
    a setting out of range is one error before any model loads, however the config was made."""
    owner = vars(type(config)).get("_erasekit_name", type(config).__name__)
    for f in fields(config):  # type: ignore[arg-type]
        check_bounds(f"{owner} setting {setting_label(f)}", f, getattr(config, f.name))
