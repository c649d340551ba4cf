"""Property and fault tests: whatever a user types or a file holds, erasekit answers with a result or
one ErasekitError, never another exception; a run killed at any moment leaves the old output or the
new one, never a mix, and the next run cleans up after it."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erasekit.edits import Edit
from erasekit.errors import ErasekitError
from erasekit.eval.prompts import read_prompt_file
from erasekit.methods import METHODS
from erasekit.methods.base import get_method, make_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
get_method("uce")  # fills the registry
SETTINGS = [(m, f.name) for m in sorted(METHODS) for f in fields(METHODS[m].config)]
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "0", "2.5", "True", "none", "()", "('{}',)", "[1]", "{}", ""]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(max_examples=300, deadline=None)
@given(setting=st.sampled_from(SETTINGS), value=TEXT)
def test_any_typed_setting_is_a_config_or_one_clear_error(setting, value):
    method, name = setting
    try:
        config = make_config(get_method(method), {name: value})
    except ErasekitError as err:
        assert str(err) and "\n" not in str(err)
        return
    parsed = getattr(config, name)
    assert not isinstance(parsed, float) or math.isfinite(parsed)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8"))))
def test_any_prompt_file_is_rows_or_one_clear_error(tmp_path, content):
    path = tmp_path / "p.csv"
    path.write_bytes(b"prompt,seed,role,shape,samples\n" + content)
    try:
        rows = read_prompt_file(path)
    except ErasekitError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert all(r.prompt and r.samples >= 1 for r in rows)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card=st.one_of(JSON, st.fixed_dictionaries({"targets": JSON}, optional={"base_hash": JSON})))
def test_any_card_is_an_edit_or_one_clear_error(tmp_path, card):
    import torch
    from safetensors.torch import save_file

    directory = tmp_path / "e"
    directory.mkdir(exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(directory / "edit.safetensors"))
    (directory / "card.json").write_text(json.dumps(card))
    try:
        edit = Edit.load(directory)
    except ErasekitError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert edit.card["targets"]


def run_ok(command, cwd):
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=ENV)
    assert done.returncode == 0, done.stderr


def timed_run(command, cwd):
    """Run ``command`` to the end; how long it took on this machine, now."""
    start = time.perf_counter()
    run_ok(command, cwd)
    return time.perf_counter() - start


def killed_runs(command, cwd, seed, times, whole, earliest, latest):
    """Start ``command`` ``times`` times, each sent SIGKILL after a seeded wait in [earliest, latest]
    (fractions of ``whole``, a whole run's time measured just before: the cuts fall at the same points
    of the run on a fast or a loaded machine) if it still runs; yields after each, with whether it was cut."""
    rng = random.Random(seed)
    for _ in range(times):
        proc = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(earliest, latest) * whole)
        cut = proc.poll() is None
        if cut:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        yield cut


def test_a_run_killed_at_any_moment_leaves_old_or_new_and_the_next_run_cleans_up(tmp_path):
    """kill -9 of `erasekit erase` at seeded random moments (loading, training, writing), into a path
    that already holds an earlier edit: each time the path holds a whole edit, and the next run works."""
    out = tmp_path / "edit"
    command = [sys.executable, "-m", "erasekit.cli", "erase", "square", "--method", "esd-x", "--set", "iterations=6",
               "--set", "sample_steps=4", "--out", str(out)]  # fmt: skip
    whole = timed_run(command, tmp_path)
    reference = (out / "card.json").read_text()
    killed = 0
    for cut in killed_runs(command, tmp_path, seed=0, times=6, whole=whole, earliest=0.05, latest=0.95):
        killed += cut
        edit = Edit.load(out)  # whole: the earlier edit or the new one, never a mix
        assert edit.card["targets"] == ["square"] and edit.weights
    assert killed >= 3  # most runs were cut, at different moments
    run_ok(command, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit"]  # no lock, no temporaries left
    assert json.loads((out / "card.json").read_text())["config"] == json.loads(reference)["config"]


@pytest.mark.slow  # 78 s; the generate and erase runs above prove the same atomic writes in CI
def test_an_eval_killed_at_any_moment_leaves_results_and_grid_together(tmp_path):
    """kill -9 of `erasekit eval --protocol` over an earlier evaluation: results.json, before_after.png
    and report.html always belong to one run (all old or all new), never one without the others."""
    run_ok([sys.executable, "-m", "erasekit.cli", "erase", "square", "--out", "edit"], tmp_path)
    command = [sys.executable, "-m", "erasekit.cli", "eval", "--protocol", "object", "--edit", "edit", "--samples", "1"]
    whole = timed_run(command, tmp_path)
    run_dir = tmp_path / "edit" / "eval-object"
    for _ in killed_runs(command, tmp_path, seed=1, times=4, whole=whole, earliest=0.1, latest=0.98):
        # the files are written into one directory that is swapped in whole
        assert {p.name for p in run_dir.iterdir()} == {"results.json", "before_after.png", "report.html"}
        assert json.loads((run_dir / "results.json").read_text())["protocol"] == "object"
    run_ok(command, tmp_path)
    assert sorted(p.name for p in (tmp_path / "edit").iterdir()) == ["card.json", "edit.safetensors", "eval-object"]


@pytest.mark.slow  # 62 s; the erase run above proves the same atomic directory swap in CI
def test_a_generate_killed_at_any_moment_leaves_a_whole_run_directory(tmp_path):
    """kill -9 of `erasekit generate` over an earlier run: images, grid, prompts and run.json stay together."""
    command = [sys.executable, "-m", "erasekit.cli", "generate", "demo.csv", "--out", "run"]
    seconds = timed_run(command, tmp_path)
    whole = {"images.npz", "grid.png", "prompts.csv", "run.json"}
    for _ in killed_runs(command, tmp_path, seed=2, times=3, whole=seconds, earliest=0.1, latest=0.98):
        assert {p.name for p in (tmp_path / "run").iterdir()} == whole
    run_ok(command, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
