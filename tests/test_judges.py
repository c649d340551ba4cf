"""Judges: CLIP plumbing on a tiny random CLIP, NudeNet for real, FID through torchmetrics, the diffusion classifier."""

import numpy as np
import pytest
import torch

from erasekit.eval.metrics import frechet_distance, frechet_distance_of
from erasekit.judges.clip import MACE_CIFAR10_SYNONYMS, ClipJudge
from erasekit.judges.nudity import NUDENET_EXPOSED_CLASSES, NudityJudge
from erasekit.models.embedded import load_tokenizer
from erasekit.world.evaluator import predict


@pytest.fixture(scope="module")
def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    tokenizer = load_tokenizer()  # any tokenizer works for plumbing; the text tower pools at its [SEP]
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "eos_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    return ClipJudge(CLIPModel(config), tokenizer)


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_clip_zero_shot_and_score_plumbing(tiny_clip):
    classes = list(MACE_CIFAR10_SYNONYMS)
    probs = tiny_clip.zero_shot(images(3), classes)
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    scores = tiny_clip.clip_score(images(3), ["a photo of the cat"] * 3)
    assert scores.shape == (3,) and (scores >= 0).all() and (scores <= 100).all()
    # the same image gives the same features whatever its batch
    assert torch.allclose(tiny_clip.image_features(images(3))[1], tiny_clip.image_features(images(3)[1:2])[0], atol=1e-5)


def test_mace_synonym_lists():
    assert len(MACE_CIFAR10_SYNONYMS) == 10 and all(len(s) == 3 for s in MACE_CIFAR10_SYNONYMS.values())


def test_nudenet_runs_for_real_on_generated_images(pipe):
    from erasekit.eval.generation import generate
    from erasekit.eval.prompts import PromptRow

    generated = generate(pipe, [PromptRow("a photo of a red circle", 3, "retain", {}, 2)], progress=False)
    judge = NudityJudge()
    report = judge.report(generated.images)
    assert report["settings"]["nudenet"] == "3.4.2" and report["settings"]["threshold"] == 0.6
    assert set(report["counts"]) == set(NUDENET_EXPOSED_CLASSES) and report["images"] == 2
    assert report["explicit_rate"] == 0.0  # circles are not nudity


def test_fid_through_torchmetrics_matches_ours_with_the_same_features(evaluator):
    class WorldFeatures(torch.nn.Module):  # torchmetrics infers the feature size from a dummy image
        def forward(self, x):
            return torch.from_numpy(predict(evaluator, x.permute(0, 2, 3, 1).contiguous().numpy()).features).double()

    a, b = images(300, 1), images(300, 2)
    ours = frechet_distance(predict(evaluator, a).features, predict(evaluator, b).features)
    assert frechet_distance_of(a, b, feature=WorldFeatures()) == pytest.approx(ours, rel=1e-3, abs=1e-3)


@pytest.fixture(scope="module")
def real_layout():
    """A Stable Diffusion pipeline of SD-1.5's layout (CLIP text encoder), tiny and random: not the world."""
    from erasekit.models.reference_configs import random_sd15_pipeline

    return random_sd15_pipeline(tiny=True)


def test_clip_judge_reads_its_heads_and_decides_presence(tiny_clip):
    reading = tiny_clip.read(images(4))
    assert list(reading.heads) == ["object"] and reading.probs["object"].shape == (4, 10)
    assert np.allclose(reading.probs["object"].sum(1), 1, atol=1e-5) and reading.features.shape == (4, 16)
    present = tiny_clip.present(images(4), "Van Gogh", ("Monet",))  # top-1 among it, the alternatives, "image"
    assert present.dtype == bool and present.shape == (4,)
    expected = tiny_clip.zero_shot(images(4), ["Van Gogh", "Monet", "image"]).argmax(1) == 0
    assert (present == expected).all()


def test_judges_follow_the_model(pipe, real_layout):
    from erasekit.errors import ErasekitError
    from erasekit.judges import default_judge_name, make_judge

    assert default_judge_name(pipe) == "world" and default_judge_name(real_layout) == "clip"
    with pytest.raises(ErasekitError, match="reads the embedded world's 64-px images only"):
        make_judge("world", real_layout)
    with pytest.raises(ErasekitError, match="unknown judge 'resnet'"):
        make_judge("resnet", pipe)


def test_diffusion_classifier_reads_what_the_model_drew(pipe):
    """Li et al.'s classifier with the embedded model's own denoising error: right on the images it generates."""
    from erasekit.eval.generation import generate
    from erasekit.eval.prompts import PromptRow
    from erasekit.judges.diffusion_classifier import DiffusionClassifier
    from erasekit.world import vocabulary as V

    rows = [PromptRow(f"a photo of {V.article(s)} {s}", 100 + 10 * i, "retain", {}, 2) for i, s in enumerate(V.SHAPES)]
    generated = generate(pipe, rows, progress=False)
    judge = DiffusionClassifier(pipe, {"shape": V.SHAPES}, lambda s: f"a photo of {V.article(s)} {s}", trials=8)
    reading = judge.read(generated.images)
    truth = [V.SHAPES[i] for i in generated.row_index]
    assert np.mean([p == t for p, t in zip(reading.label("shape"), truth, strict=True)]) >= 0.9
    assert np.allclose(reading.probs["shape"].sum(1), 1)
    squares = generated.images[generated.row_index == V.SHAPES.index("square")]
    circles = generated.images[generated.row_index == V.SHAPES.index("circle")]
    assert judge.present(squares, "square").all() and judge.present(squares, "square", ("circle", "heart")).all()
    assert not judge.present(circles, "square", ("circle",)).any()


def test_object_protocol_on_a_real_layout_is_maces_cifar10_task(real_layout, tiny_clip):
    from erasekit.concepts import EraseSpec
    from erasekit.errors import ErasekitError
    from erasekit.eval.generation import SamplerSettings
    from erasekit.eval.protocols import protocol_rows, run_protocol
    from erasekit.methods.runner import erase

    edit = erase(real_layout, EraseSpec(("cat",), preserve=("dog",)), "uce", progress=False)
    result = run_protocol(real_layout, edit, "object", "cat", tiny_clip, samples=1, settings=SamplerSettings(steps=2))
    assert result.prompts[:2] == ["a photo of the cat", "a photo of the feline"]
    assert len(result.prompts) == 1 + 3 + 9  # no associated description: MACE's task has none
    assert set(result.metrics["erased"]["accuracy"]) == {"Acc_e", "Acc_s", "Acc_g", "H_o"}
    assert result.judge["judge"] == "clip" and result.world_fid_kept is not None
    with pytest.raises(ErasekitError, match="not one of MACE's CIFAR-10 classes"):
        protocol_rows("object", "square", 1, world=False)
    with pytest.raises(ErasekitError, match="speaks the embedded world's vocabulary"):
        run_protocol(real_layout, edit, "character", "Captain Nova", tiny_clip, samples=1)


def test_explicit_and_captions_protocols_read_their_files(pipe, tmp_path):
    from erasekit.concepts import EraseSpec
    from erasekit.errors import ErasekitError
    from erasekit.eval.generation import SamplerSettings
    from erasekit.eval.protocols import run_protocol
    from erasekit.methods.runner import erase

    edit = erase(pipe, EraseSpec(("in flames",)), "uce", progress=False)
    i2p = tmp_path / "i2p.csv"
    i2p.write_text("prompt,categories,evaluation_seed\na photo of a circle in flames,violence,5\na photo of a square,,7\n")
    fast = SamplerSettings(steps=5)
    result = run_protocol(pipe, edit, "explicit", "", samples=2, settings=fast, prompt_file=str(i2p), progress=False)
    after = result.metrics["erased"]
    assert after["images"] == 4 and set(after["counts"]) == set(NUDENET_EXPOSED_CLASSES)
    assert after["settings"]["nudenet"] == "3.4.2" and after["explicit_rate"] == 0.0  # shapes are not nudity
    captions = tmp_path / "captions.csv"
    captions.write_text("image_id,caption\n1,a photo of a red circle\n2,a photo of a blue square\n3,a photo of a heart\n")
    result = run_protocol(pipe, edit, "captions", "", samples=2, settings=fast, prompt_file=str(captions), progress=False)
    assert result.fid["features"] == "world evaluator" and result.fid["value"] >= 0
    bad = tmp_path / "bad.csv"
    bad.write_text("text_prompt,seed\nsomething,1\n")
    with pytest.raises(ErasekitError, match="has no 'prompt' column"):
        run_protocol(pipe, edit, "explicit", "", prompt_file=str(bad))
    with pytest.raises(ErasekitError, match="needs --prompts FILE"):
        run_protocol(pipe, edit, "captions", "")
