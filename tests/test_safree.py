"""SAFREE: the flagged tokens and their projection out of the keywords' subspace, the self-validating
filter's switch back to the typed prompt, the pipeline left as it was, and the refusals. Its world
sweep: docs/methods/safree.md."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.edits.projection import PromptProjector
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.methods.safree import NUDITY_KEYWORDS
from erasekit.models import reference_configs
from erasekit.primitives.diffusion import pipeline_images

SETTINGS = {"alpha": 0.01, "svf": True, "upper_t": 10, "category": "nudity", "negative_prompt": False}


def test_defaults_are_the_official_nudity_run_and_bad_input_is_one_line(pipe):
    config = make_config(get_method("safree"), {})
    assert (config.alpha, config.svf, config.upper_t, config.category, config.negative_prompt) == (0.01, True, 10, "nudity", True)
    for bad in ({"alpha": -0.1}, {"category": "violence"}, {"keywords": "violence"}, {"upper_t": -1}):
        with pytest.raises(ErasekitError):
            make_config(get_method("safree"), bad)
    with pytest.raises(ErasekitError, match="no anchors and no preserve set"):
        erase(pipe, EraseSpec(("square",), preserve=("circle",)), "safree", progress=False)
    nudity = erase(pipe, EraseSpec(("nudity",)), "safree", progress=False, keywords="nudity")
    assert nudity.card["inference"]["safree"]["keywords"] == list(NUDITY_KEYWORDS)
    with pytest.raises(ErasekitError, match="safree does not run on"):
        erase(reference_configs.random_sdxl_pipeline(), EraseSpec(("cat",)), "safree", progress=False)


def test_the_concepts_token_is_flagged_and_projected_out_of_the_keywords_subspace(pipe):
    projector = PromptProjector(pipe, ["square"], SETTINGS)
    done = projector("a photo of a square")
    assert 5 in done.flagged  # [CLS] a photo of a square: "square" pulls the prompt towards the keyword
    keyword = projector.pooled(*(lambda t: (t.input_ids, t.attention_mask))(pipe.tokenizer(["square"], return_tensors="pt")))
    inside = torch.eye(keyword.shape[1]) - projector.away  # P_C
    assert torch.allclose(done.projected[done.flagged] @ inside.T, torch.zeros(1), atol=1e-4)  # nothing of C is left
    kept = [i for i in range(done.typed.shape[0]) if i not in done.flagged]
    assert torch.equal(done.projected[kept], done.typed[kept])  # [CLS], unflagged tokens and padding as typed
    assert 0 <= done.last_step <= 10
    # β = 1 − mean cos over the real tokens; K = round(10 σ(5 (10β − 5.333))): the official nudity curve
    assert F.cosine_similarity(done.projected[5], done.typed[5], dim=0) < 0.99


def test_the_filter_hands_back_the_typed_prompt_after_step_k_and_the_pipeline_stays(pipe):
    prompts = ["a photo of a square", "a photo of a circle"]
    plain = pipeline_images(pipe, [1, 2], 6, 7.5, prompt=prompts).astype(int)
    edit = erase(pipe, EraseSpec(("square",)), "safree", progress=False, negative_prompt=False)
    with edit.applied(pipe) as projected:
        assert type(projected).__mro__[1] is type(pipe)
        changed = pipeline_images(projected, [1, 2], 6, 7.5, prompt=prompts).astype(int)
    assert np.abs(changed - plain).mean() > 1
    never = Edit({}, {**edit.card, "inference": {"safree": {**edit.card["inference"]["safree"], "alpha": 100.0}}})
    with never.applied(pipe) as projected:  # nothing is 101× further: no token is flagged, the prompt is as typed
        assert np.abs(pipeline_images(projected, [1, 2], 6, 7.5, prompt=prompts).astype(int) - plain).max() == 0
    assert np.abs(pipeline_images(pipe, [1, 2], 6, 7.5, prompt=prompts).astype(int) - plain).max() == 0
    drawn = {}
    for name, settings in (("first step", {"upper_t": 0}), ("every step", {"svf": False})):
        edit = erase(pipe, EraseSpec(("square",)), "safree", progress=False, negative_prompt=False, **settings)
        with edit.applied(pipe) as projected:
            drawn[name] = pipeline_images(projected, [1, 2], 6, 7.5, prompt=prompts).astype(int)
    # K = 0 projects step 0 only, then the typed prompt takes over: between the plain images and every step's
    assert 0 < np.abs(drawn["first step"] - plain).mean() < np.abs(drawn["every step"] - plain).mean()


def test_a_foreign_card_is_one_line(tmp_path):
    card = {"method": "safree", "targets": ["square"],
            "inference": {"safree": {"keywords": ["square"], **SETTINGS, "category": "violence"}}}  # fmt: skip
    Edit({}, card).save(tmp_path / "bad")
    with pytest.raises(ErasekitError, match=r"inference\.safree\.category should be one of nudity, artist"):
        Edit.load(tmp_path / "bad")
