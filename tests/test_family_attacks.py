"""The attacks on SDXL, SD3 and FLUX: their token slots reach each family's prompt as its pipeline encodes it
(SDXL's two CLIPs; SD3's two CLIPs and T5 in one sequence; FLUX's T5 token path and CLIP pooled vector),
they run on every layout without a tensor off the run's device, and on erasekit-tiny-flux they bring back
a square UCE erased."""

import copy
import json

import pytest
import torch
from device_guard import DeviceGuard
from test_attacks import TINY, run_cli  # the same smallest budgets as on SD

from erasekit.attacks import get_attack, load_attacks
from erasekit.concepts import EraseSpec
from erasekit.methods.base import make_config
from erasekit.methods.runner import erase
from erasekit.models import reference_configs
from erasekit.primitives.denoising import denoising
from erasekit.primitives.prompt_cache import PooledText
from erasekit.primitives.run import RunContext
from erasekit.primitives.soft_prompt import TextPath

LAYOUTS = {"sdxl": "random_sdxl_pipeline", "sd3": "random_sd3_pipeline", "flux": "random_flux_pipeline"}
PROMPT = "a photo of a square"


@pytest.fixture(scope="module")
def tiny_flux():
    from erasekit.models.loading import load_pipeline

    return load_pipeline("erasekit-tiny-flux")


def _layout(name, tiny_flux, pipe):
    return {"tiny-flux": lambda: tiny_flux, "sd": lambda: pipe}.get(name, lambda: getattr(reference_configs, LAYOUTS[name])())()


def _tokens(cond):
    return cond.tokens if isinstance(cond, PooledText) else cond


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux", "tiny-flux"])
def test_real_tokens_in_the_slots_condition_the_model_as_its_pipeline_conditions_the_typed_prompt(name, tiny_flux, pipe):
    model = _layout(name, tiny_flux, pipe)
    path, family = TextPath(model), denoising(RunContext(model, progress=False))
    assert path.reaches_all  # SDXL's two CLIPs, this SD3 layout's three encoders and these FLUX layouts' two share one vocabulary
    prompt = path.slotted(PROMPT, 2)
    words = path.tokenizer("red blue", add_special_tokens=False).input_ids
    vectors = path.table[torch.tensor(words)]  # each reached encoder's own embedding, side by side
    with torch.no_grad():
        slotted, typed = path.conditioning(prompt, vectors, "red blue " + PROMPT), family.conditioning(["red blue " + PROMPT])
        plain = path.plain([PROMPT, ""])
    torch.testing.assert_close(_tokens(slotted).float(), _tokens(typed).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_tokens(plain).float(), _tokens(family.conditioning([PROMPT, ""])).float(), atol=1e-5, rtol=1e-5)
    if isinstance(typed, PooledText):
        torch.testing.assert_close(slotted.pooled.float(), typed.pooled.float(), atol=1e-5, rtol=1e-5)


def test_an_encoder_of_another_vocabulary_reads_the_typed_words_as_flux_clip_does():
    model = reference_configs.random_flux_pipeline()
    model.tokenizer = copy.deepcopy(model.tokenizer)
    model.tokenizer.add_tokens(["zqxv"])  # CLIP's vocabulary is not T5's
    path, family = TextPath(model), denoising(RunContext(model, progress=False))
    assert not path.reaches_all and path.text_encoders == [model.text_encoder_2]
    prompt, words = path.slotted(PROMPT, 1), path.tokenizer("red", add_special_tokens=False).input_ids
    with torch.no_grad():
        slotted = path.conditioning(prompt, path.table[torch.tensor(words)], "red " + PROMPT)
    torch.testing.assert_close(slotted.pooled, family.conditioning(["red " + PROMPT]).pooled)


def test_t5_prompts_have_their_slots_first_having_no_start_token():
    from erasekit.primitives.soft_prompt import slotted_prompt

    bare = copy.deepcopy(reference_configs.random_flux_pipeline().tokenizer)  # no [CLS] in front, as T5's tokenizer
    bare.cls_token = None
    bare._tokenizer.post_processor = None
    prompt = slotted_prompt(bare, PROMPT, 2, torch.device("cpu"))
    assert prompt.slots == (0, 1) and prompt.ids[0, 2:].tolist()[:5] == bare(PROMPT, add_special_tokens=False).input_ids[:5]


@pytest.mark.parametrize("attack_name", sorted(TINY))
@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_every_attack_runs_on_the_sdxl_sd3_and_flux_layouts_without_a_tensor_off_the_device(family, attack_name, tmp_path):
    from erasekit.eval.attack_run import AttackTarget, run_attack
    from erasekit.eval.generation import SamplerSettings
    from erasekit.judges.world import WorldJudge

    assert set(TINY) == set(load_attacks())
    model = getattr(reference_configs, LAYOUTS[family])()
    edit = erase(model, EraseSpec(("cat",), preserve=("dog",)), "uce", progress=False)
    attack = get_attack(attack_name)
    targets = [AttackTarget("a photo of a cat", "square", "cat", 11)]  # the judge's "square" on random images
    with DeviceGuard() as guard:
        result = run_attack(model, edit, attack, make_config(attack, TINY[attack_name]), targets, WorldJudge(), tmp_path, 1,
                            SamplerSettings(steps=2), progress=False, check_base=False)  # fmt: skip
    assert not guard.hidden, f"{attack_name} on {family} creates tensors on the default device at {sorted(guard.hidden)}"
    cell = result["prompts"][0]
    assert cell["learned_vector"] == (attack_name == "inversion") and cell["steps"] >= 1


BUDGETS = {
    "unlearndiff": ["--set", "timesteps=5", "--set", "iterations=10"],
    "inversion": ["--set", "steps=200", "--set", "images=8"],
}


@pytest.fixture(scope="module")
def flux_uce(tmp_path_factory):
    from erasekit.methods.runner import erase as run_erase
    from erasekit.models.loading import load_pipeline

    root = tmp_path_factory.mktemp("flux-attacks")
    kept = ("circle", "triangle", "star", "heart", "cross", "crescent", "arrow", "diamond", "hexagon")
    flow = load_pipeline("erasekit-tiny-flux")
    run_erase(flow, EraseSpec(("square",), preserve=kept), "uce", progress=False, token_span="full", preserve_scale=1.0,
              templates=("{}", "a photo of a {}", "a picture of a {}")).save(root / "edit")  # fmt: skip
    return root


# inversion (about a minute on 2 cores) is slow here: SD's inversion test runs in CI (tests/test_attacks.py)
@pytest.mark.parametrize("name", ["unlearndiff", pytest.param("inversion", marks=pytest.mark.slow)])
def test_an_attack_brings_back_the_square_uce_erased_from_the_flow_model(flux_uce, name):
    result = run_cli("attack", "--attack", name, "--edit", flux_uce / "edit", "--prompts", "2", "--samples", "2",
                     *BUDGETS[name], cwd=flux_uce)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((flux_uce / "edit" / f"attack-{name}" / "results.json").read_text())
    assert out["baseline_asr"] == 0.0  # the erasure holds on the plain prompts …
    assert out["asr_found"] >= 0.5  # … and the attack's prompts bring the square back


def test_sd3_t5_of_another_vocabulary_reads_the_typed_words_as_its_pipeline_does():
    """SD3's T5 is not the CLIPs' vocabulary: the slots reach both CLIPs, T5 encodes the prompt as typed."""
    model = reference_configs.random_sd3_pipeline()
    model.tokenizer_3 = copy.deepcopy(model.tokenizer_3)
    model.tokenizer_3.add_tokens(["zqxv"])
    path, family = TextPath(model), denoising(RunContext(model, progress=False))
    assert not path.reaches_all and path.text_encoders == [model.text_encoder, model.text_encoder_2]
    prompt, words = path.slotted(PROMPT, 1), path.tokenizer("red", add_special_tokens=False).input_ids
    with torch.no_grad():
        slotted = path.conditioning(prompt, path.table[torch.tensor(words)], "red " + PROMPT)
        typed = family.conditioning(["red " + PROMPT])
    torch.testing.assert_close(slotted.tokens, typed.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slotted.pooled, typed.pooled, atol=1e-5, rtol=1e-5)
