"""Method and attack settings are parsed to their field's type, with one clear error naming the field,
before any model loads; an enumerated setting is a ``Literal`` whose choices are checked in one place;
an edit card's settings rebuild the config the method ran with; a concept given as one string is one
concept."""

import dataclasses
import json
import os
import subprocess
import sys
import types
from dataclasses import asdict
from typing import Union, get_args, get_origin, get_type_hints

import pytest
import torch
from quick_settings import QUICK, spec_for

from erasekit.attacks import get_attack, load_attacks
from erasekit.concepts import EraseSpec
from erasekit.edits.transport import METRICS
from erasekit.errors import ErasekitError
from erasekit.judges import JUDGES
from erasekit.methods import METHODS
from erasekit.methods.advunlearn import TEXT_ENCODER_METHOD
from erasekit.methods.base import config_from_card, get_method, make_config
from erasekit.methods.esd import ESD_TARGETS
from erasekit.models.layers import AC_GROUPS, ESD_GROUPS, ESD_SELECTIONS, SDD_GROUPS
from erasekit.primitives.segmenters import SEGMENTERS
from erasekit.settings import setting_choices

get_method("uce")  # fills the registries
get_attack("p4d")
REGISTRY = {**METHODS, **load_attacks()}

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize(
    "method, given, expected",
    [
        ("uce", {"lam": "0.1"}, {"lam": 0.1}),
        ("uce", {"lam": 2}, {"lam": 2.0}),
        ("uce", {"edit_keys": "false"}, {"edit_keys": False}),
        ("uce", {"edit_keys": "1"}, {"edit_keys": True}),
        ("uce", {"templates": "('{}', 'a photo of a {}')"}, {"templates": ("{}", "a photo of a {}")}),
        ("uce", {"templates": "a painting of {}"}, {"templates": ("a painting of {}",)}),
        ("uce", {"templates": ["{}"]}, {"templates": ("{}",)}),
        ("esd-x", {"iterations": "30", "eta": "none"}, {"iterations": 30, "eta": 2.0}),
        ("esd-x", {"target": "paper"}, {"target": "paper", "eta": 1.0}),
        ("mace", {"lora": "no"}, {"lora": False}),
    ],
)
def test_values_are_parsed_to_the_field_type(method, given, expected):
    config = make_config(get_method(method), given)
    for name, value in expected.items():
        assert getattr(config, name) == value and type(getattr(config, name)) is type(value)


@pytest.mark.parametrize(
    "method, given, message",
    [
        ("uce", {"lam": "abc"}, "uce setting lam = 'abc': expected a number"),
        ("uce", {"lam": "1e999"}, "expected a finite number"),
        ("uce", {"lam": "inf"}, "expected a finite number"),
        ("uce", {"lam": float("nan")}, "expected a finite number"),
        ("uce", {"lam": True}, "expected a number"),
        ("uce", {"lam": "-1"}, "must be positive"),
        ("uce", {"edit_keys": "maybe"}, "edit_keys = 'maybe': expected true or false"),
        ("uce", {"templates": "(1, 2)"}, "expected a tuple of strings"),
        ("uce", {"templates": "('a photo',)"}, "must contain {}"),
        ("uce", {"token_span": "middle"}, "token_span must be one of official, last, full"),
        ("uce", {"eta": "1"}, "uce has no setting eta"),
        ("esd-x", {"iterations": "abc"}, "iterations = 'abc': expected a whole number"),
        ("esd-x", {"iterations": "2.5"}, "expected a whole number"),
        ("esd-x", {"iterations": 2.5}, "expected a whole number"),
        ("esd-x", {"iterations": "0"}, "at least 1"),
        ("esd-x", {"seed": "x"}, "seed = 'x': expected a whole number"),
        ("esd-x", {"target": 3}, "target = 3: expected text"),
        ("mace", {"lr": "fast"}, "mace setting lr"),
        ("realera", {"lora": "2"}, "expected true or false"),
    ],
)
def test_bad_values_are_one_clear_error(method, given, message):
    with pytest.raises(ErasekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(get_method(method), given)


def test_a_concept_string_is_one_concept():
    spec = EraseSpec(targets="square", anchors="circle", preserve="heart")
    assert (spec.targets, spec.anchors, spec.preserve) == (("square",), ("circle",), ("heart",))
    with pytest.raises(ErasekitError, match="targets must be concepts"):
        EraseSpec(targets=(1, 2))


@pytest.mark.parametrize(
    "args, message",
    [
        (["erase", "square", "--set", "lam=abc"], "uce setting lam = 'abc': expected a number"),
        (["erase", "square", "--method", "esd-x", "--set", "iterations=2.5"], "expected a whole number"),
        (["bench", "--method", "uce lam=nan"], "expected a finite number"),
        (["bench", "--method", "uce preserve=some"], "preserve takes 'others'"),
        (["bench", "--protocol", "mass", "--no-all-at-once"], "--no-all-at-once is for the task benches"),
    ],
)
def test_bad_settings_fail_in_one_line_before_the_model_loads(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "erasekit.cli", *args, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env=ENV)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["erase"], "Missing argument 'concepts'"),
        (["erase", "square", "--samples", "3"], "No such option: --samples"),
        (["generate", "demo.csv", "--steps", "0"], "Invalid value for '--steps'"),
        (["generate", "demo.csv", "--batch-size", "-5"], "Invalid value for '--batch-size'"),
        (["generate", "demo.csv", "--steps", "100000"], "Invalid value for '--steps'"),
        (["eval", "--protocol", "object", "--edit", "nowhere", "--samples", "0"], "Invalid value for '--samples'"),
        (["world", "show", "--count", "-1"], "Invalid value for '--count'"),
        (["generate", "latin1.csv"], "is not UTF-8 text (byte 0xe9 on line 2)"),
        (["generate", "huge-seed.csv"], "seed 1180591620717411303424 is out of range"),
        (["generate", "many.csv"], "must be a whole number from 1 to 10000"),
        (["generate", "."], "is a directory; give a file"),
        (["eval", "--protocol", "object", "--edit", "list-card"], "not an edit card"),
        (["eval", "--protocol", "object", "--edit", "empty-weights"], "holds a damaged edit"),
        (["eval", "corrupt-run"], "is not an images.npz written by erasekit generate"),
        (["gates", "--out", "thesis"], "thesis holds files that are not an erasekit gates output"),
        (["bench", "--out", "thesis"], "thesis holds files that are not an erasekit bench output"),
        (["bench", "--out", "notes.txt"], "exists and is not a directory"),
        (["world", "show", "--out", "notes.txt"], "notes.txt exists; choose another path or pass --overwrite"),
        (["world", "show", "--out", "thesis"], "is a directory; give a file name"),
        (["world", "show", "--count", "20000"], "in several runs with other --seed values"),
        (["generate", "demo.csv", "--steps", "1001"], "at most the 1000 steps the model was trained with"),
        (["eval", "--protocol", "object", "--edit", "x", "--samples", "10001"], "several rows of it (other seeds)"),
        (["generate", "many.csv"], "repeat the row with another seed"),
        (["generate", "block.csv"], "seed_block '-2' must be a whole number from 0 to 10000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    header = b"prompt,seed,role,shape,samples\n"
    write(tmp_path / "latin1.csv", header + b"a photo of a caf\xe9,0,erase,square,1\n")
    write(tmp_path / "huge-seed.csv", header + f"a photo of a square,{2**70},erase,square,1\n".encode())
    write(tmp_path / "many.csv", header + b"a photo of a square,0,erase,square,100000000\n")
    write(tmp_path / "block.csv", b"prompt,seed,role,seed_block\na photo of a square,0,erase,-2\n")
    (tmp_path / "thesis").mkdir()
    write(tmp_path / "thesis" / "precious.txt", b"years of work")
    write(tmp_path / "notes.txt", b"keep me")
    from safetensors.torch import save_file

    (tmp_path / "list-card").mkdir()
    save_file({"w": torch.zeros(1)}, str(tmp_path / "list-card" / "edit.safetensors"))
    write(tmp_path / "list-card" / "card.json", b"[1, 2]")
    (tmp_path / "corrupt-run").mkdir()
    write(tmp_path / "corrupt-run" / "prompts.csv", header + b"a photo of a square,0,erase,square,1\n")
    write(tmp_path / "corrupt-run" / "images.npz", b"not a zip")
    (tmp_path / "empty-weights").mkdir()
    write(tmp_path / "empty-weights" / "edit.safetensors", b"")
    write(tmp_path / "empty-weights" / "card.json", b"{}")
    if args[0] == "generate":
        args = [*args, "--out", "run"]
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-m", "erasekit.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=ENV)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert (tmp_path / "notes.txt").read_bytes() == b"keep me" and [p.name for p in (tmp_path / "thesis").iterdir()] == [
        "precious.txt"
    ]


def test_a_bom_is_accepted_and_debug_shows_the_traceback(tmp_path):
    from erasekit.eval.prompts import read_prompt_file

    bom = write(tmp_path / "bom.csv", b"\xef\xbb\xbfprompt,seed,role,shape\na photo of a square,0,erase,square\n")
    assert read_prompt_file(bom)[0].prompt == "a photo of a square"
    done = subprocess.run([sys.executable, "-m", "erasekit.cli", "erase", "square", "--set", "lam=abc", "--out", "x", "--debug"],
                          capture_output=True, text=True, cwd=tmp_path, env=ENV)  # fmt: skip
    assert (
        done.returncode == 2
        and "Traceback" in done.stderr
        and done.stderr.strip().endswith("expected a number such as 0.5 or 1e-3")
    )


def test_a_concept_the_world_never_drew_is_erased_with_a_one_line_warning(tmp_path):
    from erasekit.world.vocabulary import unknown_concept_warning

    assert unknown_concept_warning("square") is None and unknown_concept_warning("Anna Varga") is None
    assert "the nearest it knows: heart" in unknown_concept_warning("heartt")
    done = subprocess.run([sys.executable, "-m", "erasekit.cli", "erase", "blorfnax", "--out", "e"],
                          capture_output=True, text=True, cwd=tmp_path, env=ENV)  # fmt: skip
    assert done.returncode == 0 and (tmp_path / "e" / "card.json").exists(), done.stderr
    assert done.stderr.strip().count("\n") == 0 and "never drew 'blorfnax'" in done.stderr


# --- enumerated settings: Literal choices, checked in one place -------------------------------------------

# The str settings that are free text, not a choice from a fixed set; every other str setting is a Literal.
FREE_TEXT = {
    ("mace", "prior_prompts"): "'world' or the path of a prompt file",
    ("mace", "grounding_model"): "a hub id or a directory",
    ("mace", "sam_model"): "a hub id or a directory",
    ("mace", "adapter_dir"): "a directory to keep the LoRAs in",
    ("sld", "safety_concept"): "the concept in words ('' and 'i2p' stand for the erased concepts and I2P's list)",
    ("inversion", "init_word"): "any one word of the tokenizer's vocabulary",
    ("gloce", "template"): "a prompt with one {} for the concept",
    ("salun", "template"): "a prompt with one {} for the concept",
    ("stereo", "init_word"): "any one word of the tokenizer's vocabulary",
    ("stereo", "gallery_prompt"): "a prompt with one {} for the concept",
    ("mma-diffusion", "banned"): "any words, comma-separated",
}

CHOICES = sorted((name, setting) for name in REGISTRY for setting in setting_choices(REGISTRY[name].config))


def test_every_text_setting_is_a_literal_or_free_text_for_a_reason():
    """A new str setting must list its choices as a Literal, or be added to FREE_TEXT with its reason."""
    free = []
    for name, entry in REGISTRY.items():
        for setting, kind in get_type_hints(entry.config).items():
            options = get_args(kind) if get_origin(kind) in (Union, types.UnionType) else (kind,)
            if str in options:
                free.append((name, setting))
    assert sorted(free) == sorted(FREE_TEXT)
    assert len(CHOICES) >= 20  # the choices are read from the configs' annotations


@pytest.mark.parametrize(
    "name, setting, used",
    [
        *[(n, "train_method", ESD_GROUPS) for n in ("esd-x", "esd-u", "esd-all", "esd-x-strict", "race")],
        ("esd-x", "target", tuple(ESD_TARGETS)),
        ("race", "target", tuple(ESD_TARGETS)),
        ("esd-x", "parameters", ESD_SELECTIONS),
        ("advunlearn", "train_method", (TEXT_ENCODER_METHOD, *ESD_GROUPS)),
        ("ac", "parameter_group", AC_GROUPS),
        ("doco", "parameter_group", AC_GROUPS),
        ("sdd", "finetuning_method", SDD_GROUPS),
        ("ant", "train_method", SDD_GROUPS),
        ("stereo", "train_method", ESD_GROUPS),
        ("mace", "segmenter", ("auto", *SEGMENTERS)),
        ("spm", "transport_metric", METRICS),
    ],
)
def test_the_choices_are_those_the_code_reads(name, setting, used):
    assert setting_choices(REGISTRY[name].config)[setting] == used


def test_the_validators_are_judges():
    assert set(setting_choices(REGISTRY["rece"].config)["validate"]) - {"none"} <= set(JUDGES)


@pytest.mark.parametrize("name, setting", CHOICES, ids=[f"{n}-{s}" for n, s in CHOICES])
def test_every_choice_builds_and_any_other_is_one_line_listing_them(name, setting):
    entry = REGISTRY[name]
    choices = setting_choices(entry.config)[setting]
    for choice in choices:
        assert getattr(make_config(entry, {setting: choice}), setting) == choice
    listed = f"{setting} must be one of {', '.join(choices)}, not 'bogus'"
    for make in (lambda: make_config(entry, {setting: " bogus "}), lambda: entry.config(**{setting: "bogus"})):
        with pytest.raises(ErasekitError) as err:
            make()
        assert str(err.value) == listed


# --- a config rebuilt from an edit card ------------------------------------------------------------------


def card_of(name: str, settings: dict) -> dict:
    """A card as written to card.json: the method and its config's settings, through JSON."""
    return json.loads(json.dumps({"method": name, "config": asdict(make_config(get_method(name), settings))}))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_card_rebuilds_its_config(name):
    from test_family_layouts import QUICK as FAMILY_QUICK

    settings = QUICK.get(name, FAMILY_QUICK.get(name))
    assert config_from_card(card_of(name, settings)) == make_config(get_method(name), settings)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"eta": 1.0}, "the edit card's settings do not fit the uce method: uce has no setting eta"),
        ({"lam": "abc"}, "uce setting lam = 'abc': expected a number"),
        ({"lam": 0}, "uce setting lam (λ) = 0.0: must be positive"),
        ({"token_span": "middle"}, "token_span must be one of official, last, full, not 'middle'"),
        ({"templates": [1]}, "expected a tuple of strings"),
    ],
)
def test_a_card_whose_settings_do_not_fit_is_one_line(change, message):
    card = card_of("uce", {})
    card["config"].update(change)
    with pytest.raises(ErasekitError) as err:
        config_from_card(card)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "card, message",
    [
        ({"config": {}}, "records no method and settings"),
        ({"method": "uce", "config": [1]}, "records no method and settings"),
        ({"method": "gcg", "config": {}}, "unknown method 'gcg'"),
    ],
)
def test_a_card_without_a_method_and_settings_is_one_line(card, message):
    with pytest.raises(ErasekitError, match=message):
        config_from_card(card)


# what a method resolves for the card from its 'auto' settings, on the embedded model
RESOLVED = {"mace": {"segmenter": "world"}}


def recording(entry, configs: list):
    """``entry`` whose erase() first keeps the config it is given in ``configs``."""

    def erase(run, spec, config):
        configs.append(config)
        return entry.erase(run, spec, config)

    return dataclasses.replace(entry, erase=erase)


# methods whose quick edit takes seconds run every time; the rest (minutes together) run with the slow tests
FAST = ("receler", "sld", "uce")


def test_quick_settings_name_every_method_that_runs_on_the_embedded_model():
    from quick_settings import sd_methods

    assert set(QUICK) == sd_methods()


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(QUICK)])
def test_an_edit_card_rebuilds_the_config_its_method_ran_with(name, pipe, tmp_path, monkeypatch):
    from erasekit.edits import Edit
    from erasekit.methods.runner import erase

    entry, ran = METHODS[name], []
    monkeypatch.setitem(METHODS, name, recording(entry, ran))
    spec = spec_for(name)
    card = Edit.load(erase(pipe, spec, name, progress=False, **QUICK[name]).save(tmp_path / "edit")).card
    assert config_from_card(card) == dataclasses.replace(ran[0], **RESOLVED.get(name, {}))
