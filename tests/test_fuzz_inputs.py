"""Bad input, probed field by field: every setting out of its range, every damaged prompt file, card or bench
cell is one ErasekitError line (or, for a cell, a warning and a fresh measurement), raised before a model
loads or the long work starts; every default and every setting the docs and bench record still builds.

In process (make_config, read_prompt_file, Edit.load, TrainConfig …), so the file runs in seconds; two
CLI runs check the one-line exit 2 end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from erasekit.attacks import get_attack, load_attacks
from erasekit.concepts import EraseSpec
from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval.prompts import MAX_IMAGES, read_prompt_file
from erasekit.methods import METHODS
from erasekit.methods.base import get_method, make_config
from erasekit.world.training import TrainConfig

get_method("uce")  # fills the registries
get_attack("p4d")
REGISTRY = {**METHODS, **load_attacks()}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def entry(name: str) -> object:  # a Method or an Attack
    return REGISTRY[name]


def refused(name: str, settings: dict, fragment: str = "") -> str:
    """The one-line error ``make_config`` gives for ``settings`` of ``name`` (which must contain ``fragment``)."""
    with pytest.raises(ErasekitError) as err:
        make_config(entry(name), settings)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    return message


# --- 1. settings out of range: (method or attack, setting, value as typed after --set, part of the error) ----

OUT_OF_RANGE = [
    # the issue's own probes
    ("esd-x", "iterations", "99999999999999999999999", "esd-x setting iterations = 99999999999999999999999: must be at least 1"),
    ("uce", "lam", "1e-320", "uce setting lam (λ) = 1e-320: must be positive (at least 1e-06)"),
    ("esd-x", "iterations", "-1", "at most 100,000"),
    # UCE
    ("uce", "lam", "0", "must be positive"),
    ("uce", "lam", "1e9", "at most 1e+08"),
    ("uce", "erase_scale", "0", "erase_scale (s_e)"),
    ("uce", "erase_scale", "2e6", "erase_scale"),
    ("uce", "preserve_scale", "-0.1", "preserve_scale (s_p) = -0.1: must be at least 0 (not negative)"),
    ("uce", "preserve_scale", "1e7", "preserve_scale"),
    # RECE
    ("rece", "epochs", "-1", "epochs"),
    ("rece", "epochs", "1001", "epochs"),
    ("rece", "reg_scale", "0", "reg_scale (ρ)"),
    ("rece", "reg_scale", "1e-9", "reg_scale"),
    ("rece", "lam", "1e-320", "lam"),
    ("rece", "erase_scale", "-1", "erase_scale"),
    ("rece", "preserve_scale", "-1", "preserve_scale"),
    ("rece", "validation_samples", "0", "validation_samples"),
    ("rece", "validation_samples", "257", "validation_samples"),
    ("rece", "sample_steps", "0", "sample_steps"),
    ("rece", "sample_steps", "1001", "sample_steps"),
    ("rece", "guidance", "-1", "guidance"),
    ("rece", "guidance", "101", "guidance"),
    ("rece", "seed", "-1", "seed"),
    ("rece", "seed", str(2**32), "seed"),
    # the ESD family
    ("esd-x", "iterations", "0", "at least 1"),
    ("esd-x", "iterations", "100001", "iterations"),
    ("esd-x", "lr", "0", "lr"),
    ("esd-x", "lr", "-5e-5", "lr"),
    ("esd-x", "lr", "11", "lr"),
    ("esd-x", "eta", "0", "eta (η)"),
    ("esd-x", "eta", "101", "eta"),
    ("esd-x", "start_guidance", "-3", "start_guidance"),
    ("esd-x", "start_guidance", "1e3", "start_guidance"),
    ("esd-x", "sample_steps", "0", "sample_steps"),
    ("esd-x", "sample_steps", "5000", "sample_steps"),
    ("esd-x", "preserve_weight", "-1", "preserve_weight"),
    ("esd-x", "seed", "-7", "seed"),
    ("esd-u", "iterations", "200000", "esd-u setting iterations"),
    ("esd-all", "lr", "100", "esd-all setting lr"),
    ("esd-x-strict", "sample_steps", "-2", "esd-x-strict setting sample_steps"),
    ("race", "epsilon", "0", "RACE needs ε > 0"),
    ("race", "epsilon", "-0.1", "epsilon (ε)"),
    ("race", "epsilon", "1000", "epsilon"),
    ("race", "pgd_steps", "0", "pgd_steps"),
    ("race", "pgd_steps", "1001", "pgd_steps"),
    ("race", "esd_iterations", "-1", "esd_iterations"),
    ("race", "esd_iterations", "100001", "esd_iterations"),
    ("race", "alpha", "0", "alpha"),
    ("race", "alpha", "-1", "alpha"),
    ("race", "iterations", "1000000", "race setting iterations"),
    # MACE
    ("mace", "lam", "0", "lam (λ)"),
    ("mace", "lam", "1e-300", "lam"),
    ("mace", "rank", "0", "rank (r)"),
    ("mace", "rank", "1000000", "rank"),
    ("mace", "lr", "0", "lr"),
    ("mace", "steps", "-1", "steps"),
    ("mace", "steps", "1000001", "steps"),
    ("mace", "batch_size", "0", "batch_size"),
    ("mace", "batch_size", "100000", "batch_size"),
    ("mace", "t1", "-1", "t1 (t₁)"),
    ("mace", "t2", "1e9", "t2 (t₂)"),
    ("mace", "t1", "500", "CFIS needs t1 < t2"),
    ("mace", "gamma", "0", "gamma (γ)"),
    ("mace", "gamma", "1e-300", "gamma"),
    ("mace", "gamma", "1000", "gamma"),
    ("mace", "images_per_concept", "0", "images_per_concept"),
    ("mace", "images_per_concept", "100000", "images_per_concept"),
    ("mace", "box_threshold", "-0.1", "box_threshold"),
    ("mace", "text_threshold", "3", "text_threshold"),
    ("mace", "preserve_scale", "-1", "preserve_scale"),
    ("mace", "prior_scale", "-1", "prior_scale"),
    ("mace", "sample_steps", "0", "sample_steps"),
    ("mace", "guidance", "1000", "guidance"),
    ("mace", "seed", "-1", "seed"),
    # RealEra
    ("realera", "lam1", "0", "lam1 (λ₁)"),
    ("realera", "lam1", "1e-320", "lam1"),
    ("realera", "ridge", "0", "ridge"),
    ("realera", "ridge", "1e-320", "ridge"),
    ("realera", "m", "-1", "m (M)"),
    ("realera", "m", "100000", "m (M)"),
    ("realera", "n", "-1", "n (N)"),
    ("realera", "n", "5000", "n (N)"),
    ("realera", "d1", "0", "d1 (D₁)"),
    ("realera", "d1", "1000", "d1"),
    ("realera", "d2", "0.5", "D₂"),
    ("realera", "d2", "1000", "d2"),
    ("realera", "d1_anchor", "-0.1", "d1_anchor (D₁′)"),
    ("realera", "s1", "1.5", "s1 (S₁)"),
    ("realera", "s2", "-2", "s2 (S₂)"),
    ("realera", "s2", "0.99", "S₂ ≤ S₁"),
    ("realera", "outside_preserve", "1", "outside_preserve (τ) = 1.0: must be at least 0 (not negative) and below 1"),
    ("realera", "outside_preserve", "-0.5", "outside_preserve"),
    ("realera", "epochs", "-1", "epochs (T)"),
    ("realera", "epochs", "100001", "epochs"),
    ("realera", "lr", "0", "lr"),
    ("realera", "rank", "0", "rank"),
    ("realera", "gamma1", "-0.3", "gamma1 (γ₁)"),
    ("realera", "gamma2", "1e7", "gamma2 (γ₂)"),
    ("realera", "preserve_scale", "-1", "preserve_scale"),
    ("realera", "sample_steps", "2000", "sample_steps"),
    ("realera", "guidance", "-0.5", "guidance"),
    # Receler
    ("receler", "rank", "0", "rank"),
    ("receler", "rank", "5000", "rank"),
    ("receler", "iterations", "0", "iterations"),
    ("receler", "lr", "0", "lr"),
    ("receler", "eta", "0", "eta (η)"),
    ("receler", "reg_weight", "-1", "reg_weight (λ)"),
    ("receler", "mask_threshold", "1", "mask_threshold"),
    ("receler", "mask_threshold", "-0.1", "mask_threshold"),
    ("receler", "mask_resolution", "-1", "mask_resolution"),
    ("receler", "mask_resolution", "100000", "mask_resolution"),
    ("receler", "adversarial_steps", "-1", "adversarial_steps"),
    ("receler", "adversarial_steps", "1001", "adversarial_steps"),
    ("receler", "adversarial_tokens", "0", "adversarial_tokens"),
    ("receler", "adversarial_lr", "0", "adversarial_lr"),
    ("receler", "sample_steps", "0", "sample_steps"),
    ("receler", "preserve_weight", "-1", "preserve_weight"),
    # AdvUnlearn
    ("advunlearn", "iterations", "0", "iterations"),
    ("advunlearn", "lr", "0", "lr"),
    ("advunlearn", "eta", "-1", "eta"),
    ("advunlearn", "warmup_iterations", "-1", "warmup_iterations"),
    ("advunlearn", "attack_steps", "-1", "attack_steps"),
    ("advunlearn", "attack_steps", "100000", "attack_steps"),
    ("advunlearn", "attack_lr", "0", "attack_lr"),
    ("advunlearn", "attack_tokens", "0", "attack_tokens (k)"),
    ("advunlearn", "retain_weight", "-1", "retain_weight (γ)"),
    ("advunlearn", "retain_batch", "0", "retain_batch"),
    ("advunlearn", "retain_batch", "1000", "retain_batch"),
    ("advunlearn", "seed", str(2**40), "seed"),
    # AC and DoCo
    ("ac", "steps", "0", "steps"),
    ("ac", "lr", "0", "lr"),
    ("ac", "batch_size", "0", "batch_size"),
    ("ac", "batch_size", "100000", "batch_size"),
    ("ac", "weight_decay", "-0.01", "weight_decay"),
    ("ac", "max_grad_norm", "0", "max_grad_norm"),
    ("ac", "anchor_images", "0", "anchor_images"),
    ("ac", "anchor_images", "100000000", "anchor_images"),
    ("ac", "preserve_images", "0", "preserve_images"),
    ("ac", "prior_loss_weight", "-1", "prior_loss_weight"),
    ("ac", "guidance", "-6", "guidance"),
    ("doco", "steps", "0", "steps"),
    ("doco", "warm_up", "-1", "warm_up"),
    ("doco", "warm_up", "2000", "warm_up (2000) must leave steps"),
    ("doco", "dlr", "0", "dlr"),
    ("doco", "lam", "-1", "lam (λ)"),
    ("doco", "lam", "11", "lam (λ)"),
    ("doco", "batch_size", "0", "batch_size"),
    ("doco", "max_grad_norm", "-1", "max_grad_norm"),
    ("doco", "anchor_images", "0", "anchor_images"),
    ("doco", "collapse_loss", "-1", "collapse_loss"),
    ("doco", "collapse_window", "0", "collapse_window"),
    # SPM and SLD
    ("spm", "rank", "0", "at least 1"),
    ("spm", "alpha", "0", "alpha"),
    ("spm", "eta", "-1", "eta (η)"),
    ("spm", "lam", "-1", "not negative"),
    ("spm", "anchors_per_step", "-1", "anchors_per_step"),
    ("spm", "anchors_per_step", "10000", "anchors_per_step"),
    ("spm", "iterations", "0", "iterations"),
    ("spm", "iterations", "3000000", "iterations"),
    ("spm", "lr", "0", "lr"),
    ("spm", "warmup_steps", "-1", "warmup_steps"),
    ("spm", "lr_cycles", "0", "lr_cycles"),
    ("spm", "max_grad_norm", "-1", "max_grad_norm"),
    ("spm", "sample_steps", "0", "sample_steps"),
    ("sld", "s_S", "-1", "s_S"),
    ("sld", "s_S", "1e9", "s_S"),
    ("sld", "delta", "-1", "delta"),
    ("sld", "delta", "100000", "delta"),
    ("sld", "lam", "-0.01", "lam"),
    ("sld", "s_m", "-0.3", "s_m"),
    ("sld", "beta_m", "1", "beta_m"),
    ("sld", "beta_m", "-0.1", "beta_m"),
    # the attacks
    ("unlearndiff", "iterations", "0", "attack budget"),
    ("unlearndiff", "tokens", "0", "attack budget"),
    ("unlearndiff", "tokens", "76", "unlearndiff setting tokens (k)"),
    ("unlearndiff", "timesteps", "1001", "timesteps"),
    ("unlearndiff", "iterations", "100000", "iterations"),
    ("unlearndiff", "lr", "0", "lr"),
    ("unlearndiff", "weight_decay", "-0.1", "weight_decay"),
    ("unlearndiff", "seed", "-1", "seed"),
    ("p4d", "timesteps", "0", "attack budget"),
    ("p4d", "tokens", "1000", "tokens"),
    ("p4d", "iterations", "10001", "iterations"),
    ("p4d", "lr", "-0.01", "lr"),
    ("ring-a-bell", "generations", "0", "attack budget"),
    ("ring-a-bell", "population", "1", "attack budget"),
    ("ring-a-bell", "population", "100000", "population"),
    ("ring-a-bell", "generations", "1000000", "generations"),
    ("ring-a-bell", "tokens", "100", "tokens (K)"),
    ("ring-a-bell", "eta", "0", "eta (η)"),
    ("ring-a-bell", "mutation", "1.5", "mutation"),
    ("ring-a-bell", "crossover", "-0.5", "crossover"),
    ("inversion", "steps", "0", "attack budget"),
    ("inversion", "steps", "1000000", "steps"),
    ("inversion", "lr", "0", "lr"),
    ("inversion", "batch_size", "0", "attack budget"),
    ("inversion", "batch_size", "1000", "batch_size"),
    ("inversion", "images", "100000", "images"),
    # not a number at all, or not a finite one
    ("uce", "lam", "nan", "expected a finite number"),
    ("uce", "lam", "inf", "expected a finite number"),
    ("esd-x", "lr", "-inf", "expected a finite number"),
    ("realera", "s1", "nan", "expected a finite number"),
    ("mace", "gamma", "1e999", "expected a finite number"),
    ("ring-a-bell", "mutation", "nan", "expected a finite number"),
    ("esd-x", "iterations", "9" * 5000, "5,000 digits is out of range"),
    ("esd-x", "iterations", "1e3", "expected a whole number"),
    ("esd-x", "iterations", "²", "expected a whole number"),
]


@pytest.mark.parametrize("name, setting, value, fragment", OUT_OF_RANGE, ids=[f"{n}-{s}={v[:12]}" for n, s, v, _ in OUT_OF_RANGE])
def test_a_setting_out_of_range_is_one_line_naming_it(name, setting, value, fragment):
    refused(name, {setting: value}, fragment)


def bounded_fields() -> list[tuple[str, str, object]]:
    """Every bounded field of every method and attack, with values just outside its range (and NaN, ±inf)."""
    cases = []
    for name in sorted(REGISTRY):
        for f in fields(entry(name).config):
            bounds = f.metadata.get("bounds")
            if bounds is None:
                continue
            low = bounds.gt if bounds.gt is not None else bounds.ge
            whole = isinstance(f.default, int) and not isinstance(low, float)
            if bounds.gt is not None:
                cases.append((name, f.name, bounds.gt))
            elif bounds.ge is not None:
                cases.append((name, f.name, bounds.ge - 1 if whole else bounds.ge - max(abs(bounds.ge), 1e-3) / 2))
            high = bounds.le if bounds.le is not None else bounds.lt
            cases.append((name, f.name, (high + 1 if whole else high * 2 + 1) if bounds.le is not None else high))
            if not whole:
                cases += [(name, f.name, math.nan), (name, f.name, math.inf), (name, f.name, -math.inf)]
    return cases


@pytest.mark.parametrize("name, setting, value", bounded_fields())
def test_every_bounded_field_refuses_its_edges_from_python_and_from_text(name, setting, value):
    for given in (value, repr(value) if isinstance(value, float) else str(value)):
        message = refused(name, {setting: given})
        assert setting in message or "budget" in message or "RACE needs" in message, message


def test_every_numeric_setting_is_bounded():
    """A new numeric setting must say its range (seeds, counts and scales alike)."""
    unbounded = [(n, f.name) for n in REGISTRY for f in fields(entry(n).config)
                 if f.type in ("int", "float", "int | None", "float | None") and "bounds" not in f.metadata]  # fmt: skip
    assert unbounded == []


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_default_builds(name):
    make_config(entry(name), {})


RECORDED = [  # settings that README, docs/methods, docs/bench and bench/*.json run with
    ("uce", {"templates": "('{}', 'a photo of a {}', 'a picture of a {}')", "token_span": "full", "preserve_scale": "1"}),
    ("uce", {"lam": "1e-3", "preserve_scale": "0.0"}),
    ("uce", {"token_span": "last", "preserve_scale": "0.1"}),
    ("realera", {"d1": "1.5", "m": "64", "s2": "0.4"}),
    ("realera", {"lora": False, "s1": 0.9999, "s2": 0.9998, "d1": 2.0, "d2": 3.0}),
    ("realera", {"m": 16, "outside_preserve": 0.01, "lora": False}),
    ("mace", {"lam": "10", "lr": "3e-3", "steps": "150"}),
    ("mace", {"images_per_concept": 1, "steps": 1, "sample_steps": 2, "lam": 10.0, "box_threshold": 1.01}),
    ("mace", {"box_threshold": 0.0, "text_threshold": 0.0, "batch_size": 4}),
    ("rece", {"epochs": 4, "validation_samples": 1, "sample_steps": 2}),
    ("esd-x", {"iterations": "400", "lr": "5e-4"}),
    ("esd-x", {"target": "paper", "eta": 3.0, "iterations": 6, "sample_steps": 4}),
    ("race", {"target": "official", "lr": "5e-4", "esd_iterations": "200", "iterations": "200", "epsilon": "0.3"}),
    ("spm", {"lr": "0.01", "lam": "10", "iterations": "200", "warmup_steps": "20", "transport_metric": "tokenuni"}),
    ("doco", {"anchor_images": 128, "batch_size": 4, "lr": 1e-4, "preserve_images": 16, "steps": 200, "warm_up": 50}),
    ("doco", {"collapse_loss": 100, "collapse_window": 2, "steps": 6, "warm_up": 3}),
    ("ac", {"anchor_images": 128, "steps": 100, "lr": 1e-3, "preserve_images": 32, "loss": "noise"}),
    ("receler", {"lr": 1e-2, "iterations": 60, "adversarial_steps": 3, "rank": 32, "preserve_weight": 0}),
    ("advunlearn", {"lr": 1e-3, "iterations": 60, "warmup_iterations": 20, "attack_steps": 3}),
    ("sld", {"preset": "max", "delta": 0, "lam": "0.5", "safety_concept": "i2p"}),
    ("unlearndiff", {"timesteps": "10", "iterations": "20"}),
    ("p4d", {"timesteps": "10", "iterations": "20", "tokens": "16"}),
    ("ring-a-bell", {"population": "64", "generations": "200", "mutation": "0", "crossover": "0.5"}),
    ("inversion", {"steps": "300", "init_word": "object"}),
]


@pytest.mark.parametrize("name, settings", RECORDED, ids=[n for n, _ in RECORDED])
def test_recorded_settings_still_build(name, settings):
    make_config(entry(name), settings)


@pytest.mark.parametrize(
    "name, settings, fragment",
    [
        ("inversion", {"init_word": ""}, "init_word ''"),
        ("inversion", {"init_word": "   "}, "must be one word"),
        ("inversion", {"init_word": "two words"}, "must be one word"),
        ("ring-a-bell", {"mutation": "0", "crossover": "0"}, "never makes a new prompt"),
        ("ring-a-bell", {"mutation": "0", "tokens": "1"}, "never makes a new prompt"),
        ("rece", {"uce_templates": "('a photo',)"}, "uce_templates must contain {}"),
        ("mace", {"fusion": "mean"}, "fusion"),
    ],
)
def test_settings_that_make_the_run_meaningless_are_refused(name, settings, fragment):
    refused(name, settings, fragment)


def test_the_python_api_refuses_before_it_touches_the_pipeline():
    from erasekit.methods.runner import erase

    spec = EraseSpec(("square",))
    with pytest.raises(ErasekitError, match="esd-x setting iterations = -1"):
        erase(None, spec, "esd-x", iterations=-1)  # type: ignore[arg-type] - no pipeline is needed to refuse
    with pytest.raises(ErasekitError, match="min_similarity"):
        erase(None, spec, "uce", expand=3, expand_min_similarity=math.nan)  # type: ignore[arg-type]
    with pytest.raises(ErasekitError, match="top_k"):
        erase(None, spec, "uce", expand=-2)  # type: ignore[arg-type]


# --- 2. tuple settings ----------------------------------------------------------------------------------

TUPLES = [
    ("+".join(["'{}'"] * 20_000), "too deeply nested"),
    ("[" * 5000 + "]" * 5000, "template"),  # too deep for Python's parser: read as one word, which has no {}
    (repr(tuple(["{}"] * 1001)), "1,001 items; a tuple setting takes at most 1,000"),
    (["{} x"] * 5000, "5,000 items"),
    (tuple(["a {}"] * 1001), "1,001 items"),
    ("('{}', 3)", "expected a tuple of strings"),
    ([1, 2], "expected a tuple of strings"),
    ("x" * 1_000_001, "1,000,001 characters"),
]


@pytest.mark.parametrize("value, fragment", TUPLES, ids=range(len(TUPLES)))
def test_a_tuple_setting_too_long_or_too_deep_is_one_line(value, fragment):
    refused("uce", {"templates": value}, fragment)


def test_a_tuple_setting_of_the_largest_size_is_read():
    config = make_config(entry("uce"), {"templates": repr(tuple(f"{{}} {k}" for k in range(1000)))})
    assert len(config.templates) == 1000


# --- 3. prompt files -------------------------------------------------------------------------------------

HEADER = "prompt,seed,role,shape,samples,seed_block\n"

PROMPT_FILES = [
    (HEADER + "a photo of a square,0,erase,square,²,\n", "samples '²' must be a whole number"),
    (HEADER + "a photo of a square,0,erase,square,1,²\n", "seed_block '²' must be a whole number"),
    (HEADER + "a photo of a square,0,erase,square,٣,\n", "samples '٣'"),
    (HEADER + "a photo of a square,0,erase,square,+3,\n", "samples '+3'"),
    (HEADER + "a photo of a square,0,erase,square,3.0,\n", "samples '3.0'"),
    (HEADER + "a photo of a square,0,erase,square,1_0,\n", "samples '1_0'"),
    (HEADER + "a photo of a square,0,erase,square,1,-0\n", "seed_block '-0'"),
    (HEADER + 'a photo of a square,0,erase,square,1,\n"a photo of a circle,1,erase,circle,1,\n', "line 3: a quote opens"),
    (HEADER + 'a,0,erase,,1,\nb,1,erase,,1,\n"c,2,erase,,1,\nd,3,erase,,1,\n', "line 4: a quote opens"),
    (HEADER + '"never closed', "line 2: a quote opens"),
    (HEADER + "".join(f"p{k},{k},erase,,10000,\n" for k in range(11)), "asks for 110,000 images (11 rows)"),
    (HEADER + "".join(f"p{k},{k},retain,,1000,\n" for k in range(101)), "asks for 101,000 images"),
]


@pytest.mark.parametrize("content, fragment", PROMPT_FILES, ids=range(len(PROMPT_FILES)))
def test_a_bad_prompt_file_is_one_line(tmp_path, content, fragment):
    path = tmp_path / "p.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ErasekitError) as err:
        read_prompt_file(path)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "content, images",
    [
        (HEADER + "".join(f"p{k},{k},erase,,10000,\n" for k in range(10)), MAX_IMAGES),  # the cap itself
        (HEADER + '"a photo, of a ""square""",0,erase,square,2,\n"two\nlines",1,retain,,1,\n', 3),  # quotes closed
        (HEADER + "a photo of a square,0,erase,square,007,3\n", 7),
    ],
)
def test_good_prompt_files_still_read(tmp_path, content, images):
    path = tmp_path / "p.csv"
    path.write_text(content, encoding="utf-8")
    assert sum(r.samples for r in read_prompt_file(path)) == images


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('prompt,evaluation_seed\n"a nude figure,1\nb,2\n', "line 2: a quote opens"),
        ("prompt\n" + "x\n" * 100_001, "asks for 100,001 images"),
    ],
)
def test_a_bad_i2p_file_is_one_line(tmp_path, content, fragment):
    from erasekit.eval.prompt_sets import i2p_rows

    path = tmp_path / "i2p.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ErasekitError, match=fragment):
        i2p_rows(path)


# --- 4. concept expansion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "top_k, similarity, fragment",
    [
        (0, 0.5, "top_k"),
        (-1, 0.5, "top_k"),
        (1001, 0.5, "top_k"),
        (True, 0.5, "top_k"),
        (2.5, 0.5, "top_k"),
        (3, math.nan, "min_similarity"),
        (3, math.inf, "min_similarity"),
        (3, 1.5, "min_similarity"),
        (3, -1.01, "min_similarity"),
        (3, "0.5", "min_similarity"),
    ],
)
def test_expansion_settings_that_add_nothing_or_everything_are_refused(top_k, similarity, fragment):
    from erasekit.primitives.expansion import check_expansion

    with pytest.raises(ErasekitError, match=fragment):
        check_expansion(top_k, similarity)


def test_a_bench_column_with_a_bad_expansion_is_refused_when_it_is_made():
    from erasekit.bench.entries import BenchEntry

    with pytest.raises(ErasekitError, match="top_k"):
        BenchEntry("uce", expand=-1)
    assert BenchEntry("uce", expand=3).expand == 3


# --- 6. world training -----------------------------------------------------------------------------------

SMALL_WORLD = {"train_images": 100, "evaluator_images": 100, "evaluator_batch": 64, "adapt_images": 100, "vae_batch": 8,
               "unet_batch": 8, "unet_steps": 2}  # fmt: skip


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"unet_steps": -1}, "unet_steps = -1"),
        ({"unet_steps": 0}, "unet_steps"),
        ({"vae_steps": 0}, "vae_steps"),
        ({"evaluator_epochs": 0}, "evaluator_epochs"),
        ({"adapt_epochs": -2}, "adapt_epochs"),
        ({"unet_warmup": 0}, "unet_warmup"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"seed": -1}, "seed"),
        ({"unet_minutes": 0.0}, "--minutes"),
        ({"unet_minutes": -5.0}, "--minutes"),
        ({"unet_minutes": math.nan}, "--minutes"),
        ({"unet_minutes": math.inf}, "--minutes"),
        ({"unet_lr": 0.0}, "unet_lr"),
        ({"evaluator_lr": math.nan}, "evaluator_lr"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"caption_dropout": 1.5}, "caption_dropout"),
        ({"vae_batch": 0}, "vae_batch"),
        ({**SMALL_WORLD, "unet_batch": 128}, "unet_batch"),
        ({**SMALL_WORLD, "adapt_images": 16}, "evaluator_batch"),
        ({"evaluator_images": 10, "evaluator_batch": 64}, "evaluator_batch"),
        ({"unet_steps": 2.5}, "unet_steps"),
    ],
)
def test_a_bad_training_setting_is_one_line(settings, fragment):
    with pytest.raises(ErasekitError, match=fragment.replace("-", r"\-")):
        TrainConfig(**settings)


def test_the_committed_models_training_settings_build():
    provenance = json.loads((Path(__file__).parents[1] / "erasekit/assets/erasekit-tiny/provenance.json").read_text())
    config = {k: v for k, v in provenance["config"].items() if k not in ("work_dir", "model_dir")}
    assert TrainConfig(**config).unet_minutes == 60.0


def test_the_minutes_bound_every_stage_of_world_training(tmp_path):
    """A run out of time at once: every stage's loop stops before its first step, and the model is exported."""
    from erasekit.world.training import train_all

    cfg = TrainConfig(
        train_images=96, test_images=32, evaluator_images=96, evaluator_batch=32, adapt_images=32, vae_batch=8,
        unet_batch=8, unet_steps=50, vae_steps=50, unet_minutes=1e-9, work_dir=tmp_path / "work", model_dir=tmp_path / "model",
    )  # fmt: skip
    provenance = json.loads((train_all(cfg) / "provenance.json").read_text())
    stages = {record["stage"]: record for record in provenance["log"]}
    assert provenance["unet_steps"] == 0 and stages["vae"]["steps"] == 0
    assert stages["evaluator"]["stopped_at_minutes"] and stages["evaluator-adapt"]["stopped_at_minutes"]
    assert not torch.load(tmp_path / "work" / "evaluator.pt")["done"]  # a later run trains it whole
    assert not (tmp_path / "work" / "evaluator-adapted.pt").exists()


# --- 7. bench and robustness cells ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, keys",
    [
        ('{"concept": "square", "metrics": {"erased"', ()),
        ("", ()),
        ("[1, 2]", ()),
        ('"a string"', ()),
        ('{"concept": "square"}', ("concept", "metrics")),
        (b"\xff\xfe{}", ()),
        ("[" * 100_000 + "]" * 100_000, ()),
    ],
)
def test_a_damaged_cell_is_measured_again_with_a_warning(tmp_path, capsys, content, keys):
    from erasekit.eval.cells import read_cell

    path = tmp_path / "cell.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert read_cell(path, keys) is None
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: ") and str(path) in warning and "\n" not in warning


def test_a_whole_cell_is_read_back(tmp_path, capsys):
    from erasekit.bench.cells import BENCH_CELL
    from erasekit.eval.cells import read_cell

    cell = {"concept": "square", "metrics": {}, "world_fid_kept": 0.4, "seconds": 1.0, "peak_rss_mb": 3.0}
    (tmp_path / "cell.json").write_text(json.dumps(cell))
    assert read_cell(tmp_path / "cell.json", BENCH_CELL) == cell
    assert read_cell(tmp_path / "missing.json", BENCH_CELL) is None
    assert capsys.readouterr().err == ""


def test_a_truncated_bench_cell_is_recomputed(tmp_path, capsys, monkeypatch):
    from erasekit.bench import tasks as bench
    from erasekit.bench.entries import BenchEntry

    entry_ = BenchEntry("uce")
    path = tmp_path / "cells" / entry_.slug / "square-object-2.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"concept": "squ')
    measured = {"concept": "square", "metrics": {}, "world_fid_kept": 0.1, "seconds": 1, "peak_rss_mb": 2,
                "peak_cuda_mb": None, "expanded": {}}  # fmt: skip
    fake_edit = SimpleNamespace(card={"seconds": 1, "peak_rss_mb": 2, "peak_cuda_mb": None})
    monkeypatch.setattr(bench, "erase", lambda *a, **k: fake_edit)
    monkeypatch.setattr(bench, "run_protocol", lambda *a, **k: SimpleNamespace(metrics={}, world_fid_kept=0.1))
    cell = bench._cell(None, None, entry_, "object", "square", ("square",), tmp_path, 2, None, {}, False)
    assert cell == measured and json.loads(path.read_text()) == measured
    assert "is damaged" in capsys.readouterr().err


def test_a_damaged_attack_cell_or_result_is_run_again(tmp_path, capsys):
    from erasekit.bench.robustness import _attack_result
    from erasekit.eval.attack_run import ATTACK_CELL, _attack_cell

    whole = dict.fromkeys(ATTACK_CELL, 0)
    (tmp_path / "k.json").write_text(json.dumps(whole))
    assert _attack_cell(tmp_path, "k") is None  # its images are missing
    (tmp_path / "k.npz").write_bytes(b"")
    assert _attack_cell(tmp_path, "k") == whole
    (tmp_path / "k.json").write_text('{"key": ')
    assert _attack_cell(tmp_path, "k") is None
    (tmp_path / "results.json").write_text(json.dumps({"attack": "p4d", "asr": 0.5}))
    assert _attack_result(tmp_path / "results.json") is None  # ran, but its numbers are gone
    (tmp_path / "results.json").write_text(json.dumps({"attack": "p4d", "asr": None, "not_applicable": "text only"}))
    assert _attack_result(tmp_path / "results.json")["asr"] is None
    assert capsys.readouterr().err.count("warning: ") == 3


# --- 8. edit cards and architectures -----------------------------------------------------------------------

SLD = {"sld_guidance_scale": 1000, "sld_warmup_steps": 10, "sld_threshold": 0.01, "sld_momentum_scale": 0.3,
       "sld_mom_beta": 0.4, "safety_concept": "square"}  # fmt: skip
CARDS = [
    ({"inference": 5}, "inference should be null or an object"),
    ({"inference": {"sld": "x"}}, "inference.sld should be an object"),
    ({"inference": {"sld": {}}}, "inference.sld.sld_guidance_scale should be a number"),
    ({"inference": {"sld": {**SLD, "sld_threshold": "high"}}}, "inference.sld.sld_threshold"),
    ({"inference": {"sld": {**SLD, "sld_mom_beta": True}}}, "inference.sld.sld_mom_beta"),
    ({"inference": {"sld": {**SLD, "safety_concept": 3}}}, "inference.sld.safety_concept should be text"),
    ({"inference": {"spm": {"concepts": []}}}, "inference.spm should be an object with a non-empty list"),
    ({"inference": {"spm": {"concepts": "square"}}}, "inference.spm"),
    ({"inference": {"spm": {"concepts": ["square"], "metric": "cosine"}}}, "inference.spm.metric should be one of"),
    ({"inference": {"spm": []}}, "inference.spm"),
    ({"inference": {"gcg": {}}}, "inference should hold one of 'adavd' or 'safree' or 'sld' or 'spm'"),
    ({"inference": {"sld": SLD, "spm": {"concepts": ["x"]}}}, "inference should hold one of"),
    ({"config": []}, "config should be an object"),
    ({"config": "lam=1"}, "config should be an object"),
    ({"erasers": "yes"}, "erasers should be an object"),
    ({"erasers": 1}, "erasers should be an object"),
    ({"targets": [1]}, "targets should be a list of concept names"),
    ({"targets": ["square", ""]}, "targets should be"),
    ({"targets": "square"}, "not an edit card"),
    ({"targets": []}, "not an edit card"),
    ({"anchors": 5}, "anchors should be a list"),
    ({"anchors": [None]}, "anchors should be a list"),
    ({"preserve": "circle"}, "preserve should be a list"),
    ({"method": ["uce"]}, "method should be a method name"),
    ({"model": 3}, "model should be"),
    ({"base_hash": 12}, "base_hash should be"),
    ({"expanded": []}, "expanded should be an object"),
    ({"lora": "yes"}, "lora should be an object"),
    ({"seconds": "fast"}, "seconds should be a number"),
    ({"seconds": True}, "seconds should be a number"),
    ({"peak_rss_mb": None}, "peak_rss_mb should be a number"),
    ({"peak_cuda_mb": "x"}, "peak_cuda_mb should be a number or null"),
    ({"changed_parameters": [1]}, "changed_parameters should be a number"),
]


def edit_dir(tmp_path: Path, card: dict, adapters: dict | None = None) -> Path:
    directory = tmp_path / "edit"
    directory.mkdir(exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(directory / "edit.safetensors"))
    if adapters is not None:
        save_file(adapters, str(directory / "adapters.safetensors"))
    (directory / "card.json").write_text(json.dumps({"targets": ["square"], "method": "uce", **card}))
    return directory


@pytest.mark.parametrize("card, fragment", CARDS, ids=range(len(CARDS)))
def test_a_card_of_wrong_types_is_one_line_naming_the_file_and_field(tmp_path, card, fragment):
    with pytest.raises(ErasekitError) as err:
        Edit.load(edit_dir(tmp_path, card, adapters={"0.x.down": torch.zeros(1, 2)}))
    message = str(err.value)
    assert fragment in message and "card.json" in message and "\n" not in message, message


@pytest.mark.parametrize(
    "card",
    [
        {"inference": {"sld": SLD}, "method": "sld", "config": {"preset": "medium"}},
        {"inference": {"spm": {"concepts": ["square"], "metric": "tokenuni"}}, "method": "spm"},
        {"inference": None, "erasers": {"rank": 4, "layers": 2}, "peak_cuda_mb": None, "seconds": 0.5},
        {"inference": {}, "expanded": {"square": [["box", 0.9]]}, "lora": {"file": "x"}, "base_hash": None},
        {"anchors": [""], "preserve": [], "model": None, "changed_parameters": 10**400},
    ],
)
def test_cards_as_erasekit_writes_them_still_load(tmp_path, card):
    assert Edit.load(edit_dir(tmp_path, card, adapters={"0.x.down": torch.zeros(1, 2)})).card["targets"] == ["square"]


def spm_edit(shapes: dict[str, tuple[int, ...]], concepts: int = 1) -> Edit:
    """An SPM edit of ``concepts`` adapters whose factors have ``shapes``."""
    card = {"inference": {"spm": {"concepts": [f"c{k}" for k in range(concepts)]}}}
    return Edit({}, card, {key: torch.zeros(shape) for key, shape in shapes.items()})


class Holder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (Edit({"lin.weight": torch.zeros(4, 4)}), "lin.weight has shape (4, 4), the pipeline's (3, 4)"),
        (Edit({"lin.bias": torch.zeros(4)}), "lin.bias has shape (4,)"),
        (Edit({"lin.nothing": torch.zeros(1)}), "which the pipeline does not have"),
        (spm_edit({"0.lin.down": (1, 5), "0.lin.up": (3, 1)}), "SPM factors for lin"),
        (spm_edit({"0.lin.down": (1, 4), "0.lin.up": (2, 1)}), "SPM factors for lin"),
        (spm_edit({"0.lin.down": (1, 4)}), "no up factor"),
        (spm_edit({"1.lin.down": (1, 4), "1.lin.up": (3, 1)}), "card's 1 SPMs"),
        (spm_edit({"0.gone.down": (1, 4), "0.gone.up": (3, 1)}), "does not have"),
        (spm_edit({"0.lin.sideways": (1, 4)}), "card's 1 SPMs"),
    ],
)
def test_an_edit_of_another_shape_is_refused_before_generation(edit, fragment):
    pipe = SimpleNamespace(unet=Holder())
    with pytest.raises(ErasekitError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        edit.check_architecture(pipe)


def test_an_edit_of_the_same_shapes_passes_the_architecture_check():
    pipe = SimpleNamespace(unet=Holder())
    Edit({"lin.weight": torch.ones(3, 4), "lin.bias": torch.ones(3)}).check_architecture(pipe)
    spm_edit(
        {f"{k}.lin.{kind}": shape for k in (0, 1) for kind, shape in (("down", (1, 4)), ("up", (3, 1)))}, 2
    ).check_architecture(pipe)


# --- 9. the long work's own checks run first ----------------------------------------------------------------


def must_not_run(*args, **kwargs):
    raise AssertionError("the long work started before a setting that cannot work was refused")


@pytest.mark.parametrize(
    "method, settings, patched, fragment",
    [
        ("mace", {"rank": 1000}, ("erasekit.methods.mace", "concept_data"), "does not fit"),
        ("mace", {"t1": 5000.0, "t2": 6000.0, "gamma": 1.0}, ("erasekit.methods.mace", "concept_data"), "lies outside"),
        ("realera", {"rank": 1000, "m": 2}, ("erasekit.methods.realera", "neighbourhoods"), "does not fit"),
        ("spm", {"rank": 1000}, ("erasekit.methods.spm", "denoising"), "does not fit"),
    ],
)
def test_a_setting_the_model_cannot_take_is_refused_before_the_long_work(pipe, monkeypatch, method, settings, patched, fragment):
    from erasekit.methods.runner import erase

    monkeypatch.setattr(f"{patched[0]}.{patched[1]}", must_not_run)
    with pytest.raises(ErasekitError, match=fragment):
        erase(pipe, EraseSpec(("square",)), method, progress=False, **settings)


# --- the command line: one line, exit 2, nothing written ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["erase", "square", "--method", "esd-x", "--set", "iterations=99999999999999999999999", "--out", "X"],
        ["world", "train", "--unet-steps", "-1", "--work-dir", "X"],
    ],
    ids=["iterations", "world-train"],
)
def test_the_cli_answers_a_bad_setting_in_one_line(tmp_path, args):
    done = subprocess.run([sys.executable, "-m", "erasekit.cli", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=ENV, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "X").exists() and list(tmp_path.iterdir()) == []
