"""UCE's closed form on the real layer structure, the edit artifact, and bad input."""

from types import SimpleNamespace

import pytest
import torch

from erasekit.edits import Edit, load_erased
from erasekit.errors import ErasekitError
from erasekit.methods.base import EraseSpec, get_method, make_config
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
    src, tgt = aligned_states(cache, "square", "square", "circle", "circle", "last")
    for name, lin in kv_projections(tiny_pipe.unet).items():
        new = edit.weights[f"{name}.weight"]
        assert relative(src @ new.T, tgt @ lin.weight.T) < 0.02, name
        assert relative(src @ lin.weight.T, tgt @ lin.weight.T) > 0.1  # it was not so before
    assert edit.card["method"] == "uce" and edit.card["changed_parameters"] == 14


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


def test_interrupted_save_leaves_nothing(tiny_pipe, tmp_path):
    edit = erase(tiny_pipe, EraseSpec(("square",)), "uce")
    edit.weights["bad"] = "not a tensor"
    with pytest.raises(AttributeError):
        edit.save(tmp_path / "edit")
    assert list(tmp_path.iterdir()) == []


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
