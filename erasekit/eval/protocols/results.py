"""What a protocol run gives: its typed result (written as ``results.json``), and the typed reading
of such a file, where a missing key or a wrong type is one error naming the file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from erasekit.eval.generation import Generated


@dataclass
class Measurement:
    """Both models measured on a protocol's prompts: the judge's settings, the metrics of the
    ``original`` and the ``erased`` model, each row's scores, and the images of each.

    ``world_fid_kept`` is the judge's Fréchet distance between the two models' images on the kept
    prompts (None where the judge has no features); ``measures_drift`` is false for the prompt-file
    protocols, which measure no such drift (and whose results carry no ``world_fid_kept``); ``fid`` is
    the captions protocol's FID between the two image sets."""

    judge: dict | None
    metrics: dict[str, dict]
    rows: dict[str, list[dict]]
    images: dict[str, Generated] = field(default_factory=dict, repr=False)
    world_fid_kept: float | None = None
    measures_drift: bool = True
    fid: dict | None = None


@dataclass(kw_only=True)
class ProtocolResult(Measurement):
    """One protocol run on one edit: what was measured (see :class:`Measurement`; ``images`` are not part
    of ``results.json``), and which protocol and erased concept, samples per prompt and prompts in order."""

    protocol: str
    target: str
    samples_per_prompt: int | None
    prompts: list[str]

    @classmethod
    def of(cls, protocol: str, target: str, samples: int, prompts: list[str], measured: Measurement) -> ProtocolResult:
        """The result of ``protocol`` on ``target`` from its measurement."""
        measurement = {f.name: getattr(measured, f.name) for f in fields(Measurement)}
        return cls(**measurement, protocol=protocol, target=target, samples_per_prompt=samples, prompts=prompts)

    def to_json(self) -> dict:
        """The result as ``results.json`` holds it (keys in the order erasekit has always written them)."""
        out = {"protocol": self.protocol, "target": self.target, "samples_per_prompt": self.samples_per_prompt,
               "prompts": self.prompts, "judge": self.judge, "metrics": self.metrics}  # fmt: skip
        if self.measures_drift:
            out["world_fid_kept"] = self.world_fid_kept
        if self.fid is not None:
            out["fid"] = self.fid
        return out | {"rows": self.rows}

    @classmethod
    def from_json(cls, data: dict) -> ProtocolResult:
        """A result read back from ``results.json`` (a reader checks its types first, see :class:`JsonFields`);
        fields a file leaves out read as empty."""
        return cls(
            protocol=data.get("protocol", ""),
            target=data.get("target", ""),
            samples_per_prompt=data.get("samples_per_prompt"),
            prompts=list(data.get("prompts") or []),
            judge=data.get("judge"),
            metrics=data.get("metrics") or {},
            rows=data.get("rows") or {},
            world_fid_kept=data.get("world_fid_kept"),
            measures_drift="world_fid_kept" in data,
            fid=data.get("fid"),
        )


def percent(fraction: float) -> str:
    """A fraction as a percentage with one decimal, as the tables print it."""
    return f"{100 * fraction:.1f}"


@dataclass(frozen=True)
class MetricTable:
    """A protocol's metrics as the terminal shows them: ``columns`` of (header, "left" or "right"),
    ``rows`` of cells, an optional ``caption`` under the table."""

    columns: list[tuple[str, str]]
    rows: list[tuple[str, ...]]
    caption: str | None = None


@dataclass(frozen=True)
class CardRow:
    """One row of a protocol's table on the model card: a plain-text ``label``, the original's and the
    erased model's values as printed (``original`` None: the metric compares the two models, so the
    original has none), which way is ``better``, and the ``metric`` whose meaning the card spells out
    under the table (None: the label says it)."""

    label: str
    original: str | None
    erased: str
    better: str
    metric: str | None = None


NUMBER = (int, float)
_MISSING = object()
_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}


def _type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, NUMBER) else type(value).__name__
    )


@dataclass
class JsonFields:
    """Typed access to one JSON file: a missing key or a wrong type is one error naming the file."""

    data: Any
    path: Path
    fix: str  # how to mend the file, for the error

    def error(self, keys: tuple[str, ...], problem: str) -> ErasekitError:
        """The one-line error for the value at ``keys``."""
        where = ".".join(keys) or "the top level"
        return ErasekitError(f"{self.path}: {where} {problem}; {self.fix}")

    def get(self, *keys: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        """The value at ``keys`` if it has type ``kind`` (``default`` when missing or null, if given)."""
        value = self.data
        for i, key in enumerate(keys):
            if not isinstance(value, dict):
                raise self.error(keys[:i], f"should be an object, not {_type(value)}")
            if value.get(key) is None:
                if default is _MISSING:
                    raise self.error(keys[: i + 1], "is missing")
                return default
            value = value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # JSON's true is no number
            names = dict.fromkeys(_KIND_NAMES.get(k, k.__name__) for k in kinds)  # int and float: "a number" once
            raise self.error(keys, f"should be {' or '.join(names)}, not {_type(value)}")
        return value

    def strings(self, *keys: str, nulls: bool = False) -> list:
        """The list of strings at ``keys`` (missing: empty; ``nulls``: None allowed, as an anchor)."""
        values = self.get(*keys, kind=list, default=[])
        if not all(isinstance(v, str) or (nulls and v is None) for v in values):
            raise self.error(keys, "should be a list of strings")
        return values

    def numbers(self, *keys: str) -> dict[str, float]:
        """The object of numbers at ``keys`` (metric name → value)."""
        values = self.get(*keys, kind=dict)
        if not all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in values.values()):
            raise self.error(keys, "should map names to numbers")
        return values
