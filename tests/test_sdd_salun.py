"""SDD and SalUn, the fine-tuning baselines: their official defaults, SDD's moving average as the edit,
SalUn's saliency mask as the only weights that move, and their refusals. Their efficacy on the world:
tests/test_efficacy.py."""

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.runner import erase

SMALL_SDD = {"iterations": 4, "sample_steps": 3, "lr": 1e-3}
SMALL_SALUN = {"concept_images": 8, "preserve_images": 4, "batch_size": 4, "epochs": 1, "sample_steps": 3, "lr": 1e-3}


def test_the_defaults_are_the_official_scripts():
    sdd = make_config(get_method("sdd"), {})
    assert (sdd.finetuning_method, sdd.iterations, sdd.lr, sdd.weight_decay, sdd.ema_decay) == ("xattn", 1500, 1e-5, 1e-4, 0.999)
    assert (sdd.max_grad_norm, sdd.guidance, sdd.sample_steps) == (1.0, 3.0, 50)
    salun = make_config(get_method("salun"), {})
    assert (salun.train_method, salun.mask_ratio, salun.mask_guidance, salun.alpha, salun.lr) == ("full", 0.5, 7.5, 0.5, 1e-5)
    assert (salun.batch_size, salun.epochs, salun.iterations, salun.template) == (8, 5, 500, "an image of a {}")
    for method, bad in (("sdd", {"ema_decay": 1.0}), ("sdd", {"finetuning_method": "lora"}), ("salun", {"mask_ratio": 0}),
                        ("salun", {"mask_ratio": 1.5}), ("salun", {"template": "no slot"}), ("salun", {"relabel": "random"})):  # fmt: skip
        with pytest.raises(ErasekitError):
            make_config(get_method(method), bad)


def test_sdd_hands_back_the_moving_average_of_the_cross_attention_it_trained(pipe):
    spec = EraseSpec(("square",))
    original = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    trained = erase(pipe, spec, "sdd", progress=False, ema_decay=0.0, **SMALL_SDD)
    averaged = erase(pipe, spec, "sdd", progress=False, ema_decay=0.5, **SMALL_SDD)
    assert set(trained.weights) == {n for n in original if "attn2" in n} == set(averaged.weights)
    moved = lambda edit: sum(float((edit.weights[n] - original[n]).norm()) for n in edit.weights)  # noqa: E731
    # four steps at β = 0.5 keep 1/16 of the original: the average lags behind the trained weights
    assert 0 < moved(averaged) < moved(trained)
    assert all(torch.equal(p, original[n]) for n, p in pipe.unet.named_parameters())  # the pipeline is as it was


def test_salun_moves_only_the_salient_share_of_the_weights(pipe):
    original = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    edit = erase(pipe, EraseSpec(("square",), preserve=("circle",)), "salun", progress=False, mask_ratio=0.1, **SMALL_SALUN)
    assert edit.card["mask_share"] == pytest.approx(0.1, abs=1e-3)
    changed = sum(int((value != original[name]).sum()) for name, value in edit.weights.items())
    total = sum(p.numel() for p in original.values())
    assert 0 < changed <= 0.1 * total + 1  # Adam leaves every weight with a zero (masked) gradient exactly where it was


def test_salun_relabel_to_the_preserve_set_needs_one():
    from erasekit.models.loading import load_pipeline

    with pytest.raises(ErasekitError, match="relabel=preserve draws the new label from the preserve set"):
        erase(load_pipeline("erasekit-tiny", progress=False), EraseSpec(("square",)), "salun", progress=False, relabel="preserve")
