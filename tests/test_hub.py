"""The hub page and push: a card whose header is huggingface_hub's own, whose body no concept name can
break, that never replaces a README.md the user wrote; a push that follows no symbolic link; damaged
card.json / results.json as one line naming the file; the kohya file's model-spec metadata."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

import erasekit.hub as hub
from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.lora import LoraExport
from erasekit.errors import ErasekitError
from erasekit.exports import kohya_metadata
from erasekit.methods.runner import erase
from erasekit.models.provenance import md

HOSTILE = ["<script>alert(1)</script>", "a|b", "two\n# lines", "[x](javascript:alert(1))"]


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def made(pipe, tmp_path_factory):
    """A UCE edit of "square" on the embedded model, made from Python (its card's model is null)."""
    edit = erase(pipe, EraseSpec(("square",), preserve=("circle",)), "uce", progress=False)
    return edit.save(tmp_path_factory.mktemp("hub") / "edit")


@pytest.fixture
def edit_dir(made, tmp_path):
    return Path(shutil.copytree(made, tmp_path / "edit"))


def set_card(edit_dir, **changes):
    card = json.loads((edit_dir / "card.json").read_text())
    (edit_dir / "card.json").write_text(json.dumps({**card, **changes}))


def put_results(edit_dir, folder, results, grid=False):
    (edit_dir / folder).mkdir()
    (edit_dir / folder / "results.json").write_text(json.dumps(results))
    if grid:
        (edit_dir / folder / "before_after.png").write_bytes(b"png")


def object_results(**extra):
    accuracy = {"original": {"Acc_e": 1.0, "Acc_s": 0.9}, "erased": {"Acc_e": 0.0, "Acc_s": 0.85}}
    return {"protocol": "object", "judge": {"judge": "world"}, "samples_per_prompt": 2, "world_fid_kept": 0.5,
            "metrics": {k: {"accuracy": v} for k, v in accuracy.items()}, **extra}  # fmt: skip


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("\n---\n", 1)[0].removeprefix("---\n"))


def rendered(card: str):
    """The body's tokens as a Markdown renderer (CommonMark with GFM tables, raw HTML on) sees them."""
    markdown_it = pytest.importorskip("markdown_it")
    body = card.split("\n---\n", 1)[1]
    parser = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    return parser.parse(body), parser.render(body)


def text_of(inline) -> str:
    return "".join(t.content for t in inline.children if t.type in ("text", "code_inline"))


# --- 1: the header is the hub's, the body says what the numbers mean -----------------------------------------


def test_the_card_header_is_huggingface_hubs_with_license_pipeline_and_base_model(edit_dir, tmp_path):
    put_results(edit_dir, "eval-object", object_results())
    card = hub.model_card(edit_dir)
    meta = header(card)
    assert meta == {
        "library_name": "diffusers",
        "license": "apache-2.0",  # erasekit-tiny's: erasekit's own
        "pipeline_tag": "text-to-image",
        "tags": ["erasekit", "concept-erasure", "uce", "stable-diffusion", "text-to-image"],
    }  # no base_model: the embedded model is on no hub
    assert "# erasekit-tiny with square erased" in card and "erasekit-tiny, the model embedded in erasekit" in card
    assert "| metric | original | erased | better |" in card
    assert "| Acc_e | 100.0 | 0.0 | lower |" in card and "| Acc_s | 90.0 | 85.0 | higher |" in card
    assert "| world-FID (kept prompts) | | 0.50 | lower |" in card

    set_card(edit_dir, model="runwayml/stable-diffusion-v1-5")
    meta = header(hub.model_card(edit_dir, hub.KOHYA_FILE))
    assert meta["base_model"] == "runwayml/stable-diffusion-v1-5" and meta["license"] == "creativeml-openrail-m"
    assert "lora" in meta["tags"]

    set_card(edit_dir, model="someone/their-model")  # a hub model erasekit knows nothing of: `other`, said in the body
    card = hub.model_card(edit_dir)
    assert header(card)["license"] == "other" and header(card)["base_model"] == "someone/their-model"
    assert "erasekit cannot tell the license of someone/their-model" in card

    local = tmp_path / "models" / "my-sd"
    local.mkdir(parents=True)
    set_card(edit_dir, model=str(local))  # a local path: no base_model, and the body names the model, not the path
    card = hub.model_card(edit_dir)
    assert "base_model" not in header(card) and header(card)["license"] == "other"
    assert "my-sd, a local model (not on the hub)" in card and str(tmp_path) not in card
    (local / "README.md").write_text("---\nlicense: mit\n---\n# my model\n")  # its own card's license is the base's
    assert header(hub.model_card(edit_dir))["license"] == "mit"


def test_valid_results_of_the_explicit_and_captions_protocols_make_a_card(edit_dir):
    nudenet = {"settings": {}, "images": 4, "explicit_rate": 0.5, "counts": {"FEMALE_BREAST_EXPOSED": 2}}
    put_results(edit_dir, "eval-explicit", {"protocol": "explicit", "judge": {"judge": "nudenet"}, "samples_per_prompt": 1,
                                            "metrics": {"original": nudenet, "erased": {**nudenet, "explicit_rate": 0.25}}})  # fmt: skip
    put_results(edit_dir, "eval-captions", {"protocol": "captions", "judge": None, "fid": {"value": 3.0, "features": "InceptionV3"},
                                            "metrics": {"original": {"clip_score": 30.0}, "erased": {"clip_score": 29.5}}})  # fmt: skip
    card = hub.model_card(edit_dir)
    assert "| images with explicit content % | 50.0 | 25.0 | lower |" in card
    assert "| FEMALE_BREAST_EXPOSED (images) | 2 | 2 | lower |" in card
    assert "| FID, original vs erased images (InceptionV3) | | 3.00 | lower |" in card
    assert "| CLIP score | 30.00 | 29.50 | higher |" in card


# --- 2: no string of the edit becomes Markdown, HTML or YAML --------------------------------------------------


def test_hostile_names_stay_text_in_the_body_and_add_no_key_to_the_header(edit_dir):
    set_card(
        edit_dir,
        targets=HOSTILE,
        anchors=["<img src=x onerror=alert(1)>", "", "`code`", "![i](http://x/y.png)"],
        preserve=["*bold*", "<b>", "x\n---\ny"],
        method="uce\nlicense: mit",
        model="me/model\ninjected: true",
        erasekit_version="0.1\n## v",
        base_hash="abc|def",
        config={"t": "```\n# x"},
    )
    folder = "eval-a](javascript:alert(1))"
    put_results(edit_dir, folder, object_results(protocol="object\n# h", judge={"judge": "<i>j</i>"}), grid=True)
    put_results(
        edit_dir, "attack-x", {"attack": "a|b\n# c", "config": {"k": "|"}, "asr": 0.5, "baseline_asr": 0.1, "prompts": [1]}
    )
    card = hub.model_card(edit_dir)

    assert set(header(card)) == {"library_name", "license", "pipeline_tag", "tags"}  # no injected key, no base_model
    assert all(tag.replace("-", "").isalnum() for tag in header(card)["tags"])
    tokens, html = rendered(card)
    assert "<script" not in html and "<img src=x" not in html and "<b>" not in html and "<i>" not in html
    links = [c for t in tokens for c in t.children or [] if c.type in ("link_open", "image")]  # only the grid's image
    assert [c.attrGet("src") for c in links] == ["eval-a%5D%28javascript%3Aalert%281%29%29/before_after.png"]
    headings = [(t.tag, text_of(tokens[i + 1])) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert [h for h, _ in headings] == ["h1", "h2", "h2", "h3", "h2", "h2"]  # title, Settings, How well, object, attack, Use
    # the model name's last part and the concepts as they are, each on one line
    assert (
        headings[0][1] == "model injected: true with <script>alert(1)</script>, a|b, two # lines, [x](javascript:alert(1)) erased"
    )
    cells, row = [], None
    for t in tokens:  # every table row has its header's number of cells
        if t.type == "tr_open":
            row = 0
        elif t.type in ("td_open", "th_open"):
            row += 1
        elif t.type == "tr_close":
            cells.append(row)
    assert cells and set(cells) <= {2, 4} and cells.count(2) == 1 + len(HOSTILE)
    assert "a|b" in html and "<td>a|b</td>" in html  # the pipe is shown, not a cell border


def test_a_license_with_a_newline_in_a_local_readme_stays_one_header_value(edit_dir, tmp_path):
    local = tmp_path / "base"
    local.mkdir()
    (local / "README.md").write_text('---\nlicense: "mit\\ninjected: true"\n---\n')
    set_card(edit_dir, model=str(local))
    meta = header(hub.model_card(edit_dir))
    assert set(meta) == {"library_name", "license", "pipeline_tag", "tags"} and meta["license"] == "mit\ninjected: true"


def test_md_escapes_markdown_and_html():
    assert md("<a href='x'>&</a>") == "&lt;a href='x'&gt;&amp;&lt;/a&gt;"
    assert md("[x](javascript:alert(1))") == "\\[x\\](javascript:alert(1))"
    assert md("a|b\n# c") == "a\\|b \\# c"
    assert md("eval-object") == "eval-object" and md("Acc_e") == "Acc_e" and md("_x_") == "\\_x\\_"


# --- 3: a README.md the user wrote is theirs ------------------------------------------------------------------


def test_write_card_replaces_only_its_own_readme_unless_told(edit_dir, tmp_path):
    readme = edit_dir / "README.md"
    readme.write_text("# my notes\n")
    with pytest.raises(ErasekitError, match=r"README\.md exists and was not written by erasekit; pass --overwrite") as err:
        hub.write_card(edit_dir)
    assert "\n" not in str(err.value) and readme.read_text() == "# my notes\n"
    result = run_cli("push", edit_dir, "--card-only", cwd=tmp_path)
    assert result.returncode == 2 and "not written by erasekit" in result.stderr and result.stderr.strip().count("\n") == 0
    assert readme.read_text() == "# my notes\n"

    assert hub.write_card(edit_dir, overwrite=True) == readme and hub.CARD_MARK in readme.read_text()
    readme.write_text(readme.read_text().replace("# erasekit-tiny", "# edited by hand, mark kept"))
    hub.write_card(edit_dir)  # erasekit's card, mark and all: rewritten
    assert "# erasekit-tiny with square erased" in readme.read_text()

    # a card written before the mark existed is erasekit's too
    readme.write_text("---\nlibrary_name: diffusers\ntags: [erasekit, concept-erasure, stable-diffusion, lora]\n---\n\n# old\n")
    hub.write_card(edit_dir)
    assert hub.CARD_MARK in readme.read_text()

    secret = tmp_path / "secret.md"
    secret.write_text(hub.CARD_MARK)
    readme.unlink()
    readme.symlink_to(secret)  # a link is never read as erasekit's, even to a file with the mark
    with pytest.raises(ErasekitError, match="not written by erasekit"):
        hub.write_card(edit_dir)


# --- 4: push follows no link -----------------------------------------------------------------------------------


class FakeHub:
    """huggingface_hub's HfApi, recording what would be uploaded."""

    calls: list = []  # noqa: RUF012

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=False, exist_ok=False):
        FakeHub.calls.append(("create_repo", repo_id))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message=""):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*"))
        links = [p for p in Path(folder_path).rglob("*") if p.is_symlink()]
        FakeHub.calls.append(("upload_folder", files, links, (Path(folder_path) / "README.md").read_text()))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHub.calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    return FakeHub


def test_push_uploads_the_edit_its_card_and_a_kohya_file(edit_dir, fake_hub):
    assert hub.push(edit_dir, "me/erased") == "https://huggingface.co/me/erased"
    (_, repo), (_, files, links, readme) = fake_hub.calls
    assert repo == "me/erased" and not links
    assert {"README.md", "card.json", "edit.safetensors", hub.KOHYA_FILE} <= set(files)
    assert hub.CARD_MARK in readme and "lora" in header(readme)["tags"]


@pytest.mark.parametrize("link", ["secret.txt", "eval-object/before_after.png", "linked-folder"])
def test_push_refuses_a_symbolic_link_before_anything_is_uploaded(edit_dir, fake_hub, tmp_path, link):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE KEY")
    (edit_dir / "eval-object").mkdir()
    (edit_dir / link).symlink_to(secret if link == "linked-folder" else secret / "id_rsa")
    with pytest.raises(ErasekitError, match=rf"cannot push: .*{link} is a symbolic link") as err:
        hub.push(edit_dir, "me/erased")
    assert "\n" not in str(err.value) and fake_hub.calls == []


# --- 5: the model of a card made from Python ---------------------------------------------------------------


def test_a_card_of_an_edit_made_from_python_names_the_embedded_model(edit_dir):
    assert json.loads((edit_dir / "card.json").read_text())["model"] == "erasekit-tiny"  # as the CLI writes it
    card = hub.model_card(edit_dir)
    assert "# erasekit-tiny with square erased" in card and "from erasekit-tiny, the model embedded in erasekit" in card
    assert header(card)["license"] == "apache-2.0"
    set_card(edit_dir, model=None)  # an edit card from before erasekit named its model: the same card
    assert hub.model_card(edit_dir) == card


# --- 6: damaged files are one line naming them --------------------------------------------------------------


@pytest.mark.parametrize(
    "card, file",
    [
        ({"targets": [1]}, "card.json"),
        ({"anchors": 5}, "card.json"),
        ({"preserve": "circle"}, "card.json"),
        ({"seconds": "fast"}, "card.json"),
        ({"method": ["uce"]}, "card.json"),
        ({"model": 3}, "card.json"),
        ({"config": None, "changed_parameters": True}, "card.json"),
    ],
)
def test_a_wrong_typed_card_is_one_error_naming_it(edit_dir, card, file):
    set_card(edit_dir, **card)
    with pytest.raises(ErasekitError, match=rf"edit/{file}: \w+ ") as err:
        hub.model_card(edit_dir)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "folder, results",
    [
        ("eval-object", []),
        ("eval-object", {}),
        ("eval-object", {"metrics": 3}),
        ("eval-object", object_results(metrics={"original": {"accuracy": {"Acc_e": "x"}}, "erased": {"accuracy": {}}})),
        ("eval-object", object_results(world_fid_kept="low")),
        ("eval-captions", {"protocol": "captions", "metrics": {}}),
        ("eval-explicit", {"protocol": "explicit", "metrics": {"original": {}, "erased": {}}}),
        ("attack-x", {"attack": "x", "asr": "high", "baseline_asr": 0, "prompts": []}),
        ("attack-x", {"attack": "x", "asr": 0.5, "baseline_asr": 0, "prompts": 3}),
    ],
)
def test_wrong_typed_results_are_one_error_naming_the_file(edit_dir, folder, results):
    put_results(edit_dir, folder, results)
    with pytest.raises(ErasekitError, match=rf"{folder}/results\.json") as err:
        hub.model_card(edit_dir)
    assert "\n" not in str(err.value)


def test_push_card_only_on_a_damaged_card_is_one_line(edit_dir, tmp_path):
    set_card(edit_dir, preserve={"circle": 1})
    result = run_cli("push", edit_dir, "--card-only", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "card.json: preserve" in result.stderr and not (edit_dir / "README.md").exists()


# --- 7: the kohya file's metadata ---------------------------------------------------------------------------


def lora_export(width: int) -> LoraExport:
    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    return LoraExport({f"unet.{module}.lora_A.weight": torch.zeros(4, width)}, {module: 4}, 0.0)


def test_kohya_metadata_carries_the_model_spec_and_the_base_models_generation(made):
    card = Edit.load(made).card
    meta = kohya_metadata(card, lora_export(384))
    assert all(isinstance(v, str) for v in meta.values())
    assert meta == kohya_metadata(card, lora_export(384))  # nothing from a clock
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False" and meta["ss_sd_model_name"] == "erasekit-tiny"
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "4"
    assert meta["modelspec.sai_model_spec"] == "1.0.0" and meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers" and meta["modelspec.resolution"] == "64x64"
    assert meta["modelspec.title"] == "erasekit-tiny with square erased" and meta["modelspec.license"] == "apache-2.0"
    assert "square → (the empty prompt)" in meta["modelspec.description"] and "preserved: circle" in meta["modelspec.description"]
    assert meta["modelspec.date"] == card["created"]

    sd2 = kohya_metadata({**card, "model": "stabilityai/stable-diffusion-2-1"}, lora_export(1024))
    assert sd2["ss_base_model_version"] == "sd_v2" and sd2["ss_v2"] == "True"
    assert sd2["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora" and sd2["modelspec.prediction_type"] == "v"
    assert sd2["modelspec.license"] == "openrail++"
    sd15 = kohya_metadata({**card, "model": "/models/my-sd15"}, lora_export(768))
    assert sd15["ss_base_model_version"] == "sd_v1" and sd15["modelspec.resolution"] == "512x512"
    assert "modelspec.license" not in sd15 and sd15["ss_sd_model_name"] == "my-sd15"  # unknown: left out, no path
    xl = kohya_metadata({**card, "model": "stabilityai/stable-diffusion-xl-base-1.0"}, lora_export(2048))
    assert xl["ss_base_model_version"] == "sdxl_base_v1-0" and xl["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"

    hostile = kohya_metadata({**card, "targets": HOSTILE}, lora_export(384))
    assert "<script>" not in hostile["modelspec.description"] and "](javascript" not in hostile["modelspec.description"]
    assert "\n" not in hostile["modelspec.title"] + hostile["modelspec.usage_hint"]


def test_a_kohya_exports_metadata_and_tensors_are_the_same_on_a_rerun(made, tmp_path):
    # not its bytes yet: safetensors 0.8 writes the metadata in a hash map's order, which changes per call
    from erasekit.exports import export_edit

    read = []
    for name in ("a", "b"):
        export_edit(made, "kohya", tmp_path / f"{name}.safetensors")
        with safe_open(str(tmp_path / f"{name}.safetensors"), "pt") as f:
            read.append((f.metadata(), {k: f.get_tensor(k) for k in f.keys()}))
    (meta, tensors), (meta_again, tensors_again) = read
    assert meta == meta_again and tensors.keys() == tensors_again.keys()
    assert all(torch.equal(tensors[k], tensors_again[k]) for k in tensors)
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.title"] == "erasekit-tiny with square erased"
