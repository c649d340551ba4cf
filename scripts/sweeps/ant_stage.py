"""When does the world's model commit to a shape? ANT keeps the concept's guidance for the first K steps and
reverses it after; if the shape is decided within those K steps, keeping them keeps the shape.

The original model draws "a photo of a square" for the first k of 50 DDIM steps (guidance 3, ANT's
sampling) and then another prompt (a circle, or the empty prompt); the share of 32 images the world
evaluator reads as a square says how much of the shape the first k steps fixed.

    python scripts/sweeps/ant_stage.py > bench/ant-stage.json
"""

import json

import torch

from erasekit.models.loading import load_pipeline
from erasekit.primitives.diffusion import pipeline_images
from erasekit.world.evaluator import load_world_evaluator, predict

pipe = load_pipeline(None, progress=False)
evaluator = load_world_evaluator()
SEEDS = list(range(32))
STEPS, GUIDANCE = 50, 3.0
SWITCHES = (0, 1, 2, 4, 7, 10, 15, 25, 50)


def encoded(prompt: str) -> torch.Tensor:
    return pipe.encode_prompt([prompt] * len(SEEDS), pipe.device, 1, False)[0]


def square_share(switch: int, then: str) -> float:
    """Share of squares when "a photo of a square" guides the first ``switch`` steps and ``then`` the rest."""
    first, rest = encoded("a photo of a square"), encoded(then)

    def swap(pipeline: object, step: int, timestep: object, kwargs: dict) -> dict:
        if step + 1 == switch:  # the prompt for step switch onwards (CFG batch: [uncond; cond])
            uncond = kwargs["prompt_embeds"].chunk(2)[0]
            kwargs["prompt_embeds"] = torch.cat([uncond, rest])
        return kwargs

    start = first if switch > 0 else rest
    images = pipeline_images(pipe, SEEDS, STEPS, GUIDANCE, prompt_embeds=start, negative_prompt_embeds=encoded(""),
                             callback_on_step_end=swap, callback_on_step_end_tensor_inputs=["prompt_embeds"])  # fmt: skip
    labels = predict(evaluator, images).label("shape")
    return sum(label == "square" for label in labels) / len(labels)


rows = [{"square_steps": k, "then": then or '""', "square_share": square_share(k, then)}
        for then in ("a photo of a circle", "") for k in SWITCHES]  # fmt: skip
print(json.dumps({"steps": STEPS, "guidance": GUIDANCE, "samples": len(SEEDS), "rows": rows}, indent=1))
