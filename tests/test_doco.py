"""DoCo: the concept-preserving gradient, the discriminator, collapse detection and a clean restore."""

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.doco import PatchDiscriminator, preserving_gradient
from erasekit.methods.runner import erase

QUICK = {"steps": 6, "warm_up": 2, "anchor_images": 4, "preserve_images": 2, "sample_steps": 3, "batch_size": 2, "lr": 1e-3}


def test_conflicting_gradients_lose_their_component_along_the_retaining_one():
    g_r = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([[0.0, 2.0]])]
    g_u = [torch.tensor([-3.0, 1.0, 0.0]), torch.tensor([[5.0, 1.0]])]  # the first conflicts, the second agrees
    adjusted = preserving_gradient(g_u, g_r, lam=1.0)
    assert torch.allclose(adjusted[0], torch.tensor([0.0, 1.0, 0.0]))  # projected onto g_r's orthogonal complement
    assert float(adjusted[0] @ g_r[0]) == 0.0
    assert torch.equal(adjusted[1], g_u[1])  # no conflict, no change
    half = preserving_gradient(g_u, g_r, lam=0.5)[0]
    assert torch.allclose(half, torch.tensor([-1.5, 1.0, 0.0]))


@pytest.mark.parametrize("size, blocks", [(16, 3), (64, 4)])
def test_the_discriminator_fits_the_latent_size(size, blocks):
    d = PatchDiscriminator(4, size)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in d.modules()) == blocks
    out = d(torch.randn(2, 4, size, size))
    assert out.shape[0] == 2 and out.shape[1] == 1 and out.shape[-1] >= 1


@pytest.mark.parametrize("surgery", [True, False])
def test_doco_trains_its_group_and_leaves_the_pipeline_as_it_was(pipe, surgery):
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    spec = EraseSpec(("square",), preserve=("circle",))
    edit = erase(pipe, spec, "doco", progress=False, gradient_surgery=surgery, **QUICK)
    assert len(edit.weights) == 14 and any(not torch.equal(v, before[n]) for n, v in edit.weights.items())
    assert len(edit.card["loss_curve"]["mean_loss"]) == QUICK["steps"] - QUICK["warm_up"]
    assert len(edit.card["discriminator"]["loss_curve"]["mean_loss"]) == QUICK["steps"]
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())
    again = erase(pipe, spec, "doco", progress=False, gradient_surgery=surgery, **QUICK)
    assert all(torch.equal(edit.weights[n], again.weights[n]) for n in edit.weights)  # seeded, D included


def test_a_collapsed_discriminator_stops_the_run_and_restores_the_model(pipe):
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    with pytest.raises(ErasekitError, match="discriminator collapsed at step 4: its loss stayed below 100"):
        erase(pipe, EraseSpec(("square",)), "doco", progress=False, collapse_loss=100, collapse_window=2, **QUICK)
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())


def test_doco_config_defaults_and_errors():
    doco = get_method("doco")
    config = make_config(doco, {})
    assert (config.steps, config.warm_up, config.lr, config.dlr, config.lam, config.batch_size, config.parameter_group) == (
        2000, 1000, 4.8e-5, 1e-4, 1.0, 8, "cross-attn")  # fmt: skip
    with pytest.raises(ErasekitError, match="warm_up \\(10\\) must leave steps"):
        make_config(doco, {"steps": 10, "warm_up": 10})
    with pytest.raises(ErasekitError, match="parameter_group must be one of"):
        make_config(doco, {"parameter_group": "embedding"})
    with pytest.raises(ErasekitError, match="is the target itself"):
        EraseSpec(("square",), ("Square",))  # an anchor equal to the target, for AC and DoCo alike


@pytest.mark.parametrize("family", ["sd", "sd-v", "sdxl", "sd3", "flux"])
def test_predicted_x0_of_the_exact_target_is_the_clean_latent_on_every_family(family, pipe):
    """DoCo's discriminator reads x̂₀: from the noising's own target it must give x₀ back (ε on SD's DDPM form,
    v on a v-prediction UNet, ε on SDXL's Euler form x₀ + σε, the velocity on SD3 and FLUX), laid out as images."""
    import copy

    from erasekit.models import reference_configs
    from erasekit.primitives.denoising import denoising
    from erasekit.primitives.run import RunContext

    if family in ("sd", "sd-v"):
        model = copy.copy(pipe)
        if family == "sd-v":
            model.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
    else:
        model = getattr(reference_configs, f"random_{family}_pipeline")()
    den = denoising(RunContext(model, progress=False))
    generator = torch.Generator().manual_seed(0)
    packed = den.start_noise(0).shape[1:]  # one image's latents as the denoiser reads them (FLUX: packed)
    clean = torch.randn(3, *packed, generator=generator)
    noise = torch.randn(3, *packed, generator=generator)
    t = den.timesteps(3, generator)
    x_t = den.noised(clean, noise, t)
    recovered = den.predicted_x0(x_t, t, den.noise_target(clean, noise, t))
    torch.testing.assert_close(recovered, clean.float(), atol=2e-3, rtol=2e-3)
    channels, side = den.latent_layout()
    assert den.image_latents(recovered).shape == (3, channels, side, side)
