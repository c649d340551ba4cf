"""Method settings are parsed to their field's type, with one clear error naming the field, before any
model loads; a concept given as one string is one concept."""

import os
import subprocess
import sys

import pytest

from erasekit.errors import ErasekitError
from erasekit.methods.base import EraseSpec, get_method, make_config

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
    ],
)
def test_bad_settings_fail_in_one_line_before_the_model_loads(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "erasekit.cli", *args, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
