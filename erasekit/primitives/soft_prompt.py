"""Soft prompts: token slots in a prompt whose input embeddings are optimised, the attacks' common part.

A prompt's ids are laid out as the pipeline pads them, with ``k`` slots inserted after [BOS]/[CLS]
(UnlearnDiffAtk's and P4D's ``prefix_k``) or put where a word stands (concept inversion's new token).
A forward hook on the text encoder's input-embedding table writes the slot vectors in, so one code
path serves CLIP, BERT and T5 encoders and the gradient reaches the vectors; :class:`TextPath` puts
them into each family's prompt (SD's one encoder, SDXL's two, SD3's two CLIPs and T5, FLUX's T5 token
path and CLIP pooled path). A slot can also hold a real token: the attacks end with prompts a person
could type, whose ids are kept so that what is judged is exactly what was found (decoded text can
tokenize differently).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from erasekit.errors import ErasekitError
from erasekit.primitives.prompt_cache import PooledText, token_states

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
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    slots: int,
    device: torch.device,
    replace: str | None = None,
    max_length: int | None = None,
) -> SlottedPrompt:
    """``prompt`` with ``slots`` slots after the first special token (first, for T5, which has none), or in
    place of the word ``replace``,
    padded to ``max_length`` (default: the tokenizer's own length)."""
    ids = tokenizer(prompt).input_ids  # with the special tokens: [BOS]/[CLS] first, [EOS]/[SEP] last
    filler = _filler(tokenizer)
    lead = int(bool(ids) and ids[0] in {tokenizer.bos_token_id, tokenizer.cls_token_id} - {None})  # T5 has no [BOS]
    if replace is None:
        at, width = lead, 0
    else:
        word = tokenizer(replace, add_special_tokens=False).input_ids
        at = next((i for i in range(lead, len(ids) - len(word)) if ids[i : i + len(word)] == word), None)
        if not word or at is None:
            raise ErasekitError(f"{replace!r} does not occur in the prompt {prompt!r}")
        width = len(word)
    ids = ids[:at] + [filler] * slots + ids[at + width :]
    limit = max_length or tokenizer.model_max_length
    if len(ids) > limit:
        raise ErasekitError(f"{prompt!r} with {slots} attack tokens is {len(ids)} tokens; this tokenizer takes {limit}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padded = torch.tensor([ids + [pad] * (limit - len(ids))], device=device)
    return SlottedPrompt(padded, tuple(range(at, at + slots)), len(ids))


def _filler(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id a slot holds before its vector is written in: [UNK], except where [UNK] is CLIP's end token,
    whose first occurrence is where CLIP reads its pooled vector (SDXL's and FLUX's): then the first word."""
    unk, eos = tokenizer.unk_token_id, tokenizer.eos_token_id
    if unk is not None and unk != eos:
        return unk
    return tokenizer("a", add_special_tokens=False).input_ids[0]


def attention_mask(text_encoder: torch.nn.Module, prompt: SlottedPrompt) -> torch.Tensor | None:
    """The mask the pipeline gives encoders configured to take one (the world's BERT), else None."""
    if not getattr(text_encoder.config, "use_attention_mask", False):
        return None
    return (torch.arange(prompt.ids.shape[1], device=prompt.ids.device) < prompt.length).long()[None]


@contextmanager
def slot_vectors(text_encoder: torch.nn.Module, slots: Sequence[int], vectors: torch.Tensor) -> Iterator[None]:
    """While open, the text encoder's input embeddings at ``slots`` are ``vectors`` (k, d) in every row."""
    weight = text_encoder.get_input_embeddings().weight
    # every module that looks tokens up in that table (T5's encoder calls its own tied copy, not ``shared``)
    tables = [m for m in text_encoder.modules() if isinstance(m, torch.nn.Embedding) and m.weight is weight]

    def put(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, list(slots)] = vectors.to(output.dtype)
        return output

    handles = [table.register_forward_hook(put) for table in tables]
    try:
        yield
    finally:
        for handle in handles:
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


class TextPath:
    """How a prompt with slots becomes a family's conditioning, with the slot vectors in every encoder they reach.

    The slots reach the encoder whose token states the denoiser reads (SD's one; SDXL's first; FLUX's T5
    path) and each other encoder of the pipeline that shares its vocabulary (SDXL's second CLIP; the
    pooled path of erasekit-tiny-flux, the same MiniLM). A slot vector lives in those encoders' input
    embeddings side by side: (k, d₁ + d₂ …), and :attr:`table` is their tables side by side, so an attack
    optimises one vector per slot, as on SD. An encoder of another vocabulary (FLUX.1's CLIP, whose pooled
    vector sits beside T5's tokens) reads the prompt's words as typed, the slots left out.
    Conditioning is built as the family's pipeline builds it: SD's last states; SDXL's penultimate states
    of both encoders side by side and the second's projected pooled vector; SD3's the same two CLIPs padded
    to T5's width and followed by T5's states in one sequence, both CLIPs' projected pooled vectors side by
    side (T5, of another vocabulary on SD3, reads the words as typed); FLUX's T5 states and CLIP's
    pooled output (:class:`~erasekit.primitives.prompt_cache.PooledText`). ``parameters`` (name → value)
    encode the first encoder with those values (the original of an edited text encoder, SD's AdvUnlearn).
    """

    FAMILIES = ("sd", "sdxl", "sd3", "flux")  # those whose prompts it reaches

    def __init__(self, pipe: object, parameters: dict[str, torch.Tensor] | None = None) -> None:
        from erasekit.models.families import pipeline_family, sequence_length

        self.pipe, self.family = pipe, pipeline_family(pipe).name
        self.parameters = parameters or {}
        if self.parameters and self.family != "sd":
            raise ErasekitError("an erasure that changes the text encoder is attacked on SD 1.x/2.x models only")
        if self.family not in self.FAMILIES:
            raise ErasekitError(f"the attacks put their tokens into {', '.join(self.FAMILIES)} prompts, not {self.family}'s")
        if self.family == "flux":  # T5 carries the tokens, CLIP the pooled vector
            self.tokenizer, self.max_length = pipe.tokenizer_2, sequence_length(pipe)
            others = [(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer.model_max_length)]
            first = pipe.text_encoder_2
        else:
            self.tokenizer, self.max_length, first = pipe.tokenizer, pipe.tokenizer.model_max_length, pipe.text_encoder
            others = [(pipe.tokenizer_2, pipe.text_encoder_2, pipe.tokenizer_2.model_max_length)] if self.family != "sd" else []
            if self.family == "sd3":  # both CLIPs, then T5 in the same sequence
                others.append((pipe.tokenizer_3, pipe.text_encoder_3, sequence_length(pipe)))
        vocabulary = self.tokenizer.get_vocab()
        self.encoders = [(self.tokenizer, first, self.max_length)]
        self.encoders += [o for o in others if o[0].get_vocab() == vocabulary]
        self.reaches_all = len(self.encoders) == 1 + len(others)
        if self.family in ("sdxl", "sd3") and len(self.encoders) < 2:
            raise ErasekitError(
                f"this {self.family} pipeline's two CLIP tokenizers have different vocabularies; the attacks need one"
            )
        self.widths = [e.get_input_embeddings().embedding_dim for _, e, _ in self.encoders]

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        """The encoders the slots reach (the first is the token path)."""
        return [e for _, e, _ in self.encoders]

    @property
    def table(self) -> torch.Tensor:
        """(V, d₁ + …) the reached encoders' input-embedding tables side by side (detached)."""
        return torch.cat([e.get_input_embeddings().weight.detach() for e in self.text_encoders], dim=-1)

    def slotted(self, prompt: str, slots: int, replace: str | None = None) -> SlottedPrompt:
        """``prompt`` laid out for the token path, with ``slots`` slots (as :func:`slotted_prompt`)."""
        device = self.text_encoders[0].device
        return slotted_prompt(self.tokenizer, prompt, slots, device, replace=replace, max_length=self.max_length)

    def conditioning(
        self, prompt: SlottedPrompt, vectors: torch.Tensor | None = None, text: str = ""
    ) -> torch.Tensor | PooledText:
        """The conditioning of ``prompt`` (its ids, one row or many) with ``vectors`` in its slots; ``text`` is
        what an encoder of another vocabulary reads (the prompt's words as typed)."""
        ids = [self._ids(prompt, tokenizer, length) for tokenizer, _, length in self.encoders]
        masks = [(torch.arange(i.shape[1], device=i.device) < prompt.length).long()[None].expand(len(i), -1) for i in ids]
        return self._encode(ids, masks, prompt.slots, vectors, [text] * len(prompt.ids))

    def token_states(self, prompt: SlottedPrompt) -> torch.Tensor:
        """(n, L, d) token states of ``prompt`` (its ids, one row or many), without the pooled vector: FLUX's pooled
        encoder is not run (Ring-A-Bell's search compares token states only)."""
        if self.family != "flux":
            return token_states(self.conditioning(prompt))
        _, encoder, length = self.encoders[0]
        return encoder(self._ids(prompt, self.tokenizer, length))[0]

    def plain(self, prompts: list[str]) -> torch.Tensor | PooledText:
        """The conditioning of ``prompts`` typed as they are, in one batch (as the pipeline encodes them)."""
        ids, masks = [], []
        for tokenizer, encoder, length in self.encoders:
            tok = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            ids.append(tok.input_ids.to(encoder.device))
            masks.append(tok.attention_mask.to(encoder.device))
        return self._encode(ids, masks, (), None, prompts)

    def _encode(
        self, ids: list[torch.Tensor], masks: list[torch.Tensor], slots: tuple[int, ...], vectors: torch.Tensor | None,
        texts: list[str],
    ) -> torch.Tensor | PooledText:  # fmt: skip
        """Each reached encoder on its ids (slots filled), assembled as the family's pipeline assembles them."""
        parts = torch.split(vectors, self.widths, dim=-1) if vectors is not None else [None] * len(self.encoders)
        outputs = []
        for k, ((_, encoder, _), part) in enumerate(zip(self.encoders, parts, strict=True)):
            # only SD's pipeline passes the mask, to encoders configured to take one (the world's BERT)
            mask = masks[k] if self.family == "sd" and getattr(encoder.config, "use_attention_mask", False) else None
            clip = self.family in ("sdxl", "sd3") and k < 2  # SDXL's and SD3's CLIPs are read at the penultimate layer
            keywords = {"attention_mask": mask, "output_hidden_states": clip}
            with slot_vectors(encoder, slots, part) if part is not None else nullcontext():
                outputs.append(torch.func.functional_call(encoder, self.parameters if k == 0 else {}, (ids[k],), keywords))
        if self.family == "sd":
            return outputs[0][0]
        if self.family == "sdxl":
            tokens = torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)
            return PooledText(tokens, outputs[-1][0] if len(outputs) == 2 else self._pipeline_pooled(texts))
        if self.family == "sd3":  # as StableDiffusion3Pipeline.encode_prompt: the CLIPs padded to T5's width, then T5
            clip = torch.cat([out.hidden_states[-2] for out in outputs[:2]], dim=-1)
            t5 = outputs[2][0] if len(outputs) == 3 else self._pipeline_t5(texts)
            tokens = torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5.to(clip.dtype)], dim=-2)
            return PooledText(tokens, torch.cat([outputs[0][0], outputs[1][0]], dim=-1))
        return PooledText(outputs[0][0], outputs[1].pooler_output if len(outputs) == 2 else self._pipeline_pooled(texts))

    def _ids(self, prompt: SlottedPrompt, tokenizer: PreTrainedTokenizerBase, length: int) -> torch.Tensor:
        """The prompt's ids as ``tokenizer`` pads them to ``length`` (the vocabulary is shared; padding may differ)."""
        if tokenizer is self.tokenizer and length == prompt.ids.shape[1]:
            return prompt.ids
        if prompt.length > length:
            raise ErasekitError(f"this prompt is {prompt.length} tokens; the pipeline's second encoder takes {length}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.full((prompt.ids.shape[0], length), pad, device=prompt.ids.device, dtype=prompt.ids.dtype)
        ids[:, : prompt.length] = prompt.ids[:, : prompt.length]
        return ids

    @torch.no_grad()
    def _pipeline_t5(self, texts: list[str]) -> torch.Tensor:
        """SD3's T5 states of ``texts`` when T5's vocabulary is not the CLIPs' (SD3's own): the words as typed."""
        from erasekit.models.families import sequence_length

        device = self.text_encoders[0].device
        return self.pipe._get_t5_prompt_embeds(prompt=texts, max_sequence_length=sequence_length(self.pipe), device=device)

    @torch.no_grad()
    def _pipeline_pooled(self, texts: list[str]) -> torch.Tensor:
        """The pooled vectors of ``texts`` from an encoder the slots do not reach, as the pipeline encodes them."""
        device = self.text_encoders[0].device
        if self.family == "sdxl":
            return self.pipe.encode_prompt(texts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)[2]
        return self.pipe._get_clip_prompt_embeds(prompt=texts, device=device)
