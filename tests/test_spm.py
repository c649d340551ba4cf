"""SPM: rank-1 adapters in the official layers, the merged edit as an exact LoRA, and facilitated
transport inside a standard diffusers pipeline (per-prompt strengths, batch-independent)."""

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from torch import nn

from erasekit.concepts import EraseSpec
from erasekit.edits import ADAPTERS_FILE, Edit, transport
from erasekit.edits.lora import lora_factors
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.models import embedded
from erasekit.models.layers import transformer_layers
from erasekit.models.loading import load_pipeline
from erasekit.models.reference_configs import SD15

QUICK = {"iterations": 4, "sample_steps": 3, "warmup_steps": 0, "lr": 1e-2}


def official_spm_layers(unet):
    """SPMNetwork.create_modules of the official src/models/spm.py, restated: every Linear / Conv2d
    child of a Transformer2DModel."""
    return [f"{name}.{child}" for name, module in unet.named_modules() if module.__class__.__name__ == "Transformer2DModel"
            for child, layer in module.named_modules() if layer.__class__.__name__ in ("Linear", "Conv2d")]  # fmt: skip


def test_adapted_layers_are_the_official_selection():
    with init_empty_weights():
        sd15 = UNet2DConditionModel(**SD15)
    for unet in (embedded.new_unet(), sd15):
        assert list(transformer_layers(unet)) == official_spm_layers(unet)
    assert len(transformer_layers(sd15)) == 16 * 12  # proj_in, attn1 and attn2 q/k/v/out, ff (2), proj_out
    with pytest.raises(ErasekitError, match="no Transformer2DModel"):
        transformer_layers(nn.Sequential(nn.Linear(2, 2)))


@pytest.fixture(scope="module")
def two_spms(pipe):
    return erase(pipe, EraseSpec(("square", "circle"), preserve=("heart",)), "spm", progress=False, **QUICK)


def test_one_rank_one_adapter_per_concept_merged_into_the_edit(pipe, two_spms):
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = two_spms
    assert edit.card["inference"] == {"spm": {"concepts": ["square", "circle"], "metric": "clipcos_tokenuni"}}
    adapters = transport.adapters_from_flat(edit.adapters, ["square", "circle"])
    layers = transformer_layers(pipe.unet)
    for adapter in adapters:
        assert set(adapter.factors) == set(layers)
        for name, (down, up) in adapter.factors.items():
            assert down.shape[0] == 1 and up.shape == (layers[name].weight.shape[0], 1)
    for name in layers:
        delta = sum((up @ down.flatten(1)) for a in adapters for down, up in [a.factors[name]])
        merged = edit.weights[f"{name}.weight"] - before[f"{name}.weight"]
        assert torch.allclose(merged.flatten(1), delta, atol=1e-6)
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())  # the pipeline is as it was
    assert set(edit.card["spm_losses"]) == {"square", "circle"}
    again = erase(pipe, EraseSpec(("square", "circle"), preserve=("heart",)), "spm", progress=False, **QUICK)
    assert all(torch.equal(again.adapters[k], v) for k, v in edit.adapters.items())  # seeded


def test_the_merged_edit_is_an_exact_rank_two_lora(pipe, two_spms):
    export = lora_factors(two_spms, pipe.unet)
    assert set(export.ranks.values()) == {2} and export.relative_error < 1e-4  # two rank-1 adapters


def images(pipe, prompts, seed=3):
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    return pipe(prompts, num_inference_steps=4, generator=generators, output_type="np").images


def test_transport_scores_each_prompt_and_batching_changes_nothing(pipe, two_spms):
    scorer = transport.PromptScorer(pipe, ["square", "circle"])
    scores = scorer(["a square", "a photo of a circle", "a heart"])
    assert torch.equal(scores[0, 0], torch.tensor(1.0)) and torch.equal(scores[1, 1], torch.tensor(1.0))
    assert (scores[2] < 1).all() and (scores >= 0).all()
    only_tokens = transport.PromptScorer(pipe, ["square", "circle"], "tokenuni")(["a square", "a heart"])
    assert only_tokens.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    prompts = ["a square", "a heart", "a photo of a circle"]
    with two_spms.applied(pipe) as erased:
        together = images(erased, prompts)
        alone = np.concatenate([images(erased, [p], seed=3 + i) for i, p in enumerate(prompts)])
        assert erased.unet._erasekit_transport is not None
    assert getattr(pipe.unet, "_erasekit_transport", None) is None  # released with the block
    assert np.abs(together.astype(float) - alone).max() < 1e-5
    merged = Edit(two_spms.weights, {k: v for k, v in two_spms.card.items() if k != "inference"})
    with merged.applied(pipe) as plain:  # transport off: every adapter at strength 1
        full = images(plain, prompts)
    original = images(pipe, prompts)
    # "a heart" carries neither concept: the adapters act on it, but less than at full strength
    assert np.abs(together[1] - full[1]).max() > 1e-3 and np.abs(together[1] - original[1]).max() > 1e-3


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_strength_zero_is_the_untouched_model_and_one_the_merged_edit(pipe, two_spms, monkeypatch, strength):
    monkeypatch.setattr(transport.PromptScorer, "__call__", lambda self, prompts: torch.full((len(prompts), 2), strength))
    prompts = ["a square", "a heart"]
    with two_spms.applied(pipe) as erased:
        transported = images(erased, prompts)
    if strength == 0:
        assert np.array_equal(transported, images(pipe, prompts))
    else:
        merged = Edit(two_spms.weights, {k: v for k, v in two_spms.card.items() if k != "inference"})
        with merged.applied(pipe) as plain:
            assert np.abs(transported - images(plain, prompts)).max() < 1e-4  # W x + Σ up(down x) against (W + Σ up down) x


def test_saved_spm_round_trips_and_refuses_what_it_cannot_do(pipe, two_spms, embedded_dir, tmp_path):
    two_spms.save(tmp_path / "spm")
    loaded = Edit.load(tmp_path / "spm")
    assert loaded.card["inference"] == two_spms.card["inference"] and set(loaded.adapters) == set(two_spms.adapters)
    (tmp_path / "spm" / ADAPTERS_FILE).unlink()
    with pytest.raises(ErasekitError, match=r"has no adapters\.safetensors"):
        Edit.load(tmp_path / "spm")
    other = load_pipeline(embedded_dir)
    with torch.no_grad():
        next(iter(transformer_layers(other.unet).values())).weight.add_(0.1)  # another base model
    with pytest.raises(ErasekitError, match="different base model"):
        two_spms.apply(other)
    with two_spms.applied(pipe) as erased:
        with pytest.raises(ErasekitError, match="already carries SPM adapters"):
            two_spms.apply(pipe)
        with pytest.raises(ErasekitError, match="give `prompt`, not prompt_embeds"):
            erased(prompt_embeds=torch.zeros(1, 32, 384), num_inference_steps=2)


def test_transport_refuses_a_pipeline_it_cannot_host(pipe, two_spms):
    class ImageOnly:  # no UNet and no transformer to carry adapters (an image-to-image stand-in)
        vae = object()

    with pytest.raises(ErasekitError, match=r"^SPM transport adapts a denoiser's transformer blocks; ImageOnly has none"):
        transport.transported_pipeline(ImageOnly(), [])


def test_spm_config_defaults_and_errors():
    spm = get_method("spm")
    config = make_config(spm, {})
    assert (config.rank, config.alpha, config.eta, config.lam, config.anchors_per_step, config.iterations, config.lr) == (
        1, 1.0, 1.0, 1000.0, 4, 3000, 1e-4)  # fmt: skip
    for bad, message in [({"anchor_source": "words"}, "anchor_source must be one of"), ({"rank": 0}, "at least 1"),
                         ({"lam": -1}, "not negative")]:  # fmt: skip
        with pytest.raises(ErasekitError, match=message):
            make_config(spm, bad)


def test_anchor_sources_draw_as_the_official_sampler(pipe):
    import random

    from erasekit.methods.spm import embedding_anchors, vocabulary_anchors
    from erasekit.primitives.run import RunContext

    run = RunContext(pipe, progress=False)
    target = run.states(["square"])
    drawn = embedding_anchors(target, 64, random.Random(0), torch.Generator().manual_seed(0))
    ratio = drawn.flatten(1).norm(dim=1) / target.flatten().norm()
    assert drawn.shape == (64, *target.shape[1:]) and (ratio >= 0.8 - 1e-5).all() and (ratio <= 1.2 + 1e-5).all()
    assert torch.nn.functional.cosine_similarity(drawn.flatten(1), target.flatten(1)).abs().max() < 0.2  # random directions
    words = vocabulary_anchors(run, "square", 20, random.Random(0))
    assert len(words) == 20 and "square" not in words and all(w.isalpha() for w in words)
