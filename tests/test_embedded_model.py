"""The committed embedded model is a plain Stable Diffusion pipeline that draws its world."""

import numpy as np

from erasekit.eval.generation import SamplerSettings, generate
from erasekit.eval.prompts import PromptRow
from erasekit.eval.scoring import score


def test_plain_diffusers_loads_it(embedded_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(embedded_dir)
    assert pipe.tokenizer.model_max_length == 32
    assert pipe.text_encoder.config.use_attention_mask is True
    cross = {n: m for n, m in pipe.unet.named_modules() if n.endswith("attn2.to_k") or n.endswith("attn2.to_v")}
    assert cross and all(m.in_features == 384 for m in cross.values())
    assert pipe.vae.config.scaling_factor != 0.18215  # measured from the world's latents
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.timestep_spacing == "leading" and not pipe.scheduler.config.clip_sample


def test_committed_size_budget(embedded_dir):
    trained = [p for p in embedded_dir.rglob("*") if p.is_file() and "text_encoder" not in p.parts]
    assert sum(p.stat().st_size for p in trained) < 40 * 2**20
    assert (embedded_dir / "provenance.json").exists()


def test_seeds_fix_images_bit_for_bit_whatever_the_batch(pipe):
    rows = [
        PromptRow("a photo of a heart", 7, "retain", {"shape": "heart"}, samples=3),
        PromptRow("a photo of a star", 70, "retain", {"shape": "star"}, samples=2),
    ]
    one = generate(pipe, rows, SamplerSettings(steps=4, batch_size=1), progress=False)
    assert list(one.seeds) == [7, 8, 9, 70, 71]
    for batch_size in (2, 3, 64):
        other = generate(pipe, rows, SamplerSettings(steps=4, batch_size=batch_size), progress=False)
        assert np.array_equal(one.images, other.images), batch_size
    assert np.abs(one.images[0].astype(int) - one.images[1].astype(int)).mean() > 1  # seeds differ
    assert not any("forward" in m.__dict__ for m in (pipe.unet, pipe.text_encoder)) and "decode" not in pipe.vae.__dict__


def test_a_short_run_shares_its_images_with_a_long_one(pipe):
    from erasekit.eval.protocols import SEED_BLOCK, object_rows

    heart = [r for r in object_rows("square", samples=SEED_BLOCK + 2) if r.prompt == "a photo of a heart"]
    long = generate(pipe, heart, SamplerSettings(steps=3), progress=False)
    short_row = [r for r in object_rows("circle", samples=1) if r.prompt == "a photo of a heart"]
    short = generate(pipe, short_row, SamplerSettings(steps=3), progress=False)
    assert short.seeds[0] == long.seeds[0] and np.array_equal(short.images[0], long.images[0])
    assert len(set(long.seeds)) == SEED_BLOCK + 2


def test_it_draws_what_it_is_asked(pipe, evaluator):
    rows = [
        PromptRow("a photo of a triangle", 0, "retain", {"shape": "triangle"}, samples=8),
        PromptRow("a portrait of Mira Sol", 100, "retain", {"character": "Mira Sol"}, samples=8),
        PromptRow("a photo of a cross on fire", 200, "retain", {"shape": "cross", "flames": "yes"}, samples=8),
    ]
    evaluation = score(generate(pipe, rows, SamplerSettings(steps=20), progress=False), rows, evaluator)
    for row in evaluation.rows:
        assert row.match >= 0.75, row


def test_evaluator_reads_held_out_world_images(evaluator):
    from erasekit.world.dataset import render_dataset
    from erasekit.world.training import evaluator_accuracy

    data = render_dataset(400, seed=424242, workers=2)
    acc = evaluator_accuracy(evaluator, data.images, data)
    for head in ("shape", "artist", "character", "flames"):
        assert acc[head] >= 0.95, acc
    assert acc["mask_iou"] > 0.8, acc
