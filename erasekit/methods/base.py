"""The one registry of methods; their typed settings are :mod:`erasekit.settings`.

What to erase is an :class:`~erasekit.concepts.EraseSpec` (below every layer that reads it); a
method turns it into an :class:`~erasekit.edits.Edit`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from erasekit.concepts import EraseSpec  # noqa: F401 - kept for `from erasekit.methods import EraseSpec`
from erasekit.errors import ErasekitError
from erasekit.models.families import ALL_FAMILIES, Family, check_family
from erasekit.settings import Registered, name_settings, typed_settings


@dataclass(frozen=True)
class Method:
    """A registered erasure method: its ``name``, one-line ``summary`` and ``config`` dataclass, the
    ``erase(run, spec, config)`` function that returns an :class:`~erasekit.edits.Edit`, and whether it
    ``changes_weights`` (False for SLD's sampling configuration and Receler's added erasers), and the model
    ``families`` it runs on (:mod:`erasekit.models.families`)."""

    name: str
    summary: str
    config: type
    erase: Callable  # (run: RunContext, spec, config) -> Edit
    changes_weights: bool = True  # False: an inference-time method, whose edit is a sampling configuration
    families: tuple[str, ...] = ("sd",)

    def check_on(self, family: Family, config: object | None = None) -> None:
        """Refuse, in one line, a family this method does not run on, or one where its ``config`` does not (a
        config's own ``check_family``: AdvUnlearn's text encoder is SD's)."""
        check_family(family, self.name, self.families)
        check = getattr(config, "check_family", None)
        if check is not None:
            check(family)


METHODS: dict[str, Method] = {}


def register(
    name: str, summary: str, config: type, changes_weights: bool = True, families: tuple[str, ...] = ("sd",)
) -> Callable:
    """Decorator adding an ``erase(run, spec, config)`` function to the registry; ``run`` is the
    :class:`~erasekit.primitives.run.RunContext` (pipeline, device, dtype, prompt cache, progress).
    ``families`` are the model families it runs on (every method runs on SD 1.x/2.x today)."""

    def wrap(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        unknown = set(families) - set(ALL_FAMILIES)
        if unknown:
            raise ValueError(f"method {name!r} names unknown families {sorted(unknown)}")
        METHODS[name] = Method(name, summary, config, fn, changes_weights, tuple(families))
        name_settings(config, name)
        return fn

    return wrap


# Every method's module: importing one registers its methods (see :func:`register`).
METHOD_MODULES = (
    "ac",
    "adavd",
    "advunlearn",
    "ant",
    "doco",
    "eraseanything",
    "esd",
    "fmn",
    "gloce",
    "mace",
    "race",
    "realera",
    "rece",
    "receler",
    "safree",
    "salun",
    "sdd",
    "sld",
    "speed",
    "spm",
    "stereo",
    "uce",
)


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


def make_config(method: Registered, overrides: dict[str, object]) -> object:
    """The config of ``method`` (a method or an attack) with the paper's defaults, overridden by name. Every
    value is parsed to its field's type (text from the command line as well as Python values): a wrong
    name, a value that is not of the type, one outside the field's range or not among its choices (the
    config's own check, :func:`~erasekit.settings.check_settings`) is one clear error, before any model is loaded."""
    return method.config(**typed_settings(method, overrides))


def config_from_card(card: Mapping[str, object]) -> object:
    """The config an edit was made with, rebuilt from its card's ``method`` and recorded ``config``
    settings (as the method resolved them: MACE's 'auto' segmenter is the one it chose). A card whose
    settings do not fit the method's config (a setting it does not have, a value of the wrong type, out of
    range or not among the choices) is refused in one line; a setting the card lacks takes its default."""
    name, settings = card.get("method"), card.get("config")
    if not isinstance(name, str) or not isinstance(settings, dict):
        raise ErasekitError("the edit card records no method and settings to rebuild its config from ('method' and 'config')")
    method = get_method(name)
    try:
        return make_config(method, settings)
    except ErasekitError as error:
        raise ErasekitError(f"the edit card's settings do not fit the {name} method: {error}") from error
