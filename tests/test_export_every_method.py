"""Every method's edit leaves erasekit as the erased model, through every way out: `erasekit export`
in each format, and `erase --lora / --save-pipeline / --save-single-file`, which call the same code.

Each export is loaded the way its users load it (plain diffusers: ``from_pretrained``,
``load_lora_weights``; the single file through erasekit's loader, which the embedded model's BERT
text encoder needs) and must hold the edit's weights (not the base model's) and draw the merged
edit's images. What a format cannot carry is refused in one line, and nothing is written."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from quick_settings import ALGORITHMS, QUICK, spec_for

from erasekit.edits import Edit, pipeline_parameters
from erasekit.errors import ErasekitError
from erasekit.exports import FORMATS, export_edit, merge_weights
from erasekit.methods import METHODS
from erasekit.methods.runner import erase
from erasekit.models.loading import load_pipeline

# Training methods at a large learning rate, so that three steps move the weights far past the tolerances below.
LOUD = {"lr": 1e-2}
LOUD_SECOND_STAGE = {"reo_lr": 1e-2}  # STEREO's edit is its second stage, at its own rate
UNAVERAGED = {"ema_decay": 0.0}  # SDD hands back the trained model itself, not a slow average of it
# What each format refuses, by method: Receler's erasers, SLD's guidance, AdaVD's decomposition, GLoCE's gates and SAFREE's projection are no weights; a LoRA holds
# no text-encoder change (AdvUnlearn) and no bias (kohya: ESD's groups train to_out.0.bias), and no norm layer
# (FMN trains the whole UNet, as the official code does).
REFUSED = {
    "receler": {fmt: "adds eraser modules" for fmt in FORMATS},
    "sld": {fmt: "changes no weights" for fmt in FORMATS},
    "adavd": {fmt: "changes no weights" for fmt in FORMATS},
    "safree": {fmt: "changes no weights" for fmt in FORMATS},
    "gloce": {fmt: "adds gated modules" for fmt in FORMATS},
    "advunlearn": {"kohya": "text encoder", "diffusers-lora": "text encoder", "single-file": "holds only a CLIP one"},
    "esd-u": {"kohya": "biases"},
    "race": {"kohya": "biases"},
    "sdd": {"kohya": "biases"},  # every attn2 parameter, to_out.0.bias among them
    "fmn": {fmt: "a LoRA cannot carry this edit" for fmt in ("kohya", "diffusers-lora")},  # the whole UNet, norms too
    "salun": {fmt: "a LoRA cannot carry this edit" for fmt in ("kohya", "diffusers-lora")},  # its mask reaches norms too
    "ant": {fmt: "a LoRA cannot carry this edit" for fmt in ("kohya", "diffusers-lora")},  # the whole UNet, as SalUn
    "stereo": {"kohya": "biases"},  # ESD-u's group
}
FILE = {"kohya": "k.safetensors", "single-file": "s.safetensors", "diffusers-lora": "lora", "pipeline": "pipe"}


def draw(pipe):
    generator = torch.Generator("cpu").manual_seed(0)
    return pipe("a photo of a square", num_inference_steps=3, generator=generator, output_type="np").images


@pytest.fixture(scope="module")
def edit_dirs(embedded_dir, tmp_path_factory):
    pipe = load_pipeline(embedded_dir, progress=False)  # its own: the exports load the committed model to check the base
    made = {}

    def make(method):
        if method not in made:
            fields = METHODS[method].config.__dataclass_fields__
            settings = {**QUICK[method], **{k: v for k, v in {**LOUD, **LOUD_SECOND_STAGE, **UNAVERAGED}.items() if k in fields}}
            spec = spec_for(method)
            made[method] = erase(pipe, spec, method, progress=False, **settings).save(tmp_path_factory.mktemp(method) / "edit")
        return made[method]

    return make


def loaded(fmt, out, embedded_dir):
    from diffusers import StableDiffusionPipeline

    if fmt == "single-file":
        return load_pipeline(out, config=embedded_dir, progress=False)
    if fmt == "pipeline":
        return StableDiffusionPipeline.from_pretrained(out)
    pipe = StableDiffusionPipeline.from_pretrained(embedded_dir)
    pipe.load_lora_weights(str(out))
    return pipe


@pytest.mark.parametrize("method", ALGORITHMS)
def test_every_export_holds_and_draws_the_erased_model_or_is_refused_in_one_line(method, edit_dirs, embedded_dir, tmp_path):
    edit_dir = edit_dirs(method)
    edit = Edit.load(edit_dir)
    base = load_pipeline(embedded_dir, progress=False)
    original = {n: p.detach().clone() for n, p in pipeline_parameters(base).items()}
    reference = merge_weights(edit, base)  # the weights an export carries: SPM's merged, transport off
    moved = max((edit.weights[n].float() - original[n].float()).abs().max().item() for n in edit.weights) if edit.weights else 0
    for fmt in FORMATS:
        out = tmp_path / FILE[fmt]
        refusal = REFUSED.get(method, {}).get(fmt)
        if refusal:
            with pytest.raises(ErasekitError, match=refusal) as error:
                export_edit(edit_dir, fmt, out)
            assert "\n" not in str(error.value) and not out.exists(), fmt
            continue
        done = export_edit(edit_dir, fmt, out)
        assert moved > 1e-3, f"{method}'s test edit barely moves the weights ({moved}): it could not tell erased from base"
        exported = loaded(fmt, out, embedded_dir)
        if fmt in ("single-file", "pipeline"):  # the weights themselves
            params = pipeline_parameters(exported)
            for name, value in edit.weights.items():
                gap = (params[name].float() - value.float()).abs().max().item()
                assert gap < 1e-5 * max(1.0, value.abs().max().item()), (fmt, name, gap)
        else:  # a LoRA stays beside the weights (peft's layers): its factors reproduce the edit
            assert done.relative_error < 1e-4, (fmt, done.relative_error)
        assert np.abs(draw(exported) - draw(reference)).max() < 2e-3, fmt


def test_erase_output_flags_write_the_merged_edit_of_an_inference_time_method(embedded_dir, tmp_path):
    """SPM's edit samples through per-prompt transport; its single file and pipeline are its merged
    weights (the erase command once wrote the base model's weights under the erased name)."""
    settings = [f"--set={k}={v}" for k, v in {**QUICK["spm"], **LOUD}.items()]
    command = [sys.executable, "-m", "erasekit", "erase", "square", "--method", "spm", *settings, "--lora",
               "--save-single-file", "spm.safetensors", "--save-pipeline", "pipe", "--out", "spm"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "does not travel in a single-file export" in done.stderr  # the user is told transport is left behind
    edit = Edit.load(tmp_path / "spm")
    base = load_pipeline(embedded_dir, progress=False)
    original = {n: p.detach().clone() for n, p in pipeline_parameters(base).items()}
    reference = draw(merge_weights(edit, base))
    for fmt, out in (("single-file", "spm.safetensors"), ("pipeline", "pipe")):
        params = pipeline_parameters(loaded(fmt, tmp_path / out, embedded_dir))
        for name, value in edit.weights.items():
            assert (params[name] - value).abs().max() < 1e-5, (fmt, name)
        assert max((params[n] - original[n]).abs().max().item() for n in edit.weights) > 1e-3, fmt  # not the base model
    assert np.abs(draw(loaded("diffusers-lora", tmp_path / "spm", embedded_dir)) - reference).max() < 2e-3
    for written in ("spm.safetensors", "pipe/unet/diffusion_pytorch_model.safetensors", "spm/edit.safetensors"):
        assert (tmp_path / written).stat().st_mode & 0o777 == 0o666 & ~current_umask(), written


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
