"""SD3 on its layout with random weights (two CLIPs padded to T5's width, then T5, in one sequence; both
CLIPs' pooled vectors; the MMDiT on unpacked latents): the conditioning and sampler as the pipeline's,
UCE on its two text-reading Linears and ESD-x on its joint attention."""

import re

import pytest
import torch
from lora_roundtrip import lora_gaps

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.runner import erase
from erasekit.models.layers import FLUX_POOLED_INPUT, FLUX_TOKEN_INPUT, flux_esd_layers
from erasekit.models.reference_configs import random_sd3_pipeline
from erasekit.primitives.diffusion import pipeline_images
from erasekit.primitives.flow import flow_partial_samples, flow_text, latent_grid
from erasekit.primitives.run import RunContext

SPEC = EraseSpec(("cat",), ("",), ("dog",))


@pytest.fixture(scope="module")
def sd3():
    return random_sd3_pipeline()


def test_the_run_reads_the_joint_clip_and_t5_sequence_and_both_pooled_vectors(sd3):
    run = RunContext(sd3, progress=False)
    assert run.family.name == "sd3" and run.denoiser is sd3.transformer
    tokens, _, pooled, _ = sd3.encode_prompt(["a cat"], None, None, do_classifier_free_guidance=False, max_sequence_length=77)
    text = flow_text(run, ["a cat"])
    assert text.tokens.shape == (1, 77 + 77, sd3.transformer.config.joint_attention_dim)
    assert torch.allclose(text.tokens, tokens, atol=1e-5) and torch.allclose(text.pooled, pooled, atol=1e-5)
    # the last word in the CLIP segment ([CLS] a cat [SEP]: 2) and in the T5 segment (77 + 2)
    assert run.cache.last_word_positions("a cat") == [2, 79]


def test_the_x_t_sampler_ends_where_the_pipeline_does(sd3):
    run = RunContext(sd3, progress=False)
    grid = latent_grid(sd3)
    assert not grid.packed and grid.latent_shape == (4, 8, 8)
    text = flow_text(run, ["a photo of a cat", ""])
    x, sigma = flow_partial_samples(run, sd3.transformer, text[0:1], text[1:2], 4.0, 3, [0, 3], [5, 5], grid)
    ours = pipeline_images(sd3, [5], 3, 4.0, output_type="latent", prompt=["a photo of a cat"])
    assert sigma.tolist() == [1.0, 0.0] and torch.allclose(x[1:], ours, atol=1e-5)


def test_uce_sends_the_concepts_last_word_in_both_segments_and_its_pooled_vector_to_the_guide(sd3):
    edit = erase(sd3, SPEC, "uce", lam=0.01, progress=False)
    assert set(edit.weights) == {f"{FLUX_TOKEN_INPUT}.weight", f"{FLUX_POOLED_INPUT}.weight"}
    run = RunContext(sd3, progress=False)
    cache = run.cache

    def last_words(prompt: str) -> torch.Tensor:
        return cache.states([prompt])[0, cache.last_word_positions(prompt)]

    w0, w = sd3.transformer.context_embedder.weight.detach(), edit.weights[f"{FLUX_TOKEN_INPUT}.weight"]
    concept, guide, kept = last_words("cat"), last_words(""), last_words("dog")
    assert ((concept @ w.T) - (guide @ w0.T)).norm() < 0.1 * ((concept @ w0.T) - (guide @ w0.T)).norm()
    assert ((kept @ w.T) - (kept @ w0.T)).norm() < 0.1 * (kept @ w0.T).norm()
    with pytest.raises(ErasekitError, match="^" + re.escape("on SD3, UCE reads one token per prompt in each encoder's")):
        erase(sd3, SPEC, "uce", token_span="full", progress=False)


@pytest.mark.parametrize("group", ["esd-x", "esd-x-strict"])
def test_esd_trains_the_joint_attention_in_velocity_space_and_leaves_the_pipeline_as_it_was(sd3, group):
    before = {name: p.detach().clone() for name, p in sd3.transformer.named_parameters()}
    edit = erase(sd3, SPEC, group, iterations=2, sample_steps=3, lr=1e-3, progress=False)
    assert {name.rpartition(".")[0] for name in edit.weights} == set(flux_esd_layers(sd3.transformer, group))
    assert any(not torch.equal(value, before[name]) for name, value in edit.weights.items())
    assert all(torch.equal(p, before[name]) for name, p in sd3.transformer.named_parameters())


def test_sd3_lora_export_loads_in_plain_diffusers_and_draws_the_erased_model(sd3, tmp_path):
    from erasekit.exports import export_loaded

    edit = erase(sd3, SPEC, "esd-x", iterations=2, sample_steps=3, lr=1e-2, lora_rank=2, progress=False)
    export_loaded(edit, sd3, "diffusers-lora", tmp_path / "lora")
    to_erased, original_to_erased = lora_gaps(sd3, edit, tmp_path / "lora", 4.0)
    assert to_erased < 0.2 * original_to_erased and original_to_erased > 0.1


def test_a_kohya_export_of_sd3_is_refused_in_one_line(sd3, tmp_path):
    from erasekit.exports import export_loaded

    edit = erase(sd3, SPEC, "uce", progress=False)
    with pytest.raises(ErasekitError, match="^" + re.escape("a kohya LoRA of an SD3 model is not written yet")):
        export_loaded(edit, sd3, "kohya", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_the_sd3_probe_computes_what_sd3_computes_and_reads_image_to_text_maps(sd3):
    from erasekit.primitives.attention import probing
    from erasekit.primitives.denoising import denoising

    run = RunContext(sd3, progress=False)
    den = denoising(run)
    grid = den.grid
    x = den.start_noise(0).repeat(2, *[1] * len(grid.latent_shape))
    cond, sigma = den.conditioning(["a photo of a cat", "a dog"]), torch.tensor([0.5, 0.3])
    expected = den.predict(sd3.transformer, x, sigma, cond)
    length = run.cache.sequence_length
    assert length == cond.tokens.shape[1]
    with probing(sd3.transformer, "sd3") as probe:
        probe.token_mask = torch.zeros(2, length, dtype=torch.bool)
        probe.token_mask[:, 4] = True
        probe.pixel_mask = torch.zeros(2, 1, 64, 64)
        probe.pixel_mask[..., :32, :] = 1.0  # the top half of the image
        got = den.predict(sd3.transformer, x, sigma, cond)
    assert torch.allclose(got, expected, atol=1e-5) and len(probe.maps) == len(sd3.transformer.transformer_blocks)
    pixels = (grid.latent_shape[-1] // sd3.transformer.config.patch_size) ** 2
    assert probe.maps[0].shape == (2, sd3.transformer.config.num_attention_heads, pixels, length)
    kept = probe.maps[0].detach().abs().sum(dim=(0, 1))  # per image token and text token
    assert kept[: pixels // 2, 4].min() > 0 and kept[pixels // 2 :].max() == 0 and kept[:, :4].max() == 0
    assert type(sd3.transformer.transformer_blocks[0].attn.processor).__name__ == "JointAttnProcessor2_0"  # given back


def test_the_sd3_cache_finds_a_word_and_aligns_two_prompts_in_both_segments(sd3):
    cache = RunContext(sd3, progress=False).cache
    clip, t5 = cache.max_length, cache.t5_length
    positions = cache.word_positions("a photo of a cat", "cat")
    assert positions == [*cache.word_span("a photo of a cat", "cat"), clip + len(cache.t5_ids("a photo of a")) - 1]
    mine, theirs = cache.aligned("a photo of a cat", "a photo of a dog", middle=False)
    assert len(mine) == len(theirs) == clip + t5 - 2 and not set(positions) & set(mine)


def test_mace_on_sd3_edits_the_two_text_inputs_and_its_lora_lowers_the_joint_attention_loss(sd3):
    spec = EraseSpec(("cat",), ("",), ("dog",))
    edit = erase(sd3, spec, "mace", steps=12, images_per_concept=2, sample_steps=3, segmenter="none", lr=3e-2, lam=1.0,
                 progress=False)  # fmt: skip
    assert set(edit.weights) == {f"{FLUX_TOKEN_INPUT}.weight", f"{FLUX_POOLED_INPUT}.weight"}
    curve = edit.card["lora_losses"]["cat"]
    assert curve["loss_last_10pct"] < 0.9 * curve["loss_first_10pct"]
