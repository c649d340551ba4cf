"""Does a LoRA file that plain diffusers loads draw the erased model's images? Shared by the family tests."""

from pathlib import Path

import numpy as np

from erasekit.primitives.diffusion import pipeline_images


def gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images."""
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def lora_gaps(pipe, edit, lora: Path, guidance: float, **draw) -> tuple[float, float]:
    """(loaded LoRA vs the erased model, original vs the erased model): one seeded image of "a photo of a
    <the edit's first target>" from each, ``draw`` passed to the pipeline; the pipeline is left without the LoRA."""
    prompt = [f"a photo of a {edit.card['targets'][0]}"]
    with edit.applied(pipe, check_base=False) as erased:
        expected = pipeline_images(erased, [1], 3, guidance, prompt=prompt, **draw)
    original = pipeline_images(pipe, [1], 3, guidance, prompt=prompt, **draw)
    pipe.load_lora_weights(str(lora))
    try:
        loaded = pipeline_images(pipe, [1], 3, guidance, prompt=prompt, **draw)
    finally:
        pipe.unload_lora_weights()
    return gap(loaded, expected), gap(original, expected)
