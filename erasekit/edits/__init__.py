"""The edit: what an erasure leaves behind, saved, loaded and put onto a pipeline.

:mod:`~erasekit.edits.artifact` holds the :class:`Edit` (weights, adapters, card); each edit kind
(changed weights, SLD's sampling guidance, SPM's transport, Receler's hooked erasers) is a strategy
of its own module; :mod:`~erasekit.edits.lora` writes an edit as a diffusers LoRA.
"""

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

__all__ = [
    "ADAPTERS_FILE",
    "CARD_FILE",
    "TEXT_ENCODER",
    "WEIGHTS_FILE",
    "Edit",
    "Usage",
    "base_hash",
    "load_erased",
    "measure",
    "pipeline_parameters",
    "refuse_non_finite",
    "weights_hash",
]
