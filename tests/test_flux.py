"""FLUX: conditioning, sampling, UCE and ESD-x on the layout of erasekit-tiny-flux (random weights, so
these run without the trained model), FLUX.1-dev's layout shrunk (T5, CLIP, guidance embedding) in
half precision, and the LoRA exports in plain diffusers."""

import re

import numpy as np
import pytest
import torch
from lora_roundtrip import lora_gaps

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.exports import export_loaded
from erasekit.methods.runner import erase
from erasekit.models import embedded as E
from erasekit.models.layers import FLUX_POOLED_INPUT, FLUX_TOKEN_INPUT, flux_esd_layers
from erasekit.primitives.diffusion import pipeline_images
from erasekit.primitives.flow import flow_partial_samples, flow_text, latent_grid
from erasekit.primitives.run import RunContext

SPEC = EraseSpec(("square",), ("",), ("circle", "triangle"))


@pytest.fixture(scope="module")
def flux():
    """erasekit-tiny-flux's layout (MiniLM on both text paths, erasekit-tiny's VAE), random transformer."""
    torch.manual_seed(0)
    pipe = E.flux_pipeline(E.new_flux_transformer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_run_reads_the_token_and_pooled_paths_as_the_pipeline_encodes_them(flux):
    run = RunContext(flux, progress=False)
    assert run.family.name == "flux" and run.denoiser is flux.transformer
    prompts = ["a photo of a square", "a circle"]
    tokens, pooled, _ = flux.encode_prompt(prompts, max_sequence_length=E.TOKENIZER_MAX_LENGTH)
    text = flow_text(run, prompts)
    assert torch.allclose(text.tokens, tokens, atol=1e-5) and torch.allclose(text.pooled, pooled, atol=1e-5)


def test_the_x_t_sampler_ends_where_the_pipeline_does(flux):
    run = RunContext(flux, progress=False)
    grid = latent_grid(flux)
    assert (grid.height, grid.width, grid.channels) == (8, 8, 16)  # 64 px, the VAE's factor 4, 2×2 patches
    text = flow_text(run, ["a photo of a square", ""])
    x, sigma = flow_partial_samples(run, flux.transformer, text[0:1], text[1:2], 4.0, 3, [0, 3], [5, 5], grid)
    ours = pipeline_images(flux, [5], 3, 4.0, output_type="latent", prompt=["a photo of a square"])
    assert sigma.tolist() == [1.0, 0.0]
    assert torch.allclose(x[1:], ours, atol=1e-4)  # the finished sample is the pipeline's
    assert not torch.allclose(x[0], x[1])  # and index 0 is the noise it started from


def test_uce_edits_the_two_text_inputs_sending_the_concept_to_its_guide(flux):
    # λ small: MiniLM's pooled vectors have a norm near 1, so at the official λ = 0.5 the ridge holds that
    # path about halfway (λ / (λ + ‖c‖²)); the token states are longer and go nearly all the way
    edit = erase(flux, SPEC, "uce", lam=0.01, progress=False)
    assert set(edit.weights) == {f"{FLUX_TOKEN_INPUT}.weight", f"{FLUX_POOLED_INPUT}.weight"}
    run = RunContext(flux, progress=False)
    cache = run.cache

    def last_word(prompt: str) -> torch.Tensor:
        return cache.states([prompt])[0, cache.length(prompt) - 2]

    w0, w = flux.transformer.context_embedder.weight.detach(), edit.weights[f"{FLUX_TOKEN_INPUT}.weight"]
    concept, guide, kept = last_word("square"), last_word(""), last_word("circle")
    assert (w @ concept - w0 @ guide).norm() < 0.05 * (w0 @ concept - w0 @ guide).norm()
    assert (w @ kept - w0 @ kept).norm() < 0.05 * (w0 @ kept).norm()
    p0, p = flux.transformer.time_text_embed.text_embedder.linear_1.weight.detach(), edit.weights[f"{FLUX_POOLED_INPUT}.weight"]
    pooled = run.pooled(["square", "", "circle"])
    assert (p @ pooled[0] - p0 @ pooled[1]).norm() < 0.05 * (p0 @ pooled[0] - p0 @ pooled[1]).norm()
    assert (p @ pooled[2] - p0 @ pooled[2]).norm() < 0.05 * (p0 @ pooled[2]).norm()


@pytest.mark.parametrize("group", ["esd-x", "esd-x-strict"])
def test_esd_trains_the_official_flux_layers_and_leaves_the_pipeline_as_it_was(flux, group):
    before = {name: p.detach().clone() for name, p in flux.transformer.named_parameters()}
    edit = erase(flux, SPEC, group, iterations=2, sample_steps=3, lr=1e-3, progress=False)
    layers = flux_esd_layers(flux.transformer, group)
    assert {name.rpartition(".")[0] for name in edit.weights} == set(layers)  # weights and biases, as esd_flux.py
    assert all("add_k_proj" not in layer and "add_v_proj" not in layer for layer in layers) == (group == "esd-x-strict")
    assert any(not torch.equal(value, before[name]) for name, value in edit.weights.items())
    assert all(torch.equal(p, before[name]) for name, p in flux.transformer.named_parameters())
    assert all(p.requires_grad for p in flux.transformer.parameters())


def test_ac_noises_on_the_flow_path_and_trains_what_reads_the_text(flux):
    from erasekit.models.layers import ablation_parameters
    from erasekit.primitives.denoising import denoising
    from erasekit.primitives.image_batches import draw_images, noised_batch

    run = RunContext(flux, progress=False)
    den = denoising(run)
    images = draw_images(run, ["a photo of a circle"], 2, 4.0, 3, seed=5, den=den)
    finished = pipeline_images(flux, [5], 3, 4.0, output_type="latent", prompt=["a photo of a circle"])
    assert torch.allclose(images.latents[:1], finished, atol=1e-4)  # the anchor images are the pipeline's own
    batch = noised_batch(run, images, 3, __import__("random").Random(0), run.generator(0), den)
    sigma = batch.t.reshape(-1, 1, 1)
    assert ((0 < batch.t) & (batch.t <= 1)).all()
    assert torch.allclose(batch.x_t - sigma * batch.target, batch.x_0, atol=1e-5)  # an exact Euler step to σ = 0
    names = ablation_parameters(flux.transformer, "cross-attn", "flux")
    assert {n.rpartition(".")[0] for n in names} == {
        f"transformer_blocks.{i}.attn.{p}"
        for i in range(len(flux.transformer.transformer_blocks))
        for p in ("add_k_proj", "add_v_proj")
    }
    before = {name: p.detach().clone() for name, p in flux.transformer.named_parameters()}
    edit = erase(flux, EraseSpec(("square",), ("circle",), ("triangle",)), "ac", anchor_images=4, steps=3, sample_steps=3,
                 batch_size=2, preserve_images=2, lr=1e-3, progress=False)  # fmt: skip
    assert set(edit.weights) == set(names) and any(not torch.equal(v, before[n]) for n, v in edit.weights.items())
    assert all(torch.equal(p, before[name]) for name, p in flux.transformer.named_parameters())


def test_the_joint_attention_probe_computes_what_flux_computes_and_reads_image_to_text_maps(flux):
    from erasekit.primitives.attention import probing
    from erasekit.primitives.flow import predict_velocity

    run = RunContext(flux, progress=False)
    grid = latent_grid(flux)
    x = torch.randn(2, grid.tokens, grid.channels, generator=torch.Generator().manual_seed(0))
    text, sigma = flow_text(run, ["a photo of a square", "a circle"]), torch.tensor([0.5, 0.3])
    expected = predict_velocity(flux.transformer, x, sigma, text, grid)
    with probing(flux.transformer, "flux") as probe:
        probe.token_mask = torch.zeros(2, run.cache.max_length, dtype=torch.bool)
        probe.token_mask[:, 4] = True
        probe.pixel_mask = torch.zeros(2, 1, 64, 64)
        probe.pixel_mask[..., :32, :] = 1.0  # the top half of the image
        got = predict_velocity(flux.transformer, x, sigma, text, grid)
    blocks = len(flux.transformer.transformer_blocks) + len(flux.transformer.single_transformer_blocks)
    assert torch.allclose(got, expected, atol=1e-5) and len(probe.maps) == blocks
    heads = flux.transformer.config.num_attention_heads
    assert probe.maps[0].shape == (2, heads, grid.tokens, run.cache.max_length)
    kept = probe.maps[0].detach().abs().sum(dim=(0, 1))  # per image token and text token
    assert kept[: grid.tokens // 2, 4].min() > 0 and kept[grid.tokens // 2 :].max() == 0 and kept[:, :4].max() == 0
    assert type(flux.transformer.transformer_blocks[0].attn.processor).__name__ == "FluxAttnProcessor"  # given back


def test_mace_edits_the_token_and_pooled_inputs_and_its_lora_lowers_the_joint_attention_loss(flux):
    spec = EraseSpec(("square",), ("",), ("triangle",))
    edit = erase(flux, spec, "mace", steps=12, images_per_concept=2, sample_steps=3, segmenter="none", lr=3e-2, lam=1.0,
                 progress=False)  # fmt: skip
    assert set(edit.weights) == {f"{FLUX_TOKEN_INPUT}.weight", f"{FLUX_POOLED_INPUT}.weight"}
    curve = edit.card["lora_losses"]["square"]
    assert curve["loss_last_10pct"] < 0.9 * curve["loss_first_10pct"]
    refined = erase(flux, spec, "mace", lora=False, lam=1.0, progress=False)
    run = RunContext(flux, progress=False)
    pooled = run.pooled(["a photo of square", "a photo of", "a photo of triangle"])
    p0, p = (
        flux.transformer.time_text_embed.text_embedder.linear_1.weight.detach(),
        refined.weights[f"{FLUX_POOLED_INPUT}.weight"],
    )
    # the refinement sends the prompt's pooled vector (CLIP's [EOS]) towards its anchor prompt's, and keeps the preserved
    assert (p @ pooled[0] - p0 @ pooled[1]).norm() < 0.5 * (p0 @ pooled[0] - p0 @ pooled[1]).norm()
    assert (p @ pooled[2] - p0 @ pooled[2]).norm() < 0.5 * (p0 @ pooled[2]).norm()


def test_race_on_flux_aims_the_velocitys_implied_noise_at_the_trajectorys_start(flux):
    from erasekit.methods.base import get_method, make_config
    from erasekit.methods.race import pgd_states
    from erasekit.primitives.denoising import denoising

    run = RunContext(flux, progress=False)
    den = denoising(run)
    start = den.start_noise(7)
    text = flow_text(run, ["a square", ""])
    x, _ = flow_partial_samples(run, flux.transformer, text[0:1], text[1:2], 4.0, 3, [0], [7], den.grid)
    assert torch.equal(x, start)  # the plan's trajectory of seed 7 starts from this noise
    x_0 = torch.randn_like(start)
    on_path = 0.6 * x_0 + 0.4 * start  # x_σ at σ = 0.4 of the straight path from start to x_0
    assert torch.allclose(den.implied_noise(on_path, torch.tensor(0.4), start - x_0), start, atol=1e-5)
    config = make_config(get_method("race"), {"epsilon": 0.2, "pgd_steps": 3})
    states = den.conditioning(["a photo of a square"])
    adversarial = pgd_states(lambda x, t, c: den.implied_noise(x, t, den.predict(flux.transformer, x, t, c)), on_path,
                             torch.tensor(0.4), states, start, config, torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(adversarial.pooled, states.pooled)
    assert 0 < (adversarial.tokens - states.tokens).abs().max() <= 0.2 + 1e-6
    edit = erase(flux, SPEC, "race", iterations=2, esd_iterations=1, pgd_steps=2, sample_steps=3, progress=False)
    assert set(edit.weights) == {f"{n}.{p}" for n in flux_esd_layers(flux.transformer, "esd-x") for p in ("weight", "bias")}


def test_eraseanything_trains_a_low_rank_text_query_and_key_in_every_double_block(flux):
    import random

    from erasekit.methods.eraseanything import caption

    spec = EraseSpec(("red square",), ("",), ("circle", "triangle"))
    edit = erase(flux, spec, "eraseanything", steps=4, sample_steps=2, concept_images=2, rank=2, progress=False)
    blocks = range(len(flux.transformer.transformer_blocks))
    assert set(edit.weights) == {f"transformer_blocks.{i}.attn.{p}.weight" for i in blocks for p in ("add_q_proj", "add_k_proj")}
    params = dict(flux.transformer.named_parameters())
    # float32 rounding of W + BA sits near 1e-6 of the delta's largest singular value
    ranks = [int(torch.linalg.matrix_rank((v - params[n]).double(), rtol=1e-4)) for n, v in edit.weights.items()]
    assert max(ranks) == 2 and len(edit.card["loss_curve"]["mean_loss"]) == 4
    rng = random.Random(0)
    shuffled = {caption("a photo of {} on a table", "red square", rng, 1.0) for _ in range(20)}
    assert len(shuffled) > 1 and all("red square" in c and len(c.split()) == 8 for c in shuffled)


def test_the_joint_attention_probe_reads_every_query_for_eraseanything(flux):
    from erasekit.primitives.attention import FluxAttentionProbe, probing
    from erasekit.primitives.flow import predict_velocity

    run = RunContext(flux, progress=False)
    grid = latent_grid(flux)
    x = torch.randn(1, grid.tokens, grid.channels, generator=torch.Generator().manual_seed(0))
    probe = FluxAttentionProbe(all_queries=True)
    with probing(flux.transformer, "flux", probe, only=[flux.transformer.transformer_blocks[-1].attn]):
        probe.token_mask = torch.zeros(1, run.cache.max_length, dtype=torch.bool)
        probe.token_mask[0, 3] = True
        predict_velocity(flux.transformer, x, torch.tensor([0.5]), flow_text(run, ["a photo of a square"]), grid)
    (attention,) = probe.maps  # the last double block only
    text = run.cache.max_length
    assert attention.shape == (1, flux.transformer.config.num_attention_heads, text + grid.tokens, text)
    assert attention[..., 3].min() > 0 and attention[..., :3].abs().max() == 0


@pytest.mark.parametrize(
    "method, settings",
    [("esd-x", {}), ("advunlearn", {"train_method": "esd-x", "warmup_iterations": 1, "attack_steps": 1})],
)
def test_an_esd_group_as_a_lora_changes_each_weight_by_at_most_its_rank_and_leaves_the_model(flux, method, settings):
    before = {name: value.clone() for name, value in flux.transformer.state_dict().items()}
    edit = erase(flux, SPEC, method, iterations=3, sample_steps=3, lr=1e-2, lora_rank=2, progress=False, **settings)
    assert set(edit.weights) == {f"{layer}.weight" for layer in flux_esd_layers(flux.transformer, "esd-x")}
    ranks = [int(torch.linalg.matrix_rank((value - before[name]).double(), rtol=1e-6)) for name, value in edit.weights.items()]
    assert max(ranks) == 2  # each layer moved by B·A, no more
    after = flux.transformer.state_dict()  # the adapter came out: the same tensors, no lora_A / base_layer names
    assert after.keys() == before.keys() and all(torch.equal(after[name], value) for name, value in before.items())


def test_advunlearn_refuses_a_lora_on_the_text_encoder_in_one_line():
    from erasekit.methods.base import load_methods

    with pytest.raises(ErasekitError, match="lora_rank adapts an ESD group of the denoiser, not the text encoder"):
        load_methods()["advunlearn"].config(lora_rank=4)


def test_a_lora_rank_above_a_layer_is_refused_before_the_plan(flux):
    with pytest.raises(ErasekitError, match=re.escape("LoRA rank 1000 does not fit transformer_blocks.0.attn.to_q (128×128)")):
        erase(flux, SPEC, "esd-x", lora_rank=1000, progress=False)


def test_generation_does_not_depend_on_the_batch(flux):
    from erasekit.eval.generation import SamplerSettings, generate
    from erasekit.eval.prompts import PromptRow

    rows = [PromptRow(prompt="a photo of a square", seed=0, role="target", samples=3)]
    one = generate(flux, rows, SamplerSettings(steps=3, batch_size=1, chunk=2), progress=False)
    three = generate(flux, rows, SamplerSettings(steps=3, batch_size=3, chunk=2), progress=False)
    assert one.images.shape == (3, 64, 64, 3) and np.array_equal(one.images, three.images)


@pytest.mark.parametrize("fmt", ["diffusers-lora", "kohya"])
def test_flux_lora_exports_load_in_plain_diffusers_and_draw_the_erased_model(flux, tmp_path, fmt):
    edit = erase(flux, SPEC, "uce", progress=False)
    out = tmp_path / ("lora" if fmt == "diffusers-lora" else "lora.safetensors")
    export_loaded(edit, flux, fmt, out)
    if fmt == "kohya":
        from safetensors import safe_open

        with safe_open(str(out), "pt") as f:
            assert sorted(f.keys())[0] == "lora_transformer_context_embedder.alpha"
            assert f.metadata()["ss_base_model_version"] == "flux1"
    to_erased, original_to_erased = lora_gaps(flux, edit, out, 4.0)
    # the loaded LoRA draws the erased model's image, not the original's (a random transformer's is a small change)
    assert to_erased < 0.2 * original_to_erased and original_to_erased > 0.5


def test_a_flux_single_file_export_is_refused_in_one_line(flux, tmp_path):
    edit = Edit({f"{FLUX_TOKEN_INPUT}.weight": flux.transformer.context_embedder.weight.detach().clone()}, {"method": "uce"})
    with pytest.raises(
        ErasekitError, match="^" + re.escape("a single-file export holds an SD 1.x/2.x checkpoint; export a FLUX model as")
    ):
        export_loaded(edit, flux, "single-file", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_flux_1_layout_in_half_precision_gives_finite_uce_and_esd_edits(dtype):
    """FLUX.1-dev's layout shrunk (CLIP pooled path, T5 token path, the guidance embedding) in fp16 / bf16."""
    from erasekit.models.reference_configs import random_flux_pipeline

    pipe = random_flux_pipeline(dtype=dtype)
    for method, settings in (("uce", {}), ("esd-x", {"iterations": 2, "sample_steps": 2, "lora_rank": 2})):
        edit = erase(pipe, EraseSpec(("cat",), preserve=("dog",)), method, progress=False, **settings)
        assert all(v.dtype == dtype and torch.isfinite(v).all() for v in edit.weights.values())
        assert edit.card["dtype"] == str(dtype).removeprefix("torch.")


def test_unsupported_bench_columns_on_the_flow_model_are_one_line_before_loading(tmp_path):
    from erasekit.jobs import bench as bench_job

    with pytest.raises(ErasekitError, match=r"^gloce does not run on FLUX models yet"):
        bench_job.check_bench(bench_job.BenchOptions(methods=("uce", "gloce"), model="erasekit-tiny-flux", out=tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_receler_on_flux_follows_every_joint_attentions_image_stream_and_comes_off(flux, tmp_path):
    """Receler's erasers on the double and the single blocks' joint attention: the mask loss reads FLUX's
    maps, each eraser changes only the image tokens (a single block's text tokens pass as they came), the
    applied edit draws differently, and once it is off the plain pipeline draws as before."""
    from erasekit.edits.erasers import eraser_sites, erasers_on, new_erasers

    model = flux.transformer
    sites = eraser_sites(model)
    assert [s.name for s in sites] == [f"transformer_blocks.{i}.attn" for i in range(len(model.transformer_blocks))] + [
        f"single_transformer_blocks.{i}.attn" for i in range(len(model.single_transformer_blocks))
    ]
    assert [s.text_first for s in sites].count(True) == len(model.single_transformer_blocks)
    erasers = new_erasers(model, 4, torch.Generator().manual_seed(0))
    for eraser in erasers.values():
        torch.nn.init.normal_(eraser.up.weight)  # a fresh eraser adds zero; this one changes its input
    single = model.single_transformer_blocks[0]
    seen = {}
    text, image = torch.randn(1, 5, single.attn.inner_dim), torch.randn(1, 16, single.attn.inner_dim)
    temb = torch.randn(1, single.attn.inner_dim)
    with torch.no_grad():
        plain_attention = single.attn(single.norm(torch.cat([text, image], 1), emb=temb)[0])
        outputs = {}
        with erasers_on(model, erasers, outputs):
            after_erasers = single.attn.register_forward_hook(lambda m, a, out: seen.setdefault("attn", out))
            single(hidden_states=image, encoder_hidden_states=text, temb=temb)
            after_erasers.remove()
    erased = seen["attn"]
    assert torch.equal(erased[:, :5], plain_attention[:, :5])  # the text tokens untouched
    assert not torch.allclose(erased[:, 5:], plain_attention[:, 5:])  # the image tokens erased
    assert outputs["single_transformer_blocks.0.attn"].shape == (1, 16, single.attn.inner_dim)

    edit = erase(flux, SPEC, "receler", iterations=3, adversarial_steps=2, adversarial_tokens=2, rank=4, lr=1e-1,
                 sample_steps=2, progress=False)  # fmt: skip
    assert not edit.weights and {k.rsplit(".", 2)[0] for k in edit.adapters} == {s.name for s in sites}
    assert all(torch.isfinite(v).all() for v in edit.adapters.values()) and np.isfinite(edit.card["loss_last_10pct"])

    def draw(pipe):
        return pipeline_images(pipe, [0], 2, 4.0, output_type="latent", prompt=["a square"])

    original = draw(flux)
    edit.save(tmp_path / "edit")
    with Edit.load(tmp_path / "edit").applied(flux) as erased_pipe:
        assert (draw(erased_pipe) - original).abs().max() > 1e-4
    assert torch.equal(draw(flux), original)


def test_spm_on_flux_adapts_the_joint_blocks_and_transport_scales_them_per_prompt(flux, monkeypatch):
    """SPM's adapters on the joint blocks' Linears (no timestep modulation); under transport, through a plain
    FluxPipeline call guided for real (a transformer call per branch), strength 0 draws the untouched model
    and strength 1 the merged edit."""
    from erasekit.edits import transport
    from erasekit.models.layers import transformer_layers

    layers = transformer_layers(flux.transformer)
    assert layers and not any(".norm" in name for name in layers)
    assert {
        "transformer_blocks.0.attn.add_k_proj",
        "transformer_blocks.0.ff.net.2",
        "single_transformer_blocks.0.proj_mlp",
    } <= set(layers)
    edit = erase(flux, EraseSpec(("square",), preserve=("circle",)), "spm", iterations=3, sample_steps=2, warmup_steps=0,
                 lr=1e-2, anchors_per_step=2, progress=False)  # fmt: skip
    assert {key.split(".", 1)[1].rsplit(".", 1)[0] for key in edit.adapters} == set(layers)

    def draw(pipe):
        return pipeline_images(pipe, [3, 4], 2, 4.0, prompt=["a square", "a circle"])

    original = draw(flux)
    scores = transport.PromptScorer(flux, ["square"])(["a square", "a circle", "square"])
    assert scores[2, 0] > 0.99 and scores[1, 0] < scores[0, 0]
    merged = Edit(edit.weights, {k: v for k, v in edit.card.items() if k != "inference"})
    with merged.applied(flux, check_base=False) as plain:
        full = draw(plain)
    assert np.abs(full.astype(int) - original).max() > 0
    for strength, expected in ((0.0, original), (1.0, full)):
        monkeypatch.setattr(
            transport.PromptScorer, "__call__", lambda self, prompts, s=strength: torch.full((len(prompts), 1), s)
        )
        with edit.applied(flux, check_base=False) as erased:
            assert np.abs(draw(erased).astype(int) - expected).max() <= 1
    # the protocols' sampler calls the transformer in chunks of fixed rows: the strengths are split with them
    from erasekit.eval.generation import SamplerSettings, generate
    from erasekit.eval.prompts import PromptRow

    rows, chunked = [PromptRow("a square", 3, "erase", samples=2)], SamplerSettings(steps=2, guidance=4.0, chunk=1)
    with merged.applied(flux, check_base=False) as plain:
        expected = generate(plain, rows, chunked, progress=False).images
    with edit.applied(flux, check_base=False) as erased:
        assert np.abs(generate(erased, rows, chunked, progress=False).images.astype(int) - expected).max() <= 1
    assert getattr(flux.transformer, "_erasekit_transport", None) is None  # released with the block
