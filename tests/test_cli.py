"""The command line: one-line errors for bad input, and nothing half-written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.jobs import erase as erase_job
from erasekit.jobs import export as export_job
from erasekit.jobs import push as push_job
from erasekit.jobs import report as report_job

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def erasekit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV
    )


def write_csv(path, rows):
    path.write_text("prompt,seed,role,shape,samples\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "row, message",
    [
        (("a photo of a pentagon", "0", "erase", "pentagon", "1"), "unknown shape 'pentagon'"),
        (("", "0", "erase", "", "1"), "empty prompt"),
        (("a photo of a square", "x", "erase", "square", "1"), "not an integer"),
    ],
)
def test_bad_prompt_file_fails_in_one_line_and_writes_nothing(tmp_path, row, message):
    prompts = write_csv(tmp_path / "p.csv", [row])
    result = erasekit("generate", prompts, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "run").exists()


def test_too_long_prompt_is_refused(tmp_path):
    long = "a photo of a square " + "with a very long and winding description " * 4
    prompts = write_csv(tmp_path / "p.csv", [(long, "0", "erase", "square", "1")])
    result = erasekit("generate", prompts, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 2 and "tokens but this model's tokenizer takes at most 32" in result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_and_corrupt_models(tmp_path):
    prompts = write_csv(tmp_path / "p.csv", [("a photo of a square", "0", "erase", "square", "1")])
    result = erasekit("generate", prompts, "--out", tmp_path / "run", "--model", tmp_path / "nowhere", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = erasekit("generate", prompts, "--out", tmp_path / "run", "--model", tmp_path / "empty", cwd=tmp_path)
    assert result.returncode == 2 and "no model_index.json" in result.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model_index.json").write_text("{not json")
    result = erasekit("generate", prompts, "--out", tmp_path / "run", "--model", corrupt, cwd=tmp_path)
    assert result.returncode == 2 and "could not load a pipeline" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # 49 s; test_eval_prints_a_verdict_in_80_columns_and_writes_results runs the README's erase and eval in CI
def test_eval_demo_end_to_end(tmp_path, embedded_dir):
    """The README's main job: generate the demo prompts, score them, write grid and results."""
    result = erasekit("eval", "demo.csv", "--out", tmp_path / "demo", "--steps", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert (tmp_path / "demo" / "grid.png").stat().st_size > 10_000
    rows = results["rows"]
    assert len(rows) == 8 and all(r["samples"] == 8 for r in rows)
    # the committed model draws what it is asked for (its quality gates are far stricter)
    mean_match = sum(r["match"] for r in rows) / len(rows)
    assert mean_match >= 0.8, rows


def test_vocabulary_lists_the_world(tmp_path):
    result = erasekit("world", "vocabulary", "--json", cwd=tmp_path)
    vocab = json.loads(result.stdout)
    assert len(vocab["shapes"]) == 10 and len(vocab["characters"]) >= 46


TEMPLATES = "templates=('{}', 'a photo of a {}', 'a picture of a {}')"


@pytest.fixture(scope="module")
def square_edit(tmp_path_factory, embedded_dir):
    """The README's erasure, written with every export: edit + LoRA, whole pipeline, single file."""
    root = tmp_path_factory.mktemp("square")
    result = erasekit(
        "erase", "square", "--preserve", "circle,triangle,heart", "--set", TEMPLATES, "--set", "token_span=full",
        "--set", "preserve_scale=1", "--lora", "--save-pipeline", root / "pipeline",
        "--save-single-file", root / "square.safetensors", "--out", root / "edit", "--device", "cpu", cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root


def test_eval_prints_a_verdict_in_80_columns_and_writes_results(square_edit):
    result = erasekit("eval", "--protocol", "object", "--edit", square_edit / "edit", "--samples", "2", "--steps", "10",
                      cwd=square_edit)  # fmt: skip
    assert result.returncode == 0, result.stderr
    verdict = [line for line in result.stdout.splitlines() if line.startswith("square: erased in")]
    assert len(verdict) == 1 and "other classes kept at" in verdict[0] and "synonyms erased in" in verdict[0], result.stdout
    table = [line for line in result.stdout.splitlines() if line != verdict[0] and not line.startswith("wrote ")]
    assert max(len(line.rstrip()) for line in table) <= 80, result.stdout  # the table; paths and the verdict stay whole
    results = json.loads((square_edit / "edit" / "eval-object" / "results.json").read_text())
    assert results["judge"]["judge"] == "world" and len(results["prompts"]) == 14
    assert (square_edit / "edit" / "eval-object" / "before_after.png").stat().st_size > 5_000


def test_every_export_loads_in_plain_diffusers_and_draws_the_same_images(square_edit, embedded_dir):
    from diffusers import StableDiffusionPipeline

    from erasekit.edits import load_erased
    from erasekit.models.loading import load_pipeline

    def draw(pipe):
        generator = torch.Generator("cpu").manual_seed(0)
        return pipe("a photo of a square", num_inference_steps=10, generator=generator, output_type="np").images

    reference = draw(load_erased(square_edit / "edit"))
    saved = StableDiffusionPipeline.from_pretrained(square_edit / "pipeline")
    with_lora = StableDiffusionPipeline.from_pretrained(embedded_dir)
    with_lora.load_lora_weights(square_edit / "edit")
    single = load_pipeline(square_edit / "square.safetensors", config=embedded_dir)
    original = draw(StableDiffusionPipeline.from_pretrained(embedded_dir))
    assert np.abs(draw(saved) - reference).max() < 1e-5
    assert np.abs(draw(single) - reference).max() < 1e-5
    assert np.abs(draw(with_lora) - reference).max() < 1e-2  # the LoRA's SVD reproduces the edit to ~1e-7
    assert np.abs(original - reference).max() > 0.1  # and the edit changed the picture


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--protocol", "explicit", "--prompts", "bad.csv"], "has no 'prompt' column"),
        (["--protocol", "explicit"], "needs --prompts FILE"),
        (["--protocol", "object", "--judge", "clip"], "cannot load CLIP"),
        (["--protocol", "object", "--judge", "oracle"], "unknown judge 'oracle'"),
        (["--protocol", "object", "--dtype", "int8"], "unknown dtype 'int8'"),
    ],
)
def test_bad_eval_input_is_one_line_and_writes_nothing(square_edit, flags, message):
    (square_edit / "bad.csv").write_text("text,seed\nsomething,1\n")
    result = erasekit("eval", "--edit", square_edit / "edit", "--out", square_edit / "bad-eval", *flags, cwd=square_edit)
    assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert not (square_edit / "bad-eval").exists()


@pytest.mark.parametrize(
    "run, message",
    [
        (
            lambda tmp: erase_job.erase(erase_job.EraseOptions(EraseSpec(("square",)), tmp / "e", settings={"lam": "abc"})),
            "uce setting lam = 'abc'",
        ),
        (
            lambda tmp: erase_job.erase(erase_job.EraseOptions(EraseSpec(("square",)), tmp / "e", "sld", lora=True)),
            "sld changes no weights",
        ),
        (
            lambda tmp: erase_job.erase(
                erase_job.EraseOptions(EraseSpec(("square",)), tmp / "e", save_single_file=tmp / "m.ckpt")
            ),
            "give --out a name ending in .safetensors",
        ),
        (
            lambda tmp: export_job.export(export_job.ExportOptions(tmp / "e", tmp / "k.safetensors", rank=0)),
            "--rank must be at least 1",
        ),
        (lambda tmp: report_job.report(report_job.ReportOptions([tmp / "e"], tmp / "r.txt")), "the report is an HTML page"),
        (lambda tmp: push_job.push(push_job.PushOptions(tmp / "e")), "push needs --repo-id"),
    ],
    ids=["setting", "no-weights", "single-file-name", "rank", "report-name", "push-repo"],
)
def test_the_jobs_refuse_what_the_cli_refuses_before_anything_loads(tmp_path, monkeypatch, run, message):
    """The Python API of each command (its job) checks its options as the CLI does: one error, no model loaded, nothing written."""

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr("erasekit.models.loading.load_pipeline", must_not_load)
    with pytest.raises(ErasekitError, match=message.replace("(", r"\(")):
        run(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_every_output_is_checked_before_any_is_claimed(tmp_path):
    """One refused output of a job leaves the others untouched: no lock, no directory, nothing cleared."""
    from erasekit.io import claim_outputs

    (tmp_path / "thesis.txt").write_text("keep me")
    leftover = tmp_path / ".edit.abcd1234.tmp"
    leftover.write_text("what a killed run left")
    with (
        pytest.raises(ErasekitError, match=r"thesis\.txt exists"),
        claim_outputs([(tmp_path / "edit", "edit"), (tmp_path / "thesis.txt", None)]),
    ):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".edit.abcd1234.tmp", "thesis.txt"]
    with claim_outputs([(tmp_path / "edit", "edit"), (None, "pipeline")]):  # an output not asked for is None
        assert (tmp_path / ".edit.lock").exists() and not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]
