"""Prompt embedding cache: every prompt is tokenized and encoded once per pipeline.

Token states are what cross-attention's ``to_k`` / ``to_v`` read, so the closed-form editors work
on them directly. Spans follow the tokenizer: ``[CLS] w1 ... wn [SEP] [PAD] ...`` for BERT-style
encoders and ``<bos> w1 ... wn <eos> <pad> ...`` for CLIP; both pad to a fixed length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from erasekit.errors import ErasekitError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from transformers import BatchEncoding


@dataclass(frozen=True)
class PooledText:
    """The conditioning of a model that reads a pooled text vector beside the token states: FLUX
    (T5 tokens, CLIP pooled) and SDXL (both CLIPs' tokens, the second's pooled): (n, L, d) and (n, p)."""

    tokens: torch.Tensor
    pooled: torch.Tensor

    def __getitem__(self, rows: slice | list[int]) -> PooledText:
        return PooledText(self.tokens[rows], self.pooled[rows])

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, dtype: torch.dtype) -> PooledText:
        """Both parts in ``dtype`` (as a tensor's ``.to``: code may hold either kind of conditioning)."""
        return PooledText(self.tokens.to(dtype), self.pooled.to(dtype))

    def rows(self, n: int) -> PooledText:
        """The conditioning of one prompt repeated for ``n`` rows."""
        return PooledText(self.tokens.expand(n, -1, -1), self.pooled.expand(n, -1))

    @staticmethod
    def cat(items: list[PooledText]) -> PooledText:
        """Several prompts' conditionings as one batch."""
        return PooledText(torch.cat([t.tokens for t in items]), torch.cat([t.pooled for t in items]))


def token_states(cond: torch.Tensor | PooledText) -> torch.Tensor:
    """The token states of a conditioning: a :class:`PooledText`'s (its pooled vector left out), or the tensor itself."""
    return cond.tokens if isinstance(cond, PooledText) else cond


def with_tokens(cond: torch.Tensor | PooledText, tokens: torch.Tensor) -> torch.Tensor | PooledText:
    """``cond`` with its token states replaced by ``tokens``; a pooled vector beside them is kept as it is."""
    return PooledText(tokens, cond.pooled) if isinstance(cond, PooledText) else tokens


class PromptCache:
    """Text-encoder states of prompts, padded as the pipeline pads them, cached by prompt.

    States stay where the text encoder is (the model's device), in float32: the closed forms
    accumulate them in float64 and the UNet reads them in its own dtype. ``parameters`` (name →
    value) encode with those values in place of the encoder's own: the original text encoder of a
    pipeline whose encoder an edit changed (AdvUnlearn), kept aside before the edit went in. ``path``,
    ``max_length`` and ``masked`` choose another of the pipeline's encoders, its padding and whether the
    attention mask goes in (FLUX's token path: T5 padded to its sequence length, no mask).
    """

    def __init__(
        self,
        pipe: DiffusionPipeline,
        batch_size: int = 256,
        parameters: dict[str, torch.Tensor] | None = None,
        path: str = "",
        max_length: int | None = None,
        masked: bool | None = None,
    ) -> None:
        # path "_2": the pipeline's second encoder, FLUX's token path (T5; MiniLM in erasekit-tiny-flux)
        self.tokenizer = getattr(pipe, "tokenizer" + path)
        self.text_encoder = getattr(pipe, "text_encoder" + path)
        self.max_length = max_length or self.tokenizer.model_max_length
        # StableDiffusionPipeline passes the attention mask when the encoder's config asks; FluxPipeline never
        self.masked = getattr(self.text_encoder.config, "use_attention_mask", False) if masked is None else masked
        self.batch_size = batch_size
        self.parameters = parameters or {}
        self._states: dict[str, torch.Tensor] = {}
        self._lengths: dict[str, int] = {}

    @property
    def width(self) -> int:
        """The width d of the token states (the text encoder's hidden size)."""
        return self.text_encoder.config.hidden_size

    def _tokenize(self, prompts: list[str]) -> BatchEncoding:
        return self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def states(self, prompts: list[str]) -> torch.Tensor:
        """(n, L, d) token states of ``prompts``, with the attention mask the pipeline would use."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._states]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            tok = self._tokenize(chunk)
            mask = tok.attention_mask.to(self.text_encoder.device) if self.masked else None
            out = self.encode_chunk(chunk, tok, mask).float()
            for prompt, state, length in zip(chunk, out, tok.attention_mask.sum(1).tolist(), strict=True):
                self._states[prompt] = state
                self._lengths[prompt] = int(length)
        return torch.stack([self._states[p] for p in prompts])

    def encode_chunk(self, prompts: list[str], tok: BatchEncoding, mask: torch.Tensor | None) -> torch.Tensor:
        """(n, L, d) states of ``prompts`` (tokenized as ``tok``); SDXL's cache overrides it."""
        return self.encode(tok.input_ids.to(self.text_encoder.device), mask)

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

    def last_word_positions(self, prompt: str) -> list[int]:
        """Where the official UCE scripts read a prompt: ``attention_mask.sum() - 2``, its last word token
        ([BOS] for an empty prompt)."""
        return [self.length(prompt) - 2]

    def word_span(self, prompt: str, phrase: str) -> range:
        """Token positions of ``phrase`` inside ``prompt`` (the last occurrence); an error if absent."""
        return last_occurrence(self.token_ids(prompt), self.tokenizer(phrase, add_special_tokens=False).input_ids, prompt, phrase)

    @property
    def sequence_length(self) -> int:
        """How many token states a prompt has, padding included (SD3's: both segments)."""
        return self.max_length

    def word_positions(self, prompt: str, phrase: str) -> list[int]:
        """Every position of the states that hold ``phrase`` in ``prompt``: its span (SD3: in each segment)."""
        return list(self.word_span(prompt, phrase))

    def aligned(self, prompt: str, other: str, middle: bool = True) -> tuple[list[int], list[int]]:
        """:func:`aligned_positions` of two prompts over the whole sequence (SD3: segment by segment)."""
        return aligned_positions(self.token_ids(prompt), self.token_ids(other), self.max_length, middle)


class SDXLPromptCache(PromptCache):
    """SDXL's token states: both CLIP encoders' penultimate states side by side (768 + 1280 = 2048 on
    SDXL), as ``StableDiffusionXLPipeline.encode_prompt`` builds them and the UNet's ``attn2.to_k/to_v``
    read them. Positions and lengths are the first tokenizer's (the official UCE script's ``idx``)."""

    def __init__(self, pipe: DiffusionPipeline, batch_size: int = 256) -> None:
        super().__init__(pipe, batch_size, masked=False)
        self.pipe = pipe

    @property
    def width(self) -> int:
        """The concatenated width both encoders give (the UNet's cross-attention width)."""
        return self.text_encoder.config.hidden_size + self.pipe.text_encoder_2.config.hidden_size

    def encode_chunk(self, prompts: list[str], tok: BatchEncoding, mask: torch.Tensor | None) -> torch.Tensor:
        """The pipeline's own encoding of ``prompts`` (no classifier-free guidance, no LoRA scale)."""
        device = self.text_encoder.device
        return self.pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)[0]


class SD3PromptCache(SDXLPromptCache):
    """SD3's token states: both CLIP encoders' penultimate states side by side, padded to T5's width, then T5's
    states, in one sequence of 77 + L tokens, as ``StableDiffusion3Pipeline.encode_prompt`` builds it and the
    transformer's ``context_embedder`` reads it. Positions and lengths are the first tokenizer's, in the CLIP
    segment; :meth:`last_word_positions` also gives the last word in the T5 segment."""

    def __init__(self, pipe: DiffusionPipeline, batch_size: int = 256) -> None:
        from erasekit.models.families import sequence_length

        super().__init__(pipe, batch_size)
        self.t5_length = sequence_length(pipe)

    @property
    def width(self) -> int:
        """T5's width, to which the CLIP states are padded (the transformer's ``joint_attention_dim``)."""
        return self.pipe.text_encoder_3.config.d_model

    def encode_chunk(self, prompts: list[str], tok: BatchEncoding, mask: torch.Tensor | None) -> torch.Tensor:
        """The pipeline's own joint sequence of ``prompts`` (no classifier-free guidance)."""
        device = self.text_encoder.device
        return self.pipe.encode_prompt(prompts, None, None, device=device, num_images_per_prompt=1,
                                       do_classifier_free_guidance=False, max_sequence_length=self.t5_length)[0]  # fmt: skip

    def last_word_positions(self, prompt: str) -> list[int]:
        """The last word token in the CLIP segment and in the T5 segment (``mask.sum() - 2`` in each)."""
        return [self.length(prompt) - 2, self.max_length + len(self.t5_ids(prompt)) - 2]

    def t5_ids(self, prompt: str) -> list[int]:
        """T5's token ids of ``prompt`` (its </s> included), truncated as encoded, without padding."""
        return self.pipe.tokenizer_3(prompt, truncation=True, max_length=self.t5_length).input_ids

    @property
    def sequence_length(self) -> int:
        """The CLIP segment's 77 states, then T5's."""
        return self.max_length + self.t5_length

    def word_positions(self, prompt: str, phrase: str) -> list[int]:
        """The phrase's span in the CLIP segment and in the T5 segment."""
        t5 = last_occurrence(self.t5_ids(prompt), self.pipe.tokenizer_3(phrase, add_special_tokens=False).input_ids,
                             prompt, phrase)  # fmt: skip
        return [*self.word_span(prompt, phrase), *(self.max_length + i for i in t5)]

    def aligned(self, prompt: str, other: str, middle: bool = True) -> tuple[list[int], list[int]]:
        """CLIP's segment aligned as SD's, then T5's, each padded to its own length."""
        mine, theirs = super().aligned(prompt, other, middle)
        t5_mine, t5_theirs = aligned_positions(self.t5_ids(prompt), self.t5_ids(other), self.t5_length, middle)
        return mine + [self.max_length + i for i in t5_mine], theirs + [self.max_length + i for i in t5_theirs]


def last_occurrence(ids: list[int], sub: list[int], prompt: str, phrase: str) -> range:
    """Where the token ids ``sub`` of ``phrase`` last occur in ``prompt``'s ``ids``; one line if nowhere."""
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


def family_cache(pipe: DiffusionPipeline) -> PromptCache:
    """The cache of the token states the pipeline's text-reading layers see: SD's encoder, SDXL's two side by
    side, SD3's joint sequence, FLUX's T5 path."""
    from erasekit.models.families import pipeline_family, sequence_length

    name = pipeline_family(pipe).name
    if name == "flux":
        return PromptCache(pipe, path="_2", max_length=sequence_length(pipe), masked=False)
    return {"sd3": SD3PromptCache, "sdxl": SDXLPromptCache}.get(name, PromptCache)(pipe)
