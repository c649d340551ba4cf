"""Every method on every family beyond SD, through every way out (test_export_every_method is SD's):
each format the family and the edit can carry is loaded as its users load it (plain diffusers:
``load_lora_weights``, the family's pipeline ``from_pretrained``) and draws the erased model's image,
not the base model's; every other format is refused in one line and writes nothing.

On the random layouts (tests/test_family_layouts.py's quick settings, training at a loud rate so that
two steps move the image) a LoRA reproduces the edit to float32 SVD precision and the pipeline holds
the edit's weights."""

import pytest
import torch
from test_family_layouts import LAYOUTS, PAIRS, QUICK, SPEC, SPECS

from erasekit.edits import Edit, pipeline_parameters
from erasekit.errors import ErasekitError
from erasekit.exports import FORMATS, export_loaded, merge_weights
from erasekit.methods import METHODS
from erasekit.methods.runner import erase
from erasekit.models import reference_configs
from erasekit.primitives.diffusion import pipeline_images

LOUD = {"lr": 1e-2, "reo_lr": 1e-2, "ema_decay": 0.0}  # as in test_export_every_method
NO_WEIGHTS = "changes no weights"
# what the family cannot write whatever the method: a single file is SD's checkpoint layout; kohya's SD3 keys
# follow SD3's original checkpoint, not diffusers' names
SINGLE_FILE = {"single-file": "a single-file export holds an SD 1.x/2.x checkpoint"}
BY_FAMILY = {"sdxl": SINGLE_FILE, "flux": SINGLE_FILE, "sd3": {**SINGLE_FILE, "kohya": "a kohya LoRA of an SD3 model"}}
LORAS = ("kohya", "diffusers-lora")
# what the edit cannot be, by method, on every family: no weights (steering, gates, erasers), biases in kohya,
# a whole-model change (norms) in a LoRA
BY_METHOD = {
    "sld": dict.fromkeys(FORMATS, NO_WEIGHTS),
    "adavd": dict.fromkeys(FORMATS, NO_WEIGHTS),
    "receler": dict.fromkeys(FORMATS, "adds eraser modules"),
    "gloce": dict.fromkeys(FORMATS, "adds gated modules"),
    "fmn": dict.fromkeys(LORAS, "a LoRA cannot carry this edit"),
    "salun": dict.fromkeys(LORAS, "a LoRA cannot carry this edit"),
    "ant": dict.fromkeys(LORAS, "a LoRA cannot carry this edit"),
}
# the groups that train biases (kohya has no bias deltas): esd_sdxl.py's cross-attention takes every attn2
# parameter, to_out.0.bias among them; esd_flux.py's attention layers keep their biases
BIASED = {
    "sdxl": {"esd-x", "esd-u", "esd-all", "race", "sdd", "stereo", "advunlearn"},
    "flux": {"esd-x", "esd-x-strict", "race", "advunlearn", "ac", "doco"},
    "sd3": set(),  # no kohya export at all
}
# SPM adapts every Linear of FLUX's blocks, the feed-forwards too, which kohya's FLUX names cannot carry
BY_METHOD_ON = {("flux", "spm"): {"kohya": "a kohya FLUX LoRA cannot name"}}
GUIDANCE = {"sdxl": 5.0, "sd3": 4.0, "flux": 4.0}


def refusal(family: str, method: str, fmt: str) -> str | None:
    biases = "biases" if fmt == "kohya" and method in BIASED[family] else None
    return (
        BY_METHOD.get(method, {}).get(fmt)
        or BY_METHOD_ON.get((family, method), {}).get(fmt)
        or BY_FAMILY[family].get(fmt)
        or biases
    )  # the edit's kind is asked first


def draw(pipe, family: str) -> torch.Tensor:
    """The denoised latents of one seeded prompt: the random layouts' VAEs flatten an edit's change into a
    pixel or two of uint8."""
    return pipeline_images(pipe, [1], 3, GUIDANCE[family], "latent", prompt=["a photo of a cat"], height=64, width=64)


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item()


@pytest.mark.parametrize("family, method", PAIRS)
def test_every_export_beyond_sd_draws_the_erased_model_or_is_refused_in_one_line(family, method, tmp_path):
    layout = getattr(reference_configs, LAYOUTS[family])
    pipe = layout()
    fields = METHODS[method].config.__dataclass_fields__
    settings = {**QUICK[method], **{k: v for k, v in LOUD.items() if k in fields}}
    edit = Edit.load(erase(pipe, SPECS.get(method, SPEC), method, progress=False, **settings).save(tmp_path / "edit"))
    base = draw(pipe, family)
    expected = draw(merge_weights(edit, layout()), family)  # what a weight export carries (SPM: transport off)
    for fmt in FORMATS:
        out = tmp_path / {"kohya": "k.safetensors", "single-file": "s.safetensors"}.get(fmt, fmt)
        why = refusal(family, method, fmt)
        if why:  # refused before anything is merged into the pipeline
            with pytest.raises(ErasekitError, match=why) as error:
                export_loaded(edit, pipe, fmt, out)
            assert "\n" not in str(error.value) and not out.exists(), fmt
            continue
        # the test can tell the erased model from the base only where the edit moves the image
        moved = gap(base, expected) / base.abs().mean().item()
        assert moved > 1e-4, f"{method} on {family}: the edit barely moves the latents ({moved:.1e})"
        if fmt == "pipeline":  # written from a base of its own: the whole-model export merges into it
            export_loaded(edit, layout(), fmt, out)
            loaded = type(pipe).from_pretrained(out)
            params = pipeline_parameters(loaded)
            for name, value in edit.weights.items():
                assert torch.equal(params[name], value), (fmt, name)
            drawn = draw(loaded, family)
        else:  # the LoRA stays beside the base's weights in peft's layers: its factors reproduce the edit
            done = export_loaded(edit, pipe, fmt, out)
            assert done.relative_error < 1e-4, (fmt, done.relative_error)
            pipe.load_lora_weights(str(out))
            try:
                drawn = draw(pipe, family)
            finally:
                pipe.unload_lora_weights()
        assert gap(drawn, expected) < 0.01 * gap(base, expected), fmt
