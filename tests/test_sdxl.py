"""SDXL on its layout with random weights (two CLIP encoders, the pooled vector and added time ids):
UCE on both encoders' states, ESD as esd_sdxl.py trains it, half precision, and LoRA exports that a
plain StableDiffusionXLPipeline loads and draws the erased model's images with."""

import pytest
import torch
from lora_roundtrip import lora_gaps

from erasekit.concepts import EraseSpec
from erasekit.exports import export_loaded
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.models.layers import kv_projections, parameter_group
from erasekit.models.reference_configs import random_sdxl_pipeline
from erasekit.primitives.run import RunContext

SPEC = EraseSpec(("cat",), ("",), ("dog",))


@pytest.fixture(scope="module")
def sdxl():
    return random_sdxl_pipeline()


def test_the_run_reads_both_encoders_states_side_by_side(sdxl):
    run = RunContext(sdxl, progress=False)
    tokens = sdxl.encode_prompt(["a cat"], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    assert run.cache.width == sdxl.unet.config.cross_attention_dim == tokens.shape[-1]
    assert torch.allclose(run.states(["a cat"]), tokens)


def test_uce_sends_the_concept_to_its_guide_in_every_cross_attention(sdxl):
    edit = erase(sdxl, SPEC, "uce", progress=False)
    projections = kv_projections(sdxl.unet)
    assert set(edit.weights) == {f"{name}.weight" for name in projections}
    cache = RunContext(sdxl, progress=False).cache

    def last_word(prompt: str) -> torch.Tensor:
        return cache.states([prompt])[0, cache.length(prompt) - 2]

    concept, guide, kept = last_word("cat"), last_word(""), last_word("dog")
    for name, layer in projections.items():
        w0, w = layer.weight.detach(), edit.weights[f"{name}.weight"]
        assert (w @ concept - w0 @ guide).norm() < 0.1 * (w0 @ concept - w0 @ guide).norm()
        assert (w @ kept - w0 @ kept).norm() < 0.1 * (w0 @ kept).norm()


def test_esd_x_trains_cross_attention_as_esd_sdxl_py_and_leaves_the_unet_as_it_was(sdxl):
    before = {name: p.detach().clone() for name, p in sdxl.unet.named_parameters()}
    edit = erase(sdxl, SPEC, "esd-x", iterations=2, sample_steps=3, lr=1e-2, progress=False)
    assert set(edit.weights) == {name for name, _ in parameter_group(sdxl.unet, "esd-x")}
    assert any(not torch.equal(value, before[name]) for name, value in edit.weights.items())
    assert all(torch.equal(p, before[name]) for name, p in sdxl.unet.named_parameters())


@pytest.mark.parametrize("fmt", ["diffusers-lora", "kohya"])
def test_sdxl_lora_exports_load_in_plain_diffusers_and_draw_the_erased_model(sdxl, tmp_path, fmt):
    edit = erase(sdxl, SPEC, "uce", progress=False)
    out = tmp_path / ("lora" if fmt == "diffusers-lora" else "lora.safetensors")
    export_loaded(edit, sdxl, fmt, out)
    to_erased, original_to_erased = lora_gaps(sdxl, edit, out, 5.0, height=64, width=64)
    assert to_erased < 0.2 * original_to_erased and original_to_erased > 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sdxl_layout_in_half_precision_gives_finite_uce_and_esd_edits(dtype):
    pipe = random_sdxl_pipeline(dtype=dtype)
    for method, settings in (("uce", {}), ("esd-x", {"iterations": 2, "sample_steps": 2})):
        edit = erase(pipe, SPEC, method, progress=False, **settings)
        assert all(v.dtype == dtype and torch.isfinite(v).all() for v in edit.weights.values())


def test_ac_on_sdxl_noises_as_its_euler_sampler_and_trains_cross_attention(sdxl):
    import random

    from erasekit.primitives.denoising import denoising
    from erasekit.primitives.image_batches import Images, noised_batch

    run = RunContext(sdxl, progress=False)
    den = denoising(run)
    x_0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = noised_batch(run, Images(x_0, [0, 0]), 2, random.Random(0), run.generator(0), den)
    alpha_bar = sdxl.scheduler.alphas_cumprod[batch.t.long()].reshape(-1, 1, 1, 1)
    # held as the Euler sampler holds x_t (x₀ + σ_t ε), so that √ᾱ_t times it is the DDPM x_t the UNet was trained on
    assert torch.allclose(batch.x_t * alpha_bar.sqrt(), alpha_bar.sqrt() * batch.x_0 + (1 - alpha_bar).sqrt() * batch.target,
                          atol=1e-5)  # fmt: skip
    edit = erase(sdxl, EraseSpec(("cat",), ("dog",), ("bird",)), "ac", anchor_images=2, steps=2, sample_steps=3, batch_size=2,
                 preserve_images=1, lr=1e-3, progress=False)  # fmt: skip
    assert set(edit.weights) == {name for name, _ in parameter_group(sdxl.unet, "esd-x-strict")}
    assert all(torch.isfinite(v).all() for v in edit.weights.values())


def test_mace_on_sdxl_trains_its_lora_on_both_encoders_states_and_fuses_it(sdxl):
    edit = erase(sdxl, EraseSpec(("cat",), ("",), ("bird",)), "mace", steps=6, images_per_concept=2, sample_steps=3,
                 segmenter="none", lr=3e-2, lam=1.0, progress=False)  # fmt: skip
    assert set(edit.weights) == {f"{name}.weight" for name in kv_projections(sdxl.unet)}
    curve = edit.card["lora_losses"]["cat"]
    assert all(torch.isfinite(v).all() for v in edit.weights.values())
    assert curve["loss_last_10pct"] < curve["loss_first_10pct"]


def test_the_euler_sampler_starts_again_for_every_batch_of_trajectories(sdxl):
    # Euler counts its steps: a second batch once ran past its last σ (ESD's 200-point plans, AC's images)
    from erasekit.primitives.denoising import denoising
    from erasekit.primitives.diffusion import partial_samples

    run = RunContext(sdxl, progress=False)
    den = denoising(run)
    cond, uncond = den.conditioning(["a cat"]), den.conditioning([""])
    predict = lambda x, t, c: den.unet_call(sdxl.unet, x, t, c)  # noqa: E731
    together, _ = partial_samples(sdxl, sdxl.unet, cond, uncond, 5.0, 3, [3, 3, 2], [1, 2, 3], batch_size=2, predict_fn=predict)
    alone = [
        partial_samples(sdxl, sdxl.unet, cond, uncond, 5.0, 3, [k], [seed], predict_fn=predict)[0]
        for k, seed in ((3, 1), (3, 2), (2, 3))
    ]
    # σ-scaled latents, |x| up to ~125: batched and single convolutions differ by float32 rounding of that scale
    # (2e-4 on one CPU), a sampler past its last σ by far more
    alone = torch.cat(alone)
    assert (together - alone).abs().max() < 1e-5 * alone.abs().max()


def test_race_on_sdxl_attacks_the_token_states_and_keeps_the_pooled_vector(sdxl):
    from erasekit.methods.race import pgd_states
    from erasekit.primitives.denoising import denoising

    run = RunContext(sdxl, progress=False)
    den = denoising(run)
    states = den.conditioning(["a photo of a cat"])
    generator = torch.Generator().manual_seed(0)
    x_t, noise = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    config = make_config(get_method("race"), {"epsilon": 0.2, "pgd_steps": 3})
    adversarial = pgd_states(
        lambda x, t, c: den.predict(sdxl.unet, x, t, c), x_t, torch.tensor(500), states, noise, config, generator
    )
    assert torch.equal(adversarial.pooled, states.pooled)
    assert 0 < (adversarial.tokens - states.tokens).abs().max() <= 0.2 + 1e-6
    edit = erase(sdxl, SPEC, "race", iterations=2, esd_iterations=1, pgd_steps=2, sample_steps=3, progress=False)
    assert edit.weights and all(torch.isfinite(v).all() for v in edit.weights.values())


def test_spm_on_sdxl_adapts_the_official_layers_and_transport_scales_them_per_prompt(sdxl, monkeypatch):
    """SPM's adapters on SDXL's transformer blocks; under transport, strength 0 draws the untouched model and
    strength 1 the merged edit, through a plain StableDiffusionXLPipeline call."""
    import numpy as np

    from erasekit.edits import Edit, transport
    from erasekit.models.layers import transformer_layers

    edit = erase(sdxl, EraseSpec(("cat",), preserve=("dog",)), "spm", iterations=3, sample_steps=2, warmup_steps=0,
                 lr=1e-2, anchors_per_step=2, progress=False)  # fmt: skip
    assert {key.split(".", 1)[1].rsplit(".", 1)[0] for key in edit.adapters} == set(transformer_layers(sdxl.unet))

    def draw(pipe):
        return pipe(["a cat", "a dog"], num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    original = draw(sdxl)
    scores = transport.PromptScorer(sdxl, ["cat"])(["a cat", "a dog", "cat"])
    assert scores.shape == (3, 1) and scores[2, 0] > 0.99 and scores[1, 0] < scores[0, 0]
    merged = Edit(edit.weights, {k: v for k, v in edit.card.items() if k != "inference"})
    with merged.applied(sdxl, check_base=False) as plain:
        full = draw(plain)
    assert np.abs(full - original).max() > 1e-3
    for strength, expected in ((0.0, original), (1.0, full)):
        monkeypatch.setattr(
            transport.PromptScorer, "__call__", lambda self, prompts, s=strength: torch.full((len(prompts), 1), s)
        )
        with edit.applied(sdxl, check_base=False) as erased:
            assert np.abs(draw(erased) - expected).max() < 1e-4


def test_receler_on_sdxl_hooks_an_eraser_after_every_cross_attention_and_takes_it_off(sdxl):
    """Receler's erasers on SDXL's attn2 (both encoders' states): the applied pipeline draws differently and,
    once the block ends, the plain pipeline draws as before."""
    import numpy as np

    from erasekit.models.layers import cross_attentions

    edit = erase(sdxl, SPEC, "receler", iterations=3, adversarial_steps=2, adversarial_tokens=2, rank=4, lr=1e-1,
                 sample_steps=2, progress=False)  # fmt: skip
    assert not edit.weights and len({key.rsplit(".", 2)[0] for key in edit.adapters}) == len(cross_attentions(sdxl.unet))

    def draw(pipe):
        return pipe("a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    original = draw(sdxl)
    with edit.applied(sdxl, check_base=False) as erased:
        assert np.abs(draw(erased) - original).max() > 1e-4
    assert np.array_equal(draw(sdxl), original)
