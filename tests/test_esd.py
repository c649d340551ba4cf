"""ESD on the embedded model: the target, the parameter groups, x_t sampling, restoring the pipeline."""

import pytest
import torch

from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import get_method, make_config
from erasekit.methods.esd import ESDConfig, esd_target
from erasekit.methods.runner import erase
from erasekit.primitives.diffusion import FrozenCopy, partial_samples
from erasekit.primitives.prompt_cache import PromptCache

QUICK = {"iterations": 3, "sample_steps": 4}


def unet_state(pipe):
    return {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}


def test_default_target_is_the_official_scripts_and_paper_is_eq_3():
    g = torch.Generator().manual_seed(0)
    eps_null, eps_concept = torch.randn(2, 4, 8, 8, generator=g)
    config = ESDConfig()
    assert (config.target, config.eta) == ("official", 2.0)
    # esd_sd.py: noise_pred_erase_from - (negative_guidance * (noise_pred_erase - noise_pred_null)), erase_from = erase
    official = eps_concept - (2.0 * (eps_concept - eps_null))
    assert torch.equal(esd_target(eps_null, eps_concept, config.eta, config.target), official)
    paper = ESDConfig(target="paper")
    assert paper.eta == 1.0
    assert torch.equal(esd_target(eps_null, eps_concept, paper.eta, paper.target), eps_null - (eps_concept - eps_null))
    # the official η = 2 target is the paper's with η = 1, which is why the paper's η is 1 here
    assert torch.allclose(esd_target(eps_null, eps_concept, 2.0, "official"), esd_target(eps_null, eps_concept, 1.0, "paper"))


def test_partial_samples_do_not_depend_on_batch_mates(pipe):
    cache = PromptCache(pipe)
    cond, uncond = cache.states(["a square"]), cache.states([""])
    net = FrozenCopy(pipe.unet, [])
    alone, t_alone = partial_samples(pipe, net, cond, uncond, 3.0, 4, [2], [11])
    mixed, t_mixed = partial_samples(pipe, net, cond, uncond, 3.0, 4, [0, 2, 3], [5, 11, 7])
    assert torch.allclose(alone[0], mixed[1], atol=1e-5) and t_alone[0] == t_mixed[1]
    noise = torch.randn(alone.shape[1:], generator=torch.Generator().manual_seed(5))
    assert torch.allclose(mixed[0], noise * pipe.scheduler.init_noise_sigma)  # stop 0: pure noise at the first t
    with pytest.raises(ValueError):
        partial_samples(pipe, net, cond, uncond, 3.0, 4, [5], [1])  # 4 of 4 is the finished sample


@pytest.mark.parametrize(
    ("method", "changed"),
    [("esd-x", lambda n: ".attn2." in n), ("esd-x-strict", lambda n: ".attn2.to_k." in n or ".attn2.to_v." in n)],
)
def test_esd_trains_only_its_group_and_leaves_the_pipeline_as_it_was(pipe, method, changed):
    before = unet_state(pipe)
    pipe.unet.requires_grad_(False)  # as an inference caller has it; the erase must leave it so
    edit = erase(pipe, EraseSpec(("square",)), method, progress=False, **QUICK)
    assert edit.weights and all(changed(n) for n in edit.weights)
    assert any(not torch.equal(edit.weights[n], before[n]) for n in edit.weights)
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    assert edit.card["config"]["train_method"] == method and edit.card["seconds"] > 0


def test_esd_is_reproducible_and_uses_anchor_and_preserve(pipe):
    spec = EraseSpec(("square", "circle"), ("triangle",), ("star",))
    a = erase(pipe, spec, "esd-x", progress=False, **QUICK)
    b = erase(pipe, spec, "esd-x", progress=False, **QUICK)
    assert all(torch.equal(a.weights[n], b.weights[n]) for n in a.weights)
    c = erase(pipe, EraseSpec(("square", "circle")), "esd-x", progress=False, **QUICK)
    assert any(not torch.equal(a.weights[n], c.weights[n]) for n in a.weights)


def test_an_interrupted_run_restores_the_pipeline(pipe, monkeypatch):
    before = unet_state(pipe)
    calls = []

    def interrupt(self, *args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.optim.Adam, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        erase(pipe, EraseSpec(("square",)), "esd-x", progress=False, **QUICK)
    assert calls and all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())


def test_esd_config_errors():
    esd = get_method("esd-x")
    assert make_config(get_method("esd-u"), {}).train_method == "esd-u"
    assert make_config(esd, {"target": "paper", "eta": 3.0}).eta == 3.0
    for bad in ({"eta": 0}, {"train_method": "esd-z"}, {"iterations": 0}, {"lr": -1}, {"target": "both"}, {"parameters": "x"}):
        with pytest.raises(ErasekitError):
            make_config(esd, bad)


def test_race_attack_stays_in_its_ball_and_brings_the_prediction_nearer_the_noise(pipe):
    import torch.nn.functional as F

    from erasekit.methods.race import pgd_states
    from erasekit.primitives.diffusion import predict_noise

    config = make_config(get_method("race"), {"epsilon": 0.2, "pgd_steps": 8})
    assert config.alpha == 0.05 and config.eta == 1.0 and config.target == "paper"  # the official script's
    states = PromptCache(pipe).states(["a photo of a square"])
    generator = torch.Generator().manual_seed(0)
    x_t, noise = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 4, 16, 16, generator=generator)
    t = torch.tensor([500])
    adversarial = pgd_states(lambda x, t, c: predict_noise(pipe.unet, x, t, c), x_t, t, states, noise, config, generator)
    assert (adversarial - states).abs().max() <= 0.2 + 1e-6
    assert adversarial.min() >= states.min() and adversarial.max() <= states.max()
    with torch.no_grad():
        before = F.mse_loss(predict_noise(pipe.unet, x_t, t, states), noise)
        after = F.mse_loss(predict_noise(pipe.unet, x_t, t, adversarial), noise)
    assert after < before


def test_race_refuses_a_ball_of_no_size():
    with pytest.raises(ErasekitError, match="RACE needs ε > 0"):
        make_config(get_method("race"), {"epsilon": 0})
