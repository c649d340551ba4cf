"""Shared primitives of MACE and RealEra: CFIS, the attention probe, temporary LoRAs, closed-form
fusion and token alignment."""

import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError
from erasekit.models.layers import kv_projections
from erasekit.primitives.attention import probing
from erasekit.primitives.closed_form import fused_weights
from erasekit.primitives.diffusion import predict_noise
from erasekit.primitives.lora_trainer import lora_adapter
from erasekit.primitives.prompt_cache import PromptCache, aligned_positions
from erasekit.primitives.timesteps import TimestepSampler, concept_focal_weights


def test_concept_focal_sampling_concentrates_between_t1_and_t2():
    xi = concept_focal_weights(1000)
    assert xi.sum() == pytest.approx(1.0) and (xi >= 0).all()
    assert 200 <= xi.argmax() <= 400 and xi[200:401].sum() > 0.8 and xi[700:].sum() < 1e-4
    draws = TimestepSampler(1000, focal=True, seed=3)(2000)
    assert 0.75 < ((draws >= 200) & (draws <= 400)).float().mean() and torch.equal(
        draws, TimestepSampler(1000, True, seed=3)(2000)
    )
    uniform = TimestepSampler(1000, focal=False, seed=3)(4000)
    assert uniform.float().mean() == pytest.approx(500, abs=30)
    with pytest.raises(ErasekitError, match="t1 < t2"):
        concept_focal_weights(1000, t1=400, t2=200)
    with pytest.raises(ErasekitError, match="outside"):
        concept_focal_weights(10, t1=5000, t2=6000, gamma=1.0)


def test_attention_probe_computes_the_default_attention_and_a_masked_loss(pipe):
    unet, cache = pipe.unet, PromptCache(pipe)
    states = cache.states(["a photo of a square"])
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([300])
    with torch.no_grad():
        plain = predict_noise(unet, x, t, states)
        processors = dict(unet.attn_processors)
        with probing(unet) as probe:
            probe.token_mask = torch.zeros(1, cache.max_length, dtype=torch.bool)
            probed = predict_noise(unet, x, t, states)
            assert probe.loss() == 0  # no token chosen, nothing recorded as loss
            probe.reset()
            probe.token_mask[0, cache.word_span("a photo of a square", "square").start] = True
            predict_noise(unet, x, t, states)
            full = probe.loss()
            probe.reset()
            probe.pixel_mask = torch.zeros(1, 1, 64, 64)
            probe.pixel_mask[..., :32, :] = 1  # the top half of the image
            predict_noise(unet, x, t, states)
            half = probe.loss()
    assert torch.allclose(plain, probed, atol=1e-5)
    assert len(probe.maps) == len(kv_projections(unet)) // 2 and 0 < half < full
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in processors.items()}


def test_lora_adapter_starts_at_zero_trains_and_leaves_nothing_behind(pipe):
    unet = pipe.unet
    names = list(kv_projections(unet))
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    with lora_adapter(unet, names, rank=2) as adapter:
        assert all(d.abs().max() == 0 for d in adapter.deltas().values())  # B = 0
        for p in adapter.parameters():
            torch.nn.init.normal_(p, std=0.1)
        deltas = adapter.deltas()
        assert all(torch.linalg.matrix_rank(d) <= 2 for d in deltas.values())
        x = torch.randn(2, 384)
        layer = unet.get_submodule(names[0])
        with adapter.disabled():
            assert torch.allclose(
                layer(x),
                x @ before[f"{names[0]}.weight"].T + before[f"{names[0]}.bias"]
                if f"{names[0]}.bias" in before
                else x @ before[f"{names[0]}.weight"].T,
            )
        assert torch.allclose(layer(x), x @ (before[f"{names[0]}.weight"] + deltas[f"{names[0]}.weight"]).T, atol=1e-5)
    after = unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(ErasekitError, match="rank 500 does not fit"):
        with lora_adapter(unet, names, rank=500):
            pass


def test_fusion_reproduces_each_concepts_lora_on_its_own_states():
    torch.manual_seed(0)
    d, out = 16, 8
    w_refined = torch.randn(out, d)
    basis = torch.linalg.qr(torch.randn(d, d))[0]
    states = [basis[:, :3].T * 5, basis[:, 3:6].T * 5]  # two concepts in orthogonal subspaces
    deltas = [{"w": torch.randn(out, 1) @ torch.randn(1, d)} for _ in states]
    moments = [s.T @ s for s in states]
    fused = fused_weights({"w": w_refined}, deltas, moments, lam=1e-2)["w"]
    for s, delta in zip(states, deltas, strict=True):
        assert torch.allclose(s @ fused.T, s @ (w_refined + delta["w"]).T, atol=1e-2)
    untouched = basis[:, 8:].T
    assert torch.allclose(untouched @ fused.T, untouched @ w_refined.T, atol=1e-3)  # λ keeps the rest at W'


def test_aligned_positions_pair_prefix_middle_suffix_and_padding():
    ids, other = [101, 7, 8, 50, 51, 102], [101, 7, 8, 60, 102]
    mine, theirs = aligned_positions(ids, other, length=8)
    assert mine == [0, 1, 2, 3, 4, 5, 6, 7] and theirs == [0, 1, 2, 3, 3, 4, 5, 6]
    mine, theirs = aligned_positions(ids, other, length=8, middle=False)
    assert mine == [0, 1, 2, 5, 6, 7] and theirs == [0, 1, 2, 4, 5, 6]
    assert np.array_equal(aligned_positions([1, 2], [1, 2], 4)[0], [0, 1, 2, 3])


def test_xt_plan_draws_in_step_order_and_samples_each_prompt_in_one_batch(pipe):
    import random

    from erasekit.primitives.diffusion import partial_samples
    from erasekit.primitives.image_batches import draw_images
    from erasekit.primitives.run import RunContext
    from erasekit.primitives.xt_plan import plan_xt

    run = RunContext(pipe, progress=False)
    conds, uncond = [run.states(["a square"]), run.states(["a circle"])], run.states([""])
    rng = random.Random(3)
    points = plan_xt(run, pipe.unet, conds, uncond, 3.0, 4, 5, lambda k: k % 2, rng)
    draws = random.Random(3)
    expected = [(k % 2, draws.randrange(4), draws.randrange(2**31)) for k in range(5)]
    assert rng.random() == draws.random()  # the caller's stream continues where the plan left it
    for point, (prompt, stop, seed) in zip(points, expected, strict=True):
        x, t = partial_samples(pipe, pipe.unet, conds[prompt], uncond, 3.0, 4, [stop], [seed])
        assert point.prompt == prompt and torch.allclose(point.x_t, x, atol=1e-5) and point.t == t[0]
    with pytest.raises(ValueError, match="outside the 2 prompts"):
        plan_xt(run, pipe.unet, conds, uncond, 3.0, 4, 2, lambda k: 2, random.Random(0))
    finished = draw_images(run, ["a square"], 1, 3.0, 4, 7).latents  # the training images: seed 7 for the first
    x, t = partial_samples(pipe, pipe.unet, conds[0], uncond, 3.0, 4, [4], [7])
    assert torch.equal(finished, x) and t[0] == 0  # index `steps` is the finished sample


def test_loss_record_keeps_a_short_curve():
    from erasekit.primitives.training import CURVE_POINTS, loss_record

    record = loss_record([float(k) for k in range(1000)])
    assert record["loss_first_10pct"] == pytest.approx(49.5) and record["loss_last_10pct"] == pytest.approx(949.5)
    curve = record["loss_curve"]
    assert curve["steps_per_point"] == 20 and len(curve["mean_loss"]) == CURVE_POINTS and curve["mean_loss"][0] == 9.5
    assert loss_record([]) == {}
