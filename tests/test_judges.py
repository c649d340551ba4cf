"""Judges: CLIP plumbing on a tiny random CLIP, NudeNet for real, FID through torchmetrics, the diffusion classifier."""

import numpy as np
import pytest
import torch

from erasekit.eval.evaluator import predict
from erasekit.eval.metrics import frechet_distance, frechet_distance_of
from erasekit.judges.clip import MACE_CIFAR10_SYNONYMS, ClipJudge
from erasekit.judges.nudity import NUDENET_EXPOSED_CLASSES, NudityJudge
from erasekit.models.embedded import load_tokenizer


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
