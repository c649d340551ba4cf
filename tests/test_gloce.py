"""GLoCE: the gated module's map, gates that open on the concept's features and stay shut on the kept
ones, the timestep window, hooks that come off, the SDXL path and the refusals. Its efficacy on the
world: tests/test_efficacy.py."""

import numpy as np
import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.gates import PARTS, GatedModule, install_gates, layer_tensors
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.gloce import FeatureTap
from erasekit.methods.runner import erase
from erasekit.models import reference_configs
from erasekit.primitives.denoising import denoising
from erasekit.primitives.diffusion import pipeline_images
from erasekit.primitives.run import RunContext

WORLD = {"template": "a photo of a {}", "st_timestep": 0}
KEPT = ("circle", "triangle", "star", "heart")


def test_defaults_are_the_official_celebrity_scripts_and_bad_input_is_one_line(pipe):
    config = make_config(get_method("gloce"), {})
    assert (config.gate_rank, config.update_rank, config.degen_rank, config.thresh, config.eta) == (1, 16, 2, 2.5, 1.0)
    assert (config.st_timestep, config.end_timestep, config.n_generation) == (10, 20, 3)
    for bad in ({"template": "no slot"}, {"st_timestep": 20, "end_timestep": 20}, {"thresh": 0}, {"update_rank": 0}):
        with pytest.raises(ErasekitError):
            make_config(get_method("gloce"), bad)
    with pytest.raises(ErasekitError, match="must not exceed the layer's width"):
        erase(pipe, EraseSpec(("square",), preserve=KEPT), "gloce", progress=False, update_rank=5000)


def test_an_open_gate_maps_a_token_to_the_surrogate_and_a_shut_one_leaves_it():
    generator = torch.Generator().manual_seed(0)
    d = 6
    v_t, v_s = torch.eye(d)[:1], torch.eye(d)[1:2]  # the target's direction e₀, the surrogate's e₁
    mu_s, mu_t = torch.randn(1, d, generator=generator), torch.randn(1, d, generator=generator)
    parts = {"mu_s": mu_s, "mu_t": mu_t, "mu_g": torch.zeros(1, d), "update": (v_s @ (torch.eye(d) - v_t.T @ v_t)).T[None],
             "degen": v_s.T[None], "gate": torch.eye(d)[:, :1][None], "slope": torch.tensor([1e3])}  # fmt: skip
    x = torch.tensor([[[3.0, 1, 0, 0, 0, 0], [0.0, 0, 0, 0, 0, 1]]])  # along the gate's direction, and across it
    out = GatedModule({**parts, "center": torch.tensor([0.5])}, eta=1.0)(x)
    expected = mu_s + ((x[0, 0] - mu_t) @ v_s.T) * v_s  # μ_s + V_sᵀ V_s (I − V_tᵀ V_t)(x − μ_t); V_s ⟂ V_t here
    assert torch.allclose(out[0, 0], expected[0], atol=1e-5)
    assert torch.allclose(out[0, 1], x[0, 1])  # its score is 0 < b: the gate is shut


def test_the_gates_open_on_the_concept_only_act_in_their_window_and_come_off(pipe):
    weights = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = erase(pipe, EraseSpec(("square",), preserve=KEPT), "gloce", progress=False, **WORLD)
    assert edit.weights == {} and edit.card["gloce"]["active_below"] == 1000
    layers = layer_tensors(edit.adapters)
    run = RunContext(pipe, progress=False)
    tap, den = FeatureTap(run, make_config(get_method("gloce"), WORLD)), denoising(run)

    def opening(prompt: str) -> float:
        seen = []
        tap.sample(den, prompt, lambda name, x: seen.append(float(GatedModule(layers[name], 1.0).openings(x).mean())))
        return sum(seen) / len(seen)

    assert opening("a photo of a square") > 0.5 > 0.05 > opening("a photo of a circle")
    prompts = ["a photo of a square", "a photo of a circle"]
    plain = pipeline_images(pipe, [1, 2], 4, 7.5, prompt=prompts).astype(int)
    with edit.applied(pipe) as erased:
        changed = pipeline_images(erased, [1, 2], 4, 7.5, prompt=prompts).astype(int)
    assert np.abs(changed[0] - plain[0]).mean() > 5 * max(np.abs(changed[1] - plain[1]).mean(), 0.1)
    shut = Edit({}, {**edit.card, "gloce": {**edit.card["gloce"], "active_below": -1.0}}, edit.adapters)
    with shut.applied(pipe) as erased:  # below every timestep: the window never opens
        assert np.abs(pipeline_images(erased, [1, 2], 4, 7.5, prompt=prompts).astype(int) - plain).max() == 0
    assert not any(m._forward_hooks for m in pipe.unet.modules()) and not pipe.unet._forward_pre_hooks
    assert all(torch.equal(p, weights[n]) for n, p in pipe.unet.named_parameters())


def test_on_sdxl_the_modules_sit_after_every_cross_attention_in_half_precision():
    from device_guard import DeviceGuard

    model = reference_configs.random_sdxl_pipeline(dtype=torch.float16)
    quick = {"n_generation": 1, "st_timestep": 0, "end_timestep": 2, "update_rank": 2}
    with DeviceGuard() as guard:
        edit = erase(model, EraseSpec(("cat",), preserve=("dog",)), "gloce", progress=False, **quick)
        with edit.applied(model) as erased:
            images = pipeline_images(erased, [0], 2, 7.5, prompt=["a photo of a cat"])
    assert not guard.hidden and np.isfinite(images).all()
    assert {k.rpartition(".")[0] for k in edit.adapters} == {
        n for n, m in model.unet.named_modules() if n.endswith("attn2.to_out.0")
    }
    assert all(v.dtype == torch.float16 for v in edit.adapters.values())


def test_a_module_at_a_layer_the_unet_lacks_is_refused_before_any_hook_goes_on(pipe):
    real = next(name for name, _ in pipe.unet.named_modules() if name.endswith("attn2.to_out.0"))
    tensors = {f"{layer}.{part}": torch.zeros(1) for layer in (real, "down_blocks.9.gone") for part in PARTS}
    with pytest.raises(ErasekitError, match=r"sits at down_blocks\.9\.gone, which the pipeline's UNet does not have"):
        install_gates(pipe.unet, tensors, eta=1.0, active_below=1000.0)
    assert not pipe.unet._forward_pre_hooks and not any(m._forward_hooks for m in pipe.unet.modules())
