"""`erasekit export`: a kohya LoRA that diffusers' own kohya loader reads back into the same erased
model, the diffusers LoRA and the single file under the same command, and refusals in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit, base_hash
from erasekit.errors import ErasekitError
from erasekit.exports import export_edit
from erasekit.io import UMASK
from erasekit.methods.runner import erase

TEMPLATES = ("{}", "a photo of a {}", "a picture of a {}")


def run_cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def uce_edit(pipe, tmp_path_factory):
    spec = EraseSpec(("square",), preserve=("circle", "heart"))
    edit = erase(pipe, spec, "uce", progress=False, templates=TEMPLATES, token_span="full", preserve_scale=1.0)
    return edit.save(tmp_path_factory.mktemp("uce") / "edit")


def draw(pipe, prompt="a photo of a square"):
    generator = torch.Generator("cpu").manual_seed(0)
    return pipe(prompt, num_inference_steps=10, generator=generator, output_type="np").images


def test_a_kohya_export_loads_with_diffusers_kohya_loader_and_draws_the_erased_model(uce_edit, embedded_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from erasekit.edits import load_erased

    out = tmp_path / "square.safetensors"
    result = run_cli("export", uce_edit, "--format", "kohya", "--out", out, cwd=tmp_path)
    assert result.returncode == 0 and "kohya: rank ≤" in result.stdout, result.stderr
    with safe_open(str(out), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
        name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
        assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
        assert float(f.get_tensor(f"{name}.alpha")) == f.get_tensor(f"{name}.lora_down.weight").shape[0]  # scale 1
    assert all(k.startswith("lora_unet_") for k in keys)
    assert metadata["ss_network_module"] == "networks.lora"
    assert json.loads(metadata["erasekit_card"])["targets"] == ["square"]

    kohya = StableDiffusionPipeline.from_pretrained(embedded_dir)
    kohya.load_lora_weights(str(out))  # diffusers recognises the kohya names and converts them
    reference, original = draw(load_erased(uce_edit)), draw(StableDiffusionPipeline.from_pretrained(embedded_dir))
    assert np.abs(draw(kohya) - reference).max() < 1e-2
    assert np.abs(original - reference).max() > 0.1  # the erasure shows in the picture


def test_the_diffusers_lora_and_single_file_exports_draw_the_erased_model(uce_edit, embedded_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from erasekit.edits import load_erased
    from erasekit.models.loading import load_pipeline

    reference = draw(load_erased(uce_edit))
    lora = export_edit(uce_edit, "diffusers-lora", tmp_path / "lora", dtype="fp16")
    assert lora.max_rank is not None and lora.relative_error < 1e-4
    with_lora = StableDiffusionPipeline.from_pretrained(embedded_dir)
    with_lora.load_lora_weights(tmp_path / "lora")
    assert np.abs(draw(with_lora) - reference).max() < 2e-2  # factors stored in fp16
    single = export_edit(uce_edit, "single-file", tmp_path / "square.safetensors")
    assert np.abs(draw(load_pipeline(single.path, config=embedded_dir)) - reference).max() < 1e-5


def rewritten(edit_dir, pipe, tmp_path, change):
    """The edit with ``change`` (parameter name → added value) on top, its base hash renewed."""
    edit = Edit.load(edit_dir)
    params = dict(pipe.unet.named_parameters())
    for name, delta in change.items():
        edit.weights[name] = params[name].detach() + delta
    edit.card["base_hash"] = base_hash(pipe, list(edit.weights))
    return edit.save(tmp_path / "changed")


def test_a_bias_change_is_refused_for_kohya_but_travels_in_a_diffusers_lora(uce_edit, pipe, tmp_path):
    bias = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.bias"
    edit_dir = rewritten(uce_edit, pipe, tmp_path, {bias: torch.full_like(dict(pipe.unet.named_parameters())[bias], 0.01)})
    with pytest.raises(ErasekitError, match=r"changes biases \(.*to_out\.0\.bias\), which a kohya LoRA cannot carry"):
        export_edit(edit_dir, "kohya", tmp_path / "k.safetensors")
    assert not (tmp_path / "k.safetensors").exists()
    assert export_edit(edit_dir, "diffusers-lora", tmp_path / "lora").path.joinpath("pytorch_lora_weights.safetensors").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "kohya", "--out", "x.ckpt"], "give --out a name ending in .safetensors"),
        (["--format", "lycoris", "--out", "x.safetensors"], "unknown export format 'lycoris'"),
        (["--format", "kohya", "--out", "x.safetensors", "--rank", "0"], "--rank must be at least 1"),
        (["--format", "kohya", "--out", "x.safetensors", "--dtype", "int8"], "unknown dtype 'int8'"),
        (["--format", "kohya", "--out", "taken.safetensors"], "exists; choose another path or pass --overwrite"),
    ],
)
def test_bad_export_input_is_one_line_and_writes_nothing(uce_edit, tmp_path, args, message):
    (tmp_path / "taken.safetensors").write_bytes(b"user data")
    result = run_cli("export", uce_edit, *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.safetensors"]
    assert (tmp_path / "taken.safetensors").read_bytes() == b"user data"


def test_norm_edits_weightless_edits_and_other_bases_are_refused(uce_edit, pipe, tmp_path):
    norm = "down_blocks.1.attentions.0.transformer_blocks.0.norm1.weight"
    edit_dir = rewritten(uce_edit, pipe, tmp_path, {norm: 0.01})
    with pytest.raises(ErasekitError, match=r"norm1\.weight is not a linear or convolution weight: a LoRA cannot carry"):
        export_edit(edit_dir, "kohya", tmp_path / "k.safetensors")

    sld = erase(pipe, EraseSpec(("square",)), "sld", progress=False).save(tmp_path / "sld")
    with pytest.raises(ErasekitError, match=r"changes no weights .* nothing to export"):
        export_edit(sld, "kohya", tmp_path / "k.safetensors")

    other = Edit.load(uce_edit)
    other.card["base_hash"] = "0" * 64
    with pytest.raises(ErasekitError, match="different base model"):
        export_edit(other.save(tmp_path / "other"), "kohya", tmp_path / "k.safetensors")
    assert not (tmp_path / "k.safetensors").exists()


def test_the_model_card_names_the_erasure_and_carries_the_measured_numbers(uce_edit, tmp_path):
    import shutil

    from erasekit.hub import model_card

    edit_dir = Path(shutil.copytree(uce_edit, tmp_path / "edit"))
    assert "Not evaluated yet" in model_card(edit_dir)
    result = run_cli("eval", "--protocol", "object", "--edit", edit_dir, "--samples", "1", "--steps", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((edit_dir / "eval-object" / "results.json").read_text())
    result = run_cli("push", edit_dir, "--card-only", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    card = (edit_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers\n") and "# erasekit-tiny with square erased" in card
    assert "| square | (the empty prompt) |" in card and "Preserved: circle, heart." in card
    assert '"token_span": "full"' in card  # the settings as the method resolved them
    erased = results["metrics"]["erased"]["accuracy"]
    assert f"| Acc_e | 100.0 | {100 * erased['Acc_e']:.1f} |" in card  # the numbers are the JSON's
    assert f"| Acc_s | 100.0 | {100 * erased['Acc_s']:.1f} |" in card
    assert "![before and after, eval-object](eval-object/before_after.png)" in card
    assert (edit_dir / "eval-object" / "before_after.png").is_file()
    with pytest.raises(ErasekitError, match=r"holds results of the edit there \(README\.md, eval-object\)"):
        Edit.load(edit_dir).save(edit_dir)  # an edit directory still (not a foreign one), whose results a new edit keeps


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--repo-id", "me/erased"], {"HF_HUB_OFFLINE": "1"}, "cannot push: HF_HUB_OFFLINE is set"),
        (["--repo-id", "me/erased"], {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_HOME": "EMPTY"}, "no Hugging Face token"),
        ([], {}, "push needs --repo-id OWNER/NAME"),
        (
            ["--repo-id", "me/erased"],
            {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_not_a_token", "HF_ENDPOINT": "http://erasekit-no-such-host.invalid"},
            "could not push to me/erased:",
        ),
    ],
)
def test_a_push_without_network_token_or_repository_is_one_line_and_uploads_nothing(uce_edit, tmp_path, args, env, message):
    env = {k: str(tmp_path / "hf") if v == "EMPTY" else v for k, v in env.items()}
    before = sorted(p.name for p in uce_edit.iterdir())
    result = run_cli("push", uce_edit, *args, cwd=tmp_path, env=env)
    assert result.returncode == 2 and message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert sorted(p.name for p in uce_edit.iterdir()) == before


def test_a_rerun_of_an_export_writes_the_same_bytes(uce_edit, tmp_path):
    """safetensors writes a file's metadata keys in a random order; the kohya file sorts them."""
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    export_edit(uce_edit, "kohya", first)
    export_edit(uce_edit, "kohya", second)
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_mode & 0o777 == 0o666 & ~UMASK  # readable by a shared WebUI user, as the umask says
    with safe_open(str(first), "pt") as f:
        assert json.loads(f.metadata()["erasekit_card"])["targets"] == ["square"]  # the file still reads


def test_a_write_cut_by_the_file_size_limit_is_one_line_and_keeps_the_earlier_file(uce_edit, tmp_path):
    """``ulimit -f`` (or a full disk) stops safetensors' own writer, whose error is not an OSError."""
    (tmp_path / "s.safetensors").write_bytes(b"the earlier file")
    command = f"ulimit -f 64; {sys.executable} -m erasekit export {uce_edit} --format single-file --out s.safetensors --overwrite"
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert (tmp_path / "s.safetensors").read_bytes() == b"the earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # no temporary, no lock left
