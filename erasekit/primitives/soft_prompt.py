"""Soft prompts: token slots in a prompt whose input embeddings are optimised, the attacks' common part.

A prompt's ids are laid out as the pipeline pads them, with ``k`` slots inserted after [BOS]/[CLS]
(UnlearnDiffAtk's and P4D's ``prefix_k``) or put where a word stands (concept inversion's new token).
A forward hook on the text encoder's input-embedding table writes the slot vectors in, so one code
path serves CLIP and BERT encoders and the gradient reaches the vectors. A slot can also hold a real
token: the attacks end with prompts a person could type, whose ids are kept so that what is judged
is exactly what was found (decoded text can tokenize differently).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SlottedPrompt:
    """Token ids (1, L) padded as the pipeline pads them, and the positions of the optimised slots."""

    ids: torch.Tensor
    slots: tuple[int, ...]
    length: int  # real tokens, special tokens included

    def with_tokens(self, tokens: Sequence[int]) -> torch.Tensor:
        """The ids with real tokens in the slots."""
        ids = self.ids.clone()
        ids[0, list(self.slots)] = torch.as_tensor(list(tokens), device=ids.device)
        return ids


def slotted_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, slots: int, device: torch.device, replace: str | None = None
) -> SlottedPrompt:
    """``prompt`` with ``slots`` slots after the first special token, or in place of the word ``replace``."""
    ids = tokenizer(prompt).input_ids  # with the special tokens: [BOS]/[CLS] first, [EOS]/[SEP] last
    filler = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    if replace is None:
        at, width = 1, 0
    else:
        word = tokenizer(replace, add_special_tokens=False).input_ids
        at = next((i for i in range(1, len(ids) - len(word)) if ids[i : i + len(word)] == word), None)
        if not word or at is None:
            raise ErasekitError(f"{replace!r} does not occur in the prompt {prompt!r}")
        width = len(word)
    ids = ids[:at] + [filler] * slots + ids[at + width :]
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        raise ErasekitError(f"{prompt!r} with {slots} attack tokens is {len(ids)} tokens; this tokenizer takes {limit}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padded = torch.tensor([ids + [pad] * (limit - len(ids))], device=device)
    return SlottedPrompt(padded, tuple(range(at, at + slots)), len(ids))


def attention_mask(text_encoder: torch.nn.Module, prompt: SlottedPrompt) -> torch.Tensor | None:
    """The mask the pipeline gives encoders configured to take one (the world's BERT), else None."""
    if not getattr(text_encoder.config, "use_attention_mask", False):
        return None
    return (torch.arange(prompt.ids.shape[1], device=prompt.ids.device) < prompt.length).long()[None]


@contextmanager
def slot_vectors(text_encoder: torch.nn.Module, slots: Sequence[int], vectors: torch.Tensor) -> Iterator[None]:
    """While open, the text encoder's input embeddings at ``slots`` are ``vectors`` (k, d) in every row."""
    table = text_encoder.get_input_embeddings()

    def put(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, list(slots)] = vectors.to(output.dtype)
        return output

    handle = table.register_forward_hook(put)
    try:
        yield
    finally:
        handle.remove()


def encode(text_encoder: torch.nn.Module, prompt: SlottedPrompt, vectors: torch.Tensor | None = None) -> torch.Tensor:
    """(1, L, d) token states of the prompt, with ``vectors`` in its slots (None: the ids as they are)."""
    mask = attention_mask(text_encoder, prompt)
    if vectors is None:
        return text_encoder(prompt.ids, attention_mask=mask)[0]
    with slot_vectors(text_encoder, prompt.slots, vectors):
        return text_encoder(prompt.ids, attention_mask=mask)[0]


_WORDS: dict[tuple[str, int], torch.Tensor] = {}


def word_tokens(tokenizer: PreTrainedTokenizerBase, device: torch.device) -> torch.Tensor:
    """Ids of the tokens that are whole alphabetic words and tokenize back to themselves: what a
    discrete attack may put in a prompt a person types (no sub-word pieces, no special tokens)."""
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in _WORDS:
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        ids = sorted(i for i in vocab.values() if i not in special)
        texts = tokenizer.batch_decode([[i] for i in ids])
        words = [(i, t.strip()) for i, t in zip(ids, texts, strict=True) if t.strip().isalpha() and t.strip().isascii()]
        again = tokenizer([w for _, w in words], add_special_tokens=False).input_ids
        _WORDS[key] = torch.tensor([i for (i, _), back in zip(words, again, strict=True) if back == [i]], device="cpu")
    return _WORDS[key].to(device)


def nearest_tokens(vectors: torch.Tensor, table: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """For each vector (k, d), the candidate token whose embedding is closest in cosine (P4D's and PEZ's projection)."""
    similarity = F.normalize(vectors.float(), dim=-1) @ F.normalize(table[candidates].float(), dim=-1).T
    return candidates[similarity.argmax(-1)]


def simplex_projection(weights: torch.Tensor) -> torch.Tensor:
    """Each row's Euclidean projection onto the probability simplex (Duchi et al. 2008): UnlearnDiffAtk's
    projection of its token distributions after every step."""
    sorted_w, _ = weights.sort(dim=-1, descending=True)
    cumulative = sorted_w.cumsum(-1) - 1
    index = torch.arange(1, weights.shape[-1] + 1, device=weights.device, dtype=weights.dtype)
    support = (sorted_w - cumulative / index > 0).sum(-1, keepdim=True)
    threshold = cumulative.gather(-1, support - 1) / support
    return (weights - threshold).clamp_min(0)


def random_tokens(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` candidate tokens drawn with a CPU generator (the same draw on every device)."""
    picks = torch.randint(len(candidates), (count,), generator=generator, device="cpu")
    return candidates[picks.to(candidates.device)]
