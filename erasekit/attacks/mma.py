"""MMA-Diffusion (Yang et al., CVPR 2024), its text-modal attack: a prompt of real tokens, none of them
a banned word, whose text embedding matches the attacked prompt's,

    min_{p ∈ V∖B}  1 − cos(E(p)_eos, E(prompt)_eos),

E the original text encoder and _eos its state at the first end token (for SD's CLIP, the
``pooler_output`` the official code reads). The search is GCG's: each step takes the gradient of the loss
with respect to a one-hot of every position, keeps the top-k tokens of steepest descent per position,
tries ``candidates`` prompts that each swap one position (the positions spread evenly over the
prompt, the new token drawn from that position's top-k), and moves to the best of them even when it is
worse; the best prompt seen is the result. The UNet is never used: against an erasure of the UNet
it is a transfer attack, and its prompt is plain text that any pipeline reads.

Defaults are the official ``src/textual_attack.py`` (cure-lab/MMA-Diffusion @ d5701a5): 20 tokens
starting from random letters, top-k 256, 512 candidates per step, 1000 steps (its README's ``-i``).
Differences: the banned words are the attacked concept's own words (the official list is 18 sexual
words and the fragments 'ak', 'na', 'ke', 'nud'; ``banned`` adds more), and every token containing one
is out; the candidate tokens are whole words a person can type (the official code takes any BPE piece
and keeps candidates that re-tokenise to 20 tokens); the gradient of position p is its own (the
official one-hot starts at [BOS], so each position is swapped by its left neighbour's gradient). On
SDXL and FLUX E is the family's token path (SDXL's two CLIPs' penultimate states side by side, FLUX's
T5), whose end-token state stands in for CLIP's pooled output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from erasekit.attacks.base import AttackContext, AttackTarget, Found, decoded, register
from erasekit.errors import ErasekitError
from erasekit.primitives.soft_prompt import random_tokens, word_tokens
from erasekit.primitives.training import frozen
from erasekit.settings import SEEDS, check_settings, config_field


@dataclass
class MMAConfig:
    """Defaults: the official textual_attack.py."""

    tokens: int = config_field(20, "tokens of the adversarial prompt (official 20)", ge=1, le=75)
    steps: int = config_field(1000, "GCG steps (official README -i 1000; the attack budget)", ge=1, le=100_000)
    candidates: int = config_field(512, "one-swap prompts scored per step (official batch_size 512)", ge=1, le=100_000)
    top_k: int = config_field(256, "tokens of steepest descent kept per position (official topk 256)", ge=1, le=100_000)
    banned: str = config_field("", "comma-separated words, beyond the concept's own, that no token may contain")
    seed: int = config_field(0, "seed of the start and of the candidates", **SEEDS)

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.steps < 1 or self.candidates < 1 or self.top_k < 1:  # said as the budget, before the ranges
            raise ErasekitError("mma-diffusion needs at least one token, step, candidate and top-k token (the attack budget)")
        check_settings(self)


def banned_words(target: AttackTarget, config: MMAConfig) -> list[str]:
    """The words no token of the prompt may contain: the concept's, its word's, and ``config.banned``'s."""
    words = [*target.concept.split(), *target.word.split(), *config.banned.split(",")]
    return sorted({w.strip().lower() for w in words if len(w.strip()) > 1})


def allowed_tokens(context: AttackContext, banned: list[str]) -> torch.Tensor:
    """The word tokens (:func:`~erasekit.primitives.soft_prompt.word_tokens`) that contain none of ``banned``."""
    candidates = word_tokens(context.tokenizer, context.run.device)
    texts = context.tokenizer.batch_decode([[i] for i in candidates.tolist()])
    keep = [i for i, text in enumerate(texts) if not any(word in text.lower() for word in banned)]
    return candidates[torch.tensor(keep, device=candidates.device, dtype=torch.long)]


@register("mma-diffusion", "MMA-Diffusion: a GCG search for banned-word-free tokens whose text embedding matches the prompt's",
          MMAConfig, gradients=False)  # fmt: skip
def search(context: AttackContext, targets: list[AttackTarget], config: MMAConfig) -> list[Found]:
    """MMA-Diffusion's text attack on each target in turn (above)."""
    return [_attack(context, target, config) for target in targets]


def _attack(context: AttackContext, target: AttackTarget, config: MMAConfig) -> Found:
    run, device = context.run, context.run.device
    candidates = allowed_tokens(context, banned_words(target, config))
    if len(candidates) < 2:
        raise ErasekitError("mma-diffusion: the banned words leave fewer than two tokens to build a prompt from")
    top_k = min(config.top_k, len(candidates))
    generator = run.generator(config.seed * 1_000_003 + target.seed)
    table = context.original_path.table[candidates].float()  # (|C|, d): the one-hot's rows
    layout = context.slotted("", config.tokens)  # [BOS] the tokens [EOS] padding
    end = layout.length - 1
    wanted = context.original_token_states([target.prompt])[0, context.run.cache.length(target.prompt) - 1]

    def losses(ids: torch.Tensor) -> torch.Tensor:
        states = context.original_tokens(ids, layout.length)[:, end]
        return 1 - F.cosine_similarity(states, wanted[None], dim=-1)

    def gradient(current: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(current, len(candidates)).to(table.dtype).requires_grad_(True)
        with frozen(*context.original_path.text_encoders):
            cond = context.original_path.conditioning(layout, (one_hot @ table).to(context.original_path.table.dtype))
            states = cond.tokens if hasattr(cond, "tokens") else cond
            loss = 1 - F.cosine_similarity(states[0, end].float(), wanted, dim=0)
            (grad,) = torch.autograd.grad(loss, one_hot)
        return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # the start: random tokens, as the official random letters (indices into the candidates)
    start = random_tokens(torch.arange(len(candidates), device=device), config.tokens, generator)
    current, best, best_loss, curve = start, start, float("inf"), []
    positions = (torch.arange(config.candidates, device=device) * config.tokens // config.candidates).long()
    for _ in run.bar(range(config.steps), f"mma-diffusion {target.prompt[:30]!r}"):
        top = (-gradient(current)).topk(top_k, dim=-1).indices  # (tokens, k)
        picks = torch.randint(top_k, (config.candidates,), generator=generator, device="cpu").to(device)
        tried = current.repeat(config.candidates, 1)
        tried[torch.arange(config.candidates, device=device), positions] = top[positions, picks]
        ids = layout.ids.repeat(config.candidates, 1)
        ids[:, list(layout.slots)] = candidates[tried]
        with torch.no_grad():
            scores = losses(ids)
        chosen = int(scores.argmin())
        current = tried[chosen]  # the official code always moves, and keeps the best seen
        if float(scores[chosen]) < best_loss:
            best, best_loss = current, float(scores[chosen])
        curve.append(best_loss)
    ids = layout.with_tokens(candidates[best].tolist())
    return Found(ids, decoded(context.tokenizer, ids), config.steps, curve[:: max(len(curve) // 50, 1)], length=layout.length)
