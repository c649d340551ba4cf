"""AdaVD: the decomposition's algebra, the hooks on the UNet's values (which come off and leave the model
as it was), its SDXL path, and the refusals. Its efficacy on the world: tests/test_efficacy.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.values import LayerDecomposition, concept_states, gram_schmidt
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.models import reference_configs
from erasekit.models.layers import cross_attentions
from erasekit.primitives.diffusion import pipeline_images

PLAIN = {"p": 100.0, "epsilon": 0.93, "s": 2.0, "shift": False}


def test_defaults_are_the_official_shift_and_bad_input_is_one_line(pipe):
    config = make_config(get_method("adavd"), {})
    assert (config.p, config.epsilon, config.s, config.shift) == (100.0, 0.93, 2.0, True)
    for bad in ({"p": -1}, {"epsilon": 1.5}, {"s": 0}, {"shift": "maybe"}):
        with pytest.raises(ErasekitError):
            make_config(get_method("adavd"), bad)
    for spec in (EraseSpec(("square",), preserve=("circle",)), EraseSpec(("square",), ("circle",))):
        with pytest.raises(ErasekitError, match="no anchors and no preserve set"):
            erase(pipe, spec, "adavd", progress=False)


def test_without_the_shift_the_values_lose_exactly_their_component_in_the_concepts_span():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randn(3, 16, generator=generator)
    targets[2] = targets[0] + 0.5 * targets[1]  # in the span of the first two: adds nothing
    mix, basis = gram_schmidt(targets)
    assert torch.allclose(mix @ targets, basis, atol=1e-5) and basis[2].abs().max() == 0
    assert torch.allclose(basis[0] @ basis[1], torch.tensor(0.0), atol=1e-4)
    values = torch.randn(2, 5, 16, generator=generator)
    edited = LayerDecomposition(targets, PLAIN)(values)
    span = torch.linalg.qr(targets[:2].T).Q  # (16, 2)
    expected = values - values @ span @ span.T
    assert torch.allclose(edited[:, 1:], expected[:, 1:], atol=1e-4)
    assert torch.equal(edited[:, 0], values[:, 0])  # the first token ([SOT]) is never touched


def test_the_shift_spares_far_tokens_and_pushes_past_the_complement_near_the_concept():
    target = torch.zeros(1, 4)
    target[0, 0] = 1.0
    values = torch.tensor([[[0.0, 0, 0, 1], [1.0, 0.05, 0, 0], [0.2, 1.0, 0, 0]]])  # [SOT], near, far (cos 0.2)
    shifted = LayerDecomposition(target, {**PLAIN, "shift": True})(values)
    assert torch.allclose(shifted[0, 1, 0], torch.tensor(-1.0), atol=5e-3)  # s = 2σ(100 (0.9988 − 0.93)) ≈ 2: v − 2⟨t, v⟩t
    assert torch.allclose(shifted[0, 2], values[0, 2], atol=1e-6)  # s ≈ 2σ(100 (0.2 − 0.93)) ≈ 0


def test_applied_the_concepts_values_vanish_from_its_prompts_only_and_the_hooks_come_off(pipe):
    prompts = ["a photo of a square", "a photo of a circle"]
    plain = pipeline_images(pipe, [1, 2], 4, 7.5, prompt=prompts).astype(int)
    weights = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = erase(pipe, EraseSpec(("square",)), "adavd", progress=False, shift=False)
    assert edit.weights == {} and edit.card["inference"]["adavd"]["concepts"] == ["square"]
    layer = cross_attentions(pipe.unet)[0]
    with torch.no_grad():
        target = layer.to_v(concept_states(pipe, ["square"]))[0]
        states = pipe.encode_prompt(prompts, "cpu", 1, False)[0]
    with edit.applied(pipe) as erased, torch.no_grad():
        assert erased is pipe
        values = layer.to_v(states)
        images = pipeline_images(erased, [1, 2], 4, 7.5, prompt=prompts).astype(int)
    assert (values[:, 1:] @ target).abs().max() < 1e-3 * target.norm() * values.norm(dim=-1).max()
    assert np.abs(images[0] - plain[0]).mean() > 5 * max(np.abs(images[1] - plain[1]).mean(), 0.1)
    assert not layer.to_v._forward_hooks and all(torch.equal(p, weights[n]) for n, p in pipe.unet.named_parameters())
    assert np.abs(pipeline_images(pipe, [1, 2], 4, 7.5, prompt=prompts).astype(int) - plain).max() == 0


def test_on_sdxl_the_decomposition_reads_both_encoders_states_in_half_precision():
    from device_guard import DeviceGuard

    model = reference_configs.random_sdxl_pipeline(dtype=torch.float16)
    states = concept_states(model, ["cat"])
    widths = model.text_encoder.config.hidden_size + model.text_encoder_2.config.hidden_size
    assert states.shape == (1, widths) == (1, model.unet.config.cross_attention_dim)  # both, as SDXL's attn2 reads them
    edit = erase(model, EraseSpec(("cat",)), "adavd", progress=False, shift=False)
    layer = cross_attentions(model.unet)[0]
    with torch.no_grad():
        target = layer.to_v(states.half())[0].float()
        prompt = model.encode_prompt("a photo of a cat", device="cpu", do_classifier_free_guidance=False)[0]
        before = layer.to_v(prompt).float()
    with edit.applied(model) as erased, DeviceGuard() as guard, torch.no_grad():
        after = layer.to_v(prompt).float()
        images = pipeline_images(erased, [0], 2, 7.5, prompt=["a photo of a cat"])
    assert not guard.hidden and np.isfinite(images).all()
    cosine = lambda v: (F.normalize(v[0, 1:], dim=-1) @ F.normalize(target, dim=0)).abs().max()  # noqa: E731
    assert cosine(before) > 0.1 and cosine(after) < 1e-2, (cosine(before), cosine(after))


def test_flux_a_foreign_card_and_an_export_are_one_line(pipe, tmp_path):
    from erasekit.exports import export_edit
    from erasekit.models.loading import load_pipeline

    with pytest.raises(ErasekitError, match="adavd does not run on"):
        erase(load_pipeline("erasekit-tiny-flux", progress=False), EraseSpec(("square",)), "adavd", progress=False)
    bad = {
        "method": "adavd",
        "targets": ["square"],
        "inference": {"adavd": {"concepts": ["square"], "p": "steep", "epsilon": 0.9, "s": 2, "shift": True}},
    }
    Edit({}, bad).save(tmp_path / "bad")
    with pytest.raises(ErasekitError, match=r"inference\.adavd\.p should be a number"):
        Edit.load(tmp_path / "bad")
    edit = erase(pipe, EraseSpec(("square",)), "adavd", progress=False).save(tmp_path / "edit")
    with pytest.raises(ErasekitError, match="changes no weights"):
        export_edit(edit, "kohya", tmp_path / "k.safetensors")
    assert not (tmp_path / "k.safetensors").exists()
