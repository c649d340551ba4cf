"""SLD, the inference-time baseline: its edit is a sampling configuration that every protocol runs
through diffusers' StableDiffusionPipelineSafe, on the pipeline's own modules."""

import numpy as np
import pytest
from diffusers import StableDiffusionPipelineSafe
from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit, load_erased
from erasekit.errors import ErasekitError
from erasekit.eval.generation import SamplerSettings, generate
from erasekit.eval.prompts import PromptRow
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.methods.sld import I2P_CONCEPT


def test_presets_are_the_papers_and_each_symbol_can_be_set():
    sld = get_method("sld")
    assert not sld.changes_weights
    medium = make_config(sld, {}).pipeline_settings(("square", "circle"))
    assert medium == {**SafetyConfig.MEDIUM, "safety_concept": "square, circle"}
    strong = make_config(sld, {"preset": "strong", "lam": "0.5", "safety_concept": "i2p"}).pipeline_settings(("x",))
    assert strong == {**SafetyConfig.STRONG, "sld_threshold": 0.5, "safety_concept": I2P_CONCEPT}
    for bad in ({"preset": "extreme"}, {"beta_m": 1.0}, {"s_S": -1}):
        with pytest.raises(ErasekitError):
            make_config(sld, bad)


def test_the_edit_is_a_configuration_that_samples_through_the_safe_pipeline(pipe, tmp_path):
    edit = erase(pipe, EraseSpec(("square",)), "sld", progress=False, delta=0)  # guided from the first of 6 steps
    assert edit.weights == {} and edit.inference["sld"]["safety_concept"] == "square"
    with pytest.raises(ErasekitError, match="no anchors and no preserve set"):
        erase(pipe, EraseSpec(("square",), preserve=("circle",)), "sld", progress=False)
    edit.save(tmp_path / "sld")
    assert Edit.load(tmp_path / "sld").inference == edit.inference
    rows = [PromptRow("a photo of a square", 3, "erase", {"shape": "square"}, samples=2)]
    fast = SamplerSettings(steps=6)
    plain = generate(pipe, rows, fast, progress=False)
    with edit.applied(pipe) as guided:
        assert isinstance(guided, StableDiffusionPipelineSafe) and guided.unet is pipe.unet
        steered = generate(guided, rows, fast, progress=False)
    off = erase(pipe, EraseSpec(("square",)), "sld", progress=False, s_S=0)  # no safety guidance: the plain images
    with off.applied(pipe) as unguided:
        same = generate(unguided, rows, fast, progress=False)
    assert np.abs(same.images.astype(int) - plain.images.astype(int)).max() <= 1
    assert np.abs(steered.images.astype(int) - plain.images.astype(int)).mean() > 5
    assert isinstance(load_erased(tmp_path / "sld"), StableDiffusionPipelineSafe)  # the embedded model by default


def test_a_pipeline_that_cannot_host_it_is_one_line():
    from types import SimpleNamespace

    from erasekit.edits import Edit
    from erasekit.edits.guidance import SAFE_LATENT_DIFFUSION

    sld = Edit({}, {"inference": {"sld": {}}})
    assert sld.kind is SAFE_LATENT_DIFFUSION
    from erasekit.models.reference_configs import random_sd3_pipeline

    with pytest.raises(ErasekitError, match=r"runs on SD 1\.x/2\.x, SDXL and FLUX pipelines, not StableDiffusion3Pipeline"):
        sld.kind.put_on(sld, random_sd3_pipeline())
    with pytest.raises(
        ErasekitError,
        match="unknown inference-time guidance negative-prompt; this erasekit knows 'adavd' and 'safree' and 'sld' and 'spm'",
    ):
        Edit({}, {"inference": {"negative-prompt": {}}}).apply(SimpleNamespace())
