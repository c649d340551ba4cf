"""The edit: what an erasure leaves behind, saved, loaded and put onto a pipeline.

:mod:`~erasekit.edits.artifact` holds the :class:`Edit` (weights, adapters, card); each edit kind
(changed weights, SLD's sampling guidance, SPM's transport, Receler's hooked erasers, AdaVD's value
decomposition, GLoCE's gated modules, SAFREE's prompt projection) is an
:class:`~erasekit.edits.kind.EditKind` of its own module (:mod:`~erasekit.edits.weights`,
:mod:`~erasekit.edits.guidance`, :mod:`~erasekit.edits.transport`, :mod:`~erasekit.edits.erasers`,
:mod:`~erasekit.edits.values`, :mod:`~erasekit.edits.gates`, :mod:`~erasekit.edits.projection`), imported
here so that each has registered itself before an edit looks its kind up;
:mod:`~erasekit.edits.lora` writes an edit as a diffusers LoRA.
"""

from erasekit.edits import erasers, gates, guidance, projection, transport, values, weights  # the kinds: each registers itself
from erasekit.edits.artifact import (
    ADAPTERS_FILE,
    CARD_FILE,
    TEXT_ENCODER,
    WEIGHTS_FILE,
    Edit,
    Usage,
    base_hash,
    load_erased,
    measure,
    pipeline_parameters,
    refuse_non_finite,
    weights_hash,
)
from erasekit.edits.kind import KINDS, EditKind

__all__ = [
    "ADAPTERS_FILE",
    "CARD_FILE",
    "KINDS",
    "TEXT_ENCODER",
    "WEIGHTS_FILE",
    "Edit",
    "EditKind",
    "Usage",
    "base_hash",
    "erasers",
    "gates",
    "guidance",
    "load_erased",
    "measure",
    "pipeline_parameters",
    "projection",
    "refuse_non_finite",
    "transport",
    "values",
    "weights",
    "weights_hash",
]
