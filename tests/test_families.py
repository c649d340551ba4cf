"""Model families: read from the pipeline or its directory; a method on a family it does not run on is
refused in one line, before the model loads where the directory says the family."""

import json
import os
import re
import subprocess
import sys

import pytest

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.jobs import erase as erase_job
from erasekit.jobs.methods import support_table
from erasekit.methods.base import load_methods, register
from erasekit.methods.runner import erase
from erasekit.models.families import FAMILIES, family_of, family_of_model

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def a_pipeline_of_class(name: str) -> object:
    """A stand-in whose class has a diffusers pipeline's name: what the family is read from."""
    return type(name, (), {})()


def flux_directory(tmp_path):
    """A directory that says it holds a FLUX pipeline, and nothing a loader could load."""
    model = tmp_path / "flux"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "transformer": ["diffusers", "x"]}))
    return model


def test_the_family_is_read_from_the_pipeline(pipe):
    assert family_of(pipe).name == "sd"
    for class_name, family in (
        ("StableDiffusionXLPipeline", "sdxl"),
        ("StableDiffusion3Pipeline", "sd3"),
        ("FluxPipeline", "flux"),
    ):
        assert family_of(a_pipeline_of_class(class_name)).name == family
    with pytest.raises(
        ErasekitError, match=re.escape("KandinskyPipeline is not a pipeline erasekit knows; it runs on SD 1.x/2.x")
    ):
        family_of(a_pipeline_of_class("KandinskyPipeline"))


def test_the_family_is_read_from_a_directory_without_loading_it(tmp_path):
    assert family_of_model(None).name == "sd"  # the embedded model
    assert family_of_model("erasekit-tiny").name == "sd"
    assert family_of_model(flux_directory(tmp_path)).name == "flux"
    assert family_of_model("stabilityai/sdxl-turbo") is None  # a hub id: told once it has loaded
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("[1, 2")
    assert family_of_model(broken) is None  # the loader says what is wrong with it


def test_a_method_on_an_unsupported_family_is_one_line_before_loading(tmp_path):
    model, out = flux_directory(tmp_path), tmp_path / "edit"
    options = erase_job.EraseOptions(EraseSpec(("square",)), out, "safree", model=str(model))
    with pytest.raises(ErasekitError, match=r"^safree does not run on FLUX models yet \(it runs on SD 1.x/2.x\)"):
        erase_job.check_erase(options)
    # the command line: the same line, exit 2, nothing written (the directory has no weights to load)
    result = subprocess.run(
        [sys.executable, "-m", "erasekit", "erase", "square", "--method", "esd-u", "--model", str(model), "--out", str(out)],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "esd-u does not run on FLUX models yet" in result.stderr
    assert not out.exists()


def test_a_setting_a_family_does_not_take_is_one_line_before_loading(tmp_path):
    """AdvUnlearn runs on FLUX with ESD's attention groups; its default (the text encoder) and ESD-u are SD's."""
    from erasekit.jobs import bench as bench_job

    model, out = flux_directory(tmp_path), tmp_path / "edit"
    for settings, line in (({}, r"^AdvUnlearn trains the text encoder on SD 1.x/2.x only: FLUX's prompt"),
                           ({"train_method": "esd-u"}, r"^ESD group 'esd-u' has no FLUX form; there choose esd-x or esd-x-strict")):  # fmt: skip
        with pytest.raises(ErasekitError, match=line):
            erase_job.check_erase(erase_job.EraseOptions(EraseSpec(("square",)), out, "advunlearn", settings, model=str(model)))
    advunlearn = load_methods()["advunlearn"]
    advunlearn.check_on(FAMILIES["flux"], advunlearn.config(train_method="esd-x"))  # the attention group runs there
    with pytest.raises(ErasekitError, match=r"^AdvUnlearn trains the text encoder on SD 1.x/2.x only: FLUX's"):
        bench_job.check_bench(bench_job.BenchOptions(methods=("advunlearn",), model="erasekit-tiny-flux", out=tmp_path / "b"))
    with pytest.raises(ErasekitError, match=r"^AdvUnlearn trains the text encoder on SD 1.x/2.x only: SDXL's"):
        erase(a_pipeline_of_class("StableDiffusionXLPipeline"), EraseSpec(("cat",)), "advunlearn", progress=False)
    assert not out.exists() and not (tmp_path / "b").exists()


def test_a_loaded_pipeline_of_an_unsupported_family_is_refused_before_the_method_runs():
    for class_name, title in (("StableDiffusionXLPipeline", "SDXL"), ("FluxPipeline", "FLUX")):
        with pytest.raises(ErasekitError, match=f"safree does not run on {title} models yet"):
            erase(a_pipeline_of_class(class_name), EraseSpec(("cat",)), "safree", progress=False)


def test_the_support_matrix_lists_every_method_on_every_family():
    rows = support_table().splitlines()
    assert rows[0] == "| method | " + " | ".join(f.title for f in FAMILIES.values()) + " |"
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[2:]] == sorted(load_methods())
    assert all(row.count("yes") == len(load_methods()[row.split(" | ")[0][2:]].families) for row in rows[2:])


def test_the_gpu_check_runs_every_method_on_every_family_it_supports():
    """scripts/gpu_check.py (the full-size layouts on a lent GPU) runs each method wherever the registry says it
    runs: its SD list holds every method, each newer family's list exactly the methods of that family."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    methods = load_methods()
    assert set(gpu_check.SMALL) == {name for name, m in methods.items() if "sd" in m.families}
    for family, runs in gpu_check.FAMILY_RUNS.items():
        assert {method for method, _ in runs.values()} == {n for n, m in methods.items() if family in m.families}, family
    assert set(gpu_check.FAMILY_RUNS) == set(FAMILIES) - {"sd"}


def test_a_method_registered_for_an_unknown_family_fails_at_once():
    with pytest.raises(ValueError, match="names unknown families"):
        register("probe", "a stand-in", object, families=("sd", "kandinsky"))(lambda run, spec, config: None)
    assert "probe" not in load_methods()


@pytest.mark.parametrize("builder, size, family", [("random_sdxl_pipeline", 64, "sdxl"), ("random_flux_pipeline", 32, "flux")])
def test_tiny_sdxl_and_flux_layouts_draw_and_every_other_method_refuses_them_in_one_line(builder, size, family):
    import torch

    from erasekit.models import reference_configs

    pipe = getattr(reference_configs, builder)()
    assert family_of(pipe).name == family
    extra = {"max_sequence_length": 16} if family == "flux" else {}
    image = pipe("a cat", num_inference_steps=2, height=size, width=size, output_type="np", **extra).images
    assert image.shape == (1, size, size, 3) and torch.isfinite(torch.from_numpy(image)).all()
    before = {name: p.clone() for name, p in pipe.components[FAMILIES[family].denoiser].named_parameters()}
    for method in [name for name, entry in load_methods().items() if family not in entry.families]:
        with pytest.raises(ErasekitError, match=f"^{method} does not run on {FAMILIES[family].title} models yet"):
            erase(pipe, EraseSpec(("cat",), preserve=("dog",)), method, progress=False)
    after = dict(pipe.components[FAMILIES[family].denoiser].named_parameters())
    assert all(torch.equal(before[name], after[name]) for name in before)  # refused before anything ran


def test_a_flux_directory_without_its_second_encoder_is_one_line_before_loading(tmp_path):
    model = tmp_path / "flux"
    model.mkdir()
    index = {"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
             "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": [None, None]}  # fmt: skip
    (model / "model_index.json").write_text(json.dumps(index))
    options = erase_job.EraseOptions(EraseSpec(("square",)), tmp_path / "edit", "uce", model=str(model))
    with pytest.raises(ErasekitError, match=r"is a FLUX pipeline without its text_encoder_2; erasekit needs the whole pipeline$"):
        erase_job.check_erase(options)
    assert not (tmp_path / "edit").exists()
