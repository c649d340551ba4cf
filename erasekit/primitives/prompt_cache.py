"""Prompt embedding cache: every prompt is tokenized and encoded once per pipeline.

Token states are what cross-attention's ``to_k`` / ``to_v`` read, so the closed-form editors work
on them directly. Spans follow the tokenizer: ``[CLS] w1 ... wn [SEP] [PAD] ...`` for BERT-style
encoders and ``<bos> w1 ... wn <eos> <pad> ...`` for CLIP; both pad to a fixed length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from transformers import BatchEncoding


class PromptCache:
    """Text-encoder states of prompts, padded as the pipeline pads them, cached by prompt.

    States stay where the text encoder is (the model's device), in float32: the closed forms
    accumulate them in float64 and the UNet reads them in its own dtype. ``parameters`` (name →
    value) encode with those values in place of the encoder's own: the original text encoder of a
    pipeline whose encoder an edit changed (AdvUnlearn), kept aside before the edit went in.
    """

    def __init__(self, pipe: DiffusionPipeline, batch_size: int = 256, parameters: dict[str, torch.Tensor] | None = None) -> None:
        self.tokenizer = pipe.tokenizer
        self.text_encoder = pipe.text_encoder
        self.max_length = self.tokenizer.model_max_length
        self.batch_size = batch_size
        self.parameters = parameters or {}
        self._states: dict[str, torch.Tensor] = {}
        self._lengths: dict[str, int] = {}

    def _tokenize(self, prompts: list[str]) -> BatchEncoding:
        return self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def states(self, prompts: list[str]) -> torch.Tensor:
        """(n, L, d) token states of ``prompts``, with the attention mask the pipeline would use."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._states]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            tok = self._tokenize(chunk)
            use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
            mask = tok.attention_mask.to(self.text_encoder.device) if use_mask else None
            out = self.encode(tok.input_ids.to(self.text_encoder.device), mask).float()
            for prompt, state, length in zip(chunk, out, tok.attention_mask.sum(1).tolist(), strict=True):
                self._states[prompt] = state
                self._lengths[prompt] = int(length)
        return torch.stack([self._states[p] for p in prompts])

    def encode(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(n, L, d) token states of token ids, with this cache's ``parameters`` in place (no caching)."""
        return torch.func.functional_call(self.text_encoder, self.parameters, (ids,), {"attention_mask": attention_mask})[0]

    def length(self, prompt: str) -> int:
        """Number of real tokens of ``prompt``, special tokens included (its last is EOS/[SEP])."""
        if prompt not in self._lengths:
            self.states([prompt])
        return self._lengths[prompt]

    def token_ids(self, prompt: str) -> list[int]:
        """Token ids of ``prompt`` with special tokens, truncated as encoded, without padding."""
        return self.tokenizer(prompt, truncation=True, max_length=self.max_length).input_ids

    def word_span(self, prompt: str, phrase: str) -> range:
        """Token positions of ``phrase`` inside ``prompt`` (the last occurrence); an error if absent."""
        ids = self.token_ids(prompt)
        sub = self.tokenizer(phrase, add_special_tokens=False).input_ids
        if not sub:
            raise ErasekitError(f"the tokenizer turns {phrase!r} into no tokens; give a concept with letters or digits")
        for start in range(len(ids) - len(sub), -1, -1):
            if ids[start : start + len(sub)] == sub:
                return range(start, start + len(sub))
        raise ErasekitError(f"{phrase!r} does not occur in the prompt {prompt!r}")


def aligned_positions(ids: list[int], other_ids: list[int], length: int, middle: bool = True) -> tuple[list[int], list[int]]:
    """Token positions of one prompt paired with another's: the common prefix, the differing middle
    (position by position, the shorter side repeating its last middle token), the common suffix and
    the padding up to ``length``. ``middle=False`` leaves the differing words out (MACE's co-existing
    words). ``ids`` are token ids with special tokens and without padding."""
    start = 0
    while start < min(len(ids), len(other_ids)) and ids[start] == other_ids[start]:
        start += 1
    end, other_end = len(ids), len(other_ids)
    while end > start and other_end > start and ids[end - 1] == other_ids[other_end - 1]:
        end, other_end = end - 1, other_end - 1
    pads = length - max(len(ids), len(other_ids))
    mine, theirs = list(range(start)), list(range(start))
    if middle:
        width = max(end - start, other_end - start)
        mine += [min(start + i, max(end - 1, start)) for i in range(width)] if end > start else [start] * width
        theirs += [min(start + i, max(other_end - 1, start)) for i in range(width)] if other_end > start else [start] * width
    mine += list(range(end, len(ids) + pads))
    theirs += list(range(other_end, len(other_ids) + pads))
    return mine, theirs
