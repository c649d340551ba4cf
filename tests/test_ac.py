"""AC (Ablating Concepts) and the shared fine-tuning runtime it runs on: parameter groups as the
official script selects them, both losses, the pipeline restored, the loss curve on the card."""

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase
from erasekit.models import embedded
from erasekit.models.layers import AC_GROUPS, ablation_parameters
from erasekit.models.reference_configs import SD15

QUICK = {"anchor_images": 6, "steps": 3, "sample_steps": 3, "batch_size": 2}


def official_ac_selection(unet, group):
    """create_custom_diffusion of the official diffusers/train.py, restated: requires_grad by name."""
    chosen = []
    for name, _ in unet.named_parameters():
        if group == "cross-attn":
            hit = "attn2.to_k" in name or "attn2.to_v" in name
        elif group == "attn":
            hit = "to_q" in name or "to_k" in name or "to_v" in name or "to_out" in name
        else:
            hit = True
        if hit:
            chosen.append(name)
    return chosen


@pytest.mark.parametrize("group", AC_GROUPS)
def test_parameter_groups_are_the_official_selection(group):
    unets = {"embedded": embedded.new_unet()}
    with init_empty_weights():
        unets["sd-1.5"] = UNet2DConditionModel(**SD15)
    for unet in unets.values():
        assert ablation_parameters(unet, group) == official_ac_selection(unet, group)
    cross = ablation_parameters(unets["sd-1.5"], "cross-attn")
    assert len(cross) == 32 and set(cross) < set(ablation_parameters(unets["sd-1.5"], "attn"))
    with pytest.raises(ErasekitError, match="unknown AC parameter group"):
        ablation_parameters(unets["embedded"], "embedding")


@pytest.mark.parametrize("loss", ["model", "noise"])
def test_both_losses_train_their_group_and_leave_the_pipeline_as_it_was(pipe, loss):
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = erase(pipe, EraseSpec(("square",), preserve=("circle",)), "ac", progress=False, loss=loss, lr=1e-3, **QUICK)
    assert set(edit.weights) == set(ablation_parameters(pipe.unet, "cross-attn"))
    assert any(not torch.equal(edit.weights[n], before[n]) for n in edit.weights)
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())
    curve = edit.card["loss_curve"]
    assert curve["steps_per_point"] == 1 and len(curve["mean_loss"]) == QUICK["steps"]
    again = erase(pipe, EraseSpec(("square",), preserve=("circle",)), "ac", progress=False, loss=loss, lr=1e-3, **QUICK)
    assert all(torch.equal(edit.weights[n], again.weights[n]) for n in edit.weights)  # seeded


def test_an_interrupted_run_restores_the_pipeline(pipe, monkeypatch):
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in pipe.unet.named_parameters()}
    was_training = pipe.unet.training

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        erase(pipe, EraseSpec(("square",)), "ac", progress=False, parameter_group="full-weight", **QUICK)
    for n, p in pipe.unet.named_parameters():
        assert torch.equal(p, before[n][0]) and p.dtype == before[n][0].dtype and p.requires_grad == before[n][1]
    assert pipe.unet.training == was_training


def test_ac_config_errors():
    ac = get_method("ac")
    config = make_config(ac, {})
    assert (config.loss, config.parameter_group, config.lr, config.steps, config.guidance) == (
        "model",
        "cross-attn",
        8e-6,
        200,
        6.0,
    )
    bad = ({"loss": "both"}, {"parameter_group": "embedding"}, {"steps": 0}, {"lr": 0}, {"templates": ("no slot",)},
           {"prior_loss_weight": -1}, {"anchor_images": 0})  # fmt: skip
    for settings in bad:
        with pytest.raises(ErasekitError):
            make_config(ac, settings)
    with pytest.raises(ErasekitError, match="the anchor of 'cat' is the target itself"):
        EraseSpec(("cat",), ("cat",))
