"""How much of the image Receler's concept mask M covers on erasekit-tiny and erasekit-tiny-flux: its share of
the grid at 16 x_t of the training plan (guidance 3, 50 steps), threshold 0.1, as Receler's loss makes it.

    python scripts/sweeps/receler_mask.py
"""

import random

import torch

from erasekit.concepts import EraseSpec
from erasekit.methods.receler import concept_mask, default_mask_side
from erasekit.models.loading import load_pipeline
from erasekit.primitives.attention import probing
from erasekit.primitives.denoising import denoising
from erasekit.primitives.prompt_cache import token_states
from erasekit.primitives.run import RunContext

for model_name in (None, "erasekit-tiny-flux"):
    pipe = load_pipeline(model_name, progress=False)
    run = RunContext(pipe, progress=False)
    den, model = denoising(run), run.denoiser
    for concept in ("square", "circle", "star"):
        spec = EraseSpec((concept,))
        states, points = den.plan(spec, 3.0, 50, 16, random.Random(0))
        span = run.cache.word_span(concept, concept)
        length = token_states(states[""]).shape[1]
        mask = torch.zeros((1, length), dtype=torch.bool, device=run.device)
        mask[0, span.start : span.stop] = True
        side = default_mask_side(model)
        fracs = []
        for p in points:
            with torch.no_grad(), probing(model, run.family.name) as probe:
                probe.token_mask = mask
                den.predict(model, p.x_t, p.t, states[concept])
            M = concept_mask(probe.maps, len(span), side, 0.1)
            fracs.append(M.mean().item())
        share = 100 * sum(fracs) / len(fracs)
        print(
            f"{model_name or 'erasekit-tiny'} {concept}: M covers {share:.0f}% (min {100 * min(fracs):.0f}, "
            f"max {100 * max(fracs):.0f}) of a {M.shape[-1]}×{M.shape[-1]} grid",
            flush=True,
        )
