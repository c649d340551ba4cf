"""Concept expansion: phrases near a concept in the text encoder's own space.

A concept erased by its name survives under its other names ("nudity" → "nude", "nsfw", "bare" in
RACE's notes). Expansion proposes such phrases from a general vocabulary — by default the
tokenizer's whole-word vocabulary (about 21k English words for the embedded model's WordPiece),
or the user's own list — ranked by the cosine similarity of their mean token states, so the user
can see each candidate with its similarity before anything is erased.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Candidate:
    phrase: str
    similarity: float


def tokenizer_vocabulary(cache: PromptCache, min_length: int = 3) -> list[str]:
    """The tokenizer's whole words: alphabetic ASCII entries (no sub-word pieces, no specials)."""
    vocab = cache.tokenizer.get_vocab()
    words = (w.lstrip("Ġ") for w in vocab)  # byte-level BPE (CLIP) marks word starts; WordPiece does not
    return sorted({w.lower() for w in words if w.isascii() and w.isalpha() and len(w) >= min_length} - STOP_WORDS)


def read_vocabulary(path: str | Path) -> list[str]:
    from erasekit.io import read_user_text

    text = read_user_text(path, "vocabulary file (one phrase per line)")
    phrases = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not phrases:
        raise ErasekitError(f"vocabulary file {path} has no phrases")
    return phrases


@torch.no_grad()
def phrase_vectors(cache: PromptCache, phrases: list[str], batch_size: int = 512) -> torch.Tensor:
    """Mean token state of each phrase on its own (special tokens and padding excluded), L2-normalised."""
    out = []
    device = cache.text_encoder.device
    for start in range(0, len(phrases), batch_size):
        chunk = phrases[start : start + batch_size]
        tok = cache.tokenizer(chunk, padding=True, truncation=True, max_length=cache.max_length, return_tensors="pt").to(device)
        use_mask = getattr(cache.text_encoder.config, "use_attention_mask", False)
        mask = tok.attention_mask if use_mask else None
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
) -> dict[str, list[Candidate]]:
    """For each concept, the ``top_k`` phrases most similar to it (at least ``min_similarity``), best first.

    The vocabulary is encoded once for all concepts. Phrases that contain a concept, and those in
    ``exclude`` (the other targets, the preserve set), are never proposed.
    """
    if top_k < 1:
        raise ErasekitError(f"top_k must be at least 1, got {top_k}")
    vocabulary = vocabulary if vocabulary is not None else tokenizer_vocabulary(cache)
    banned = {c.lower() for c in (*concepts, *exclude)}
    pool = [p for p in dict.fromkeys(vocabulary) if p.lower() not in banned and not any(c.lower() in p.lower() for c in concepts)]
    if not pool:
        raise ErasekitError("the vocabulary has no phrase to propose once the concepts and excluded phrases are removed")
    vectors = phrase_vectors(cache, pool)
    out = {}
    for concept, target in zip(concepts, phrase_vectors(cache, list(concepts)), strict=True):
        sims = vectors @ target
        order = torch.argsort(sims, descending=True)[:top_k]
        out[concept] = [Candidate(pool[i], round(float(sims[i]), 4)) for i in order if sims[i] >= min_similarity]
    return out
