"""Attacks on erased models: the soft-prompt machinery is exact, each attack brings an erased concept back
more often than the plain prompts do, runs resume from their cells, and bad input is one line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from erasekit.attacks import get_attack, load_attacks
from erasekit.concepts import EraseSpec
from erasekit.errors import ErasekitError
from erasekit.methods.base import make_config
from erasekit.methods.runner import erase
from erasekit.primitives.soft_prompt import (
    encode,
    nearest_tokens,
    simplex_projection,
    slotted_prompt,
    word_tokens,
)

UCE_WORLD = {"templates": ("{}", "a photo of a {}", "a picture of a {}"), "token_span": "last", "preserve_scale": 0.1}


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "erasekit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip


def test_simplex_projection_gives_distributions_and_keeps_those_it_is_given():
    w = torch.tensor([[0.5, 2.0, -1.0, 0.1], [0.25, 0.25, 0.25, 0.25], [3.0, 3.0, 3.0, 3.0]])
    p = simplex_projection(w)
    assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(3))
    assert torch.allclose(p[1], w[1]) and torch.allclose(p[2], torch.full((4,), 0.25))
    assert torch.allclose(p[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # the largest entry leads by more than 1


def test_slots_sit_after_the_first_token_or_where_the_word_stood(pipe):
    tok = pipe.tokenizer
    plain = tok("a photo of a square").input_ids
    prefix = slotted_prompt(tok, "a photo of a square", 3, torch.device("cpu"))
    assert prefix.slots == (1, 2, 3) and prefix.length == len(plain) + 3
    assert prefix.ids[0, 4 : prefix.length].tolist() == plain[1:]
    word = slotted_prompt(tok, "a photo of a square", 1, torch.device("cpu"), replace="square")
    assert word.length == len(plain) and word.ids[0, word.slots[0] - 1] == tok("a", add_special_tokens=False).input_ids[0]
    with pytest.raises(ErasekitError, match="does not occur"):
        slotted_prompt(tok, "a photo of a circle", 1, torch.device("cpu"), replace="square")
    with pytest.raises(ErasekitError, match="this tokenizer takes"):
        slotted_prompt(tok, "a photo of a square", tok.model_max_length, torch.device("cpu"))


def test_real_tokens_in_the_slots_encode_exactly_as_the_typed_prompt(pipe):
    tok, encoder = pipe.tokenizer, pipe.text_encoder
    prompt = slotted_prompt(tok, "a photo of a square", 2, torch.device("cpu"))
    words = tok("red small", add_special_tokens=False).input_ids
    table = encoder.get_input_embeddings().weight.detach()
    with torch.no_grad():
        through_hook = encode(encoder, prompt, table[words])
        typed = encode(encoder, type(prompt)(prompt.with_tokens(words), (), prompt.length))
    assert torch.equal(through_hook, typed)
    assert tok.decode(prompt.with_tokens(words)[0].tolist(), skip_special_tokens=True) == "red small a photo of a square"


def test_the_discrete_vocabulary_is_whole_words_that_tokenize_back_to_themselves(pipe):
    tok = pipe.tokenizer
    words = word_tokens(tok, torch.device("cpu"))
    assert 5000 < len(words) < len(tok)
    assert not set(words.tolist()) & set(tok.all_special_ids)
    sample = words[torch.randperm(len(words), generator=torch.Generator().manual_seed(0))[:200]].tolist()
    for i in sample:
        assert tok(tok.decode([i]), add_special_tokens=False).input_ids == [i]
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert nearest_tokens(table[sample[:20]], table, words).tolist() == sample[:20]


@pytest.mark.parametrize(
    "name, budget",
    [
        ("unlearndiff", {"iterations": 0}),
        ("p4d", {"timesteps": 0}),
        ("ring-a-bell", {"generations": 0}),
        ("mma-diffusion", {"steps": 0}),
        ("inversion", {"steps": 0}),
    ],
)
def test_a_budget_of_zero_is_refused(name, budget):
    with pytest.raises(ErasekitError, match="budget"):
        make_config(get_attack(name), budget)


def test_every_attack_is_registered_and_an_unknown_one_is_one_line():
    assert set(load_attacks()) == {"unlearndiff", "p4d", "ring-a-bell", "mma-diffusion", "inversion"}
    with pytest.raises(ErasekitError, match="unknown attack 'gcg'; choose one of"):
        get_attack("gcg")


@pytest.fixture(scope="module")
def erased_square(pipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    spec = EraseSpec(("square",), preserve=tuple(c for c in ("circle", "heart", "star", "cross")))
    erase(pipe, spec, "uce", progress=False, **UCE_WORLD).save(root / "edit")
    return root


BUDGETS = {  # P4D: the robustness bench's world budget; inversion: half of its 300 steps (65 → 36 s on 2 cores)
    "p4d": ["--set", "timesteps=10", "--set", "iterations=20"],
    "inversion": ["--set", "steps=150"],
}
# on this UCE edit the bench's P4D found 3 of 4 prompts and concept inversion 4 of 4 (docs/robustness.md): here 2
# prompts; at 150 steps inversion found both, as at 300
FOUND_AT_LEAST = {"p4d": 1 / 2, "inversion": 1 / 2}


@pytest.mark.parametrize("name", [pytest.param("p4d", marks=pytest.mark.slow), "inversion"])  # P4D: 2 min on 2 cores
def test_an_attack_brings_the_erased_square_back_where_the_plain_prompts_do_not(erased_square, name):
    result = run_cli("attack", "--attack", name, "--edit", erased_square / "edit", "--prompts", "2", "--samples", "2",
                     *BUDGETS[name], cwd=erased_square)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((erased_square / "edit" / f"attack-{name}" / "results.json").read_text())
    assert out["baseline_asr"] == 0.0  # the erasure holds on the plain prompts …
    assert out["asr_found"] >= FOUND_AT_LEAST[name]  # … and the attack's prompts bring the square back
    assert out["config"] == {**out["config"], **{k.split("=")[0]: int(k.split("=")[1]) for k in BUDGETS[name][1::2]}}
    assert (erased_square / "edit" / f"attack-{name}" / "grid.png").is_file()


@pytest.mark.slow  # about 2 minutes on 2 cores: three inversions of 300 steps
def test_concept_inversion_does_not_bring_back_a_square_adavd_decomposes_at_the_worlds_epsilon(pipe, tmp_path):
    # AdaVD's hook on every attn2.to_v takes the square's value out of whatever token carries it, the learned
    # one included (docs/robustness.md: 0 of 4 prompts in the bench, where every other erasure gives 4 of 4)
    erase(pipe, EraseSpec(("square",)), "adavd", progress=False, epsilon=0.4).save(tmp_path / "edit")
    result = run_cli("attack", "--attack", "inversion", "--edit", tmp_path / "edit", "--prompts", "3", "--samples", "2",
                     "--set", "steps=300", cwd=tmp_path)  # fmt: skip  # the bench's budget: a harder search to hold against
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((tmp_path / "edit" / "attack-inversion" / "results.json").read_text())
    assert out["baseline_asr"] == 0.0 and out["asr_found"] <= 1 / 3, out["asr_found"]


def test_ring_a_bell_finds_plain_text_prompts_of_the_requested_length(erased_square):
    result = run_cli("attack", "--attack", "ring-a-bell", "--edit", erased_square / "edit", "--prompts", "1", "--samples",
                     "1", "--set", "tokens=6", "--set", "population=16", "--set", "generations=20", cwd=erased_square)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    cell = json.loads((erased_square / "edit" / "attack-ring-a-bell" / "results.json").read_text())["prompts"][0]
    assert len(cell["token_ids"]) == 6 + 2 and not cell["learned_vector"]  # [CLS] six words [SEP]
    assert cell["losses"] == sorted(cell["losses"], reverse=True)  # the best of each generation is kept


def test_mma_diffusion_nears_the_prompts_embedding_with_plain_words_none_of_them_the_concept(erased_square):
    result = run_cli("attack", "--attack", "mma-diffusion", "--edit", erased_square / "edit", "--prompts", "1", "--samples",
                     "1", "--set", "tokens=8", "--set", "steps=10", "--set", "candidates=32", "--set", "banned=box",
                     cwd=erased_square)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    cell = json.loads((erased_square / "edit" / "attack-mma-diffusion" / "results.json").read_text())["prompts"][0]
    assert len(cell["token_ids"]) == 8 + 2 and not cell["learned_vector"]  # [CLS] eight words [SEP]
    words = cell["adversarial_prompt"].split()
    assert len(words) == 8 and not [w for w in words if "square" in w or "box" in w]  # the banned words are out
    losses = cell["losses"]  # 1 − cos of the end-token states, the best so far
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0], losses


def test_a_rerun_resumes_from_the_cells_and_the_report_shows_the_attack(erased_square):
    run_dir = erased_square / "edit" / "attack-inversion"
    if not (run_dir / "results.json").exists():
        pytest.skip("needs the inversion attack of the test above")
    before = json.loads((run_dir / "results.json").read_text())
    again = run_cli("attack", "--attack", "inversion", "--edit", erased_square / "edit", "--prompts", "2", "--samples",
                    "2", *BUDGETS["inversion"], cwd=erased_square)  # fmt: skip
    assert again.returncode == 0, again.stderr
    after = json.loads((run_dir / "results.json").read_text())
    assert after["prompts"] == before["prompts"]  # the same cells, not a new search (its seconds would differ)
    report = run_cli("report", erased_square / "edit", "--out", erased_square / "r.html", cwd=erased_square)
    assert report.returncode == 0, report.stderr
    page = (erased_square / "r.html").read_text()
    assert "inversion attack on uce" in page and f'data-value="{before["asr"]!r}"' in page
    card = run_cli("push", erased_square / "edit", "--card-only", cwd=erased_square)  # the hub page carries it too
    assert card.returncode == 0, card.stderr
    readme = (erased_square / "edit" / "README.md").read_text()
    assert "## Under attack" in readme and f"| {100 * before['asr']:.1f} |" in readme


def test_an_attack_without_an_edit_is_the_baseline_and_says_so(erased_square):
    result = run_cli("attack", "--attack", "p4d", "--concept", "circle", "--prompts", "1", "--samples", "1",
                     "--set", "timesteps=1", "--set", "iterations=1", "--out", erased_square / "base", cwd=erased_square)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no --edit: attacking the unedited model, the baseline for 'circle'" in result.stderr
    out = json.loads((erased_square / "base" / "results.json").read_text())
    assert out["edit"]["method"] == "none" and out["baseline_asr"] == 1.0  # nothing erased: the circle is there


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "unlearndiff", "--set", "iterations=0"], "needs at least one token, one timestep and one iteration"),
        (["--attack", "inversion", "--concept", "banana"], "'banana' is not a shape, character, artist or 'flames'"),
        (["--attack", "p4d", "--no-such"], "No such option"),
        (["--attack", "fgsm"], "unknown attack 'fgsm'"),
        (["--attack", "ring-a-bell", "--prompts", "9"], "has 8 prompts to attack"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(erased_square, tmp_path, args, message):
    result = run_cli("attack", "--edit", erased_square / "edit", *args, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_without_an_edit_a_concept_is_needed(tmp_path):
    result = run_cli("attack", "--attack", "p4d", cwd=tmp_path)
    assert result.returncode != 0 and "give --concept" in result.stderr


@pytest.mark.slow  # 24 s; test_a_rerun_resumes_from_the_cells_and_the_report_shows_the_attack covers resuming in CI
def test_an_interrupted_attack_resumes_from_the_prompts_it_finished(erased_square, tmp_path):
    """Killed after its first prompt, a rerun keeps that prompt's cell as it was and does the rest."""
    import signal
    import time

    command = [sys.executable, "-m", "erasekit.cli", "attack", "--attack", "p4d", "--edit", str(erased_square / "edit"),
               "--prompts", "2", "--samples", "1", "--set", "timesteps=3", "--set", "iterations=5",
               "--set", "stop_on_success=false", "--out", str(tmp_path / "run")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = tmp_path / "run" / "cells"
    while not list(cells.glob("*.json")) and process.poll() is None:  # until its first prompt is done, however long
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = sorted(cells.glob("*.json"))
    assert len(first) == 1 and first[0].with_suffix(".npz").is_file()  # whole: its images came before its json
    kept = first[0].read_bytes()
    assert not (tmp_path / "run" / "results.json").exists()
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert first[0].read_bytes() == kept and len(list(cells.glob("*.json"))) == 2
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [c["prompt"] for c in result["prompts"]] == ["a photo of a square", "an image of a square"]
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.startswith(".")]  # no temporary files left


TINY = {
    "unlearndiff": {"timesteps": 1, "iterations": 2},
    "p4d": {"timesteps": 1, "iterations": 2},
    "ring-a-bell": {"population": 4, "generations": 2, "tokens": 4},
    "mma-diffusion": {"steps": 2, "candidates": 8, "top_k": 4, "tokens": 4},
    "inversion": {"steps": 2, "images": 2, "batch_size": 1},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_attacks_create_no_tensor_without_a_device(pipe, erased_square, tmp_path, name):
    from device_guard import DeviceGuard

    from erasekit.edits import Edit
    from erasekit.eval.attack_run import attack_targets, run_attack
    from erasekit.eval.generation import SamplerSettings
    from erasekit.judges.world import WorldJudge

    assert set(TINY) == set(load_attacks())  # an attack added without an entry here fails
    attack = get_attack(name)
    with DeviceGuard() as guard:
        result = run_attack(pipe, Edit.load(erased_square / "edit"), attack, make_config(attack, TINY[name]),
                            attack_targets("square", 1, True), WorldJudge(), tmp_path, 1, SamplerSettings(steps=3),
                            progress=False)  # fmt: skip
    assert not guard.hidden, f"{name} creates tensors on the default device at {sorted(guard.hidden)}"
    assert len(result["prompts"]) == 1 and 0.0 <= result["asr"] <= 1.0


@pytest.mark.slow  # 40 s; the attacks, their cells and the robustness table are tested apart in CI
def test_the_robustness_bench_puts_every_attack_beside_every_method(tmp_path):
    bench = ["bench", "--protocol", "robustness", "--method", "uce token_span=full", "--method", "sld",
             "--attack", "unlearndiff timesteps=2 iterations=3", "--attack", "inversion steps=5",
             "--prompts", "1", "--samples", "2", "--steps", "5", "--out", tmp_path / "rb"]  # fmt: skip
    result = run_cli(*bench, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((tmp_path / "rb" / "robustness.json").read_text())
    assert list(out["methods"]) == ["none", "uce token_span=full", "sld"]  # the unedited model first
    none, uce, sld = out["methods"].values()
    assert none["accuracy"]["Acc_e"] == 1.0 and uce["accuracy"]["Acc_e"] < 0.5  # the protocol beside the attacks
    assert none["attacks"]["unlearndiff timesteps=2 iterations=3"]["baseline_asr"] == 1.0
    assert sld["attacks"]["inversion steps=5"]["asr"] is None  # a learned token cannot be typed into SLD's pipeline
    assert "reads prompts as text" in sld["attacks"]["inversion steps=5"]["not_applicable"]
    table = (tmp_path / "rb" / "robustness.md").read_text()
    assert "| `sld` |" in table and "n/a" in table and (tmp_path / "rb" / "report.html").is_file()
    again = run_cli(*bench, cwd=tmp_path)  # every cell is kept: a rerun only summarises
    assert again.returncode == 0 and json.loads((tmp_path / "rb" / "robustness.json").read_text()) == out


def test_the_table_gives_the_attacks_own_reach_where_plain_prompts_already_succeed():
    from erasekit.bench.tables import robustness_table

    def outcome(asr, plain, found):
        return {"asr": asr, "baseline_asr": plain, "asr_found": found, "seconds_per_prompt": 1.0}

    attacks = {
        "inversion steps=300": outcome(1.0, 1.0, 0.25),
        "p4d": outcome(0.5, 0.0, 0.5),
        "ring-a-bell": outcome(1.0, 0.5, 1.0),
    }
    result = {"attacks": {name: {} for name in attacks}, "methods": {
        "none": {"accuracy": {"H_c": 0.0}, "attacks": attacks, "seconds": 0.0, "peak_rss_mb": 0.0}}}  # fmt: skip
    row = robustness_table(result).splitlines()[-1]
    assert "| 100 (100; found 25) | 50 (0) | 100 (50) |" in row  # found only where it differs from the ASR
