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
