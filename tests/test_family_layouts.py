"""Every method on every family it runs on, on that family's layout with random weights (SDXL, SD3,
FLUX.1): no tensor created without a device (the device guard, the CPU stand-in for CUDA), and fp16 /
bf16 runs that give finite edits in the pipeline's precision and leave the pipeline as it was."""

import pytest
import torch
from device_guard import DeviceGuard
from quick_settings import one_half_precision_in_ci

from erasekit.concepts import EraseSpec
from erasekit.methods import load_methods
from erasekit.methods.runner import erase
from erasekit.models import reference_configs
from erasekit.models.families import FAMILIES

LAYOUTS = {"sdxl": "random_sdxl_pipeline", "sd3": "random_sd3_pipeline", "flux": "random_flux_pipeline"}
# the smallest run of each method that still goes through every stage
QUICK = {
    "uce": {},
    "speed": {},
    "rece": {"epochs": 2, "validate": "none"},
    "sld": {},
    "adavd": {},
    "sdd": {"iterations": 2, "sample_steps": 2},
    "gloce": {"n_generation": 1, "st_timestep": 0, "end_timestep": 2, "update_rank": 2},
    "salun": {"concept_images": 2, "preserve_images": 2, "batch_size": 2, "epochs": 1, "sample_steps": 2},
    "fmn": {"concept_images": 2, "inversion_steps": 2, "steps": 2, "sample_steps": 2},
    "realera": {"m": 2, "n": 2, "epochs": 2, "sample_steps": 2},
    "esd-x": {"iterations": 2, "sample_steps": 2},
    "esd-x-strict": {"iterations": 2, "sample_steps": 2},
    "esd-u": {"iterations": 2, "sample_steps": 2},
    "esd-all": {"iterations": 2, "sample_steps": 2},
    "race": {"iterations": 1, "esd_iterations": 1, "pgd_steps": 1, "sample_steps": 2},
    "receler": {"iterations": 2, "adversarial_steps": 1, "adversarial_tokens": 2, "rank": 4, "sample_steps": 2},
    "spm": {"iterations": 2, "sample_steps": 2, "warmup_steps": 0, "anchors_per_step": 2},
    "advunlearn": {
        "train_method": "esd-x",
        "iterations": 2,
        "warmup_iterations": 1,
        "attack_steps": 1,
        "sample_steps": 2,
        "retain_batch": 1,
    },
    "doco": {"anchor_images": 2, "steps": 3, "warm_up": 1, "sample_steps": 2, "batch_size": 2, "preserve_images": 1},
    "ac": {"anchor_images": 2, "steps": 2, "sample_steps": 2, "batch_size": 2, "preserve_images": 1},
    "mace": {"steps": 2, "images_per_concept": 2, "sample_steps": 2, "segmenter": "none"},
    "ant": {"iterations": 2, "sample_steps": 2, "before_step": 1, "mask_seeds": 1, "mask_iterations": 1},
    "stereo": {"rounds": 1, "iterations": 2, "inversion_steps": 2, "gallery_images": 1, "sample_steps": 2},
    "eraseanything": {"steps": 4, "sample_steps": 2, "concept_images": 2, "rank": 2},
}
# SLD on FLUX.1-dev's layout is refused by design (its guidance is distilled: tests/test_sld_families.py)
PAIRS = [(family, name) for family in LAYOUTS for name, method in sorted(load_methods().items())
         if family in method.families and (family, name) != ("flux", "sld")]  # fmt: skip
SPEC = EraseSpec(("cat",), ("",), ("dog", "bird"))
# SLD steers sampling (its sampling: test_sld_families), FMN re-steers the concept's attention and AdaVD
# decomposes every value (its SDXL sampling: test_adavd), ANT steers the concept's own guidance and STEREO keeps
# its anchor prompts: no preserve set
SPECS = {name: EraseSpec(("cat",)) for name in ("sld", "fmn", "adavd", "ant", "stereo")}


def test_every_method_that_runs_beyond_sd_has_a_quick_setting_here():
    assert {name for _, name in PAIRS} == set(QUICK)


@pytest.mark.parametrize("family, method", PAIRS)
def test_methods_on_other_families_create_no_tensor_without_a_device(family, method):
    pipe = getattr(reference_configs, LAYOUTS[family])()
    with DeviceGuard() as guard:
        edit = erase(pipe, SPECS.get(method, SPEC), method, progress=False, **QUICK[method])
    assert (edit.weights or edit.inference or edit.adapters) and not guard.hidden, (
        f"{method} on {family} creates tensors on the default device at {sorted(guard.hidden)}"
    )


@pytest.mark.parametrize(
    "family, method, dtype", one_half_precision_in_ci(PAIRS, [(torch.float16, "fp16"), (torch.bfloat16, "bf16")])
)
def test_methods_on_other_families_in_half_precision_give_finite_edits(family, method, dtype):
    pipe = getattr(reference_configs, LAYOUTS[family])(dtype=dtype)
    model = pipe.components[FAMILIES[family].denoiser]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    edit = erase(pipe, SPECS.get(method, SPEC), method, progress=False, **QUICK[method])
    assert edit.card["dtype"] == str(dtype).removeprefix("torch.")
    for name, value in edit.weights.items():
        assert value.dtype == dtype and torch.isfinite(value).all(), name
    assert all(p.dtype == dtype and torch.equal(p, before[name]) for name, p in model.named_parameters())
