"""Concept expansion: phrases near a concept in the text encoder's own space.

A concept erased by its name survives under its other names ("nudity" → "nude", "nsfw", "bare" in
RACE's notes). Expansion proposes such phrases from a general vocabulary — by default the
tokenizer's whole-word vocabulary (about 21k English words for the embedded model's WordPiece),
or the user's own list — ranked by the cosine similarity of their mean token states, so the user
can see each candidate with its similarity before anything is erased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from erasekit.primitives.prompt_cache import PromptCache

# Function words carry no concept; they are never proposed.
STOP_WORDS = frozenset(
    "the and for with that this from are was were been has have had not but its his her their our your you she they "
    "them who what when where which while also into onto over under about than then there these those such very".split()
)


MAX_TOP_K = 1_000  # phrases added per concept: each becomes a target of the edit, so more is a mistake


def check_expansion(top_k: int, min_similarity: float) -> None:
    """Refuse expansion settings that add nothing or everything, before any phrase is encoded: ``top_k``
    from 1 to :data:`MAX_TOP_K`, ``min_similarity`` a cosine in [-1, 1] (NaN passes no comparison and
    silently added no phrase)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise ErasekitError(f"expansion top_k must be a whole number from 1 to {MAX_TOP_K:,}, not {top_k!r}")
    number = isinstance(min_similarity, int | float) and not isinstance(min_similarity, bool)
    if not number or (isinstance(min_similarity, float) and not math.isfinite(min_similarity)):
        raise ErasekitError(f"expansion min_similarity must be a finite cosine similarity from -1 to 1, not {min_similarity!r}")
    if not -1 <= min_similarity <= 1:
        raise ErasekitError(f"expansion min_similarity is a cosine similarity, from -1 to 1, not {min_similarity!r}")


@dataclass(frozen=True)
class Candidate:
    """A proposed phrase and its cosine similarity to the concept."""

    phrase: str
    similarity: float


def tokenizer_vocabulary(cache: PromptCache, min_length: int = 3) -> list[str]:
    """The tokenizer's whole words: alphabetic ASCII entries (no sub-word pieces, no specials)."""
    vocab = cache.tokenizer.get_vocab()
    words = (w.lstrip("Ġ") for w in vocab)  # byte-level BPE (CLIP) marks word starts; WordPiece does not
    return sorted({w.lower() for w in words if w.isascii() and w.isalpha() and len(w) >= min_length} - STOP_WORDS)


def read_vocabulary(path: str | Path) -> list[str]:
    """The phrases of a user's vocabulary file: one per line, blank lines and # comments skipped."""
    from erasekit.io import read_user_text

    text = read_user_text(path, "vocabulary file (one phrase per line)")
    phrases = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not phrases:
        raise ErasekitError(f"vocabulary file {path} has no phrases")
    return phrases


@torch.no_grad()
def phrase_vectors(cache: PromptCache, phrases: list[str], batch_size: int = 512, progress: bool = False) -> torch.Tensor:
    """Mean token state of each phrase on its own (special tokens and padding excluded), L2-normalised;
    with ``progress``, a bar over the batches (a tokenizer's whole vocabulary takes minutes on a CPU)."""
    from tqdm.auto import tqdm

    out = []
    device = cache.text_encoder.device
    batches = range(0, len(phrases), batch_size)
    for start in tqdm(batches, desc="encoding phrases", unit="batch", disable=not progress or len(batches) < 2):
        chunk = phrases[start : start + batch_size]
        tok = cache.tokenizer(chunk, padding=True, truncation=True, max_length=cache.max_length, return_tensors="pt").to(device)
        mask = tok.attention_mask if cache.masked else None
        states = cache.text_encoder(tok.input_ids, attention_mask=mask)[0].float()
        keep = tok.attention_mask.bool()
        for i, ids in enumerate(tok.input_ids.tolist()):
            special = cache.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
            keep[i] &= ~torch.tensor(special, dtype=torch.bool, device=device)
        keep = keep.float()[..., None]  # real, non-special tokens
        out.append(F.normalize((states * keep).sum(1) / keep.sum(1).clamp_min(1), dim=-1))
    return torch.cat(out)


def expand_concepts(
    cache: PromptCache,
    concepts: tuple[str, ...],
    vocabulary: list[str] | None = None,
    top_k: int = 5,
    min_similarity: float = 0.0,
    exclude: tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, list[Candidate]]:
    """For each concept, the ``top_k`` phrases most similar to it (at least ``min_similarity``), best first.

    The vocabulary is encoded once for all concepts. Phrases that contain a concept, and those in
    ``exclude`` (the other targets, the preserve set), are never proposed.
    """
    check_expansion(top_k, min_similarity)
    vocabulary = vocabulary if vocabulary is not None else tokenizer_vocabulary(cache)
    banned = {c.lower() for c in (*concepts, *exclude)}
    pool = [p for p in dict.fromkeys(vocabulary) if p.lower() not in banned and not any(c.lower() in p.lower() for c in concepts)]
    if not pool:
        raise ErasekitError("the vocabulary has no phrase to propose once the concepts and excluded phrases are removed")
    vectors = phrase_vectors(cache, pool, progress=progress)
    out = {}
    for concept, target in zip(concepts, phrase_vectors(cache, list(concepts)), strict=True):
        sims = vectors @ target
        order = torch.argsort(sims, descending=True)[:top_k]
        out[concept] = [Candidate(pool[i], round(float(sims[i]), 4)) for i in order if sims[i] >= min_similarity]
    return out
