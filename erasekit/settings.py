"""Typed settings: the fields of method and attack configs, parsed and checked in one place.

A config is a dataclass whose fields are made with :func:`config_field` (help text with the paper's
symbol, and a numeric range); enumerated text settings are typed ``Literal[...]``. Every value given
by name, from the command line (text) or from Python, is parsed to its field's type
(:func:`parse_setting`); the config's ``__post_init__`` then calls :func:`check_settings`, which checks
every range and every choice, so a bad setting is one error line before any model loads however the
config was made. Both registries (methods and attacks) build on this module, which imports nothing of
erasekit but its error type.
"""

from __future__ import annotations

import ast
import math
import re
import types
from dataclasses import Field, dataclass, field, fields
from functools import cache
from typing import Literal, Protocol, Union, get_args, get_origin, get_type_hints

from erasekit.errors import ErasekitError


class Registered(Protocol):
    """A registry entry with settings: a method or an attack, its ``name`` and ``config`` dataclass."""

    name: str
    config: type


def setting_pairs(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``key=value`` items (``--set``, a bench entry's settings) as text by key; the method or attack
    parses each value to its setting's type (:func:`typed_settings`)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ErasekitError(f"--set takes key=value, not {item!r}")
        pairs[key.strip()] = value
    return pairs


def typed_settings(method: Registered, overrides: dict[str, object]) -> dict[str, object]:
    """``overrides`` checked against the settings of ``method`` (a method or an attack) and parsed to their
    types (see :func:`parse_setting`)."""
    by_name = {f.name: f for f in fields(method.config)}
    unknown = set(overrides) - set(by_name)
    if unknown:
        raise ErasekitError(f"{method.name} has no setting {', '.join(sorted(unknown))}; its settings: {', '.join(by_name)}")
    hints = get_type_hints(method.config)
    return {name: parse_setting(f"{method.name} setting {name}", hints[name], value) for name, value in overrides.items()}


def parse_setting(what: str, kind: object, value: object) -> object:
    """``value`` (a Python value, or text as typed after ``--set key=``) as a value of type ``kind``:
    bool, int, float (finite), str, ``Literal[...]`` (a value of its choices' type), tuple[str, ...] (at most
    :data:`MAX_TUPLE_ITEMS` items), or ``X | None``. Ranges and choices are the config's own check
    (:func:`check_settings`), so that they are checked in one place however the config is made."""
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
    if get_origin(kind) is Literal:  # parsed as its choices' type; the choice is the config's check
        return parse_setting(what, type(get_args(kind)[0]), value)
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


def setting_choices(config: type) -> dict[str, tuple[object, ...]]:
    """The choices of every ``Literal`` setting of a config class, by field name (``X | None`` admits None too)."""
    return dict(_choices(config))


@cache  # a config class's annotations do not change: read them once, not at every config built
def _choices(config: type) -> tuple[tuple[str, tuple[object, ...]], ...]:
    found = []
    for name, kind in get_type_hints(config).items():
        options = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)
        for option in options:
            if get_origin(option) is Literal:
                found.append((name, get_args(option) + ((None,) if type(None) in options else ())))
    return tuple(found)


def check_choice(name: str, choices: tuple[object, ...], value: object) -> None:
    """One error naming the setting and listing its choices when ``value`` is not one of them."""
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ErasekitError(f"{name} must be one of {listed}, not {_shown(value)}")


def name_settings(config: type, name: str) -> None:
    """Remember the registry name of ``config``, for its messages (each class keeps its own)."""
    config._erasekit_name = name  # type: ignore[attr-defined]


def check_settings(config: object) -> None:
    """Check every bounded field and every ``Literal`` choice of a config instance; each config's
    ``__post_init__`` calls it first, so a setting out of range or not among its choices is one error
    before any model loads, however the config was made."""
    owner = vars(type(config)).get("_erasekit_name", type(config).__name__)
    for f in fields(config):  # type: ignore[arg-type]
        check_bounds(f"{owner} setting {setting_label(f)}", f, getattr(config, f.name))
    for name, choices in _choices(type(config)):  # after every range, as the configs checked them
        check_choice(name, choices, getattr(config, name))
