"""A bench column: a registered method with its settings, and the method string that names one
(``"esd-x lr=5e-4 preserve=others"``), as ``erasekit bench --method`` takes it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.settings import parse_setting, setting_pairs, typed_settings


@dataclass(frozen=True)
class BenchEntry:
    """One bench column: a registered method with settings (``label`` names it in the table).

    ``preserve_others`` passes the task's other concepts as the preserve set, as a user erasing one
    class while keeping the rest of a known list would; ``anchor`` is every target's anchor ("" is
    the empty prompt).
    """

    method: str
    settings: dict = field(default_factory=dict)
    preserve_others: bool = False
    expand: int = 0  # concept expansion: nearest phrases per target (0: off)
    anchor: str = ""

    def __post_init__(self) -> None:
        if self.expand:  # refused with the settings, not after the model loads (the similarity floor is erase()'s)
            from erasekit.primitives.expansion import check_expansion

            check_expansion(self.expand, 0.0)

    @property
    def label(self) -> str:
        """The row's name in tables: the method, its settings, and preserve/expand/anchor when set."""
        suffix = (" preserve=others" if self.preserve_others else "") + (f" expand={self.expand}" if self.expand else "")
        suffix += f" anchor={self.anchor!r}" if self.anchor else ""
        return self.method + "".join(f" {k}={v}" for k, v in sorted(self.settings.items())) + suffix

    def spec(self, targets: tuple[str, ...], task: tuple[str, ...]) -> EraseSpec:
        """Erase ``targets`` of ``task``; the task's other concepts are the ones preserve=others keeps."""
        return self.spec_with_others(targets, tuple(c for c in task if c not in targets))

    def spec_with_others(self, targets: tuple[str, ...], others: tuple[str, ...]) -> EraseSpec:
        """Erase ``targets`` towards the anchor, preserving ``others`` where the entry says so."""
        return EraseSpec(targets, anchors=(self.anchor,), preserve=others if self.preserve_others else ())

    @property
    def slug(self) -> str:
        """The label as a directory name (the entry's cells live under it)."""
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", self.label)


def parse_entry(text: str) -> BenchEntry:
    """``"name key=value …"`` as a bench entry, every setting checked against the method's before any
    model loads. A value may hold spaces; ``preserve=others``, ``expand=N`` and ``anchor=TEXT`` are the
    bench's own settings, the rest the method's."""
    name, _, rest = text.strip().partition(" ")
    pairs = re.split(r"\s+(?=\w+=)", rest.strip()) if rest.strip() else []  # a value may hold spaces
    settings = setting_pairs(pairs)
    preserve = settings.pop("preserve", None)
    if preserve not in (None, "others"):
        raise ErasekitError(f"bench method {text!r}: preserve takes 'others' (the task's other concepts), not {preserve!r}")
    expand = parse_setting(f"bench method {text!r}: expand", int, settings.pop("expand", "0"))
    anchor = settings.pop("anchor", "").strip()
    typed = typed_settings(get_method(name), settings)
    make_config(get_method(name), typed)  # every method's settings are checked before the model loads
    return BenchEntry(name, typed, preserve == "others", expand, anchor)
