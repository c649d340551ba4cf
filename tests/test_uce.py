"""UCE's closed form on the real layer structure, the edit artifact, and bad input."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit, load_erased
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.methods.uce import UCEConfig, aligned_states
from erasekit.models import embedded
from erasekit.models.layers import kv_projections
from erasekit.primitives.prompt_cache import PromptCache


@pytest.fixture(scope="module")
def tiny_pipe():
    torch.manual_seed(0)
    return SimpleNamespace(
        unet=embedded.new_unet().eval(), tokenizer=embedded.load_tokenizer(), text_encoder=embedded.load_text_encoder()
    )


def relative(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def test_concept_tokens_go_where_the_guide_goes(tiny_pipe):
    spec = EraseSpec(("square",), ("circle",))
    edit = erase(tiny_pipe, spec, "uce", lam=1e-3, preserve_scale=0.0)
    cache = PromptCache(tiny_pipe)
    src, tgt = aligned_states(cache, "square", "square", "circle", "circle", "official")
    for name, lin in kv_projections(tiny_pipe.unet).items():
        new = edit.weights[f"{name}.weight"]
        assert relative(src @ new.T, tgt @ lin.weight.T) < 0.02, name
        assert relative(src @ lin.weight.T, tgt @ lin.weight.T) > 0.1  # it was not so before
    assert edit.card["method"] == "uce" and edit.card["changed_parameters"] == 14


def official_uce_weights(pipe, erase, guides, preserve, erase_scale=1.0, preserve_scale=1.0, lamb=0.5):
    """UCE() of the official uce_sd_erase.py, restated: one state per prompt at attention_mask.sum() - 2,
    outputs of the original modules, a float32 inverse."""
    states = {}
    for prompt in dict.fromkeys([*erase, *guides, *preserve]):
        t_emb = pipe.encode_prompt(prompt=prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
        mask = pipe.tokenizer(
            prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )["attention_mask"]
        states[prompt] = t_emb[0][:, mask.sum() - 2, :]
    weights = {}
    for name, module in pipe.unet.named_modules():
        if "attn2" in name and (name.endswith("to_v") or name.endswith("to_k")):
            w_old = module.weight
            mat1 = lamb * w_old
            mat2 = lamb * torch.eye(w_old.shape[1])
            for concept, guide in zip(erase, guides, strict=True):
                c_i, v_star = states[concept].T, module(states[guide]).T
                mat1 = mat1 + erase_scale * (v_star @ c_i.T)
                mat2 = mat2 + erase_scale * (c_i @ c_i.T)
            for concept in preserve:
                c_i, v_star = states[concept].T, module(states[concept]).T
                mat1 = mat1 + preserve_scale * (v_star @ c_i.T)
                mat2 = mat2 + preserve_scale * (c_i @ c_i.T)
            weights[f"{name}.weight"] = mat1 @ torch.inverse(mat2.float())
    return weights


@torch.no_grad()
def test_default_edit_is_the_official_scripts(pipe):
    """The target of issue 18: erasekit's default UCE equals uce_sd_erase.py's to 1e-4 relative."""
    cases = [
        (("square",), ("",), ()),
        (("square", "heart"), ("",), ("circle", "triangle", "star")),
        (("square",), ("circle",), ("triangle",)),
    ]
    for targets, anchors, preserve in cases:
        edit = erase(pipe, EraseSpec(targets, anchors, preserve), "uce", progress=False)
        guides = [""] * len(targets) if anchors == ("",) else list(anchors)
        official = official_uce_weights(pipe, list(targets), guides, list(preserve))
        assert official.keys() == edit.weights.keys()
        for name, w in official.items():
            assert relative(edit.weights[name], w) <= 1e-4, (targets, preserve, name)
        assert relative(edit.weights[name], dict(pipe.unet.named_parameters())[name]) > 1e-3  # it is an edit


def test_preserve_terms_keep_other_concepts(tiny_pipe):
    cache = PromptCache(tiny_pipe)
    keep = cache.states(["triangle"])[0]
    lin = kv_projections(tiny_pipe.unet)["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"]
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight"
    drift = {}
    for preserve in ((), ("triangle",)):
        edit = erase(tiny_pipe, EraseSpec(("square",), preserve=preserve), "uce", preserve_scale=1.0)
        drift[preserve] = relative(keep @ edit.weights[key].T, keep @ lin.weight.T)
    assert drift[("triangle",)] < 0.5 * drift[()]


def test_many_concepts_at_once_and_full_span(tiny_pipe):
    spec = EraseSpec(("square", "five-pointed emblem", "heart"), ("",))
    edit = erase(tiny_pipe, spec, "uce", token_span="full")
    assert edit.card["targets"] == list(spec.targets) and edit.card["anchors"] == ["", "", ""]
    assert all(torch.isfinite(w).all() for w in edit.weights.values())


def test_edit_round_trip_and_base_check(tiny_pipe, tmp_path):
    edit = erase(tiny_pipe, EraseSpec(("square",)), "uce")
    edit.save(tmp_path / "edit")
    loaded = Edit.load(tmp_path / "edit")
    assert loaded.card["base_hash"] == edit.card["base_hash"]
    target = SimpleNamespace(unet=embedded.new_unet())
    target.unet.load_state_dict(tiny_pipe.unet.state_dict())
    loaded.apply(target)
    name = next(iter(edit.weights))
    assert torch.equal(dict(target.unet.named_parameters())[name], edit.weights[name])
    other = SimpleNamespace(unet=embedded.new_unet())  # another random initialisation
    with pytest.raises(ErasekitError, match="different base model"):
        loaded.apply(other)
    with pytest.raises(ErasekitError, match="not an erasekit edit"):
        load_erased(tmp_path)


def test_interrupted_save_leaves_nothing(tiny_pipe, tmp_path, monkeypatch):
    edit = erase(tiny_pipe, EraseSpec(("square",)), "uce")

    def disk_full(tensors, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr("erasekit.edits.artifact.save_file", disk_full)
    with pytest.raises(OSError):
        edit.save(tmp_path / "edit")
    assert list(tmp_path.iterdir()) == []  # no directory, no temporary, no lock


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EraseSpec(()), "nothing to erase"),
        (lambda: EraseSpec(("square",), ("Square",)), "anchor of 'square' is the target itself"),
        (lambda: EraseSpec(("square",), preserve=("square",)), "both erased and preserved"),
        (lambda: EraseSpec(("square", "heart"), ("a", "b", "c")), "2 targets but 3 anchors"),
        (lambda: UCEConfig(lam=0.0), "must be positive"),
        (lambda: UCEConfig(token_span="middle"), "token_span"),
        (lambda: make_config(get_method("uce"), {"eta": 1.0}), "uce has no setting eta"),
        (lambda: get_method("nope"), "unknown method 'nope'"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(ErasekitError, match=message):
        make()


@pytest.mark.parametrize("method", ["uce", "esd-x"])
def test_concept_without_tokens(tiny_pipe, method):
    with pytest.raises(ErasekitError, match="into no tokens"):
        erase(tiny_pipe, EraseSpec(("\u200b",)), method)


def test_applied_restores_the_original_weights(tiny_pipe):
    edit = erase(tiny_pipe, EraseSpec(("square",)), "uce")
    name = next(iter(edit.weights))
    before = dict(tiny_pipe.unet.named_parameters())[name].detach().clone()
    with edit.applied(tiny_pipe) as pipe:
        assert torch.equal(dict(pipe.unet.named_parameters())[name], edit.weights[name])
    assert torch.equal(dict(tiny_pipe.unet.named_parameters())[name], before)
