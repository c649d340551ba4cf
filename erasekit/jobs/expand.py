"""The ``expand`` job: phrases near each concept in the text encoder's space, with their similarity.

:func:`expand` reads the vocabulary file and checks the number of phrases before the model loads,
then ranks the vocabulary against each concept (:func:`erasekit.primitives.expansion.expand_concepts`).
Modules that load torch are imported inside the function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from erasekit.primitives.expansion import Candidate


@dataclass(frozen=True)
class ExpandOptions:
    """What ``erasekit expand`` is asked: the concepts, ``top_k`` phrases each, chosen from
    ``vocabulary`` (a file of one phrase per line; None: the tokenizer's words) with ``model``'s text
    encoder, and where it runs."""

    concepts: tuple[str, ...]
    top_k: int = 10
    vocabulary: Path | None = None
    model: str | None = None  # None: the embedded erasekit-tiny
    device: str | None = None
    dtype: str = "fp32"


@dataclass(frozen=True)
class ExpandResult:
    """Per concept, the phrases nearest it, best first."""

    near: dict[str, list[Candidate]]


def expand(options: ExpandOptions) -> ExpandResult:
    """Read the vocabulary and check ``top_k``, then load the text encoder and rank the vocabulary."""
    from erasekit.models.loading import check_load, load_pipeline
    from erasekit.primitives.expansion import check_expansion, expand_concepts, read_vocabulary
    from erasekit.primitives.prompt_cache import PromptCache

    check_load(options.model, options.device, options.dtype)
    words = read_vocabulary(options.vocabulary) if options.vocabulary else None
    check_expansion(options.top_k, 0.0)
    cache = PromptCache(load_pipeline(options.model, options.dtype, options.device, progress=False))
    return ExpandResult(expand_concepts(cache, options.concepts, words, options.top_k))
