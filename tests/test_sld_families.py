"""SLD beyond SD 1.x/2.x: the safety term on SDXL's UNet and an undistilled FLUX transformer, through a
wrapped denoiser (``edits.guidance.SafetyGuidedDenoiser``). On SD the wrapper draws what diffusers'
StableDiffusionPipelineSafe draws; on every family, with the safety scales at zero it draws the plain
images, and with them on it steers. A distilled FLUX.1-dev is refused in one line."""

import numpy as np
import pytest
from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

from erasekit.concepts import EraseSpec
from erasekit.edits.guidance import safe_latent_diffusion, safety_guided_pipeline
from erasekit.errors import ErasekitError
from erasekit.methods.runner import erase
from erasekit.models import reference_configs
from erasekit.primitives.diffusion import pipeline_images


def _images(pipe, steps=6):
    return pipeline_images(pipe, [3, 4], steps, 7.5, prompt=["a photo of a square"] * 2).astype(int)


def test_the_wrapped_denoiser_draws_what_diffusers_safe_pipeline_draws(pipe):
    # diffusers encodes the safety concept without the attention mask the world's BERT takes (CLIP takes
    # none); the wrapper encodes it as the pipeline encodes prompts. Without the mask both agree.
    masked = pipe.text_encoder.config.use_attention_mask
    pipe.text_encoder.config.use_attention_mask = False
    try:
        for warm_up in (0, 2):
            settings = {**SafetyConfig.STRONG, "sld_warmup_steps": warm_up, "safety_concept": "square"}
            reference = _images(safe_latent_diffusion(pipe, settings))
            guided = safety_guided_pipeline(pipe, settings)
            try:
                wrapped = _images(guided)
            finally:
                guided.safety_guidance.remove()  # its hook is on the shared pipeline's UNet
            assert np.abs(wrapped - reference).max() <= 1
            assert np.abs(reference - _images(pipe)).mean() > 2  # and the term does steer at these settings
    finally:
        pipe.text_encoder.config.use_attention_mask = masked


@pytest.fixture(scope="module")
def tiny_flux():
    from erasekit.models.loading import load_pipeline

    return load_pipeline("erasekit-tiny-flux")


@pytest.mark.parametrize("name", ["sdxl", "tiny-flux"])
def test_sld_on_sdxl_and_flux_steers_and_with_no_safety_scale_draws_the_plain_images(name, tiny_flux):
    model = tiny_flux if name == "tiny-flux" else reference_configs.random_sdxl_pipeline()
    plain = _images(model)
    spec = EraseSpec(("square",))
    off = erase(model, spec, "sld", progress=False, s_S=0, s_m=0)
    with off.applied(model) as unguided:
        assert unguided.safety_guidance is not None and type(unguided).__mro__[1] is type(model)
        assert np.abs(_images(unguided) - plain).max() <= 1
    on = erase(model, spec, "sld", progress=False, preset="max", delta=0)
    with on.applied(model) as guided:
        assert np.abs(_images(guided) - plain).mean() > 1
    denoiser = model.transformer if name == "tiny-flux" else model.unet
    assert not denoiser._forward_hooks and np.abs(_images(model) - plain).max() == 0  # the base pipeline is as it was


def test_sld_on_a_distilled_flux_and_on_sd3_is_one_line():
    flux_dev = reference_configs.random_flux_pipeline()  # FLUX.1-dev's layout: a guidance embedding
    with pytest.raises(ErasekitError, match="distilled"):
        erase(flux_dev, EraseSpec(("cat",)), "sld", progress=False)
    with pytest.raises(ErasekitError, match="sld does not run on SD3"):
        erase(reference_configs.random_sd3_pipeline(), EraseSpec(("cat",)), "sld", progress=False)


@pytest.mark.parametrize("name", ["sdxl", "tiny-flux"])
def test_sld_sampling_creates_no_tensor_without_a_device(name, tiny_flux):
    from device_guard import DeviceGuard

    model = tiny_flux if name == "tiny-flux" else reference_configs.random_sdxl_pipeline()
    edit = erase(model, EraseSpec(("square",)), "sld", progress=False, delta=0)
    with edit.applied(model) as guided, DeviceGuard() as guard:
        _images(guided, steps=2)
    assert not guard.hidden, f"SLD sampling on {name} creates tensors on the default device at {sorted(guard.hidden)}"
