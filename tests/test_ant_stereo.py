"""ANT and STEREO: their official defaults, ANT's two stages of the trajectory and its saliency mask, STEREO's
rounds and its second stage from the original weights, and their refusals. Their efficacy on the world:
tests/test_efficacy.py."""

import copy

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.ant import ANTConfig, Trajectories
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.primitives.denoising import denoising
from erasekit.primitives.run import RunContext

SMALL_ANT = {"iterations": 3, "sample_steps": 6, "before_step": 2, "mask_seeds": 2, "mask_iterations": 1, "lr": 1e-3}
SMALL_STEREO = {"rounds": 2, "iterations": 3, "inversion_steps": 3, "gallery_images": 4, "sample_steps": 3}


def test_the_defaults_are_the_official_configs():
    ant = make_config(get_method("ant"), {})
    assert (ant.train_method, ant.iterations, ant.lr, ant.eta, ant.before_step) == ("full", 250, 5e-4, 1.0, 7)
    assert (ant.alpha1, ant.alpha2, ant.start_guidance, ant.mask_ratio, ant.mask_seeds, ant.mask_iterations) == (
        1.0, 0.5, 3.0, 0.5, 5, 10)  # fmt: skip
    stereo = make_config(get_method("stereo"), {})
    assert (stereo.train_method, stereo.rounds, stereo.iterations, stereo.g, stereo.ste_lr) == ("esd-u", 4, 200, 2.0, 5e-6)
    assert (stereo.inversion_steps, stereo.inversion_lr, stereo.gallery_images, stereo.adversarial_words) == (3000, 5e-3, 500, 4)
    assert (stereo.s, stereo.reo_lr, stereo.start_guidance, stereo.sample_steps) == (2.0, 2e-5, 3.0, 50)


@pytest.mark.parametrize(
    "method, bad, said",
    [
        ("ant", {"before_step": 50}, "leaves no reversed step of 50"),
        ("ant", {"mask_ratio": 0}, "mask_ratio"),
        ("ant", {"kept_stage": "middle"}, "kept_stage"),
        ("stereo", {"gallery_prompt": "no slot"}, "exactly one {} for the concept"),
        ("stereo", {"anchor_prompts": ("{} in the sky", "the sky")}, "exactly one {} for the concept"),
        ("stereo", {"anchor_prompts": ()}, "at least one anchor prompt"),
        ("stereo", {"init_word": "two words"}, "must be one word"),
        ("stereo", {"rounds": 0}, "rounds"),
    ],
)
def test_settings_outside_the_domain_are_one_line(method, bad, said):
    with pytest.raises(ErasekitError, match=said.replace("{", r"\{").replace("}", r"\}")):
        make_config(get_method(method), bad)


@pytest.mark.parametrize("method", ["ant", "stereo"])
def test_anchors_and_a_preserve_set_are_refused_before_anything_is_drawn(pipe, method):
    for spec in (EraseSpec(("square",), ("circle",)), EraseSpec(("square",), preserve=("circle",))):
        with pytest.raises(ErasekitError, match="no anchors and no preserve set"):
            erase(pipe, spec, method, progress=False)


@pytest.mark.parametrize("stage", ["early", "late"])
def test_ant_keeps_the_guidance_on_one_side_of_the_trajectory_and_reverses_it_on_the_other(pipe, stage):
    run = RunContext(pipe, progress=False)
    config = ANTConfig(sample_steps=10, before_step=3, kept_stage=stage)
    plan = Trajectories(run, denoising(run), EraseSpec(("square", "circle")), config, 12)
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(10)
    steps = [int(t) for t in scheduler.timesteps]
    # early: the first 3 of 10 steps from noise (the largest timesteps) keep; late: the last 3
    kept, reversed_ = (steps[:3], steps[3:]) if stage == "early" else (steps[7:], steps[:7])
    assert plan.prompt == [0, 1] * 6
    assert {int(t) for t in plan.keep_t} <= set(kept) and {int(t) for t in plan.rev_t} <= set(reversed_)
    # both points of a step are one trajectory: the same start noise, so the kept point is never the reversed one
    assert all(not torch.equal(a, b) for a, b in zip(plan.keep_x, plan.rev_x, strict=True))


def test_ant_moves_only_the_weights_inside_its_saliency_mask(pipe):
    original = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = erase(pipe, EraseSpec(("square",)), "ant", progress=False, **SMALL_ANT)
    # two seeds' top halves intersected: at most half of the UNet, and not nothing
    assert 0 < edit.card["mask_share"] <= 0.5
    changed = sum(int((value != original[name]).sum()) for name, value in edit.weights.items())
    total = sum(p.numel() for p in original.values())
    assert 0 < changed <= (edit.card["mask_share"] + 5e-5) * total  # the share is on the card to four places
    unmasked = erase(pipe, EraseSpec(("square",)), "ant", progress=False, **{**SMALL_ANT, "mask_ratio": 1.0})
    assert "mask_share" not in unmasked.card and len(unmasked.weights) == len(original)
    assert all(torch.equal(p, original[n]) for n, p in pipe.unet.named_parameters())  # the pipeline is as it was


def test_stereo_hands_back_the_second_stage_trained_from_the_original_weights(pipe):
    original = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    spec = EraseSpec(("square",))
    full = erase(pipe, spec, "stereo", progress=False, reo_lr=1e-3, ste_lr=1e-2, **SMALL_STEREO)
    # STE at a loud rate and REO at none: the edit is the original weights, so STE's erasure did not carry into it
    no_reo = erase(pipe, spec, "stereo", progress=False, reo_lr=1e-12, ste_lr=1e-2, **SMALL_STEREO)
    assert max(float((v - original[n]).abs().max()) for n, v in no_reo.weights.items()) < 1e-6
    assert max(float((v - original[n]).abs().max()) for n, v in full.weights.items()) > 1e-4
    # both stages train ESD-u's group: nothing in cross-attention
    assert full.weights and not any("attn2" in n for n in full.weights)
    # its loss record spans both rounds of STE and REO
    assert full.card["loss_curve"]["steps_per_point"] * len(full.card["loss_curve"]["mean_loss"]) >= 3 * 3
    assert all(torch.equal(p, original[n]) for n, p in pipe.unet.named_parameters())  # the pipeline is as it was
